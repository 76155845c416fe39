#!/usr/bin/env bash
# Scale benchmark: `ls`, `diff` and `check` (text reports) on checkpoint pairs of 20 k, 200 k
# and 1 M tiny tensors (benches/gen_scale_pair.py: 4 k, 40 k and 200 k BatchNorm layers, half
# in one sub-model, half each a sub-model of its own). Prints wall time, peak resident memory
# (GNU time) and time per tensor: linear passes keep the last column flat.
#
#   benches/scale_bench.sh [SIZES...]    (default 20000 200000 1000000)
#
# DIR (default /tmp/bnaudit-scale) holds the generated pairs (not committed; about 240 MB for
# the three sizes). PYTHON (default the CI venv, else python3) needs numpy. BASELINE=<binary>
# (e.g. a build of an earlier commit) runs that binary too, right after ours on each
# command, so both are measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-/root/.cache/bnaudit-ci/venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
DIR=${DIR:-/tmp/bnaudit-scale}
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(20000 200000 1000000)

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/bnaudit

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-6s %-8s %9s %10s %12s %5s\n' tensors cmd build "wall s" "peak MiB" "µs/tensor" exit
for n in "${SIZES[@]}"; do
    a=$DIR/a-$n.safetensors
    b=$DIR/b-$n.safetensors
    [[ -f $a && -f $b ]] || "$PYTHON" benches/gen_scale_pair.py "$n" "$DIR" >/dev/null
    for cmd in ls diff check; do
        case $cmd in
            ls) args=(ls "$a") ;;
            diff) args=(diff "$a" "$b") ;;
            check) args=(check "$a" "$b" --frozen backbone) ;;
        esac
        for build in this ${BASELINE:+baseline}; do
            bin=$BIN
            [[ $build == baseline ]] && bin=$BASELINE
            set +e
            /usr/bin/time -f '%e %M' -o /tmp/bnaudit-scale-time "$bin" "${args[@]}" --color never >/dev/null
            code=$?
            set -e
            # GNU time writes "Command exited with non-zero status N" first when diff/check fail.
            read -r wall kib < <(tail -n 1 /tmp/bnaudit-scale-time)
            printf '%-8s %-6s %-8s %9s %10d %12.2f %5s\n' "$n" "$cmd" "$build" "$wall" $((kib / 1024)) \
                "$(echo "$wall * 1000000 / $n" | bc -l)" "$code"
        done
    done
done
