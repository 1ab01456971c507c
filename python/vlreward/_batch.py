"""score_batch's loop, shared by Model and Client: per-item errors raised or returned, a progress
line on stderr."""
import sys
import time

from ._errors import Error


def _catch(score_one, request):
    try:
        return score_one(request)
    except Error as e:
        return e


def run_batch(score_one, requests, errors, progress, score_all=None):
    """score_all(requests), when given, replaces score_one on each request: an iterator of each
    request's score or Error, in order (Model's scores consecutive requests in one library call)."""
    if errors not in ("raise", "return"):
        raise ValueError(f'errors: expected "raise" or "return", got {errors!r}')
    requests = list(requests)
    values = score_all(requests) if score_all else (_catch(score_one, r) for r in requests)
    out = []
    start = time.monotonic()
    for i, value in enumerate(values):
        if isinstance(value, Error) and errors == "raise":
            raise type(value)(f"request {i}: {value.message}", value.status) from value
        out.append(value)
        if progress:
            elapsed = time.monotonic() - start
            sys.stderr.write(f"\r{i + 1}/{len(requests)} | {(i + 1) / max(elapsed, 1e-9):.2f} req/s")
            sys.stderr.flush()
    if progress and requests:
        sys.stderr.write("\n")
    return out
