"""The vlreward Python package against the CLI on the tiny model: scores bit for bit on the golden
cases, every image input type, batches, threads, errors, info, the HTTP client and the TRL / verl
reward functions. Runs under unittest (tests/test_python.c does it in `make test`) or pytest.
Environment: PYTHONPATH holding python/ with the extension built, VLR_BUILD the build folder."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import vlreward
from vlreward._request import png_rgb8
from vlreward.integrations import trl as vtrl
from vlreward.integrations import verl as vverl

BUILD = os.environ.get("VLR_BUILD") or "build"
CLI = os.path.join(BUILD, "vlreward")
MODEL = "tests/reference/models/tiny-a"
REF = "tests/reference"
DEMO = "tests/reference/images/demo.jpg"
QUESTION = "Is Purple the highest value?"

# scripts/install-deps installs both (python3-numpy, python3-pil); without them their tests say skipped,
# and tests/test_python.c reports the skips
try:
    import numpy
except ImportError:
    numpy = None
try:
    from PIL import Image as PILImage
except ImportError:
    PILImage = None
NO_NUMPY = "NumPy is not installed for this interpreter (python3-numpy)"
NO_PIL = "Pillow is not installed for this interpreter (python3-pil)"

_model = None


def model():
    global _model
    if _model is None:
        _model = vlreward.Model(MODEL, threads=2)
    return _model


def cli(*args, stdin=None):
    return subprocess.run([CLI] + list(args), input=stdin, capture_output=True, text=True, check=True).stdout


def cli_score(image, question, answer):
    return float(cli("score", "--model", MODEL, "--threads", "2", "--image", image, "--question", question,
                     "--answer", answer))


def synthetic_rgb(width, height):
    """A deterministic RGB8 image with gradients and edges (so resizing has work to do)."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            out += bytes(((x * 7 + y * 3) % 256, (x * y) % 251, 255 if (x // 5 + y // 4) % 2 else 0))
    return bytes(out)


