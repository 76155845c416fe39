#!/usr/bin/env bash
# Train-mode BatchNorm on the same 64×256×56×56 f32 batch: bnaudit's engine against PyTorch's
# CPU kernel on 2 threads. Usage: benches/compare.sh [PYTHON]  (default /work/venv/bin/python,
# any interpreter with torch). Prints the ratios bnaudit/torch (< 1: faster) of the medians
# and of the minima (the least disturbed runs on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-${PYTHON:-/work/venv/bin/python}}
ours=$(RAYON_NUM_THREADS=2 cargo bench --quiet --bench forward | tee /dev/stderr)
theirs=$("$python" benches/torch_batch_norm.py | tee /dev/stderr)
field() { sed -n "s/^$1=//p"; }
awk -v a="$(field median_ms <<<"$ours")" -v b="$(field median_ms <<<"$theirs")" \
    -v c="$(field min_ms <<<"$ours")" -v d="$(field min_ms <<<"$theirs")" \
    'BEGIN { printf "median: bnaudit %.2f ms, torch %.2f ms, ratio %.2f\nmin:    bnaudit %.2f ms, torch %.2f ms, ratio %.2f\n", a, b, a / b, c, d, c / d }'
