"""A reward function for TRL's GRPOTrainer.

GRPOTrainer calls each reward function as f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., **columns), where columns are the dataset's other columns, one value per
completion (for a vision dataset, "image" or "images"). Prompts and completions are strings (plain
format) or lists of {"role", "content"} messages (conversational format), where an image item of the
prompt is a bare {"type": "image"} placeholder filled from the image column in order.
"""
from .._errors import Error


def _as_list(images):
    if images is None:
        return []
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _conversation(prompt, completion, images):
    """The request dict for one (prompt, completion) pair: placeholders take the images in order;
    images with no placeholder go first in the first user turn."""
    pending = list(images)
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": [{"type": "image", "image": img} for img in pending] +
                     [{"type": "text", "text": prompt}]}]
        pending = []
    else:
        messages = []
        for m in prompt:
            content = m.get("content", "")
            if isinstance(content, list):
                items = []
                for item in content:
                    is_image = isinstance(item, dict) and (item.get("type") == "image" or "image" in item)
                    if is_image and item.get("image") is None:
                        if not pending:
                            raise Error("the prompt has more image placeholders than the row has images")
                        item = dict(item, type="image", image=pending.pop(0))
                    items.append(item)
                content = items
            messages.append({"role": m["role"], "content": content})
        if pending:
            first_user = next((m for m in messages if m["role"] == "user"), None)
            if first_user is None:
                raise Error("images but no user turn to put them in")
            content = first_user["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            first_user["content"] = [{"type": "image", "image": img} for img in pending] + content
    if isinstance(completion, str):
        messages.append({"role": "assistant", "content": completion})
    else:
        messages.extend({"role": m["role"], "content": m.get("content", "")} for m in completion)
    return {"messages": messages}


def reward_function(model_or_client, *, image_key=None, failed=None):
    """A GRPOTrainer reward function scoring each (prompt, completion) with a vlreward.Model or
    vlreward.Client. image_key names the image column (default: "images", else "image"). A request
    that cannot be scored gets `failed` (None: TRL ignores it in the weighted sum)."""

    def vlreward_reward(prompts, completions, **kwargs):
        key = image_key or ("images" if "images" in kwargs else "image")
        column = kwargs.get(key)
        requests = [_conversation(p, c, _as_list(column[i]) if column is not None else [])
                    for i, (p, c) in enumerate(zip(prompts, completions))]
        scores = model_or_client.score_batch(requests, errors="return")
        return [failed if isinstance(s, Error) else s for s in scores]

    vlreward_reward.__name__ = "vlreward_reward"  # TRL logs rewards under the function's name
    return vlreward_reward
