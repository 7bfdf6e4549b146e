#!/usr/bin/env bash
# Time and peak memory of the blob store commands on one big file: `merkle`
# (the root only), `blob put`, `blob get --delivery` (encode a delivery blob),
# `blob put --delivery` (decode one while installing) and `blob verify`, each
# under /usr/bin/time -v. The file is text-like, so the delivery blob is
# compressed. Not part of `make test`.
# Needs GNU time.
#
# Usage: bench/blob.sh [SIZE_MIB] [SEALFS...]
#   SIZE_MIB  size of the file in MiB (default 384)
#   SEALFS    sealfs binaries to compare, e.g. an older build (default bin/sealfs)
set -euo pipefail

cd "$(dirname "$0")/.."
size=${1:-384}
shift || true
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
	make -s build
	bins=(bin/sealfs)
fi
[ -x /usr/bin/time ] || { echo "blob.sh: GNU time (/usr/bin/time) is not installed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Numbered lines with a random number each: compresses about 3:1.
awk 'BEGIN { srand(1); for (i = 0; ; i++) printf "%d %d sealfs blob %d\n", i, i * 7, int(rand() * 1e9) }' 2>/dev/null |
	head -c "$((size << 20))" >"$work/file" || true

measure() {
	local label=$1
	shift
	/usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
		echo "blob.sh: $label failed:" >&2
		cat "$work/err.txt" >&2
		exit 1
	}
	awk -v label="$label" '
		/Elapsed \(wall clock\)/ { n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
		/Maximum resident set size/ { rss = $NF }
		END { printf "  %-20s %9.2f s %9.1f MB\n", label, s, rss / 1024 }
	' "$work/time.txt"
}

for bin in "${bins[@]}"; do
	rm -rf "$work/store" "$work/store2" "$work/file.dlv"
	echo "$bin, ${size} MiB file:"
	measure merkle "$bin" merkle "$work/file"
	measure "blob put" "$bin" blob put "$work/store" "$work/file"
	name=$(cat "$work/out.txt")
	measure "blob get --delivery" "$bin" blob get --delivery "$work/store" "$name" -o "$work/file.dlv"
	echo "    (delivery blob: $(($(stat -c %s "$work/file.dlv") >> 20)) MiB)"
	measure "blob put --delivery" "$bin" blob put --delivery "$work/store2" "$work/file.dlv"
	[ "$(cat "$work/out.txt")" = "$name" ] || { echo "blob.sh: put --delivery installed another name" >&2; exit 1; }
	measure "blob verify" "$bin" blob verify "$work/store2"
done
