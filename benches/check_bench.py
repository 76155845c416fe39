"""Benchmarks `bnaudit check` on the pair written by benches/diff_pair.py, with the same
baselines as benches/diff_bench.py: the numpy comparison a user would write and the read
limit `cat A B > /dev/null` from the page cache.

Two scopes: the whole model (`--frozen backbone head`: every byte of both files compared,
the case the targets are set for) and the backbone alone (`--frozen backbone`: the head's
tensors are not read at all).

Usage: python benches/check_bench.py [DIR] [--runs N]   (needs a release build, as
diff_bench.py does)
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diff_bench import NUMPY_BASELINE, binary, measure  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir", nargs="?", default="/tmp/bnaudit-bench")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    a = os.path.join(args.dir, "a.safetensors")
    b = os.path.join(args.dir, "b.safetensors")
    size = os.path.getsize(a) + os.path.getsize(b)
    commands = {
        "cat A B > /dev/null": ["cat", a, b],
        "check (whole model)": [binary(), "check", a, b, "--frozen", "backbone", "head"],
        "check --frozen backbone": [binary(), "check", a, b, "--frozen", "backbone"],
        "numpy baseline": [sys.executable, "-c", NUMPY_BASELINE, a, b],
    }
    for _ in range(2):
        measure(commands["cat A B > /dev/null"])
    results = {}
    for name, cmd in commands.items():
        runs = [measure(cmd) for _ in range(args.runs)]
        results[name] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
    print(
        f"two checkpoints, {size / 2**30:.2f} GiB together, {args.runs} runs each "
        "(median wall time, peak RSS)"
    )
    for name, (wall, rss) in results.items():
        print(f"  {name:24} {wall:7.3f} s  {size / wall / 2**30:6.2f} GiB/s  {rss:8.1f} MiB")
    ours, ours_rss = results["check (whole model)"]
    cat = results["cat A B > /dev/null"][0]
    numpy = results["numpy baseline"][0]
    checks = [
        (f"{numpy / ours:.1f}× faster than numpy (target ≥ 3×)", numpy / ours >= 3),
        (f"{ours / cat:.2f}× the cat time (target ≤ 1.5×)", ours / cat <= 1.5),
        (f"{ours_rss:.0f} MiB peak RSS (target ≤ 256 MiB)", ours_rss <= 256),
    ]
    for text, ok in checks:
        print(f"  {'met ' if ok else 'MISSED'}  whole-model check: {text}")


if __name__ == "__main__":
    main()
