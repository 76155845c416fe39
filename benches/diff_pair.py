"""Writes two ~1 GiB safetensors checkpoints for the `bnaudit diff` benchmark (not committed):
A, a ResNet-like model (conv weights, BatchNorm layers with counters, a large classifier),
and B, the same with a few changes — a frozen stage whose BatchNorm statistics drifted
(counters +5), a fine-tuned head, and three elements of one large weight nudged.

Usage: python benches/diff_pair.py [DIR]   (default /tmp/bnaudit-bench)
"""

import os
import sys

import numpy as np
from safetensors.numpy import save_file


def model(rng):
    t = {}
    width = 384
    for stage in range(4):
        for block in range(6):
            for conv in range(3):
                name = f"backbone.layer{stage + 1}.{block}.conv{conv + 1}"
                t[f"{name}.weight"] = rng.standard_normal((width, width, 3, 3), dtype=np.float32)
                bn = name.replace("conv", "bn")
                t[f"{bn}.weight"] = rng.standard_normal(width, dtype=np.float32)
                t[f"{bn}.bias"] = rng.standard_normal(width, dtype=np.float32)
                t[f"{bn}.running_mean"] = rng.standard_normal(width, dtype=np.float32)
                t[f"{bn}.running_var"] = rng.random(width, dtype=np.float32) + 0.5
                t[f"{bn}.num_batches_tracked"] = np.array(1000, dtype=np.int64)
    t["head.fc.weight"] = rng.standard_normal((40000, 4096), dtype=np.float32)
    t["head.fc.bias"] = rng.standard_normal(40000, dtype=np.float32)
    return t


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bnaudit-bench"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    a = model(rng)
    save_file(a, os.path.join(out, "a.safetensors"))
    b = dict(a)
    for block in range(6):
        for conv in range(3):
            bn = f"backbone.layer2.{block}.bn{conv + 1}"
            b[f"{bn}.running_mean"] = (0.9**5 * a[f"{bn}.running_mean"]).astype(np.float32)
            b[f"{bn}.running_var"] = (0.9**5 * a[f"{bn}.running_var"] + 0.1).astype(np.float32)
            b[f"{bn}.num_batches_tracked"] = np.array(1005, dtype=np.int64)
    b["head.fc.bias"] = b["head.fc.bias"] + np.float32(0.01)
    w = b["backbone.layer3.2.conv2.weight"].copy()
    w.flat[[10, 200_000, 500_000]] += np.float32(1e-3)
    b["backbone.layer3.2.conv2.weight"] = w
    save_file(b, os.path.join(out, "b.safetensors"))
    for f in ("a", "b"):
        size = os.path.getsize(os.path.join(out, f"{f}.safetensors"))
        print(f"{out}/{f}.safetensors: {size / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
