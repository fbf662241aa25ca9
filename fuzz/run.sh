#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, starting from the checked-in seeds.
# libFuzzer writes the inputs it finds to a scratch corpus outside the checkout, so corpus/ keeps
# only the seeds; a crash or a broken invariant leaves its input in fuzz/artifacts/<target>/ and
# fails the run.
#
# usage: fuzz/run.sh [-t SECONDS] [TARGET...]       (default: 20 seconds, every target)
# needs: nightly Rust and cargo-fuzz (`cargo install cargo-fuzz --locked`)
set -euo pipefail
cd "$(dirname "$0")"

seconds=20
if [ "${1:-}" = -t ]; then
    seconds=${2:?-t needs seconds}
    shift 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cargo +nightly fuzz build
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "==> fuzz $t for ${seconds}s (seeds: $(find "corpus/$t" -type f | wc -l))"
    # -max_len: the largest kernel buffer parsed is a 4 KiB config space; -timeout: one input
    # taking a second means a walk that does not end.
    log=$scratch/$t.log
    if ! cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=1 -print_final_stats=1 > "$log" 2>&1; then
        grep -E -A2 'panicked|ERROR|SUMMARY|Test unit written' "$log" || tail -40 "$log"
        echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/; reproduce with" >&2
        echo "  cargo +nightly fuzz run $t fuzz/artifacts/$t/<file>" >&2
        exit 1
    fi
    grep -E '^(INFO: seed corpus|Done|stat::number_of_executed_units)' "$log" || true
done
