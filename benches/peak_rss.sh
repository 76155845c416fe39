# Sourced by the benchmark scripts: peak_rss NAMES CMDS prints each command's peak resident
# memory, the max of 5 runs (GNU time), with the command's name from the parallel array.
peak_rss() {
    local -n names=$1 cmds=$2
    local i kb peak
    for i in "${!cmds[@]}"; do
        peak=0
        for _ in 1 2 3 4 5; do
            kb=$(/usr/bin/time -f %M ${cmds[$i]} 2>&1 >/dev/null | tail -1)
            (( kb > peak )) && peak=$kb
        done
        printf '%-50s %7d KiB (%.1f MiB)\n' "${names[$i]}:" "$peak" "$(echo "$peak / 1024" | bc -l)"
    done
}
