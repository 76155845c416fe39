#!/usr/bin/env python3
"""Write a large safetensors checkpoint for the `bnaudit ls` benchmark.

    python benches/gen_big_checkpoint.py [OUT]     (default /tmp/bnaudit-bench/big.safetensors)

About 2 GiB, 20,000 tensors and 3,000 BatchNorm layers, shaped like a deep ResNeXt: 1,000
bottleneck blocks (three convolutions, three BatchNorm2d each) and 500 neck modules
(Linear + LayerNorm, which are not BatchNorm). The file is SPARSE: the header and the
BatchNorm tensors (about 12 MB) hold real values; the convolution and Linear weights are
left as holes, which read as zeros and take no disk space. Deterministic (seeded); do not
commit the output.

Needs only numpy.
"""

import json
import os
import struct
import sys

import numpy as np

SEED = 20240611
STAGES = [(64, 250), (128, 250), (256, 250), (512, 250)]  # (channels, blocks)
GROUPS = 8  # grouped 3x3 convolution, as in ResNeXt
NECK = 500
TARGET_BYTES = 2 * 1024**3

DTYPE_SIZE = {"F32": 4, "I64": 8}


def layout():
    """Every tensor as (name, dtype, shape, kind); kind "bn" tensors get real bytes."""
    tensors = []
    block = 0
    for c, blocks in STAGES:
        for _ in range(blocks):
            p = f"backbone.blocks.{block}"
            for conv, shape in [
                ("conv1", [c, c, 1, 1]),
                ("conv2", [c, c // GROUPS, 3, 3]),
                ("conv3", [c, c, 1, 1]),
            ]:
                tensors.append((f"{p}.{conv}.weight", "F32", shape, "hole"))
            for bn in ("bn1", "bn2", "bn3"):
                for leaf in ("weight", "bias", "running_mean", "running_var"):
                    tensors.append((f"{p}.{bn}.{leaf}", "F32", [c], "bn"))
                tensors.append((f"{p}.{bn}.num_batches_tracked", "I64", [], "bn"))
            block += 1
    used = sum(nbytes(t) for t in tensors)
    # The neck's Linear layers take whatever is left of the target size.
    width = 2048
    rows = max(1, (TARGET_BYTES - used) // (NECK * width * 4))
    for i in range(NECK):
        p = f"neck.{i}"
        tensors.append((f"{p}.proj.weight", "F32", [rows, width], "hole"))
        tensors.append((f"{p}.proj.bias", "F32", [rows], "hole"))
        tensors.append((f"{p}.ln.weight", "F32", [rows], "hole"))
        tensors.append((f"{p}.ln.bias", "F32", [rows], "hole"))
    return tensors


def nbytes(t):
    _, dtype, shape, _ = t
    return int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZE[dtype]


def bn_values(rng, name, shape):
    c = shape[0] if shape else 1
    leaf = name.rsplit(".", 1)[1]
    if leaf == "num_batches_tracked":
        return np.array(int(rng.integers(1, 100_000)), dtype="<i8")
    if leaf == "weight":
        v = 1.0 + 0.1 * rng.standard_normal(c)
    elif leaf == "bias":
        v = 0.1 * rng.standard_normal(c)
    elif leaf == "running_mean":
        v = 0.5 * rng.standard_normal(c)
    else:
        v = rng.uniform(0.05, 3.0, c)
    return v.astype("<f4")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bnaudit-bench/big.safetensors"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tensors = sorted(layout())
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        n = nbytes(t)
        header[t[0]] = {"dtype": t[1], "shape": t[2], "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    data_start = 8 + len(text)
    rng = np.random.default_rng(SEED)
    with open(out, "wb") as f:
        f.truncate(0)
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dtype, shape, kind in tensors:
            if kind == "bn":
                f.seek(data_start + header[name]["data_offsets"][0])
                f.write(bn_values(rng, name, shape).tobytes())
        f.truncate(data_start + offset)
    bn_layers = sum(1 for t in tensors if t[0].endswith(".running_mean"))
    real = os.stat(out).st_blocks * 512
    print(
        f"{out}: {data_start + offset} bytes ({(data_start + offset) / 1024**3:.2f} GiB, "
        f"{real / 1024**2:.1f} MiB on disk), {len(tensors)} tensors, {bn_layers} BatchNorm "
        f"layers, header {len(text)} bytes"
    )


if __name__ == "__main__":
    main()
