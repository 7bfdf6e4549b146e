#!/usr/bin/env bash
# CocoonFS data path, side by side: the one-core crypto floor (openssl
# AES-128-CBC + HMAC-SHA-256 over the same file), sealfs, and the reference
# cocoonfs tool when present, measured in one run, printed as ratios.
# Not part of `make test`. Run with -h for the options.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bench/cocoonfs.sh [--size MIB] [--small N] [--runs R] [--mkfs-size SIZE] [--keep] [-h]

Part 1, large files (a 1 GiB image, 4 KiB IO blocks, free space not
randomized): the floor, then sealfs write (new file), write (overwrite),
read, ls, verify, each R times with the least wall time, its ratio to the
floor and the largest peak RSS; then mkfs of a --mkfs-size image (time, RSS,
bytes on disk).

Part 2, against the reference (a 64 MiB image, 4 KiB IO blocks,
sha2/aes/128, both tools on the same workload): mkfs, N writes of 4 KiB
(one process each), write 16 MiB, read 16 MiB, N reads of 4 KiB, list N+1
files; each phase R times, the best kept, and sealfs / reference printed.

  --size MIB        the large file (default 256)
  --small N         small files in part 2 (default 200)
  --runs R          repetitions of each measurement but mkfs (default 3)
  --mkfs-size SIZE  size of the mkfs in part 1 (default 16G)
  --keep            keep the temporary directory and print its path
  -h, --help        this text

Environment: SEALFS=PATH uses that sealfs binary instead of building
./cmd/sealfs; COCOONFS=PATH names the reference tool (default
../shared/reference/cocoonfs; part 2 is skipped without it); TMPDIR chooses
where the temporary directory goes (it needs --size × 3 plus the mkfs image's
metadata).
EOF
}

size_mib=256
small=200
runs=3
mkfs_size=16G
keep=0
while [ $# -gt 0 ]; do
	case $1 in
	--size) size_mib=${2:?}; shift 2 ;;
	--small) small=${2:?}; shift 2 ;;
	--runs) runs=${2:?}; shift 2 ;;
	--mkfs-size) mkfs_size=${2:?}; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench/cocoonfs.sh: unknown option $1 (see -h)" >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/sealfs-bench-cocoonfs.XXXXXX")
if [ "$keep" = 1 ]; then
	echo "keeping $work"
else
	trap 'rm -rf "$work"' EXIT
fi
sealfs=${SEALFS:-}
if [ -z "$sealfs" ]; then
	(cd "$root" && CGO_ENABLED=0 go build -o "$work/sealfs" ./cmd/sealfs)
	sealfs=$work/sealfs
fi
ref=${COCOONFS:-$root/../shared/reference/cocoonfs}
[ -x "$ref" ] || ref=""
for tool in openssl /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "bench/cocoonfs.sh: $tool is needed" >&2; exit 1; }
done

