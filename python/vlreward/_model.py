"""vlreward.Model: the C library in this process."""
import os
import re
import threading

from ._batch import run_batch
from ._errors import Error, FileError, ModelError, from_status
from ._request import IMAGE_OPTIONS, parse

try:
    from . import _vlreward as _core
except ImportError as e:  # reported when a Model is made, so that Client works without the extension
    _core = None
    _import_error = e


def _item_tuple(x):
    """(kind, payload, width, height, stride, min_pixels, max_pixels, resized_height, resized_width)"""
    if isinstance(x, str):
        return (_core.ITEM_TEXT, x, 0, 0, 0, 0, 0, 0, 0)
    opts = tuple(x.options.get(k, 0) for k in IMAGE_OPTIONS)
    if x.source is not None:
        return (_core.ITEM_IMAGE, x.source, 0, 0, 0) + opts
    if x.data is not None:
        return (_core.ITEM_IMAGE_BYTES, x.data, 0, 0, 0) + opts
    return (_core.ITEM_IMAGE_PIXELS, x.pixels, x.width, x.height, x.width * 3) + opts


_RUN_REQUESTS = 256  # library requests per call of score_batch (its progress line moves per call)


def _library_requests(request):
    """(the library requests, whether it is a group, the prompt they share): a group gives one
    request per answer; the prompt is every turn but the answers (what consecutive requests must
    share to be scored as one batch)."""
    messages, answers = parse(request)
    turns = [(role, [_item_tuple(x) for x in items]) for role, items in messages]
    if answers is None:
        return [turns], False, turns[:-1]
    return [turns + [("assistant", [_item_tuple(x) for x in items])] for items in answers], True, turns


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9._/-]+")


def resolve_model_dir(path):
    """A model directory as given, or ORG/NAME[@REV] looked up in the Hugging Face cache the way
    `vlreward --model` does it (the cache only, no network; HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME):
    refs/REV names the commit whose snapshots/COMMIT folder is returned."""
    if os.path.isdir(path):
        return path
    repo, _, rev = path.partition("@")
    rev = rev or "main"
    if not _REPO_ID.fullmatch(repo) or ".." in repo or not _REVISION.fullmatch(rev) or ".." in rev:
        return path  # not a repository id: the loader says which file it cannot open
    env = lambda name: os.environ.get(name) or None
    home = env("HF_HOME") or os.path.join(env("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    cache = os.path.expanduser(env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub"))
    base = os.path.join(cache, "models--" + repo.replace("/", "--"))
    commit = rev if re.fullmatch(r"[0-9a-f]{40}", rev) else None
    if commit is None:
        try:
            with open(os.path.join(base, "refs", rev)) as f:
                commit = f.read().strip()
        except OSError:
            commit = None
    snapshot = os.path.join(base, "snapshots", commit) if commit else None
    if snapshot and os.path.isdir(snapshot):
        return snapshot
    pull = f"vlreward pull {repo}" + (f" --revision {rev}" if "@" in path else "")
    raise FileError(f"'{path}' is not a directory, and {repo}@{rev} is not in the Hugging Face cache ({cache}); "
                    f"download it with `{pull}`", "file error")


class Model:
    """A loaded model. `path` is a model directory, or ORG/NAME[@REV] of the Hugging Face cache (after
    `vlreward pull ORG/NAME`); threads=None uses every online CPU; precision is
    "auto", "f32", "bf16" or "int8"; vision_cache_mb caps each session's cache of vision-tower
    outputs (0 disables it); max_tokens=None is the model's context length. Relative image paths
    resolve against base_dir (None: the current directory)."""

    def __init__(self, path, *, threads=None, precision="auto", vision_cache_mb=512, max_tokens=None,
                 base_dir=None):
        if _core is None:
            raise ImportError(f"vlreward's extension is not built ({_import_error}): run `make python`")
        self.path = resolve_model_dir(os.fspath(path))
        self.base_dir = base_dir
        try:
            self._m = _core.Model(self.path, threads or 0, precision, int(vision_cache_mb), max_tokens or 0)
        except OSError as e:
            if len(e.args) == 2 and isinstance(e.args[0], int):
                raise from_status(e.args[0], f"{self.path}: {e.args[1]}", _core.status_str(e.args[0])) from None
            raise

    def score(self, request, *, base_dir=None):
        """The reward of one request (a dict in the `vlreward score` line format) as a float; for a
        group ("answers": [...]) the list of its answers' rewards, each bit for bit the score of that
        answer as a request of its own (the prompt runs once, the answers as one batch after it).
        Ctrl-C stops a call under way (KeyboardInterrupt) when it is made from the main thread."""
        requests, group, _ = _library_requests(request)
        value = self._values([(requests, group)], base_dir)[0]
        if isinstance(value, Error):
            raise value
        return value

    def score_batch(self, requests, *, errors="raise", progress=False, base_dir=None):
        """Scores of the requests, in order. errors="raise" raises the first failure (its message
        names the request's index); errors="return" puts the vlreward.Error in its place.
        Consecutive requests that differ only in their answer (a GRPO batch's completions of one
        prompt, groups of it) are scored in one library call, as one batch after their prompt."""
        return run_batch(None, requests, errors, progress, lambda rs: self._score_runs(rs, base_dir))

    def _score_runs(self, requests, base_dir):
        """Each request's score or Error, in order: the requests of one prompt, up to _RUN_REQUESTS
        answers, go to one vlr_score_batch, which finds the runs itself (this only groups the calls)."""
        pending, prompt, size = [], None, 0  # pending: (library requests, group) or an Error
        for request in requests:
            try:
                entry = _library_requests(request)
            except Error as e:
                pending.append(e)
                continue
            if pending and (entry[2] != prompt or size + len(entry[0]) > _RUN_REQUESTS):
                yield from self._values(pending, base_dir)
                pending, size = [], 0
            pending.append(entry[:2])
            prompt, size = entry[2], size + len(entry[0])
        yield from self._values(pending, base_dir)

    def _values(self, entries, base_dir):
        """One library call for the entries' requests; each entry's float, list (a group) or Error."""
        flat = [r for entry in entries if not isinstance(entry, Error) for r in entry[0]]
        results = self._m.score(flat, base_dir if base_dir is not None else self.base_dir,
                                threading.current_thread() is threading.main_thread()) if flat else []
        values, at = [], 0
        for entry in entries:
            if isinstance(entry, Error):
                values.append(entry)
                continue
            requests, group = entry
            mine, at = results[at:at + len(requests)], at + len(requests)
            failed = next(((i, r) for i, r in enumerate(mine) if r[0] != _core.OK), None)
            if failed is None:
                scores = [score for _, score, _ in mine]
                values.append(scores if group else scores[0])
            else:
                i, (status, _, message) = failed
                values.append(from_status(status, f"answers[{i}]: {message}" if group else message,
                                          _core.status_str(status)))
        return values

    def info(self):
        """The architecture and compute summary: the dict `vlreward info --json` prints."""
        return self._m.info()

    def close(self):
        """Frees the weights now instead of when the Model is garbage-collected."""
        self._m.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"vlreward.Model({self.path!r})"


__all__ = ["Model", "ModelError"]
