"""vlreward.Client: the same score / score_batch over HTTP to `vlreward serve`, standard library only."""
import json
import urllib.error
import urllib.request

from ._batch import run_batch
from ._errors import Error, InputError, LimitError, NetworkError, NumericError
from ._request import to_json

_BY_HTTP = {413: LimitError, 422: InputError, 500: NumericError}


class Client:
    """A `vlreward serve` at url (e.g. "http://127.0.0.1:8000"). In-memory images travel as data URIs
    (pixels as lossless PNG), so scores equal the in-process ones."""

    def __init__(self, url, *, timeout=3600):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _post(self, body):
        data = json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + "/score", data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", str(e))
            except (ValueError, AttributeError):
                message = str(e)
            raise _BY_HTTP.get(e.code, Error)(message, f"HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise NetworkError(f"{self.url}: {e}") from None

    def score(self, request):
        """A float, or for a group ("answers": [...]) the list of the answers' scores."""
        return _result(self._post(to_json(request)))

    def score_batch(self, requests, *, errors="raise", progress=False):
        """One POST for the whole list ({"requests": [...]}) unless progress is asked for."""
        if progress:
            return run_batch(self.score, requests, errors, progress)
        results = self._post({"requests": [to_json(r) for r in requests]})["results"]
        return run_batch(_result, results, errors, False)

    def info(self):
        try:
            with urllib.request.urlopen(self.url + "/info", timeout=self.timeout) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise NetworkError(f"{self.url}: {e}") from None


def _result(item):
    if "error" in item:
        raise InputError(item["error"])
    return item["scores"] if "scores" in item else item["score"]
