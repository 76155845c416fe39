#!/usr/bin/env bash
# Train-mode BatchNorm on the same 64×256×56×56 f32 batch: bnaudit's engine against PyTorch's
# CPU kernel on 2 threads. Usage: benches/compare.sh [PYTHON]  (default /work/venv/bin/python,
# any interpreter with torch). Prints both medians and the ratio bnaudit/torch (< 1: faster).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-${PYTHON:-/work/venv/bin/python}}
ours=$(RAYON_NUM_THREADS=2 cargo bench --quiet --bench forward | tee /dev/stderr | sed -n 's/^median_ms=//p')
theirs=$("$python" benches/torch_batch_norm.py | tee /dev/stderr | sed -n 's/^median_ms=//p')
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "bnaudit %.2f ms, torch %.2f ms, ratio bnaudit/torch = %.2f\n", a, b, a / b }'
