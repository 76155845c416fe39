"""Benchmarks `bnaudit check` on the pair written by benches/diff_pair.py, against the
baselines of benches/diff_bench.py: the numpy comparison a user would write and the read
limit `cat A B > /dev/null` from the page cache.

Two scopes: the whole model (`--frozen backbone,head`: every byte of both files compared,
the case the targets are set for) and the backbone alone (`--frozen backbone`: the head's
tensors are not read at all).

Usage: python benches/check_bench.py [DIR] [--runs N]   (needs a release build, as
diff_bench.py does)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diff_bench import bench, binary, pair_and_runs  # noqa: E402


def main():
    a, b, runs = pair_and_runs()
    check = [binary(), "check", a, b, "--frozen"]
    ours = {
        "check (whole model)": check + ["backbone,head"],
        "check --frozen backbone": check + ["backbone"],
    }
    bench(a, b, ours, runs)


if __name__ == "__main__":
    main()
