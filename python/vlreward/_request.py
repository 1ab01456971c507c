"""Requests in the JSON Lines format of `vlreward score`, as Python dicts, with images that may also be
bytes, PIL images or NumPy arrays. One normal form serves both the in-process Model (C structs) and
the Client (JSON over HTTP)."""
import base64
import os
import struct
import zlib

from ._errors import InputError

# per-image keys of qwen_vl_utils, passed through
IMAGE_OPTIONS = ("min_pixels", "max_pixels", "resized_height", "resized_width")


class Image:
    """One image of a request: `source` is a str reference (path, URL, data URI), `data` encoded
    bytes, or `pixels` packed RGB8 rows of `width` x `height`."""

    __slots__ = ("source", "data", "pixels", "width", "height", "options")

    def __init__(self, source=None, data=None, pixels=None, width=0, height=0, options=None):
        self.source, self.data, self.pixels = source, data, pixels
        self.width, self.height = width, height
        self.options = options or {}


def _is_pil(obj):
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "mode") and hasattr(obj, "tobytes")


def _pil_rgb(img):
    """qwen_vl_utils.to_rgb: RGBA pasted on white with its alpha as the mask, anything else convert("RGB")."""
    if img.mode == "RGBA":
        from PIL import Image as PILImage

        white = PILImage.new("RGB", img.size, (255, 255, 255))
        white.paste(img, mask=img.split()[3])
        return white
    return img if img.mode == "RGB" else img.convert("RGB")


def to_image(obj, where, options=None):
    """The Image for one image value of a request; InputError naming `where` for anything else."""
    if isinstance(obj, Image):
        return obj
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if isinstance(obj, str):
        if not obj:
            raise InputError(f"{where}: empty image reference")
        return Image(source=obj, options=options)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return Image(data=bytes(obj), options=options)
    if _is_pil(obj):
        rgb = _pil_rgb(obj)
        return Image(pixels=rgb.tobytes(), width=rgb.size[0], height=rgb.size[1], options=options)
    if hasattr(obj, "__array_interface__") and hasattr(obj, "shape") and hasattr(obj, "dtype"):
        if len(obj.shape) != 3 or obj.shape[2] != 3 or str(obj.dtype) != "uint8":
            raise InputError(f"{where}: a NumPy image must be an H x W x 3 uint8 array, "
                             f"got shape {tuple(obj.shape)} and dtype {obj.dtype}")
        import numpy

        packed = numpy.ascontiguousarray(obj)
        return Image(pixels=packed.tobytes(), width=int(obj.shape[1]), height=int(obj.shape[0]), options=options)
    raise InputError(f"{where}: expected a path, URL, data URI, bytes, PIL image or NumPy array, "
                     f"found {type(obj).__name__}")


def _image_item(item, where):
    """An image content item {"type": "image", "image": SRC} | {"image": SRC} | {"type": "image_url", ...}."""
    options = {}
    for key in IMAGE_OPTIONS:
        if key in item:
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{where}.{key}: expected an integer, found {type(value).__name__}")
            options[key] = value
    if "image" in item:
        return to_image(item["image"], where + ".image", options)
    url = item.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if url is None:
        raise InputError(f"{where}: image item without an image")
    return to_image(url, where + ".image_url", options)


def _content(content, where):
    if isinstance(content, str):
        return [content]
    if not isinstance(content, (list, tuple)):
        raise InputError(f"{where}: expected a string or a list of items, found {type(content).__name__}")
    items = []
    for j, item in enumerate(content):
        at = f"{where}[{j}]"
        if isinstance(item, str):
            items.append(item)
        elif not isinstance(item, dict):
            items.append(to_image(item, at))  # a bare image value
        elif item.get("type") in ("image", "image_url") or "image" in item or "image_url" in item:
            items.append(_image_item(item, at))
        elif item.get("type", "text") == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise InputError(f"{at}.text: expected a string, found {type(text).__name__}")
            items.append(text)
        else:
            raise InputError(f"{at}: unknown item type {item.get('type')!r}")
    return items


