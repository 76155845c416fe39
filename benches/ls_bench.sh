#!/usr/bin/env bash
# Benchmark `bnaudit ls --format json` on a ~2 GiB, 20,000-tensor, 3,000-BatchNorm-layer
# checkpoint against the Python script a user would write instead (benches/ls_baseline.py)
# and the cheapest Python loop over the same tensors (benches/ls_bare_baseline.py), same
# machine, same run: wall time (hyperfine, else a `date` loop) and peak resident memory
# (GNU time), with memory maps and with --no-mmap. The page cache is warm (the checkpoint was
# just written); nothing here drops caches.
#
#   benches/ls_bench.sh [CHECKPOINT]    (default /tmp/bnaudit-bench/big.safetensors, generated)
#
# PYTHON (default /work/venv/bin/python, else python3) needs numpy and safetensors.
# BASELINE=<an older bnaudit binary> adds its rows, to compare builds in one run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-/work/venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
CKPT=${1:-/tmp/bnaudit-bench/big.safetensors}
[[ -f $CKPT ]] || "$PYTHON" benches/gen_big_checkpoint.py "$CKPT"

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/bnaudit

declare -a NAMES=("bnaudit ls --format json" "bnaudit ls --format json --no-mmap" "python ls_baseline.py (safe_open + numpy)" "python ls_bare_baseline.py (get_tensor, min, max)")
declare -a CMDS=("$BIN ls --format json $CKPT" "$BIN ls --format json --no-mmap $CKPT" "$PYTHON benches/ls_baseline.py $CKPT" "$PYTHON benches/ls_bare_baseline.py $CKPT")
if [[ -n ${BASELINE:-} ]]; then
    NAMES+=("baseline build: ls --format json")
    CMDS+=("$BASELINE ls --format json $CKPT")
fi

# Same layers found by both: the baseline is doing the same job.
ours=$("$BIN" ls --format json "$CKPT" | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["layers"]))')
theirs=$("$PYTHON" benches/ls_baseline.py "$CKPT" | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["layers"]))')
echo "checkpoint: $CKPT ($(stat -c %s "$CKPT") bytes); BatchNorm layers: bnaudit $ours, baseline $theirs"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== wall time"
if command -v hyperfine >/dev/null; then
    hyperfine --warmup 3 --min-runs 20 -N "${CMDS[@]}"
else
    echo "(hyperfine not installed: 20 runs each, timed with date +%s%N)"
    for i in "${!CMDS[@]}"; do
        ${CMDS[$i]} >/dev/null
        best=; total=0
        for _ in $(seq 20); do
            t0=$(date +%s%N); ${CMDS[$i]} >/dev/null; t1=$(date +%s%N)
            ms=$(( (t1 - t0) / 1000000 )); total=$((total + ms))
            [[ -z $best || $ms -lt $best ]] && best=$ms
        done
        echo "${NAMES[$i]}: mean $((total / 20)) ms, min $best ms"
    done
fi
echo

echo "== peak resident memory (max of 5 runs)"
. benches/peak_rss.sh
peak_rss NAMES CMDS
