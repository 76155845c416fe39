"""Benchmark of `bnaudit restore` against `cp B OUT`, in one run, on the ~2 × 1 GiB pair
of benches/diff_pair.py (written if missing; delete the directory afterwards).

Rounds alternate `cp B OUT` and `bnaudit restore A B --frozen backbone -o OUT` (whose B has
18 drifted BatchNorm layers and a 655 MiB tensor); each process's wall time and peak RSS
(wait4's ru_maxrss) are recorded, and the medians printed with the load average. Both
write OUT on the same filesystem, replacing the previous round's file; restore also
fsyncs it (cp does not), so the comparison is the honest, slower side for restore.

Usage: python benches/restore_bench.py [BNAUDIT] [DIR] [ROUNDS]
  BNAUDIT  default target/release/bnaudit      DIR  default /tmp/bnaudit-bench
"""

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(argv):
    """(seconds, peak RSS in MiB, exit status) of one process."""
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    _, status, usage = os.wait4(pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "release", "bnaudit")
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bnaudit-bench"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    a, b = (os.path.join(out_dir, f"{s}.safetensors") for s in "ab")
    if not (os.path.exists(a) and os.path.exists(b)):
        subprocess.run([sys.executable, os.path.join(HERE, "diff_pair.py"), out_dir], check=True)
    out = os.path.join(out_dir, "out.safetensors")
    commands = {
        "cp B OUT": ["cp", b, out],
        "bnaudit restore": [binary, "restore", a, b, "--frozen", "backbone", "-o", out],
    }
    # Warm the page cache for both inputs.
    for name, argv in commands.items():
        run(argv)
    times = {k: [] for k in commands}
    rss = {k: [] for k in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            t, m, code = run(argv)
            assert code == 0, f"{name} exited {code}"
            times[name].append(t)
            rss[name].append(m)
    load = os.getloadavg()
    size = os.path.getsize(b) / 2**30
    print(f"B: {size:.2f} GiB, {rounds} rounds, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name in commands:
        print(f"{name:16} median {statistics.median(times[name]):.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f})  peak RSS median {statistics.median(rss[name]):.1f} MiB (max {max(rss[name]):.1f})")
    ratio = statistics.median(times["bnaudit restore"]) / statistics.median(times["cp B OUT"])
    print(f"restore / cp: {ratio:.2f}x")
    os.remove(out)


if __name__ == "__main__":
    main()
