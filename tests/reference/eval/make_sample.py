#!/usr/bin/env python3
"""Regenerates vlrewardbench_sample.jsonl and its stand-in images from VL-RewardBench's published rows.

    python3 tests/reference/eval/make_sample.py DATA_JSONL

DATA_JSONL is data/data.jsonl of github.com/vl-rewardbench/VL_RewardBench at commit e492d65 (1,250 rows;
MIT licence, as the Hugging Face dataset card says). The lines of the rows named in ROWS are copied byte for
byte, in the file's order; only the images are replaced: each "image_path" gets a 32x32 stand-in of one flat
colour (a JPEG for .jpg, a PNG for .png) so the sample stays a few kilobytes. Standard library only.
"""
import json
import os
import struct
import sys
import zlib

ROWS = [
    "LRVInstruction-000000007746",   # human_ranking [1, 0]: the second response is preferred
    "RLAIF-V-65823",
    "RLHF-V-1616",
    "hallucination_pair-13705",      # query starts with "<image>\n"
    "hallucination_pair-6299",       # query starts with "<image>\n"
    "hallucination_pair-15046",      # query ends with "\n<image>": inference_hf.py keeps it
    "jailbreak-typo-HateSpeech-70",  # human_ranking [1, 0]
    "wildvision-battle-1305",
    "mmmu_pro_test_Art_35",
    "mathverse_2279",                # published twice, with different responses
]

HERE = os.path.dirname(os.path.abspath(__file__))


def png(width, height, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def jpeg_gray(size, level):
    """A baseline grayscale JPEG of flat `level`: every block is DC only. The first block codes the
    difference from 128 (quantiser 8, so the DC difference is the level offset), the others 0."""
    diff = level - 128
    cat = abs(diff).bit_length()
    bits = diff if diff >= 0 else diff + (1 << cat) - 1
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([8] + [1] * 63)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, size, size, 1) + b"\x01\x11\x00"
    # DC table: symbol 0 -> "0", symbol cat -> "10"; AC table: EOB -> "0"
    dc_counts = [1, 1] + [0] * 14 if cat else [1] + [0] * 15
    dc_syms = [0, cat] if cat else [0]
    dht = (b"\xff\xc4" + struct.pack(">H", 2 + 17 + len(dc_syms) + 17 + 1) + b"\x00" + bytes(dc_counts) +
           bytes(dc_syms) + b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    stream = ("10" + format(bits, "0%db" % cat) if cat else "0") + "0"  # first block: DC, EOB
    stream += "00" * ((size // 8) ** 2 - 1)                               # the others: DC 0, EOB
    stream += "1" * (-len(stream) % 8)
    data = bytes(int(stream[i:i + 8], 2) for i in range(0, len(stream), 8)).replace(b"\xff", b"\xff\x00")
    return b"\xff\xd8" + dqt + sof + dht + sos + data + b"\xff\xd9"


def main():
    lines = [line for line in open(sys.argv[1], "rb") if json.loads(line)["id"] in ROWS]
    keep = [json.loads(line) for line in lines]
    assert {r["id"] for r in keep} == set(ROWS), "a named row is missing"
    with open(os.path.join(HERE, "vlrewardbench_sample.jsonl"), "wb") as f:
        f.writelines(lines)
    for n, r in enumerate(keep):
        path = os.path.join(HERE, r["image_path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as img:
            if path.endswith(".png"):
                img.write(png(32, 32, (40 + 20 * n, 200 - 15 * n, 90 + 10 * n)))
            else:
                img.write(jpeg_gray(32, 60 + 12 * n))
    print(len(keep), "rows")


if __name__ == "__main__":
    main()
