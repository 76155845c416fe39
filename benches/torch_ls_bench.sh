#!/usr/bin/env bash
# Benchmark `bnaudit ls --format json` on a ~2 GiB, 20,000-tensor torch.save file against
# (1) the same checkpoint as safetensors and (2) torch.load(mmap=True, weights_only=True)
# plus the same BatchNorm reads in Python (benches/torch_ls_baseline.py); same machine, same
# run: wall time (hyperfine) and peak resident memory (GNU time). Page cache warm.
#
#   benches/torch_ls_bench.sh [DIR]    (default /tmp/bnaudit-bench; files generated there)
#
# PYTHON (default the CI venv's python, else python3) needs torch, numpy and safetensors.
# The generated files (2 GiB each, sparse) are deleted at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-/root/.cache/bnaudit-ci/venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
DIR=${1:-/tmp/bnaudit-bench}
ST=$DIR/big.safetensors
PT=$DIR/big.pt
mkdir -p "$DIR"
[[ -f $ST ]] || "$PYTHON" benches/gen_big_checkpoint.py "$ST"
[[ -f $PT ]] || "$PYTHON" benches/gen_big_torch.py "$ST" "$PT"
[[ ${KEEP:-0} == 1 ]] || trap 'rm -f "$ST" "$PT"' EXIT

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/bnaudit

declare -a NAMES=(
    "bnaudit ls --format json big.safetensors"
    "bnaudit ls --format json big.pt"
    "bnaudit ls --format json --no-mmap big.pt"
    "python torch.load(mmap, weights_only) + BN reads"
)
declare -a CMDS=(
    "$BIN ls --format json $ST"
    "$BIN ls --format json $PT"
    "$BIN ls --format json --no-mmap $PT"
    "$PYTHON benches/torch_ls_baseline.py $PT"
)

# The same layers and numbers from both formats, and the baseline finds the same layers.
strip='import json,sys; d=json.load(sys.stdin); c=d["checkpoint"]
for k in ("path","files","bytes","format","key","warnings","metadata"): c.pop(k)
print(json.dumps(d, sort_keys=True))'
want=$("$BIN" ls --format json "$ST" | "$PYTHON" -c "$strip")
got=$("$BIN" ls --format json "$PT" | "$PYTHON" -c "$strip")
if [[ "$want" != "$got" ]]; then
    echo "ls reports of $ST and $PT differ" >&2
    exit 1
fi
ours=$("$BIN" ls --format json "$PT" | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["layers"]))')
theirs=$("$PYTHON" benches/torch_ls_baseline.py "$PT" | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["layers"]))')
echo "checkpoint: $PT ($(stat -c %s "$PT") bytes), twin $ST; BatchNorm layers: bnaudit $ours, baseline $theirs; reports identical"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "== wall time"
hyperfine --warmup 3 --min-runs 20 -N "${CMDS[@]}"
echo

echo "== peak resident memory (max of 5 runs)"
. benches/peak_rss.sh
peak_rss NAMES CMDS
