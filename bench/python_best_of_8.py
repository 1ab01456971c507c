"""Best-of-8 through the Python package on the tiny model: one group request (model.score) and the same
eight answers as eight consecutive requests (model.score_batch, the form the TRL reward function sends);
the median wall and CPU time of 15 calls each.

    PYTHONPATH=python python3 bench/python_best_of_8.py [IMAGE [THREADS]]

IMAGE is a file of tests/reference/images (default demo.jpg), THREADS the model's (default 1).
docs/python.md (Best-of-N) quotes it."""
import os
import statistics
import sys
import time

import vlreward

REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference")


def median_ms(f):
    f()  # warm: the session, the vision cache
    runs = []
    for _ in range(15):
        wall, cpu = time.perf_counter(), time.process_time()
        f()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return statistics.median(w for w, _ in runs) * 1000, statistics.median(c for _, c in runs) * 1000


def main():
    image = os.path.join(REF, "images", sys.argv[1] if len(sys.argv) > 1 else "demo.jpg")
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    model = vlreward.Model(os.path.join(REF, "models", "tiny-a"), threads=threads)
    question = "Is purple the highest value in this chart? Answer with a short explanation."
    answers = [f"Answer {i}: " + " ".join(f"the purple bar is {i * 7 + k} units high and the others are lower"
                                          for k in range(8)) for i in range(8)]  # about 116 tokens each
    group = {"image": image, "question": question, "answers": answers}
    singles = [{"image": image, "question": question, "answer": a} for a in answers]
    assert model.score_batch(singles) == model.score(group)
    g, b = median_ms(lambda: model.score(group)), median_ms(lambda: model.score_batch(singles))
    print(f"{os.path.basename(image)}, threads {threads}: score(group) wall {g[0]:.1f} ms, cpu {g[1]:.1f} ms; "
          f"score_batch wall {b[0]:.1f} ms, cpu {b[1]:.1f} ms")


if __name__ == "__main__":
    main()
