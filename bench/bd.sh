#!/usr/bin/env bash
# Time and peak memory of the verity commands on a big, sparse device image:
# `bd makemerkle` (build the tree), `bd serve` (open, a few NBD reads and
# writes with qemu-io, flush, exit) and `bd verify` (check every block),
# each under /usr/bin/time -v. The image is a sparse file in a temp dir
# (its tree file is 1/64 of it with 4 KiB blocks, and really written).
# Not part of `make test`. Needs GNU time and qemu-io (qemu-utils).
#
# Usage: bench/bd.sh [SIZE] [SEALFS...]
#   SIZE     image size as truncate(1) takes it (default 64G)
#   SEALFS   sealfs binaries to compare, e.g. an older build (default bin/sealfs)
# Set BD_SKIP_VERIFY=1 to skip the verify row (it reads and hashes SIZE bytes).
set -euo pipefail

cd "$(dirname "$0")/.."
size=${1:-64G}
shift || true
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
	make -s build
	bins=(bin/sealfs)
fi
[ -x /usr/bin/time ] || { echo "bd.sh: GNU time (/usr/bin/time) is not installed" >&2; exit 1; }
command -v qemu-io >/dev/null || { echo "bd.sh: qemu-io is not installed (qemu-utils)" >&2; exit 1; }

work=$(mktemp -d)
serve_pid=
cleanup() {
	if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
head -c 32 /dev/urandom >"$work/mac.key"

# measure LABEL CMD...: run CMD under GNU time; print wall seconds and peak RSS.
measure() {
	local label=$1
	shift
	/usr/bin/time -v -o "$work/time.txt" "$@" >"$work/out.txt" 2>"$work/err.txt" || {
		echo "bd.sh: $label failed:" >&2
		cat "$work/err.txt" >&2
		exit 1
	}
	report "$label"
}

report() {
	awk -v label="$1" '
		/Elapsed \(wall clock\)/ { n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
		/Maximum resident set size/ { rss = $NF }
		END { printf "  %-12s %9.2f s %9.1f MB\n", label, s, rss / 1024 }
	' "$work/time.txt"
}

for bin in "${bins[@]}"; do
	rm -f "$work/data.img" "$work/data.tree"
	truncate -s "$size" "$work/data.img"
	echo "$bin, $size image ($(stat -c %s "$work/data.img") bytes):"
	measure makemerkle "$bin" bd makemerkle --json --mac-key-file "$work/mac.key" "$work/data.img" "$work/data.tree"
	root=$(sed -n 's/.*"root_hash": *"\([0-9a-f]*\)".*/\1/p' "$work/out.txt")

	# serve: open, a few reads and writes spread over the device, flush, SIGINT.
	start=$(date +%s.%N)
	/usr/bin/time -v -o "$work/time.txt" "$bin" bd serve "$work/data.img" --variant verity \
		--mac-key-file "$work/mac.key" --tree "$work/data.tree" --root "$root" \
		--listen 127.0.0.1:0 >"$work/serve.txt" 2>"$work/err.txt" &
	serve_pid=$!
	addr=
	for _ in $(seq 600); do
		addr=$(sed -n 's/^listening on //p' "$work/serve.txt")
		[ -n "$addr" ] && break
		sleep 0.05
	done
	[ -n "$addr" ] || { echo "bd.sh: serve did not start:" >&2; cat "$work/err.txt" >&2; exit 1; }
	opened=$(date +%s.%N)
	bytes=$(stat -c %s "$work/data.img")
	qemu-io -f raw "nbd://$addr/data.img" \
		-c 'read 0 64k' -c "write -P 0xa5 $((bytes / 2)) 64k" -c "read -P 0xa5 $((bytes / 2)) 64k" \
		-c "write -P 0x5a $((bytes - 65536)) 64k" -c "read $((bytes / 3 / 4096 * 4096)) 4k" -c flush >/dev/null
	# GNU time ignores SIGINT while it waits: signal the server itself.
	kill -INT "$(pgrep -P "$serve_pid")"
	wait "$serve_pid"
	serve_pid=
	report serve
	awk -v a="$start" -v b="$opened" 'BEGIN { printf "  %-12s %9.2f s  (until serve listens; the wall time above includes the I/O)\n", "serve open", b - a }'
	root=$(sed -n 's/^root: //p' "$work/serve.txt")

	if [ "${BD_SKIP_VERIFY:-}" != 1 ]; then
		measure verify "$bin" bd verify "$work/data.img" --variant verity \
			--mac-key-file "$work/mac.key" --tree "$work/data.tree" --root "$root"
	fi
done
