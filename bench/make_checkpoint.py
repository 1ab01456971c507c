#!/usr/bin/env python3
"""Writes a random checkpoint with Skywork-VL-Reward-7B's shapes (Qwen2.5-VL-7B + value head) in the
Hugging Face layout, to time loading and measure memory through the real loader (mmap'd safetensors,
int8 quantization, page release) without the 16 GB download. Standard library only.

    python3 bench/make_checkpoint.py OUT_DIR [--layers N] [--vision-blocks N]

The tokenizer, chat template and preprocessor files are copied from the bundled tiny model (same
Qwen2 vocabulary). Values: bf16, uniform with std 1/sqrt(fan_in) for matrices (one block of values per
fan_in, repeated), 1 for norm weights, 0.02 for biases and the embedding table. Scores from it mean
nothing; it is for time and memory (bench/README.md, "Memory").
"""
import argparse
import json
import os
import random
import shutil
import struct
import sys

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference", "models", "tiny-a")
BLOCK = 1 << 22  # values per generated block (8 MB of bf16)


def bf16_block(std, seed):
    """BLOCK bf16 values, uniform with the given std, as bytes."""
    rng = random.Random(seed)
    half = std * 3 ** 0.5
    out = bytearray(2 * BLOCK)
    for i in range(BLOCK):
        f = struct.pack("<f", rng.uniform(-half, half))
        out[2 * i:2 * i + 2] = f[2:4]  # truncation: values only need to be of the right size
    return bytes(out)


def const_block(v):
    return struct.pack("<f", v)[2:4] * BLOCK


def tensors(layers, blocks):
    C, I, M, D, F, Q, KV, V = 1280, 3420, 5120, 3584, 18944, 3584, 512, 152064
    out = [("visual.patch_embed.proj.weight", [C, 3, 2, 14, 14], "m")]
    for b in range(blocks):
        p = "visual.blocks.%d." % b
        out += [(p + "norm1.weight", [C], "n"), (p + "attn.qkv.weight", [3 * C, C], "m"), (p + "attn.qkv.bias", [3 * C], "b"),
                (p + "attn.proj.weight", [C, C], "m"), (p + "attn.proj.bias", [C], "b"), (p + "norm2.weight", [C], "n"),
                (p + "mlp.gate_proj.weight", [I, C], "m"), (p + "mlp.gate_proj.bias", [I], "b"),
                (p + "mlp.up_proj.weight", [I, C], "m"), (p + "mlp.up_proj.bias", [I], "b"),
                (p + "mlp.down_proj.weight", [C, I], "m"), (p + "mlp.down_proj.bias", [C], "b")]
    out += [("visual.merger.ln_q.weight", [C], "n"), ("visual.merger.mlp.0.weight", [M, M], "m"),
            ("visual.merger.mlp.0.bias", [M], "b"), ("visual.merger.mlp.2.weight", [D, M], "m"),
            ("visual.merger.mlp.2.bias", [D], "b"), ("model.embed_tokens.weight", [V, D], "b")]
    for l in range(layers):
        p = "model.layers.%d." % l
        out += [(p + "input_layernorm.weight", [D], "n"), (p + "self_attn.q_proj.weight", [Q, D], "m"),
                (p + "self_attn.q_proj.bias", [Q], "b"), (p + "self_attn.k_proj.weight", [KV, D], "m"),
                (p + "self_attn.k_proj.bias", [KV], "b"), (p + "self_attn.v_proj.weight", [KV, D], "m"),
                (p + "self_attn.v_proj.bias", [KV], "b"), (p + "self_attn.o_proj.weight", [D, Q], "m"),
                (p + "post_attention_layernorm.weight", [D], "n"), (p + "mlp.gate_proj.weight", [F, D], "m"),
                (p + "mlp.up_proj.weight", [F, D], "m"), (p + "mlp.down_proj.weight", [D, F], "m")]
    out += [("model.norm.weight", [D], "n")]
    return out


def write_safetensors(path, items, blocks):
    header, offset = {}, 0
    for name, shape, kind in items:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, kind in items:
            n = 1
            for d in shape:
                n *= d
            fan_in = n // shape[0]
            block = blocks[("m", fan_in)] if kind == "m" else blocks[kind]
            left = 2 * n
            while left > 0:
                chunk = block[:min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--vision-blocks", type=int, default=32)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    items = tensors(a.layers, a.vision_blocks)
    blocks = {"n": const_block(1.0), "b": bf16_block(0.02, 1)}
    for name, shape, kind in items:
        if kind == "m":
            n = 1
            for d in shape:
                n *= d
            fan_in = n // shape[0]
            if ("m", fan_in) not in blocks:
                blocks[("m", fan_in)] = bf16_block(fan_in ** -0.5, fan_in)
    write_safetensors(os.path.join(a.out, "model.safetensors"), items, blocks)
    write_safetensors(os.path.join(a.out, "value_head.safetensors"),
                      [("v_head.summary.weight", [1, 3584], "m"), ("v_head.summary.bias", [1], "b")],
                      {("m", 3584): blocks[("m", 3584)], "b": blocks["b"]})
    with open(os.path.join(TINY, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_hidden_layers=a.layers,
               max_window_layers=a.layers, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)
    cfg["vision_config"].update(depth=a.vision_blocks, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                out_hidden_size=3584,
                                fullatt_block_indexes=[i for i in (7, 15, 23, 31) if i < a.vision_blocks])
    cfg["rope_scaling"]["mrope_section"] = [16, 24, 24]
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("chat_template.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TINY, name), os.path.join(a.out, name))
    print("wrote", a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
