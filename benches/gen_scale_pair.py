#!/usr/bin/env python3
"""Write a pair of many-tensor safetensors checkpoints for the scale benchmark.

    python benches/gen_scale_pair.py TENSORS [DIR]   (default DIR /tmp/bnaudit-scale)

Writes DIR/a-TENSORS.safetensors and DIR/b-TENSORS.safetensors: TENSORS / 5 BatchNorm layers
of 4 channels (weight, bias, running_mean, running_var, num_batches_tracked). The first half
sit in one sub-model (`backbone.blocks.<i>.bn`), the second half each in a top-level module of
its own (`m<i>.bn`), so both the size of a sub-model and the number of sub-models grow with
the checkpoint (the passes that once went quadratic were per layer and per sub-model). B is A with the
running statistics of every 100th layer drifted by one train-mode forward (counter + 1),
and the affine parameters of every 1000th layer trained as well. The tensors are tiny,
so 1 M tensors is about 14 MB of data and an 85 MB header; the whole pair is written with
numpy in a few seconds. Deterministic (seeded); do not commit the output.
"""

import json
import os
import struct
import sys

import numpy as np

SEED = 20261201
CHANNELS = 4
# Per layer, in data order: (leaf, dtype, element size, elements).
LEAVES = [
    ("bias", "F32", 4, CHANNELS),
    ("num_batches_tracked", "I64", 8, 1),
    ("running_mean", "F32", 4, CHANNELS),
    ("running_var", "F32", 4, CHANNELS),
    ("weight", "F32", 4, CHANNELS),
]
RECORD = np.dtype(
    [
        ("bias", "<f4", CHANNELS),
        ("num_batches_tracked", "<i8"),
        ("running_mean", "<f4", CHANNELS),
        ("running_var", "<f4", CHANNELS),
        ("weight", "<f4", CHANNELS),
    ],
    align=False,
)


def header(layers):
    """The header bytes (padded to 8) for `layers` records laid out back to back."""
    parts = ['{"__metadata__":{"format":"pt"}']
    offset = 0
    for i in range(layers):
        module = f"backbone.blocks.{i}.bn" if i < layers // 2 else f"m{i}.bn"
        for leaf, dtype, size, n in LEAVES:
            shape = f"[{n}]" if leaf != "num_batches_tracked" else "[]"
            parts.append(
                f'"{module}.{leaf}":{{"dtype":"{dtype}","shape":{shape},'
                f'"data_offsets":[{offset},{offset + size * n}]}}'
            )
            offset += size * n
    text = (",".join(parts) + "}").encode()
    assert offset == layers * RECORD.itemsize
    return text + b" " * (-len(text) % 8)


def write(path, text, records):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(records.tobytes())


def main():
    tensors = int(sys.argv[1])
    out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bnaudit-scale"
    layers = tensors // len(LEAVES)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    a = np.zeros(layers, dtype=RECORD)
    a["weight"] = 1.0 + 0.1 * rng.standard_normal((layers, CHANNELS))
    a["bias"] = 0.1 * rng.standard_normal((layers, CHANNELS))
    a["running_mean"] = 0.5 * rng.standard_normal((layers, CHANNELS))
    a["running_var"] = rng.uniform(0.05, 3.0, (layers, CHANNELS))
    a["num_batches_tracked"] = rng.integers(1, 100_000, layers)
    b = a.copy()
    drift = slice(0, layers, 100)
    batch_mean = 0.5 * rng.standard_normal(b["running_mean"][drift].shape)
    batch_var = rng.uniform(0.05, 3.0, b["running_var"][drift].shape)
    b["running_mean"][drift] = 0.9 * a["running_mean"][drift] + 0.1 * batch_mean
    b["running_var"][drift] = 0.9 * a["running_var"][drift] + 0.1 * batch_var
    b["num_batches_tracked"][drift] += 1
    trained = slice(0, layers, 1000)
    b["weight"][trained] += np.float32(0.01)
    text = header(layers)
    for side, records in (("a", a), ("b", b)):
        path = os.path.join(out, f"{side}-{tensors}.safetensors")
        write(path, text, records)
    print(
        f"{out}/{{a,b}}-{tensors}.safetensors: {layers * len(LEAVES)} tensors, "
        f"{layers} BatchNorm layers, header {len(text)} bytes, data {a.nbytes} bytes"
    )


if __name__ == "__main__":
    main()