MAX_ANSWERS = 1024  # answers in one group (the library's VLR_MAX_ANSWERS)


def _answers(answers):
    """The assistant turns of a group: each answer a string or a content list."""
    if not isinstance(answers, (list, tuple)):
        raise InputError(f"answers: expected a list, found {type(answers).__name__}")
    if not 1 <= len(answers) <= MAX_ANSWERS:
        raise InputError(f"answers: {len(answers)} answers (a group has 1 to {MAX_ANSWERS})")
    out = []
    for i, a in enumerate(answers):
        if not isinstance(a, (str, list, tuple)):
            raise InputError(f"answers[{i}]: expected a string or a list of items, found {type(a).__name__}")
        out.append(_content(a, f"answers[{i}]"))
    return out


def parse(request):
    """(messages, answers) for a request dict: messages [(role, [str | Image, ...]), ...] from
    {"messages": [...]} or the shorthand {"image" | "images", "question", "answer"}; answers None,
    or for a group ("answers": [...] in place of the assistant turn) the list of the answers'
    items, the messages then ending with the user turn they answer."""
    if not isinstance(request, dict):
        raise InputError(f"expected a request dict, found {type(request).__name__}")
    group = "answers" in request
    if group and "answer" in request:
        raise InputError('give either "answer" or "answers", not both')
    if "messages" in request:
        messages = request["messages"]
        if not isinstance(messages, (list, tuple)):
            raise InputError(f"messages: expected a list, found {type(messages).__name__}")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise InputError(f"messages[{i}]: expected a dict, found {type(m).__name__}")
            role = m.get("role")
            if not isinstance(role, str):
                raise InputError(f"messages[{i}].role: expected a string, found {type(role).__name__}")
            out.append((role, _content(m.get("content", ""), f"messages[{i}].content")))
        if group and out and out[-1][0] == "assistant":
            raise InputError('with "answers", the messages end with the user turn they answer '
                             "(the last message is an assistant turn)")
    elif "question" in request or "answer" in request or group:
        question, answer = request.get("question", ""), request.get("answer")
        if not group and not isinstance(answer, str):
            raise InputError(f"answer: expected a string (the assistant turn to score), found {type(answer).__name__}")
        if not isinstance(question, str):
            raise InputError(f"question: expected a string, found {type(question).__name__}")
        images = request.get("images")
        if images is None:
            images = [] if request.get("image") is None else [request["image"]]
            where = "image"
        else:
            where = "images"
            if not isinstance(images, (list, tuple)):
                raise InputError(f"images: expected a list, found {type(images).__name__}")
        user = [to_image(img, f"{where}[{k}]" if where == "images" else where) for k, img in enumerate(images)]
        out = [("user", user + [question])] + ([] if group else [("assistant", [answer])])
    else:
        raise InputError('no "messages" and no "question"/"answer": nothing to score')
    return out, _answers(request["answers"]) if group else None


# ---- the JSON form, for the HTTP client ------------------------------------------------------------

def _media_type(data):
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return "image"


def png_rgb8(pixels, width, height):
    """A lossless PNG of packed RGB8 rows (zlib from the standard library): decoding it gives the
    same pixels back, so the server scores what the caller had."""
    row = width * 3
    raw = b"".join(b"\x00" + pixels[y * row:(y + 1) * row] for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def image_json(img):
    if img.source is not None:
        ref = img.source
    else:
        data = img.data if img.data is not None else png_rgb8(img.pixels, img.width, img.height)
        ref = f"data:{_media_type(data)};base64," + base64.b64encode(data).decode("ascii")
    return dict({"type": "image", "image": ref}, **img.options)


def _content_json(items):
    return [{"type": "text", "text": x} if isinstance(x, str) else image_json(x) for x in items]


def to_json(request):
    """The request as a JSON-ready dict with every image a reference (in-memory ones as data URIs)."""
    messages, answers = parse(request)
    out = {"messages": [{"role": role, "content": _content_json(items)} for role, items in messages]}
    if answers is not None:
        out["answers"] = [_content_json(items) for items in answers]
    if "id" in request:
        out["id"] = request["id"]
    return out
