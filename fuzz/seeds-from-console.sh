#!/usr/bin/env bash
# Turns the console output of the `dump_replies` example (as `cargo xtask vm` prints it) into
# seed files: corpus/<fuzz target>/<variant>-<iommu>-<name>. A buffer whose bytes are already in
# the target's corpus (under any name) is skipped. See README.md for the whole procedure.
#
# usage: fuzz/seeds-from-console.sh LOG [CORPUS_DIR]   (CORPUS_DIR defaults to fuzz/corpus)
set -euo pipefail

log=${1:?usage: $0 LOG [CORPUS_DIR]}
corpus=${2:-$(dirname "$0")/corpus}
command -v xxd >/dev/null || { echo "$0: needs xxd" >&2; exit 1; }

# One line per buffer: <label> <target> <name> <length> <hex>. The xtask prefixes every console
# line with the boot's label, `[a/intel] `; a log of a bare run has none.
awk '
    {
        label = "guest"
        if (match($0, /^\[[^]]*\] /)) {
            label = substr($0, 2, RLENGTH - 3)
            gsub("/", "-", label)
            $0 = substr($0, RLENGTH + 1)
        }
    }
    $1 == "@@SEED-BEGIN" { hdr = label " " $2 " " $3 " " $4; hex = ""; inside = 1; next }
    $1 == "@@SEED-END" && inside { print hdr " " hex; inside = 0; next }
    inside && /^[0-9a-f]+$/ { hex = hex $0 }
' "$log" | while read -r label target name len hex; do
    if [ $(( ${#hex} / 2 )) -ne "$len" ]; then
        echo "skip $label $target $name: $(( ${#hex} / 2 )) bytes of hex, $len announced" >&2
        continue
    fi
    mkdir -p "$corpus/$target"
    tmp=$(mktemp)
    printf '%s' "$hex" | xxd -r -p > "$tmp"
    dup=
    for f in "$corpus/$target"/*; do
        if [ -f "$f" ] && cmp -s "$f" "$tmp"; then
            dup=$f
            break
        fi
    done
    if [ -n "$dup" ]; then
        echo "same as ${dup##*/}: $label-$name ($target)"
        rm -f "$tmp"
    else
        mv "$tmp" "$corpus/$target/$label-$name"
        chmod 644 "$corpus/$target/$label-$name"
        echo "new $target/$label-$name ($len bytes)"
    fi
done