now() { echo "$EPOCHREALTIME"; } # bash's clock: no process per reading
secs() { echo "$2 - $1" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
fmt() { printf '%.3f' "$1"; }
# measure VAR CMD...: wall seconds into VAR, peak RSS (KB) into VAR_rss.
measure() {
	local var=$1
	shift
	local t0 t1
	t0=$(now)
	/usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null
	t1=$(now)
	printf -v "$var" '%s' "$(secs "$t0" "$t1")"
	printf -v "${var}_rss" '%s' "$(tail -n1 "$work/rss")"
}
# best VAR CMD...: measure CMD $runs times; the least time into VAR, the
# largest peak RSS into VAR_rss. A command named by $before runs first each
# time, unmeasured.
before=
best() {
	local var=$1 i t rss=0 min=
	shift
	for ((i = 0; i < runs; i++)); do
		[ -z "$before" ] || eval "$before"
		measure _one "$@"
		if [ -z "$min" ] || (($(echo "$_one < $min" | bc -l))); then min=$_one; fi
		((_one_rss > rss)) && rss=$_one_rss
	done
	printf -v "$var" '%s' "$min"
	printf -v "${var}_rss" '%s' "$rss"
}

head -c 32 /dev/urandom >"$work/key"
keyhex=$(od -An -tx1 "$work/key" | tr -d ' \n')
head -c $((size_mib << 20)) /dev/urandom >"$work/big"
cat "$work/big" >/dev/null # in the page cache for everyone

echo "== machine: $(nproc) cores, $(uname -r); sealfs $("$sealfs" --version 2>/dev/null | head -n1)"
echo
echo "== part 1: a $size_mib MiB file in a 1 GiB image (4 KiB IO blocks, free space not randomized), best of $runs"
best enc openssl enc -aes-128-cbc -K 000102030405060708090a0b0c0d0e0f -iv 000102030405060708090a0b0c0d0e0f -in "$work/big" -out /dev/null
best mac openssl dgst -sha256 -hmac k "$work/big"
floor=$(echo "$enc + $mac" | bc -l)
echo "floor (openssl enc -aes-128-cbc $(fmt "$enc") s + dgst -sha256 -hmac $(fmt "$mac") s): $(fmt "$floor") s"
"$sealfs" mkfs "$work/img" --size 1G --io-block 4K -k "$work/key" --no-randomize-unallocated >/dev/null
before='"$sealfs" rm "$work/img" 20 -k "$work/key" >/dev/null 2>&1 || true'
best w_new "$sealfs" write "$work/img" 20 "$work/big" -k "$work/key"
before=
best w_over "$sealfs" write "$work/img" 20 "$work/big" -k "$work/key"
best r "$sealfs" read "$work/img" 20 -k "$work/key" # to /dev/null, as openssl's output
"$sealfs" read "$work/img" 20 -k "$work/key" | cmp -s "$work/big" - || { echo "bench/cocoonfs.sh: sealfs read back different bytes" >&2; exit 1; }
best l "$sealfs" ls "$work/img" -k "$work/key"
best v "$sealfs" verify "$work/img" -k "$work/key"
printf '%-26s %9s %12s %10s\n' operation time "floor/time" "peak RSS"
row() { printf '%-26s %8.3fs %11sx %7d MB\n' "$1" "$2" "$(ratio "$floor" "$2")" $(($3 / 1024)); }
row "sealfs write (new file)" "$w_new" "$w_new_rss"
row "sealfs write (overwrite)" "$w_over" "$w_over_rss"
row "sealfs read" "$r" "$r_rss"
row "sealfs ls" "$l" "$l_rss"
row "sealfs verify (1 GiB)" "$v" "$v_rss"
echo "ls / read: $(ratio "$l" "$r")"
best startup "$sealfs" --version
printf 'process start-up alone (sealfs --version, part of every line above): %.3f s\n' "$startup"
measure m "$sealfs" mkfs "$work/mkfs.img" --size "$mkfs_size" --io-block 4K -k "$work/key" --no-randomize-unallocated
printf 'sealfs mkfs --size %s: %.3f s (%s x the floor), %d MB peak RSS, %s on disk\n' "$mkfs_size" "$m" "$(ratio "$m" "$floor")" $((m_rss / 1024)) "$(du -h "$work/mkfs.img" | cut -f1)"
rm -f "$work/mkfs.img" "$work/img"

echo
if [ -z "$ref" ]; then
	echo "== part 2 skipped: no reference cocoonfs tool (set COCOONFS=PATH)"
	exit 0
fi
echo "== part 2: sealfs against the reference ($ref), 64 MiB image, 4 KiB IO blocks, sha2/aes/128, best of $runs"
head -c 4096 /dev/urandom >"$work/f4k"
head -c $((16 << 20)) /dev/urandom >"$work/f16m"

# phase TOOL NAME: runs one phase of the workload, prints seconds.
phase() {
	local tool=$1 name=$2 img=$work/$1.img t0 t1 i
	t0=$(now)
	case $tool/$name in
	sealfs/mkfs) rm -f "$img"; "$sealfs" mkfs "$img" --size 64M --io-block 4K -k "$work/key" --no-randomize-unallocated --hash sha2 --cipher aes --strength 128 >/dev/null ;;
	ref/mkfs) rm -f "$img"; truncate -s 64M "$img"; "$ref" -f -i "$img" mkfs -K "$keyhex" -I 00112233 -H sha2 -C aes -t 128 -s 64M --io-block-size 4K -n >/dev/null ;;
	sealfs/small-writes) for ((i = 0; i < small; i++)); do "$sealfs" write "$img" $((100 + i)) "$work/f4k" -k "$work/key" >/dev/null; done ;;
	ref/small-writes) for ((i = 0; i < small; i++)); do "$ref" -f -i "$img" write-file -K "$keyhex" -i "$work/f4k" $((100 + i)) >/dev/null; done ;;
	sealfs/write-16m) "$sealfs" write "$img" 20 "$work/f16m" -k "$work/key" >/dev/null ;;
	ref/write-16m) "$ref" -f -i "$img" write-file -K "$keyhex" -i "$work/f16m" 20 >/dev/null ;;
	sealfs/read-16m) "$sealfs" read "$img" 20 -k "$work/key" -o "$work/out" ;;
	ref/read-16m) "$ref" -f -i "$img" read-file -K "$keyhex" -o "$work/out" 20 >/dev/null ;;
	sealfs/small-reads) for ((i = 0; i < small; i++)); do "$sealfs" read "$img" $((100 + i)) -k "$work/key" >/dev/null; done ;;
	ref/small-reads) for ((i = 0; i < small; i++)); do "$ref" -f -i "$img" read-file -K "$keyhex" -o "$work/out" $((100 + i)) >/dev/null; done ;;
	sealfs/list) "$sealfs" ls "$img" -k "$work/key" >/dev/null ;;
	ref/list) "$ref" -f -i "$img" list-files -K "$keyhex" >/dev/null ;;
	esac || { echo "bench/cocoonfs.sh: $tool $name failed" >&2; return 1; }
	t1=$(now)
	secs "$t0" "$t1"
}
printf '%-28s %10s %10s %16s\n' phase reference sealfs "sealfs/reference"
for name in mkfs small-writes write-16m read-16m small-reads list; do
	best_s="" best_r=""
	for ((k = 0; k < runs; k++)); do
		# Each repetition starts from the state the earlier phases left.
		if [ "$k" -gt 0 ] && [ "$name" = small-writes ]; then
			for tool in sealfs ref; do phase "$tool" mkfs >/dev/null; done
		fi
		s=$(phase sealfs "$name") || exit 1
		r=$(phase ref "$name") || exit 1
		[ -z "$best_s" ] || [ "$(echo "$s < $best_s" | bc)" = 1 ] && best_s=$s
		[ -z "$best_r" ] || [ "$(echo "$r < $best_r" | bc)" = 1 ] && best_r=$r
	done
	label=$name
	case $name in
	small-writes) label="$small writes of 4 KiB" ;;
	small-reads) label="$small reads of 4 KiB" ;;
	list) label="list $((small + 1)) files" ;;
	write-16m) label="write 16 MiB" ;;
	read-16m) label="read 16 MiB" ;;
	mkfs) label="mkfs 64 MiB" ;;
	esac
	printf '%-28s %9.3fs %9.3fs %15sx\n' "$label" "$best_r" "$best_s" "$(ratio "$best_s" "$best_r")"
	if [ "$name" = read-16m ]; then
		cmp -s "$work/f16m" "$work/out" || { echo "bench/cocoonfs.sh: a tool read back different bytes" >&2; exit 1; }
	fi
done
# Both images must still be readable by the other tool.
"$ref" -f -i "$work/sealfs.img" list-files -K "$keyhex" | wc -l | xargs -I{} echo "the reference lists {} files in the sealfs image"
"$sealfs" ls "$work/ref.img" -k "$work/key" | wc -l | xargs -I{} echo "sealfs lists {} files in the reference image"
