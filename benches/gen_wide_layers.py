#!/usr/bin/env python3
"""Write a pair of checkpoints of wide BatchNorm layers for the `explain` memory benchmark.

    python benches/gen_wide_layers.py DIR LAYERS CHANNELS

DIR/a.safetensors and DIR/b.safetensors: LAYERS BatchNorm layers `bn<i>` of CHANNELS channels
each (f32 weight, bias, running_mean, running_var; i64 num_batches_tracked). B is A after one
train-mode forward at momentum 0.1 (`new = 0.9·old + 0.1·batch`, counter +1), so `explain A B`
explains every layer, on synthetic inputs. 16 × 4 M channels is 1 GiB per file. Seeded per
layer; written tensor by tensor, so generating takes one layer's memory. Do not commit the
output.

Needs only numpy.
"""

import json
import os
import struct
import sys

import numpy as np

SEED = 20261201
ROLES = ["weight", "bias", "running_mean", "running_var"]


def layer(i: int, channels: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(SEED + i)
    a = {
        "weight": rng.uniform(0.5, 1.5, channels),
        "bias": rng.normal(0.0, 0.2, channels),
        "running_mean": rng.normal(0.0, 1.0, channels),
        "running_var": rng.uniform(0.5, 2.0, channels),
    }
    batch_mean = rng.normal(0.5, 1.0, channels)
    batch_var = rng.uniform(1.0, 4.0, channels)
    b = dict(a)
    b["running_mean"] = 0.9 * a["running_mean"] + 0.1 * batch_mean
    b["running_var"] = 0.9 * a["running_var"] + 0.1 * batch_var
    return ({k: v.astype(np.float32) for k, v in a.items()}, {k: v.astype(np.float32) for k, v in b.items()})


def write(path: str, layers: int, channels: int, side: int, counter: int) -> None:
    header, offset = {}, 0
    for i in range(layers):
        for role in ROLES:
            size = 4 * channels
            header[f"bn{i}.{role}"] = {"dtype": "F32", "shape": [channels], "data_offsets": [offset, offset + size]}
            offset += size
        header[f"bn{i}.num_batches_tracked"] = {"dtype": "I64", "shape": [], "data_offsets": [offset, offset + 8]}
        offset += 8
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(layers):
            values = layer(i, channels)[side]
            for role in ROLES:
                f.write(values[role].tobytes())
            f.write(struct.pack("<q", counter))


def main() -> None:
    out, layers, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "a.safetensors"), layers, channels, 0, 100)
    write(os.path.join(out, "b.safetensors"), layers, channels, 1, 101)


if __name__ == "__main__":
    main()
