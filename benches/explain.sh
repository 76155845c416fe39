#!/usr/bin/env bash
# `bnaudit explain A B --activations F --format json` (whole process: time with hyperfine,
# peak RSS with /usr/bin/time) against PyTorch doing the same work in-process
# (benches/explain_bench.py), on the two captures explain_bench.py generates: `big` (one
# BatchNorm2d(256), one 64×256×56×56 forward, 392 MiB) and `resnet` (20 layers × 4 forwards).
# Usage: benches/explain.sh [PYTHON] [DIR]   (DIR default: a temporary directory, deleted)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-${PYTHON:-/root/.cache/bnaudit-ci/venv/bin/python}}
dir=${2:-$(mktemp -d)}
[[ -n ${2:-} ]] || trap 'rm -rf "$dir"' EXIT
cargo build --release --quiet
bin=$PWD/target/release/bnaudit
echo "load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
for kind in big resnet; do
    d=$dir/$kind
    [[ -f $d/acts.safetensors ]] || "$python" benches/explain_bench.py gen "$d" "$kind"
    echo "== $kind: $(du -h "$d/acts.safetensors" | cut -f1) of activations"
    cmd="$bin explain $d/a.safetensors $d/b.safetensors --activations $d/acts.safetensors --format json"
    hyperfine --warmup 1 --runs 10 --export-json "$dir/$kind.json" "$cmd" >&2
    ours=$("$python" -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f\"{r['median']*1e3:.1f} {r['min']*1e3:.1f}\")" "$dir/$kind.json")
    rss=$(/usr/bin/time -f %M $cmd 2>&1 >/dev/null | tail -1)
    "$python" benches/explain_bench.py torch "$d" 5 bn | sed 's/^/F.batch_norm calls only: /' >&2
    theirs=$("$python" benches/explain_bench.py torch "$d" 5 | tee /dev/stderr)
    field() { sed -n "s/^$1=//p" <<<"$theirs"; }
    read -r median min <<<"$ours"
    awk -v a="$median" -v b="$(field median_ms)" -v c="$min" -v d="$(field min_ms)" -v rss="$rss" \
        'BEGIN { printf "median: bnaudit %.1f ms, torch %.1f ms, ratio %.2f\nmin:    bnaudit %.1f ms, torch %.1f ms, ratio %.2f\nbnaudit peak RSS: %.1f MiB\n", a, b, a / b, c, d, c / d, rss / 1024 }'
done
