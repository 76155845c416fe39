"""Benchmarks `bnaudit diff` on the pair written by benches/diff_pair.py against
(1) the numpy baseline a user would write (safetensors.numpy.load_file on both, then
np.array_equal per tensor) and (2) the read limit, `cat A B > /dev/null` from the page cache.
Reports the median wall time of each over several runs and the peak resident memory of
each (GNU time's %M, so /usr/bin/time must exist), and checks bnaudit's targets: at least 3× faster than
numpy, at most 1.5× the cat time, at most 256 MiB peak RSS.

Usage: python benches/diff_bench.py [DIR] [--runs N]
Needs a release build: cargo build --release (the binary is taken from $BNAUDIT, else
$CARGO_TARGET_DIR/release/bnaudit, else target/release/bnaudit).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

NUMPY_BASELINE = """
import sys
import numpy as np
from safetensors.numpy import load_file
a = load_file(sys.argv[1])
b = load_file(sys.argv[2])
changed = [k for k in a.keys() | b.keys()
           if k not in a or k not in b or a[k].shape != b[k].shape or a[k].dtype != b[k].dtype
           or not np.array_equal(a[k], b[k])]
print(len(changed), "tensors differ")
"""


def binary():
    if os.environ.get("BNAUDIT"):
        return os.environ["BNAUDIT"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    return os.path.join(target, "release", "bnaudit")


def measure(cmd):
    """Wall seconds and peak RSS (MiB) of one run of `cmd`, output discarded.

    The peak comes from GNU time (`%M`): the ru_maxrss that os.wait4 reports for a child of
    this script would include the Python process it was forked from."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"{cmd[0]} failed with exit code {proc.returncode}: {proc.stderr}")
    return wall, int(proc.stderr.strip().splitlines()[-1]) / 1024


def pair_and_runs():
    """The pair's paths (from DIR) and the number of runs, from the command line."""
    p = argparse.ArgumentParser()
    p.add_argument("dir", nargs="?", default="/tmp/bnaudit-bench")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    return os.path.join(args.dir, "a.safetensors"), os.path.join(args.dir, "b.safetensors"), args.runs


def main():
    a, b, runs = pair_and_runs()
    bench(a, b, {"bnaudit diff A B": [binary(), "diff", a, b]}, runs)


def bench(a, b, ours, runs):
    """Times the bnaudit commands `ours` (name → argv; the first is held to the targets)
    against cat and the numpy baseline on the pair `a`, `b`, and prints the figures."""
    size = os.path.getsize(a) + os.path.getsize(b)
    commands = {
        "cat A B > /dev/null": ["cat", a, b],
        **ours,
        "numpy baseline": [sys.executable, "-c", NUMPY_BASELINE, a, b],
    }
    # Page cache warm-up, so every command reads from memory.
    for _ in range(2):
        measure(commands["cat A B > /dev/null"])
    results = {}
    for name, cmd in commands.items():
        times = [measure(cmd) for _ in range(runs)]
        results[name] = (statistics.median(r[0] for r in times), max(r[1] for r in times))
    print(f"two checkpoints, {size / 2**30:.2f} GiB together, {runs} runs each (median wall time, peak RSS)")
    for name, (wall, rss) in results.items():
        print(f"  {name:24} {wall:7.3f} s  {size / wall / 2**30:6.2f} GiB/s  {rss:8.1f} MiB")
    subject = next(iter(ours))
    ours, ours_rss = results[subject]
    cat = results["cat A B > /dev/null"][0]
    numpy = results["numpy baseline"][0]
    checks = [
        (f"{numpy / ours:.1f}× faster than numpy (target ≥ 3×)", numpy / ours >= 3),
        (f"{ours / cat:.2f}× the cat time (target ≤ 1.5×)", ours / cat <= 1.5),
        (f"{ours_rss:.0f} MiB peak RSS (target ≤ 256 MiB)", ours_rss <= 256),
    ]
    for text, ok in checks:
        print(f"  {'met ' if ok else 'MISSED'}  {subject}: {text}")

if __name__ == "__main__":
    main()
