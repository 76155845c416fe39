#!/usr/bin/env python3
"""Write the `ls` benchmark's checkpoint as a torch.save file, for the torch.save benchmark.

    python benches/gen_big_torch.py SAFETENSORS OUT.pt

Loads the safetensors checkpoint of benches/gen_big_checkpoint.py (about 2 GiB, 20,000
tensors, 3,000 BatchNorm layers) and saves the same tensors with torch.save (zip format,
stored entries), then punches holes into its runs of zeros (`fallocate --dig-holes`) so it
takes as little disk as the sparse original. Same tensors, same values: the two files are
the same checkpoint in two formats. Do not commit the output.

Needs torch and safetensors.
"""

import subprocess
import sys

import torch
from safetensors.torch import load_file


def main():
    src, out = sys.argv[1], sys.argv[2]
    sd = load_file(src)
    torch.save(sd, out)
    del sd
    subprocess.run(["fallocate", "--dig-holes", out], check=False)
    print(f"{out}: torch.save of {src}")


if __name__ == "__main__":
    main()
