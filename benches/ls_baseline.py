#!/usr/bin/env python3
"""The baseline a user would write instead of `bnaudit ls --format json`.

    python benches/ls_baseline.py CHECKPOINT.safetensors > layers.json

Opens the file with `safetensors.safe_open(..., framework="numpy")`, finds PyTorch-named
BatchNorm layers by their `running_mean` key, reads each layer's tensors with numpy and
prints min/max/mean/std/nonfinite per tensor, the counter and the basic health flags as JSON.
It does less than bnaudit (one naming convention, no validation), which only favours it.
"""

import json
import sys

import numpy as np
from safetensors import safe_open


def stats(v):
    v = v.astype(np.float64).ravel()
    finite = np.isfinite(v)
    f = v[finite]
    if f.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None,
                "nonfinite": int((~finite).sum())}
    return {"min": float(f.min()), "max": float(f.max()), "mean": float(f.mean()),
            "std": float(f.std()), "nonfinite": int((~finite).sum())}


def layer(name, tensors, nbt):
    """One layer's report: its statistics and the basic health flags."""
    var, mean = tensors["running_var"], tensors["running_mean"]
    flags = []
    if any(not np.isfinite(t).all() for t in tensors.values()):
        flags.append("nonfinite")
    if (var < 0).any():
        flags.append("negative_var")
    if (var == 0).any():
        flags.append("zero_var")
    if ((var > 0) & (var < 1e-5)).any():
        flags.append("tiny_var")
    if (mean == 0).all() and (var == 1).all() and not nbt:
        flags.append("default_init")
    return {
        "name": name,
        "channels": int(mean.shape[0]),
        "num_batches_tracked": nbt,
        "stats": {k: stats(v) for k, v in tensors.items()},
        "flags": flags,
    }


def main():
    path = sys.argv[1]
    layers = []
    with safe_open(path, framework="numpy") as f:
        keys = set(f.keys())
        for key in sorted(keys):
            if not key.endswith(".running_mean"):
                continue
            name = key[: -len(".running_mean")]
            if name + ".running_var" not in keys:
                continue
            tensors = {}
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                if f"{name}.{leaf}" in keys:
                    tensors[leaf] = f.get_tensor(f"{name}.{leaf}")
            nbt_key = name + ".num_batches_tracked"
            nbt = int(f.get_tensor(nbt_key)) if nbt_key in keys else None
            layers.append(layer(name, tensors, nbt))
    json.dump({"path": path, "layers": layers}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
