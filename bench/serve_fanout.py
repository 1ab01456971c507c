"""RL fan-out against a running `vlreward serve`: P prompts x A answers, each answer its own POST /score
from its own thread (as a GRPO trainer sends a group's completions), a 503 retried after 0.2 s. Prints
the wall time of all of them, how many were scored, and the sum of the scores (equal sums: equal
scores, for an A/B of two servers). The images resolve against the server's --image-root: start it
with --image-root tests/reference.

    python3 bench/serve_fanout.py PORT P A
"""
import json, sys, threading, time, urllib.request
port, P, A = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
question = ("Please look at the picture carefully and describe which colours dominate it, how the shapes are "
            "arranged, and whether anything in it looks unusual. ") * 6
def body(p, a):
    ans = f"Answer {a} to prompt {p}: " + "the picture is mostly red and green with a few blue shapes arranged in rows. " * 3
    return json.dumps({"id": f"{p}-{a}", "image": "images/tiny_30x20.png", "question": f"[{p}] " + question, "answer": ans}).encode()
scores = {}
def go(p, a):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body(p, a), headers={"Content-Type": "application/json"})
    for _ in range(50):
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                scores[(p, a)] = json.loads(r.read())["score"]; return
        except urllib.error.HTTPError as e:
            if e.code != 503: raise
            time.sleep(0.2)
t0 = time.time()
ts = [threading.Thread(target=go, args=(p, a)) for p in range(P) for a in range(A)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"wall_s": round(time.time() - t0, 3), "scored": len(scores),
                  "checksum": repr(sum(sorted(scores.values())))}))
