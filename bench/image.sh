#!/usr/bin/env bash
# Stored bytes and build throughput of PuzzleFS images (`sealfs image build`)
# on N related trees: N Go toolchain releases of one minor (go1.22.0,
# go1.22.1, ...) downloaded as modules from the Go module proxy and unzipped
# side by side, the way consecutive Ubuntu tags share most of their bytes.
# Compares the total bytes of an OCI layout holding all N as tags v1..vN
# (one layout each with and without --base, with and without --compress)
# against N tar, N tar.gz and N tar.zst files and restic repositories with all
# N backed up, and the wall time of `sealfs image build` against `restic
# backup`. Exits 1 if an extracted image differs from its tree.
# The PuzzleFS reference (10 Ubuntu tags: 766 MB of tars -> 130 MB unified,
# 53 MB with zstd) is printed alongside as ratios. Not part of `make test`.
# See bench/README-image.md. Run with -h for the options.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bench/image.sh [-n N] [--versions "1.22.0 1.22.1 ..."] [--platform OS-ARCH]
                      [--cache DIR] [--repeat K] [--runs R] [--no-hyperfine] [--keep] [-h]

Downloads N Go toolchain zips from https://proxy.golang.org (cached), unzips
each into its own tree with every mtime set to 0, and measures the total
stored bytes of N tars, N tar.gz, N tar.zst, sealfs OCI layouts with tags
v1..vN (with/without --base, with/without --compress) and restic
repositories (compression auto and off), plus the build throughput of sealfs
against restic over all N trees and, with hyperfine, on the first tree alone.

  -n N              number of versions (default 5, or all of --versions)
  --versions LIST   Go versions, space separated, oldest first
                    (default: 1.22.0 1.22.1 ... the first N patch releases)
  --platform P      toolchain platform (default linux-amd64)
  --cache DIR       download cache (default ~/.cache/sealfs-bench)
  --repeat K        store all N trees K times per method, interleaved, and
                    report the fastest (default 3)
  --runs R          hyperfine runs per command on the first tree (default 5)
  --no-hyperfine    skip the single-tree hyperfine comparison
  --keep            keep the temporary directory and print its path
  -h, --help        this text

Environment: N, VERSIONS, PLATFORM, SEALFS_BENCH_CACHE stand for the flags;
SEALFS=PATH uses that sealfs binary instead of building ./cmd/sealfs;
TMPDIR chooses where the (several GB) temporary directory goes.
Missing restic, hyperfine, unzip, curl or zstd are installed with apt-get
when running as root.
EOF
}

n=${N:-}
versions=${VERSIONS:-}
platform=${PLATFORM:-linux-amd64}
cache=${SEALFS_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealfs-bench}
runs=5
repeat=3
use_hyperfine=1
keep=0
while [ $# -gt 0 ]; do
	case $1 in
	-n) n=${2:?-n needs a number}; shift 2 ;;
	-n*) n=${1#-n}; shift ;;
	--versions) versions=${2?--versions needs a list}; shift 2 ;;
	--versions=*) versions=${1#*=}; shift ;;
	--platform) platform=${2:?--platform needs a value}; shift 2 ;;
	--platform=*) platform=${1#*=}; shift ;;
	--cache) cache=${2:?--cache needs a directory}; shift 2 ;;
	--cache=*) cache=${1#*=}; shift ;;
	--runs) runs=${2:?--runs needs a number}; shift 2 ;;
	--runs=*) runs=${1#*=}; shift ;;
	--repeat) repeat=${2:?--repeat needs a number}; shift 2 ;;
	--repeat=*) repeat=${1#*=}; shift ;;
	--no-hyperfine) use_hyperfine=0; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "image.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
done

