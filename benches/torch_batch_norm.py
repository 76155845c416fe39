"""PyTorch's CPU torch.nn.functional.batch_norm (training=True) on the benchmark's shape.

Prints the median and minimum time of ITERS calls on 2 threads; benches/compare.sh compares it with
`cargo bench --bench forward`. Usage: python benches/torch_batch_norm.py [N,C,H,W] [ITERS]
"""

import sys
import time

import torch
import torch.nn.functional as F


def main() -> None:
    shape = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "64,256,56,56").split(",")]
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen) * 2.0 + 0.5
    c = shape[1]
    weight = torch.full((c,), 1.5)
    bias = torch.full((c,), 0.25)
    running_mean = torch.zeros(c)
    running_var = torch.ones(c)
    times = []
    with torch.no_grad():
        for _ in range(iters):
            t = time.perf_counter()
            y = F.batch_norm(x, running_mean, running_var, weight, bias, True, 0.1, 1e-5)
            times.append(time.perf_counter() - t)
            del y
    times.sort()
    median = times[len(times) // 2]
    mb = x.numel() * 4 / 1e6
    print(f"torch {torch.__version__}, shape {shape} f32, {mb:.0f} MB, {torch.get_num_threads()} threads")
    print(
        f"F.batch_norm(training=True): median {median * 1e3:.2f} ms, min {times[0] * 1e3:.2f} ms, "
        f"{mb / 1e3 / median:.1f} GB/s of input at the median"
    )
    print(f"median_ms={median * 1e3:.3f}")
    print(f"min_ms={times[0] * 1e3:.3f}")


if __name__ == "__main__":
    main()
