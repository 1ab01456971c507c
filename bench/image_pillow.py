#!/usr/bin/env python3
"""The upstream Python image front end, timed on the JPEG our image bench uses (bench/image.md).

What it runs is the reference preprocessing of tests/reference/README.md ("Images", steps 2-3),
written out with Pillow and numpy the way qwen_vl_utils.fetch_image and transformers'
Qwen2VLImageProcessor (slow) do it, from encoded bytes in memory to pixel_values:

  Image.open + load (libjpeg-turbo) -> to_rgb (convert("RGB")) -> qwen_vl_utils smart_resize
  -> Image.resize(BICUBIC) -> np.array -> the processor's smart_resize and its PIL resize
  (same size: a copy) -> float32(float64(x) * (1/255)) -> (x - mean) / std in float32
  -> channels first, frame repeated to temporal_patch_size 2 -> the processor's 9-d
  reshape / transpose(0, 3, 6, 4, 7, 2, 1, 5, 8) -> [grid_h * grid_w, 1176] float32.

The input is made exactly as tests/test_image.c makes it: tests/reference/images/retina_1000x700.jpg
upscaled to 1920x1080 with Pillow's bicubic (byte-identical to ours) and saved by Pillow's libjpeg-turbo
at quality 90, 4:2:0 (200,801 bytes, the same bytes as the C bench's file). --jpeg times another file.
--write-jpeg and --write-pixels save the input and the output for a side-by-side check with a C
driver. Everything runs on one thread (OMP/OpenBLAS/MKL thread counts set to 1 before numpy loads;
Pillow's resize is single-threaded). Timings are wall clock, median of --runs.

Not a project dependency: Debian's python3-pil and python3-numpy, used by this bench only
(`apt-get install -y python3-pil python3-numpy`; run with /usr/bin/python3 if another python3
shadows it). Usage, from the repository root:
    /usr/bin/python3 bench/image_pillow.py [--runs 11] [--jpeg FILE] [--write-jpeg OUT] [--write-pixels OUT]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image  # noqa: E402

FACTOR = 28  # patch 14 x merge 2
QWEN_MIN_PIXELS = 4 * 28 * 28  # qwen_vl_utils defaults
QWEN_MAX_PIXELS = 16384 * 28 * 28
PROC_MIN_PIXELS = 3136  # preprocessor_config.json of the reference models
PROC_MAX_PIXELS = 12845056
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
RESCALE = 1 / 255
PATCH, MERGE, TEMPORAL = 14, 2, 2


def smart_resize(height, width, factor=FACTOR, min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS):
    """qwen_vl_utils / transformers smart_resize (Python round: half to even)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio over 200: {height}x{width}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb(image):
    """qwen_vl_utils.to_rgb: RGBA pasted on white with alpha as the mask, else convert("RGB")."""
    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        return white
    return image.convert("RGB")


STAGES = ("decode (open + load)", "to_rgb", "smart_resize + bicubic resize",
          "processor: np.array + copy-resize", "rescale + normalise", "repeat + patchify")


def prepare(jpeg_bytes, times=None):
    """Bytes -> (pixel_values [n, 1176] float32, (t, gh, gw)); the end time of each of the STAGES
    is appended to times."""
    def mark():
        if times is not None:
            times.append(time.perf_counter())

    image = Image.open(io.BytesIO(jpeg_bytes))
    image.load()
    mark()
    image = to_rgb(image)
    mark()
    # qwen_vl_utils.fetch_image
    h, w = smart_resize(image.height, image.width)
    image = image.resize((w, h), Image.BICUBIC)
    mark()
    # Qwen2VLImageProcessor._preprocess (channels-last numpy in, as transformers infers it)
    arr = np.array(image)
    rh, rw = smart_resize(arr.shape[0], arr.shape[1], min_pixels=PROC_MIN_PIXELS, max_pixels=PROC_MAX_PIXELS)
    arr = np.array(Image.fromarray(arr).resize((rw, rh), Image.BICUBIC))  # transformers' resize via PIL
    mark()
    arr = (arr.astype(np.float64) * RESCALE).astype(np.float32)  # image_transforms.rescale
    arr = (arr - MEAN) / STD  # image_transforms.normalize, float32
    mark()
    arr = arr.transpose(2, 0, 1)  # to ChannelDimension.FIRST (a view)
    patches = np.array([arr])  # the processor stacks its list of processed images
    if patches.shape[0] % TEMPORAL != 0:
        repeats = np.repeat(patches[-1][np.newaxis], TEMPORAL - 1, axis=0)
        patches = np.concatenate([patches, repeats], axis=0)
    channel = patches.shape[1]
    grid_t = patches.shape[0] // TEMPORAL
    grid_h, grid_w = rh // PATCH, rw // PATCH
    patches = patches.reshape(grid_t, TEMPORAL, channel, grid_h // MERGE, MERGE, PATCH, grid_w // MERGE, MERGE, PATCH)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channel * TEMPORAL * PATCH * PATCH)
    mark()
    return flat, (grid_t, grid_h, grid_w)


def bench_jpeg():
    """The C bench's input: retina_1000x700.jpg -> bicubic 1920x1080 -> JPEG q90 4:2:0."""
    photo = to_rgb(Image.open("tests/reference/images/retina_1000x700.jpg"))
    big = photo.resize((1920, 1080), Image.BICUBIC)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--jpeg", help="time this JPEG instead of the bench image")
    ap.add_argument("--write-jpeg", help="save the input bytes here")
    ap.add_argument("--write-pixels", help="save pixel_values here (raw float32, row-major)")
    args = ap.parse_args()

    data = open(args.jpeg, "rb").read() if args.jpeg else bench_jpeg()
    if args.write_jpeg:
        with open(args.write_jpeg, "wb") as f:
            f.write(data)
    stages = [[] for _ in STAGES]
    total = []
    pixels, grid = None, None
    for _ in range(args.runs):
        t = [time.perf_counter()]
        pixels, grid = prepare(data, t)
        for k in range(len(STAGES)):
            stages[k].append(t[k + 1] - t[k])
        total.append(t[-1] - t[0])
    if args.write_pixels:
        pixels.astype(np.float32).tofile(args.write_pixels)

    def ms(v):
        return 1e3 * statistics.median(v)

    print(f"pillow: Python {platform.python_version()}, Pillow {PIL.__version__}, numpy {np.__version__}, 1 thread")
    print(f"  input {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()[:16]}..., "
          f"grid {grid}, pixel_values {pixels.shape} {pixels.dtype}")
    print(f"  {args.runs} runs, median ms:")
    for name, v in zip(STAGES, stages):
        print(f"    {name:36s} {ms(v):7.1f}")
    print(f"    {'total':36s} {ms(total):7.1f}   (min {1e3 * min(total):.1f}, max {1e3 * max(total):.1f})")


if __name__ == "__main__":
    main()
