#!/usr/bin/env python3
"""The least a Python script can do towards `bnaudit ls`: a floor, not a replacement.

    python benches/ls_bare_baseline.py CHECKPOINT.safetensors

Opens the file with `safetensors.safe_open(..., framework="np")`, reads every tensor of a
PyTorch-named BatchNorm layer (`….bn….{weight,bias,running_mean,running_var,
num_batches_tracked}`) with `get_tensor` and takes its min and max: no mean, std or
non-finite count, no flags, no JSON. It prints how many tensors it read. benches/ls_bench.sh
times it beside bnaudit, so that bnaudit's speed-up is also stated against the cheapest loop
that touches the same tensors, not only against a script that does the whole job
(benches/ls_baseline.py).
"""

import sys

from safetensors import safe_open

LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def main():
    seen = {}
    with safe_open(sys.argv[1], framework="np") as f:
        for key in f.keys():
            if ".bn" in key and key.rsplit(".", 1)[-1] in LEAVES:
                t = f.get_tensor(key)
                seen[key] = (float(t.min()), float(t.max()))
    print(len(seen))


if __name__ == "__main__":
    main()
