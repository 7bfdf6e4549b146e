#!/usr/bin/env bash
# Throughput of `sealfs mount` against the commands: a SIZE MiB file (random
# bytes) written and read sequentially through the mount (dd bs=1M; the time
# includes the close, which commits) and with `sealfs write` / `sealfs read`,
# as ratios mount/command (the goal is 0.7 or more), then small files created,
# written (4 KiB) and closed through the mount, one commit each, per second.
# Each measurement is the best of RUNS. The kernel's page cache is dropped
# before each read when running as root. Peak RSS of the mount server is
# printed too. Not part of `make test`. Needs /dev/fuse and fusermount3.
#
# Usage: bench/mount.sh [SIZE_MIB] [SMALL_FILES]
#   SIZE_MIB     the large file's size in MiB (default 256)
#   SMALL_FILES  how many small files (default 1000)
# Environment: RUNS (default 5), SEALFS=PATH to use that binary instead of
# building bin/sealfs, TMPDIR for where the image goes (it needs about
# 3 x SIZE_MIB).
set -euo pipefail

cd "$(dirname "$0")/.."
size=${1:-256}
small=${2:-1000}
runs=${RUNS:-5}
if [ -z "${SEALFS:-}" ]; then
	make -s build
	SEALFS=$PWD/bin/sealfs
fi
command -v fusermount3 >/dev/null || { echo "mount.sh: fusermount3 is not installed (Debian: fuse3)" >&2; exit 1; }

work=$(mktemp -d)
mnt=$work/mnt
server=
cleanup() {
	if [ -n "$server" ]; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
mkdir "$mnt"
cd "$work"

now() { date +%s.%N; }
# sub T1 T0 prints T1 - T0.
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
dropcaches() { [ "$(id -u)" -eq 0 ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# best SECONDS... prints the smallest
best() { printf '%s\n' "$@" | sort -g | head -1; }
mibps() { awk -v s="$size" -v t="$1" 'BEGIN { printf "%.0f", s / t }'; }

img_mib=$((size * 3 + 64))
# One image for the commands, one for the mount, so that the two are
# measured in turns (the load of a shared machine changes by the minute).
"$SEALFS" mkfs disk.img --size "${img_mib}M" --io-block 4K --gen-key disk.key >/dev/null
"$SEALFS" mkfs mnt.img --size "${img_mib}M" --io-block 4K --key-file disk.key >/dev/null
export SEALFS_KEY_FILE=$work/disk.key
head -c "$((size << 20))" /dev/urandom >big

mount_serve() {
	: >"$work/mount.out"
	"$SEALFS" mount "$1" "$mnt" >"$work/mount.out" 2>"$work/mount.err" &
	server=$!
	for _ in $(seq 200); do
		grep -q '^mounted' "$work/mount.out" 2>/dev/null && return
		sleep 0.05
	done
	echo "mount.sh: the mount did not come up:" >&2
	cat "$work/mount.err" >&2
	exit 1
}
mount_stop() {
	fusermount3 -u "$mnt"
	wait "$server"
	server=
}

mount_serve mnt.img
cmd_w=() cmd_r=() m_w=() m_r=()
for _ in $(seq "$runs"); do
	# One journaled transaction, streamed: the reference.
	t0=$(now); "$SEALFS" write disk.img 100 big >/dev/null; t1=$(now)
	cmd_w+=("$(sub "$t1" "$t0")")
	# The same through the mount; the close commits.
	t0=$(now); dd if=big of="$mnt/100" bs=1M status=none; t1=$(now)
	m_w+=("$(sub "$t1" "$t0")")
	dropcaches
	t0=$(now); "$SEALFS" read disk.img 100 -o /dev/null; t1=$(now)
	cmd_r+=("$(sub "$t1" "$t0")")
	dropcaches
	t0=$(now); dd if="$mnt/100" of=/dev/null bs=1M status=none; t1=$(now)
	m_r+=("$(sub "$t1" "$t0")")
done
cmp -s big "$mnt/100" || { echo "mount.sh: the file read back differs" >&2; exit 1; }
dd if=big of="$mnt/101" bs=1M status=none

# Small files: bash's printf writes without a fork; the redirection's close
# commits each file. On this image (the large files take most of it) and on
# a fresh one: each commit's allocations search the bitmap from its start
# (see README).
data=$(head -c 3072 /dev/urandom | base64 -w0 | head -c 4096)
small_files() {
	local t0 t1 n
	t0=$(now)
	for i in $(seq "$small"); do
		printf '%s' "$data" >"$mnt/$((100000 + i))"
	done
	t1=$(now)
	n=$(ls "$mnt" | wc -l)
	[ "$n" -eq $((small + $1)) ] || { echo "mount.sh: $n files in the mount, want $((small + $1))" >&2; exit 1; }
	sub "$t1" "$t0"
}
small_full=$(small_files 2)
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$server/status")
mount_stop
"$SEALFS" verify mnt.img >/dev/null
rm mnt.img disk.img
"$SEALFS" mkfs mnt.img --size "${img_mib}M" --io-block 4K --key-file disk.key >/dev/null
mount_serve mnt.img
small_s=$(small_files 0)
mount_stop
"$SEALFS" verify mnt.img >/dev/null

bw=$(best "${cmd_w[@]}") br=$(best "${cmd_r[@]}") mw=$(best "${m_w[@]}") mr=$(best "${m_r[@]}")
printf '%-40s %10s %10s\n' "" "seconds" "MiB/s"
printf '%-40s %10.2f %10s\n' "sealfs write, $size MiB" "$bw" "$(mibps "$bw")"
printf '%-40s %10.2f %10s\n' "write through the mount (dd, close)" "$mw" "$(mibps "$mw")"
printf '%-40s %10.2f %10s\n' "sealfs read, $size MiB" "$br" "$(mibps "$br")"
printf '%-40s %10.2f %10s\n' "read through the mount (dd)" "$mr" "$(mibps "$mr")"
awk -v bw="$bw" -v mw="$mw" -v br="$br" -v mr="$mr" 'BEGIN {
	printf "ratio mount/command: write %.2f, read %.2f (goal >= 0.70)\n", bw / mw, br / mr }'
awk -v n="$small" -v t="$small_s" 'BEGIN { printf "%d small files (4 KiB) created and closed, fresh image: %.2f s, %.0f files/s\n", n, t, n / t }'
awk -v n="$small" -v t="$small_full" -v s="$((2 * size))" 'BEGIN { printf "the same beside the %d MiB of large files: %.2f s, %.0f files/s\n", s, t, n / t }'
echo "mount server peak RSS: $((rss / 1024)) MiB"
