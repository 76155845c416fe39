#!/usr/bin/env python3
"""Times commands by alternating them one run at a time, so that they share the machine's
drift (a shared VM's speed moves by a quarter within minutes; hyperfine runs each command's
runs in a block). Prints each command's median, quartiles and minimum in ms, and its median
over the first command's.

    benches/alternate.py ROUNDS 'cmd one' 'cmd two' ...

Each round runs every command once, in alternating order; output goes to /dev/null. The
first round warms the page cache and is not counted.
"""
import shlex
import statistics
import subprocess
import sys
import time


def main() -> None:
    rounds = int(sys.argv[1])
    cmds = [shlex.split(c) for c in sys.argv[2:]]
    times = [[] for _ in cmds]
    with open("/dev/null", "w") as null:
        for r in range(rounds + 1):
            order = list(range(len(cmds)))
            if r % 2:
                order.reverse()
            for i in order:
                t0 = time.perf_counter()
                subprocess.run(cmds[i], stdout=null, check=True)
                if r:
                    times[i].append((time.perf_counter() - t0) * 1e3)
    first = statistics.median(times[0])
    for cmd, t in zip(sys.argv[2:], times):
        t.sort()
        q = statistics.quantiles(t, n=4)
        m = statistics.median(t)
        print(
            f"median {m:8.1f}  p25 {q[0]:8.1f}  p75 {q[2]:8.1f}  min {t[0]:8.1f}"
            f"  ×first {m / first:6.2f}  {cmd}"
        )


main()
