#!/usr/bin/env python3
"""What a user would write instead of `bnaudit ls --format json` on a torch.save file.

    python benches/torch_ls_baseline.py CHECKPOINT.pt > layers.json

`torch.load(path, mmap=True, weights_only=True)` (the safe and fastest way torch offers),
then the same BatchNorm reads and report as benches/ls_baseline.py (PyTorch names only,
no validation), through numpy.
"""

import json
import sys

import torch

from ls_baseline import layer


def main():
    path = sys.argv[1]
    sd = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    layers = []
    for key in sorted(sd):
        if not key.endswith(".running_mean"):
            continue
        name = key[: -len(".running_mean")]
        if name + ".running_var" not in sd:
            continue
        tensors = {
            leaf: sd[f"{name}.{leaf}"].numpy()
            for leaf in ("weight", "bias", "running_mean", "running_var")
            if f"{name}.{leaf}" in sd
        }
        nbt = sd.get(name + ".num_batches_tracked")
        layers.append(layer(name, tensors, None if nbt is None else int(nbt)))
    json.dump({"path": path, "layers": layers}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
