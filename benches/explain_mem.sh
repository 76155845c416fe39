#!/usr/bin/env bash
# Peak RSS and wall time of `bnaudit explain A B` (JSON to /dev/null, and text) on 1, 4 and
# 16 BatchNorm layers of CHANNELS channels each (benches/gen_wide_layers.py: B is A after one
# train-mode forward, so every layer is explained on synthetic inputs). Memory should be flat
# in the number of layers. BASELINE=path/to/older/bnaudit measures that binary in the same run.
# Usage: benches/explain_mem.sh [CHANNELS] [DIR]   (CHANNELS default 4194304, 2.1 GiB of
# checkpoints for 16 layers; DIR default: a temporary directory, deleted)
set -euo pipefail
cd "$(dirname "$0")/.."
channels=${1:-4194304}
dir=${2:-$(mktemp -d)}
[[ -n ${2:-} ]] || trap 'rm -rf "$dir"' EXIT
python=${PYTHON:-/root/.cache/bnaudit-ci/venv/bin/python}
cargo build --release --quiet
bins=("$PWD/target/release/bnaudit")
[[ -z ${BASELINE:-} ]] || bins+=("$BASELINE")
echo "load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores; $channels channels per layer"
for layers in 1 4 16; do
    d=$dir/w$layers
    [[ -f $d/b.safetensors ]] || "$python" benches/gen_wide_layers.py "$d" "$layers" "$channels"
    for bin in "${bins[@]}"; do
        for format in json text; do
            /usr/bin/time -f "$layers layers, $format, $bin: %e s wall, %U s user, peak RSS %M KiB" \
                "$bin" explain "$d/a.safetensors" "$d/b.safetensors" --format "$format" >/dev/null
        done
    done
done
