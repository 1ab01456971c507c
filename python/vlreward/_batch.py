"""score_batch's loop, shared by Model and Client: per-item errors raised or returned, a progress
line on stderr."""
import sys
import time

from ._errors import Error


def run_batch(score_one, requests, errors, progress):
    if errors not in ("raise", "return"):
        raise ValueError(f'errors: expected "raise" or "return", got {errors!r}')
    requests = list(requests)
    out = []
    start = time.monotonic()
    for i, request in enumerate(requests):
        try:
            out.append(score_one(request))
        except Error as e:
            if errors == "raise":
                raise type(e)(f"request {i}: {e.message}", e.status) from e
            out.append(e)
        if progress:
            elapsed = time.monotonic() - start
            sys.stderr.write(f"\r{i + 1}/{len(requests)} | {(i + 1) / max(elapsed, 1e-9):.2f} req/s")
            sys.stderr.flush()
    if progress and requests:
        sys.stderr.write("\n")
    return out
