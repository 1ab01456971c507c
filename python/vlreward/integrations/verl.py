"""A reward function in verl's custom-reward shape: compute_score(data_source, solution_str,
ground_truth, extra_info=None) -> float. The question and the image come from extra_info (the
dataset's "extra_info" column): extra_info["question"] (or "prompt"), extra_info["image"] or
extra_info["images"]. verl loads the function by name from a file (custom_reward_function.path and
.name), so the module-level compute_score takes its model from the environment: VLREWARD_URL (a
`vlreward serve`) or VLREWARD_MODEL (a model directory loaded once per process)."""
import os

from .._client import Client
from .._errors import Error

_default = None


def _from_environment():
    global _default
    if _default is None:
        if os.environ.get("VLREWARD_URL"):
            _default = Client(os.environ["VLREWARD_URL"])
        elif os.environ.get("VLREWARD_MODEL"):
            from .._model import Model

            _default = Model(os.environ["VLREWARD_MODEL"])
        else:
            raise Error("vlreward.integrations.verl: set VLREWARD_URL or VLREWARD_MODEL")
    return _default


def request_from(solution_str, extra_info):
    info = extra_info or {}
    question = info.get("question", info.get("prompt", ""))
    if not isinstance(question, str):
        raise Error("extra_info: the question must be a string")
    request = {"question": question, "answer": solution_str}
    if info.get("images") is not None:
        request["images"] = list(info["images"])
    elif info.get("image") is not None:
        request["image"] = info["image"]
    return request


def make_compute_score(model_or_client):
    """compute_score bound to a given vlreward.Model or vlreward.Client."""

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        return model_or_client.score(request_from(solution_str, extra_info))

    return compute_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return _from_environment().score(request_from(solution_str, extra_info))