class Package(unittest.TestCase):
    def test_version(self):
        with open("include/vlreward.h") as f:
            header = re.search(r'#define VLR_VERSION "(.*)"', f.read()).group(1)
        self.assertEqual(vlreward.__version__, header)

    def test_golden_cases_equal_cli(self):
        with open(os.path.join(REF, "cases.jsonl")) as f:
            cases = [json.loads(line) for line in f if line.strip()]
        lines = cli("score", "--model", MODEL, "--threads", "2", "--input", os.path.join(REF, "cases.jsonl"))
        want = {r["id"]: r for r in map(json.loads, lines.splitlines())}
        got = model().score_batch(cases, errors="return", base_dir=REF)
        self.assertEqual(len(got), len(cases))
        scored = 0
        for case, score in zip(cases, got):
            w = want[case["id"]]
            if "score" in w:
                self.assertEqual(score, w["score"], case["id"])  # bit for bit: the CLI prints round-trip digits
                scored += 1
            else:
                self.assertIsInstance(score, vlreward.Error, case["id"])
                self.assertEqual(score.message, w["error"], case["id"])
        self.assertGreater(scored, 5)

    def test_one_off_equals_cli(self):
        want = cli_score(DEMO, QUESTION, "No.")
        request = {"image": DEMO, "question": QUESTION, "answer": "No."}
        self.assertEqual(model().score(request), want)
        with open(DEMO, "rb") as f:
            data = f.read()
        self.assertEqual(model().score(dict(request, image=data)), want)
        self.assertEqual(model().score(dict(request, image=bytearray(data))), want)
        import pathlib

        self.assertEqual(model().score(dict(request, image=pathlib.Path(DEMO))), want)
        messages = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": DEMO}},
                                                              {"type": "text", "text": QUESTION}]},
                                 {"role": "assistant", "content": "No."}]}
        self.assertEqual(model().score(messages), want)

    def test_pixels_equal_file(self):
        """A PNG the CLI reads from disk, the same pixels as packed RGB8 rows and the PNG's bytes:
        one score."""
        w, h = 61, 45
        rgb = synthetic_rgb(w, h)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "synthetic.png")
            png = png_rgb8(rgb, w, h)
            with open(path, "wb") as f:
                f.write(png)
            want = cli_score(path, QUESTION, "Yes.")
            request = {"question": QUESTION, "answer": "Yes."}
            self.assertEqual(model().score(dict(request, image=path)), want)
            self.assertEqual(model().score(dict(request, image=png)), want)
            self.assertEqual(model().score(dict(request, images=[vlreward._request.Image(pixels=rgb, width=w,
                                                                                         height=h)])), want)

    @unittest.skipIf(numpy is None, NO_NUMPY)
    def test_numpy_equal_file(self):
        """H x W x 3 uint8 arrays, contiguous or not (a column window, a reversed and subsampled
        view): the score of a PNG file of the same pixels."""
        w, h = 61, 45
        arr = numpy.frombuffer(synthetic_rgb(w, h), numpy.uint8).reshape(h, w, 3)
        wide = numpy.zeros((h, w + 9, 3), numpy.uint8)
        wide[:, 4:w + 4] = arr
        views = {"contiguous": arr, "column window": wide[:, 4:w + 4], "reversed, every other": arr[::-2, ::2],
                 "Fortran order": numpy.asfortranarray(arr)}
        request = {"question": QUESTION, "answer": "Yes."}
        with tempfile.TemporaryDirectory() as tmp:
            for name, view in views.items():
                self.assertEqual(view.flags["C_CONTIGUOUS"], name == "contiguous", name)
                vh, vw = view.shape[:2]
                path = os.path.join(tmp, "view.png")
                with open(path, "wb") as f:
                    f.write(png_rgb8(numpy.ascontiguousarray(view).tobytes(), vw, vh))
                want = cli_score(path, QUESTION, "Yes.")
                self.assertEqual(model().score(dict(request, image=view)), want, name)
        with self.assertRaises(vlreward.InputError) as ctx:
            model().score(dict(request, image=arr.astype(numpy.float32)))
        self.assertIn("H x W x 3 uint8", str(ctx.exception))
        with self.assertRaises(vlreward.InputError):
            model().score(dict(request, image=numpy.zeros((4, 4, 4), numpy.uint8)))

    @unittest.skipIf(PILImage is None, NO_PIL)
    def test_pil_equal_file(self):
        """PIL images in the modes datasets hand out (RGB, RGBA, L, P, and a JPEG as PIL opens it):
        the score of the file PIL writes, as the CLI reads it (RGBA pasted on white as qwen_vl_utils
        does, L and P expanded to RGB)."""
        w, h = 61, 45
        rgb = PILImage.frombytes("RGB", (w, h), synthetic_rgb(w, h))
        alpha = PILImage.frombytes("L", (w, h), bytes((x * 5 + y * 11) % 256 for y in range(h) for x in range(w)))
        rgba = rgb.copy()
        rgba.putalpha(alpha)
        images = {"RGB": rgb, "RGBA": rgba, "L": rgb.convert("L"), "P": rgb.quantize(colors=37)}
        request = {"question": QUESTION, "answer": "Yes."}
        with tempfile.TemporaryDirectory() as tmp:
            scores = {}
            for mode, img in images.items():
                self.assertEqual(img.mode, mode)
                path = os.path.join(tmp, mode + ".png")
                img.save(path)
                want = cli_score(path, QUESTION, "Yes.")
                self.assertEqual(model().score(dict(request, image=img)), want, mode)
                with PILImage.open(path) as reopened:
                    self.assertEqual(model().score(dict(request, image=reopened)), want, mode + " reopened")
                scores[mode] = want
            self.assertEqual(len(set(scores.values())), len(scores), "the modes give different pixels")
        with PILImage.open(DEMO) as jpeg:
            self.assertEqual(model().score({"image": jpeg, "question": QUESTION, "answer": "No."}),
                             cli_score(DEMO, QUESTION, "No."))

    def test_groups(self):
        """{"answers": [...]} gives one score per answer, bit for bit each answer's own request, in
        score and score_batch; a bad answer fails the group naming it."""
        answers = ["No.", "Yes.", [{"type": "text", "text": "The answer is: B"}]]
        own = [model().score({"image": DEMO, "question": QUESTION, "answer": a if isinstance(a, str) else a[0]["text"]})
               for a in answers]
        self.assertEqual(len(set(own)), 3)
        group = {"image": DEMO, "question": QUESTION, "answers": answers}
        self.assertEqual(model().score(group), own)
        messages = {"messages": [{"role": "user", "content": [{"type": "image", "image": DEMO},
                                                              {"type": "text", "text": QUESTION}]}],
                    "answers": answers}
        self.assertEqual(model().score(messages), own)
        self.assertEqual(model().score(dict(group, answers=["Yes."])), [own[1]])
        single = {"image": DEMO, "question": QUESTION, "answer": "No."}
        self.assertEqual(model().score_batch([group, single, group]), [own, own[0], own])
        with self.assertRaises(vlreward.FileError) as ctx:
            model().score(dict(group, answers=["No.", [{"type": "image", "image": "no/such.png"}]]))
        self.assertTrue(str(ctx.exception).startswith("answers[1]: "), str(ctx.exception))
        for bad, message in ((dict(group, answer="No."), 'either "answer" or "answers"'),
                             (dict(group, answers=[]), "answers: 0 answers (a group has 1 to 1024)"),
                             (dict(group, answers="No."), "answers: expected a list"),
                             (dict(group, answers=["No.", 7]), "answers[1]: expected a string or a list"),
                             ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                               "answers": ["b"]}, "the messages end with the user turn")):
            with self.assertRaises(vlreward.InputError) as ctx:
                model().score(bad)
            self.assertIn(message, str(ctx.exception))

    def test_batch_of_one_prompt(self):
        """score_batch hands consecutive requests of one prompt to the library in one call, which
        scores them as a group: the same values as request by request, failures in their places
        (one the library refuses, one Python refuses, neither stopping the others), and the CLI's
        scores for the same answers."""
        answers = ["No.", "Yes.", "The answer is: B", "Purple is not the highest."]
        same = [{"image": DEMO, "question": QUESTION, "answer": a} for a in answers]
        unreadable = {"messages": None, "answer": "x"}  # Python refuses it
        no_image = {"messages": [{"role": "user", "content": [{"type": "image", "image": DEMO},
                                                              {"type": "text", "text": QUESTION}]},
                                 {"role": "assistant", "content": [{"type": "image", "image": "no/such.png"}]}]}
        other = {"image": DEMO, "question": "What colour is the first bar?", "answer": "Blue."}
        group = {"image": DEMO, "question": QUESTION, "answers": answers[:2]}
        requests = same[:2] + [unreadable, no_image] + same[2:] + [group, other, same[0]]
        got = model().score_batch(requests, errors="return")
        for i, request in enumerate(requests):
            try:
                want = model().score(request)
            except vlreward.Error as e:
                self.assertIsInstance(got[i], type(e), i)
                self.assertEqual(got[i].message, e.message, i)
                continue
            self.assertEqual(got[i], want, i)
        self.assertIsInstance(got[2], vlreward.InputError)
        self.assertIsInstance(got[3], vlreward.FileError)
        cli_scores = [float(line) for line in cli("score", "--model", MODEL, "--threads", "2", "--image", DEMO,
                                                  "--question", QUESTION, *sum((["--answer", a] for a in answers), []))
                      .split()]
        self.assertEqual(got[:2] + got[4:6], cli_scores)
        self.assertEqual(got[6], cli_scores[:2])

    def test_ctrl_c_stops_a_call(self):
        """SIGINT during a long score_batch: KeyboardInterrupt within a fraction of a second, although
        the call under way (32,000 tokens) takes many seconds; the Model scores on afterwards as a
        fresh one does."""
        script = """if True:
            import sys, time, vlreward
            m = vlreward.Model(sys.argv[1], threads=2)
            long = {"question": "hello world " * 16000, "answer": "a"}
            short = {"image": sys.argv[2], "question": "q", "answer": "No."}
            print("ready", flush=True)
            try:
                m.score_batch([long, long, short])
                print("finished", flush=True)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
            print(repr(m.score(short)), flush=True)
        """
        child = subprocess.Popen([sys.executable, "-c", script, MODEL, DEMO], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(child.stdout.readline(), "ready\n")
            time.sleep(1.5)  # well inside the first request
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            words = child.stdout.readline().split()
            self.assertEqual(words[:1], ["interrupted"], "the batch ran to its end: no KeyboardInterrupt")
            self.assertLess(float(words[1]) - sent, 2.0, "KeyboardInterrupt came late")
            after = float(child.stdout.readline())
            self.assertEqual(after, model().score({"image": DEMO, "question": "q", "answer": "No."}))
            self.assertEqual(child.wait(timeout=60), 0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

    def test_batch_and_threads(self):
        answers = ["No.", "Yes.", "The answer is: B", "Purple is not the highest."]
        requests = [{"image": DEMO, "question": QUESTION, "answer": a} for a in answers]
        sequential = [model().score(r) for r in requests]
        self.assertEqual(model().score_batch(requests), sequential)
        self.assertEqual(len(set(sequential)), len(answers))
        results = {}

        def worker(k):
            results[k] = [model().score(r) for r in requests[k:] + requests[:k]]

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(4):
            self.assertEqual(results[k], sequential[k:] + sequential[:k])

    def test_errors(self):
        m = model()
        with self.assertRaises(vlreward.InputError) as ctx:
            m.score({"messages": [{"role": "user", "content": "hi"}]})
        self.assertIn("the last message is a user turn", str(ctx.exception))
        self.assertEqual(ctx.exception.status, "input error")
        with self.assertRaises(vlreward.FileError):
            m.score({"image": "no/such/image.png", "question": "q", "answer": "a"})
        with self.assertRaises(vlreward.FormatError):
            m.score({"image": b"this is not an image", "question": "q", "answer": "a"})
        with self.assertRaises(vlreward.InputError):
            m.score({"image": 42, "question": "q", "answer": "a"})
        with self.assertRaises(vlreward.InputError):
            m.score({"question": "q"})
        with self.assertRaises(vlreward.InputError):
            m.score("not a dict")
        if numpy is not None:
            with self.assertRaises(vlreward.InputError):
                m.score({"image": numpy.zeros((4, 4), numpy.uint8), "question": "q", "answer": "a"})
        good = {"image": DEMO, "question": QUESTION, "answer": "No."}
        bad = {"messages": [{"role": "robot", "content": "x"}]}
        with self.assertRaises(vlreward.InputError) as ctx:
            m.score_batch([good, bad])
        self.assertIn("request 1: ", str(ctx.exception))
        mixed = m.score_batch([good, bad, good], errors="return")
        self.assertEqual(mixed[0], mixed[2])
        self.assertIsInstance(mixed[1], vlreward.InputError)
        self.assertIn('unknown role "robot"', mixed[1].message)
        with self.assertRaises(ValueError):
            m.score_batch([good], errors="ignore")
        with self.assertRaises(vlreward.FileError):
            vlreward.Model("no/such/model")
        with self.assertRaises(ValueError):
            vlreward.Model(MODEL, precision="fp8")

    def test_model_from_the_hub_cache(self):
        """ORG/NAME[@REV] resolves in the Hugging Face cache as `vlreward --model` does; absent, the
        error names `vlreward pull`."""
        commit = "0123456789abcdef0123456789abcdef01234567"
        with tempfile.TemporaryDirectory() as cache:
            base = os.path.join(cache, "models--tiny--tiny-a")
            os.makedirs(os.path.join(base, "refs"))
            os.makedirs(os.path.join(base, "snapshots", commit))
            with open(os.path.join(base, "refs", "main"), "w") as f:
                f.write(commit)
            for name in os.listdir(MODEL):
                os.symlink(os.path.abspath(os.path.join(MODEL, name)), os.path.join(base, "snapshots", commit, name))
            saved = os.environ.get("HF_HUB_CACHE")
            os.environ["HF_HUB_CACHE"] = cache
            try:
                request = {"image": DEMO, "question": QUESTION, "answer": "No."}
                want = model().score(request)
                for name in ("tiny/tiny-a", "tiny/tiny-a@main", "tiny/tiny-a@" + commit):
                    m = vlreward.Model(name, threads=2)
                    self.assertEqual(m.score(request), want)
                    self.assertEqual(os.path.realpath(m.path), os.path.realpath(os.path.join(base, "snapshots", commit)))
                    m.close()
                with self.assertRaises(vlreward.FileError) as ctx:
                    vlreward.Model("tiny/absent")
                self.assertIn("vlreward pull tiny/absent", str(ctx.exception))
                with self.assertRaises(vlreward.FileError) as ctx:
                    vlreward.Model("tiny/tiny-a@v9")
                self.assertIn("vlreward pull tiny/tiny-a --revision v9", str(ctx.exception))
            finally:
                if saved is None:
                    del os.environ["HF_HUB_CACHE"]
                else:
                    os.environ["HF_HUB_CACHE"] = saved

    def test_info_equals_cli(self):
        self.assertEqual(model().info(), json.loads(cli("info", "--model", MODEL, "--json")))

    def test_close(self):
        m = vlreward.Model(MODEL, threads=1, vision_cache_mb=0)
        m.close()
        with self.assertRaises(ValueError):
            m.score({"image": DEMO, "question": QUESTION, "answer": "No."})


class Integrations(unittest.TestCase):
    def test_trl_conversational(self):
        with open(DEMO, "rb") as f:
            data = f.read()
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        completions = [[{"role": "assistant", "content": "No."}], [{"role": "assistant", "content": "Yes."}]]
        fn = vtrl.reward_function(model())
        # what GRPOTrainer passes: the dataset's other columns, one value per completion, and its state
        got = fn(prompts=[prompt, prompt], completions=completions, completion_ids=[[1], [2]],
                 images=[[DEMO], [data]], trainer_state=None)
        want = [model().score({"image": DEMO, "question": QUESTION, "answer": a}) for a in ("No.", "Yes.")]
        self.assertEqual(got, want)
        self.assertEqual(fn.__name__, "vlreward_reward")

    def test_trl_plain_and_failures(self):
        fn = vtrl.reward_function(model(), failed=-99.0)
        got = fn(prompts=[QUESTION, QUESTION], completions=["No.", "Yes."], image=[DEMO, "missing.png"])
        self.assertEqual(got, [model().score({"image": DEMO, "question": QUESTION, "answer": "No."}), -99.0])

    def test_verl(self):
        fn = vverl.make_compute_score(model())
        got = fn("chartqa", "No.", "B", extra_info={"question": QUESTION, "image": DEMO})
        self.assertEqual(got, cli_score(DEMO, QUESTION, "No."))


class HttpClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = subprocess.Popen([CLI, "serve", "--model", MODEL, "--port", "0", "--threads", "2",
                                       "--image-root", ".", "--quiet"], stderr=subprocess.PIPE, text=True)
        line = ""
        while "listening on" not in line:
            line = cls.server.stderr.readline()
            if not line:
                raise RuntimeError("vlreward serve exited before listening")
        cls.url = re.search(r"(http://\S+)", line).group(1)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=30)
        cls.server.stderr.close()

    def test_scores_equal_model(self):
        client = vlreward.Client(self.url)
        with open(DEMO, "rb") as f:
            data = f.read()
        requests = [{"image": DEMO, "question": QUESTION, "answer": "No."},
                    {"image": data, "question": QUESTION, "answer": "Yes."},
                    {"messages": [{"role": "user", "content": "hi"}]}]
        want = model().score_batch(requests, errors="return")
        self.assertEqual(client.score(requests[0]), want[0])
        got = client.score_batch(requests, errors="return")
        self.assertEqual(got[:2], want[:2])
        self.assertIsInstance(got[2], vlreward.Error)
        self.assertEqual(got[2].message, want[2].message)
        with self.assertRaises(vlreward.InputError):
            client.score(requests[2])
        if numpy is not None:
            w, h = 33, 29
            arr = numpy.frombuffer(synthetic_rgb(w, h), numpy.uint8).reshape(h, w, 3)
            request = {"image": arr, "question": QUESTION, "answer": "No."}
            self.assertEqual(client.score(request), model().score(request))
        self.assertEqual(client.info()["text"], model().info()["text"])
        group = {"image": DEMO, "question": QUESTION, "answers": ["No.", "Yes."]}
        self.assertEqual(client.score(group), model().score(group))
        self.assertEqual(client.score_batch([group, requests[0]]), [model().score(group), want[0]])
        self.assertEqual(client.score_batch([group], progress=True), [model().score(group)])
        with self.assertRaises(vlreward.InputError) as ctx:
            client.score(dict(group, answers=["No.", [{"type": "image", "image": "no/such.png"}]]))
        self.assertIn("answers[1]: ", str(ctx.exception))
        with self.assertRaises(vlreward.NetworkError):
            vlreward.Client("http://127.0.0.1:9").score(requests[0])


if __name__ == "__main__":
    unittest.main()