read -r -a vlist <<<"$versions"
if [ ${#vlist[@]} -eq 0 ]; then
	n=${n:-5}
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "image.sh: -n wants a positive number, not '$n'" >&2; exit 2; }
	for ((i = 0; i < n; i++)); do vlist+=("1.22.$i"); done
else
	n=${n:-${#vlist[@]}}
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "image.sh: -n wants a positive number, not '$n'" >&2; exit 2; }
	[ "$n" -le ${#vlist[@]} ] || { echo "image.sh: -n $n but only ${#vlist[@]} versions given" >&2; exit 2; }
	vlist=("${vlist[@]:0:n}")
fi
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "image.sh: --runs wants a positive number" >&2; exit 2; }
[[ $repeat =~ ^[1-9][0-9]*$ ]] || { echo "image.sh: --repeat wants a positive number" >&2; exit 2; }

cd "$(dirname "$0")/.."
log() { echo "image.sh: $*" >&2; }

# Tools: command -> Debian package; installed when missing and root.
declare -A pkgs=([restic]=restic [hyperfine]=hyperfine [unzip]=unzip [curl]=curl [zstd]=zstd)
missing=()
for cmd in "${!pkgs[@]}"; do
	[ "$cmd" = hyperfine ] && [ $use_hyperfine = 0 ] && continue
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ]; then
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
	else
		log "missing ${missing[*]} (Debian packages); install them or run as root"
		exit 1
	fi
fi
for tool in go tar gzip zstd unzip curl restic du find; do
	command -v "$tool" >/dev/null || { log "$tool is not installed"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sealfs-image-bench.XXXXXX")
if [ $keep = 1 ]; then
	trap 'log "kept $tmp"' EXIT
else
	trap 'rm -rf "$tmp"' EXIT
fi

if [ -n "${SEALFS:-}" ]; then
	sealfs=$(realpath "$SEALFS")
else
	# Into the temp dir, not bin/: other builds in the tree may race on bin/.
	sealfs=$tmp/sealfs
	CGO_ENABLED=0 go build -o "$sealfs" ./cmd/sealfs
fi
# has_image_sub SUB: does this sealfs have `sealfs image SUB`? (cobra prints
# the parent's help for an unknown subcommand, so look at the Usage line.)
has_image_sub() {
	"$sealfs" image "$1" --help 2>/dev/null |
		awk -v want="  sealfs image $1" 'prev == "Usage:" && index($0, want) == 1 { ok = 1 } { prev = $0 } END { exit !ok }'
}
have_build=0 have_du=0 have_extract=0 have_ls=0
has_image_sub build && have_build=1
has_image_sub ls && have_ls=1
has_image_sub du && have_du=1
has_image_sub extract && have_extract=1
[ $have_build = 1 ] || log "WARNING: this sealfs has no 'image build'; the sealfs rows are skipped"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# file_bytes DIR: apparent size, the sum of the regular files' sizes.
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }'; }
# disk_bytes PATH...: allocated bytes (block rounding; what df sees).
disk_bytes() { du -scB1 "$@" | tail -n 1 | cut -f1; }

# --- Data: download (cached) and unzip the toolchains ----------------------
mkdir -p "$cache/$platform" "$tmp/trees"
trees=()
for v in "${vlist[@]}"; do
	zip=$cache/$platform/go$v.zip
	if [ ! -s "$zip" ]; then
		url=https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$v.$platform.zip
		log "downloading $url"
		curl -fsSL --retry 3 -o "$zip.part" "$url" || { rm -f "$zip.part"; log "download of go$v failed: $url"; exit 1; }
		mv "$zip.part" "$zip"
	fi
	rm -rf "$tmp/unzip"
	unzip -q "$zip" -d "$tmp/unzip"
	# Strip the module's top directory golang.org/toolchain@v0.0.1-goV.P/.
	tops=("$tmp"/unzip/golang.org/toolchain@*)
	if [ ${#tops[@]} -ne 1 ] || [ ! -d "${tops[0]}" ]; then log "$zip: unexpected layout"; exit 1; fi
	tree=$tmp/trees/go$v
	mv "${tops[0]}" "$tree"
	find "$tree" -exec touch -h -d @0 {} +
	trees+=("$tree")
done
rm -rf "$tmp/unzip"
input_bytes=0 input_files=0
for t in "${trees[@]}"; do
	input_bytes=$((input_bytes + $(file_bytes "$t")))
	input_files=$((input_files + $(find "$t" -type f | wc -l)))
done
first_bytes=$(file_bytes "${trees[0]}")
log "$n trees, $input_files files, $input_bytes bytes of file data"

# Results: stored-bytes rows and throughput rows.
s_name=() s_bytes=() s_disk=()
t_name=() t_secs=()
add_size() { s_name+=("$1"); s_bytes+=("$2"); s_disk+=("$3"); }
add_time() { t_name+=("$1"); t_secs+=("$2"); }

# --- (a, b) N tars, N tar.gz, N tar.zst --------------------------------------
log "tar, tar.gz, tar.zst"
tar_b=0 gz_b=0 zst_b=0
mkdir -p "$tmp/tar"
for i in "${!trees[@]}"; do
	f=$tmp/tar/v$((i + 1)).tar
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$f" -C "${trees[i]}" .
	tar_b=$((tar_b + $(stat -c %s "$f")))
	gz_b=$((gz_b + $(gzip -6 -c "$f" | wc -c)))
	zst_b=$((zst_b + $(zstd -3 -q -T0 -c "$f" | wc -c)))
	rm -f "$f"
done
add_size "$n × tar" "$tar_b" "$tar_b"
add_size "$n × tar.gz (gzip -6)" "$gz_b" "$gz_b"
add_size "$n × tar.zst (zstd -3)" "$zst_b" "$zst_b"

# Whole-file dedup, computed: the bytes of the distinct file contents. What
# chunking has to beat to be worth more than hard links between versions.
find "$tmp/trees" -type f -printf '%s\t%p\n' >"$tmp/sizes"
find "$tmp/trees" -type f -print0 | xargs -0 -P "$(nproc)" -n 1000 sha256sum >"$tmp/sums"
files_b=$(awk -F '\t' 'NR == FNR { size[$2] = $1; next }
	{ h = substr($0, 1, 64); p = substr($0, 67); if (!(h in seen)) { seen[h] = 1; s += size[p] } }
	END { printf "%d\n", s }' "$tmp/sizes" "$tmp/sums")
rm -f "$tmp/sizes" "$tmp/sums"
add_size "whole-file dedup (computed: distinct file contents)" "$files_b" ""

# --- (c, d, e) sealfs image build and restic backup of all N trees -----------
# Each method stores all N trees from scratch, `repeat` times, the methods
# interleaved so that load from other jobs spreads over all of them. The
# throughput is from the fastest repetition; the sizes (deterministic for
# sealfs) from the last.
first64hex() { grep -oE '\b[0-9a-f]{64}\b' "$1" | head -n 1 || true; }
declare -A digest_of=() best=() all_times=()
run_sealfs() { # NAME BASE(0|1) COMPRESS(0|1): prints the wall seconds
	local name=$1 base=$2 compress=$3 oci=$tmp/oci-$1 t0 t1 i args out
	rm -rf "$oci"
	t0=$(now)
	for i in "${!trees[@]}"; do
		args=()
		[ "$compress" = 1 ] && args+=(--compress)
		[ "$base" = 1 ] && [ "$i" -gt 0 ] && args+=(--base "v$i")
		out=$tmp/build-$name-v$((i + 1)).out
		if ! "$sealfs" image build "${args[@]}" "${trees[i]}" "$oci:v$((i + 1))" >"$out" 2>&1; then
			log "FAILED: sealfs image build ${args[*]} ${trees[i]} $oci:v$((i + 1))"
			sed 's/^/    /' "$out" >&2
			exit 1
		fi
	done
	t1=$(now)
	elapsed "$t0" "$t1"
}
run_restic() { # NAME COMPRESSION: prints the wall seconds
	local repo=$tmp/restic-$1 t0 t1 t
	rm -rf "$repo" "$RESTIC_CACHE_DIR"
	restic init -q -r "$repo" >/dev/null
	t0=$(now)
	for t in "${trees[@]}"; do
		# Distinct absolute paths, so no parent snapshot: every file is read.
		restic -q -r "$repo" --compression "$2" backup --host bench "$t" >/dev/null
	done
	t1=$(now)
	elapsed "$t0" "$t1"
}
export RESTIC_PASSWORD=sealfs-bench RESTIC_CACHE_DIR=$tmp/restic-cache
# method key -> label, and the command that runs it once.
m_keys=()
declare -A m_label=() m_cmd=()
add_method() { m_keys+=("$1"); m_label[$1]=$2; m_cmd[$1]=$3; }
if [ $have_build = 1 ]; then
	add_method base "sealfs image build (--base chain)" "run_sealfs base 1 0"
	add_method nobase "sealfs image build (no --base)" "run_sealfs nobase 0 0"
	add_method zbase "sealfs image build --compress (--base chain)" "run_sealfs zbase 1 1"
	add_method znobase "sealfs image build --compress (no --base)" "run_sealfs znobase 0 1"
fi
add_method rauto "restic backup (compression auto)" "run_restic auto auto"
add_method roff "restic backup (compression off)" "run_restic off off"
for ((rep = 1; rep <= repeat; rep++)); do
	for k in "${m_keys[@]}"; do
		log "[$rep/$repeat] ${m_label[$k]}"
		secs=$(${m_cmd[$k]})
		all_times[$k]+=" $secs"
		if [ -z "${best[$k]:-}" ] || awk -v a="$secs" -v b="${best[$k]}" 'BEGIN { exit !(a < b) }'; then
			best[$k]=$secs
		fi
	done
done
for k in "${m_keys[@]}"; do
	case $k in
	rauto | roff) dir=$tmp/restic-${k#r} ;;
	*) dir=$tmp/oci-$k ;;
	esac
	add_size "${m_label[$k]}" "$(file_bytes "$dir")" "$(disk_bytes "$dir")"
	add_time "${m_label[$k]}" "${best[$k]}"
	log "${m_label[$k]}: wall seconds${all_times[$k]}"
	case $k in rauto | roff) continue ;; esac
	for i in "${!trees[@]}"; do
		echo "    v$((i + 1)) ($(basename "${trees[i]}")): $(tr '\n' ' ' <"$tmp/build-$k-v$((i + 1)).out")" >&2
	done
	digest_of[$k]=$(first64hex "$tmp/build-$k-v$n.out")
	log "  blobs: $(find "$dir/blobs" -type f | wc -l) files, du -sb blobs $(du -sb "$dir/blobs" | cut -f1), apparent sum $(file_bytes "$dir/blobs")"
	if [ $have_ls = 1 ]; then
		echo "    sealfs image ls $dir:" >&2
		"$sealfs" image ls "$dir" 2>&1 | sed 's/^/      /' >&2 || log "  sealfs image ls failed"
	fi
	if [ $have_du = 1 ]; then
		echo "    sealfs image du $dir:" >&2
		"$sealfs" image du "$dir" 2>&1 | sed 's/^/      /' >&2 || log "  sealfs image du failed"
	fi
done

# --- Correctness: extract the last tag and compare with its tree -------------
check_note="not checked (no 'sealfs image extract')" check_failed=0
if [ $have_build = 1 ] && [ $have_extract = 1 ]; then
	check_note="v$n of each layout extracted and compared with diff -r:"
	for name in base nobase zbase znobase; do
		out=$tmp/extract-$name
		dflag=()
		[ -n "${digest_of[$name]}" ] && dflag=(--digest "${digest_of[$name]}")
		if "$sealfs" image extract "${dflag[@]}" "$tmp/oci-$name:v$n" "$out" >"$tmp/extract-$name.out" 2>&1 &&
			diff -r --no-dereference "${trees[n - 1]}" "$out" >"$tmp/diff-$name.out" 2>&1; then
			check_note+=" $name ok${dflag:+ (--digest)};"
		else
			check_note+=" $name DIFFERS;" check_failed=1
			log "extract/compare of $name v$n failed:"
			cat "$tmp/extract-$name.out" "$tmp/diff-$name.out" 2>/dev/null | head -n 20 | sed 's/^/    /' >&2
		fi
		rm -rf "$out"
	done
fi

# --- (f) hyperfine on the first tree -----------------------------------------
hf_md=""
if [ $use_hyperfine = 1 ] && command -v hyperfine >/dev/null; then
	t1=${trees[0]}
	r="restic -q -r $tmp/h-restic"
	cmds=()
	if [ $have_build = 1 ]; then
		cmds+=(--prepare "rm -rf $tmp/h-oci" -n "sealfs image build" "$sealfs image build $t1 $tmp/h-oci:v1")
		cmds+=(--prepare "rm -rf $tmp/h-oci" -n "sealfs image build --compress" "$sealfs image build --compress $t1 $tmp/h-oci:v1")
	fi
	cmds+=(--prepare "rm -rf $tmp/h-restic && $r init >/dev/null" -n "restic backup (auto)" "$r backup --host bench $t1")
	cmds+=(--prepare "rm -rf $tmp/h-restic && $r init >/dev/null" -n "restic backup (off)" "$r --compression off backup --host bench $t1")
	log "hyperfine on $(basename "$t1") ($runs runs each)"
	hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$tmp/h.md" "${cmds[@]}" >&2
	hf_md=$(cat "$tmp/h.md")
fi

# --- Report -------------------------------------------------------------------
mb() { [ -z "$1" ] || awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
echo
echo "## sealfs image build vs tar, tar.gz, restic: $n Go toolchains ($platform)"
echo
echo "Versions:$(printf ' go%s' "${vlist[@]}")."
echo "Input: $(mb "$input_bytes") MB of file data in $input_files files ($(mb "$first_bytes") MB in go${vlist[0]});" \
	"$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -sr)."
echo
echo "| method | stored MB | on disk MB | vs $n tars |"
echo "|---|---:|---:|---:|"
for i in "${!s_name[@]}"; do
	echo "| ${s_name[i]} | $(mb "${s_bytes[i]}") | $(mb "${s_disk[i]}") | $(pct "${s_bytes[i]}" "$tar_b") |"
done
echo "| PuzzleFS reference (10 Ubuntu tags, 766 MB of tars), unified uncompressed | 130 | | $(pct 130 766) |"
echo "| PuzzleFS reference, unified with zstd | 53 | | $(pct 53 766) |"
[ $have_build = 1 ] || echo "| sealfs image build | n/a: this sealfs has no 'image build' | | |"
echo
echo "stored MB: sum of the files' sizes (1 MB = 10^6 bytes); on disk MB: du -B1 (4 KiB blocks)."
echo "One tree alone (go${vlist[0]}) is $(pct "$first_bytes" "$input_bytes") of the input: the floor if all $n were identical."
echo
restic_s="" restic_off_s=""
for i in "${!t_name[@]}"; do
	case ${t_name[i]} in
	"restic backup (compression auto)") restic_s=${t_secs[i]} ;;
	"restic backup (compression off)") restic_off_s=${t_secs[i]} ;;
	esac
done
echo "### Build throughput, all $n trees in sequence (wall time, best of $repeat, warm page cache)"
echo
echo "| method | seconds | input MB/s | vs restic (auto) | vs restic (off) |"
echo "|---|---:|---:|---:|---:|"
for i in "${!t_name[@]}"; do
	awk -v name="${t_name[i]}" -v s="${t_secs[i]}" -v b="$input_bytes" -v r="$restic_s" -v o="$restic_off_s" \
		'BEGIN { printf "| %s | %.2f | %.1f | %.2f | %.2f |\n", name, s, b / 1e6 / s, r / s, o / s }'
done
echo
echo "vs restic: restic's wall time / this method's, so above 1 means faster than restic."
if [ -n "$hf_md" ]; then
	echo
	echo "### hyperfine, go${vlist[0]} alone ($(mb "$first_bytes") MB), into an empty layout / repository"
	echo
	echo "$hf_md"
fi
echo
echo "Correctness: $check_note"
[ $check_failed = 0 ] || { log "an extracted image differs from its tree (see above)"; exit 1; }
