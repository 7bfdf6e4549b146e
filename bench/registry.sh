#!/usr/bin/env bash
# PuzzleFS images through an OCI registry: `sealfs image push` and `pull` of
# the Go toolchain tree (bench/image.sh's data: one toolchain release from
# the Go module proxy, unzipped, mtimes 0) against the reference registry
# (Debian docker-registry) on loopback, as a ratio to copying the same OCI
# layout with `cp -r` (and `oras cp` when an oras binary is installed); an
# incremental push of the next release; and a lazy mount: time to the first
# byte of one file and the bytes fetched, against a full pull. Not part of
# `make test`. Run with -h for the options.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bench/registry.sh [--version V] [--next V2] [--file PATH] [--repeat K]
                         [--concurrency N] [--cache DIR] [--keep] [-h]

  --version V       Go toolchain release to image (default 1.22.0)
  --next V2         the release pushed on top for the incremental push
                    (default 1.22.1; "" skips it)
  --file PATH       file of the tree read through the lazy mount
                    (default bin/gofmt)
  --repeat K        time each copy K times, report the fastest (default 3)
  --concurrency N   blobs moved at a time by push and pull (default 4)
  --cache DIR       download cache (default ~/.cache/sealfs-bench, shared
                    with bench/image.sh)
  --keep            keep the temporary directory
  -h, --help        this text

Environment: SEALFS=PATH uses that sealfs binary instead of building one;
TMPDIR chooses where the temporary directory goes. Needs docker-registry,
curl, unzip; the lazy mount needs /dev/fuse and fusermount3.
EOF
}

version=1.22.0 next=1.22.1 file=bin/gofmt repeat=3 conc=4 keep=0
platform=linux-amd64
cache=${SEALFS_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealfs-bench}
while [ $# -gt 0 ]; do
	case $1 in
	--version) version=${2:?}; shift 2 ;;
	--next) next=${2?}; shift 2 ;;
	--file) file=${2:?}; shift 2 ;;
	--repeat) repeat=${2:?}; shift 2 ;;
	--concurrency) conc=${2:?}; shift 2 ;;
	--cache) cache=${2:?}; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "registry.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || { echo "registry.sh: --repeat wants a positive number" >&2; exit 2; }

cd "$(dirname "$0")/.."
log() { echo "registry.sh: $*" >&2; }
for tool in go curl unzip docker-registry du find; do
	command -v "$tool" >/dev/null || { log "$tool is not installed (scripts/install-deps.sh installs docker-registry)"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sealfs-registry-bench.XXXXXX")
regpid=
mnt=$tmp/mnt
cleanup() {
	if [ -n "$regpid" ]; then kill "$regpid" 2>/dev/null || true; wait "$regpid" 2>/dev/null || true; fi
	if grep -qs " $mnt " /proc/mounts; then fusermount3 -u "$mnt" 2>/dev/null || true; fi
	if [ $keep = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

if [ -n "${SEALFS:-}" ]; then
	sealfs=$(realpath "$SEALFS")
else
	sealfs=$tmp/sealfs
	CGO_ENABLED=0 go build -o "$sealfs" ./cmd/sealfs
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
blob_bytes() { find "$1" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { printf "%d\n", s }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# --- The tree (as bench/image.sh makes it) ---------------------------------
tree_of() { # VERSION DIR
	local v=$1 dir=$2 zip=$cache/$platform/go$1.zip tops
	mkdir -p "$cache/$platform"
	if [ ! -s "$zip" ]; then
		log "downloading go$v"
		curl -fsSL --retry 3 -o "$zip.part" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$v.$platform.zip"
		mv "$zip.part" "$zip"
	fi
	rm -rf "$tmp/unzip"
	unzip -q "$zip" -d "$tmp/unzip"
	tops=("$tmp"/unzip/golang.org/toolchain@*)
	mv "${tops[0]}" "$dir"
	rm -rf "$tmp/unzip"
	find "$dir" -exec touch -h -d @0 {} +
}
tree_of "$version" "$tmp/tree1"
[ -n "$next" ] && tree_of "$next" "$tmp/tree2"
[ -f "$tmp/tree1/$file" ] || { log "--file $file is not in the tree"; exit 2; }

oci=$tmp/oci
"$sealfs" image build "$tmp/tree1" "$oci:v1" >/dev/null
root=$("$sealfs" --json image build "$tmp/tree1" "$oci:v1" | sed -n 's/.*"root_digest": "\([0-9a-f]*\)".*/\1/p')
layout_bytes=$(blob_bytes "$oci")
layout_blobs=$(find "$oci/blobs" -type f | wc -l)
log "tree go$version: $(find "$tmp/tree1" -type f | wc -l) files; layout $(mib "$layout_bytes")"

# --- The registry: a fresh storage directory for every timed push ----------
start_registry() {
	[ -n "$regpid" ] && { kill "$regpid"; wait "$regpid" 2>/dev/null || true; }
	rm -rf "$tmp/storage"
	port=$(( (RANDOM % 20000) + 30000 ))
	while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
	cat >"$tmp/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/storage
http:
  addr: 127.0.0.1:$port
  secret: bench
EOF
	docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
	regpid=$!
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && { reg=127.0.0.1:$port; return; }
		sleep 0.1
	done
	log "docker-registry did not start:"; cat "$tmp/registry.log" >&2; exit 1
}

best() { sort -n | head -n 1; }
# CPU seconds the registry has used so far, and a command's own CPU seconds
# (user + sys, from bash's time): where the time of a push or pull goes.
tck=$(getconf CLK_TCK)
reg_cpu() { awk -v t="$tck" '{ printf "%.2f\n", ($14 + $15) / t }' "/proc/$regpid/stat"; }
TIMEFORMAT='%U %S'
cpu_of() { # OUTFILE CMD...: runs CMD (stdout to OUTFILE), prints its CPU seconds
	local out=$1 t
	shift
	t=$( { time "$@" >"$out"; } 2>&1 )
	awk '{ printf "%.2f\n", $1 + $2 }' <<<"$t"
}
cp_times=() push_times=() pull_times=() oras_times=()
have_oras=0
command -v oras >/dev/null && have_oras=1
for k in $(seq "$repeat"); do
	rm -rf "$tmp/copy"; sync
	t0=$(now); cp -r "$oci" "$tmp/copy"; sync; t1=$(now)
	cp_times+=("$(elapsed "$t0" "$t1")")

	start_registry
	r0=$(reg_cpu)
	t0=$(now); c=$(cpu_of "$tmp/push.out" "$sealfs" image push --plain-http -j "$conc" "$oci:v1" "$reg/bench/go:v1"); sync; t1=$(now)
	push_times+=("$(elapsed "$t0" "$t1") $c $(awk -v a="$r0" -v b="$(reg_cpu)" 'BEGIN { printf "%.2f", b - a }')")

	rm -rf "$tmp/pulled" "$tmp/nocache"; sync
	r0=$(reg_cpu)
	t0=$(now); c=$(cpu_of "$tmp/pull.out" "$sealfs" image pull --plain-http -j "$conc" --cache "$tmp/nocache" --digest "$root" "$reg/bench/go:v1" "$tmp/pulled:v1"); sync; t1=$(now)
	pull_times+=("$(elapsed "$t0" "$t1") $c $(awk -v a="$r0" -v b="$(reg_cpu)" 'BEGIN { printf "%.2f", b - a }')")

	if [ $have_oras = 1 ]; then
		t0=$(now); oras cp --from-oci-layout "$oci:v1" --to-plain-http "$reg/bench/oras:v1" >/dev/null; t1=$(now)
		oras_times+=("$(elapsed "$t0" "$t1")")
	fi
done
cp_s=$(printf '%s\n' "${cp_times[@]}" | best)
read -r push_s push_cpu push_reg <<<"$(printf '%s\n' "${push_times[@]}" | best)"
read -r pull_s pull_cpu pull_reg <<<"$(printf '%s\n' "${pull_times[@]}" | best)"
pulled_bytes=$(blob_bytes "$tmp/pulled/blobs")

# Incremental: the next release on top of the first, in the same registry.
inc_line=
if [ -n "$next" ]; then
	"$sealfs" image build --base v1 "$tmp/tree2" "$oci:v2" >/dev/null
	"$sealfs" --json image push --plain-http -j "$conc" "$oci:v2" "$reg/bench/go:v2" >"$tmp/push2.json"
	up=$(sed -n '/"uploaded"/,/}/p' "$tmp/push2.json" | sed -n 's/.*"bytes": \([0-9]*\).*/\1/p')
	sk=$(sed -n '/"skipped"/,/}/p' "$tmp/push2.json" | sed -n 's/.*"bytes": \([0-9]*\).*/\1/p')
	inc_line="incremental push go$next on go$version: $(mib "$up") uploaded, $(mib "$sk") skipped"
fi

# --- Lazy mount --------------------------------------------------------------
lazy=0
if command -v fusermount3 >/dev/null && [ -c /dev/fuse ]; then
	lazy=1
	mkdir -p "$mnt"
	c=$tmp/lazycache
	t0=$(now)
	"$sealfs" image mount --plain-http --cache "$c" --digest "$root" "$reg/bench/go:v1" "$mnt"
	t1=$(now)
	mount_s=$(elapsed "$t0" "$t1")
	meta_bytes=$(blob_bytes "$c/blobs")
	t0=$(now)
	head -c 1 "$mnt/$file" >/dev/null
	t1=$(now)
	ttfb_s=$(elapsed "$t0" "$t1")
	first_bytes=$(blob_bytes "$c/blobs")
	t0=$(now)
	cat "$mnt/$file" >/dev/null
	t1=$(now)
	file_s=$(elapsed "$t0" "$t1")
	file_bytes=$(blob_bytes "$c/blobs")
	cmp "$mnt/$file" "$tmp/tree1/$file"
	"$sealfs" image umount "$mnt"
else
	log "no /dev/fuse or fusermount3: the lazy mount is skipped"
fi

echo
echo "## sealfs image push/pull through docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}') on loopback"
echo
echo "go$version toolchain: $(find "$tmp/tree1" -type f | wc -l) files, $(mib "$(blob_bytes "$tmp/tree1")"); layout $(mib "$layout_bytes") in $layout_blobs blobs; fastest of $repeat, -j $conc"
echo
printf '| %-44s | %9s | %9s | %11s | %12s |\n' "copy of the layout" "seconds" "× cp -r" "sealfs CPU" "registry CPU"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "-----------" "-----------" "-------------" "--------------"
printf '| %-44s | %9s | %9s | %11s | %12s |\n' "cp -r (local disk)" "$cp_s" "1.00" "" ""
printf '| %-44s | %9s | %9s | %11s | %12s |\n' "sealfs image push (fresh registry)" "$push_s" "$(ratio "$push_s" "$cp_s")" "$push_cpu" "$push_reg"
printf '| %-44s | %9s | %9s | %11s | %12s |\n' "sealfs image pull --digest (empty layout)" "$pull_s" "$(ratio "$pull_s" "$cp_s")" "$pull_cpu" "$pull_reg"
if [ $have_oras = 1 ]; then
	oras_s=$(printf '%s\n' "${oras_times[@]}" | best)
	printf '| %-44s | %9s | %9s | %11s | %12s |\n' "oras cp --from-oci-layout (fresh repository)" "$oras_s" "$(ratio "$oras_s" "$cp_s")" "" ""
else
	echo
	echo "(oras is not installed: no oras cp row)"
fi
[ -n "$inc_line" ] && { echo; echo "$inc_line"; }
if [ $lazy = 1 ]; then
	echo
	echo "lazy mount of go$version (empty cache), reading $file ($(mib "$(stat -c %s "$tmp/tree1/$file")")):"
	echo
	printf '| %-36s | %9s | %12s |\n' "step" "seconds" "fetched"
	printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..38})" "-----------" "--------------"
	printf '| %-36s | %9s | %12s |\n' "mount (manifest + metadata)" "$mount_s" "$(mib "$meta_bytes")"
	printf '| %-36s | %9s | %12s |\n' "first byte of $file" "$ttfb_s" "$(mib "$first_bytes")"
	printf '| %-36s | %9s | %12s |\n' "whole $file" "$file_s" "$(mib "$file_bytes")"
	printf '| %-36s | %9s | %12s |\n' "full pull, for comparison" "$pull_s" "$(mib "$pulled_bytes")"
	echo
	echo "time to first byte (mount + first read): $(awk -v a="$mount_s" -v b="$ttfb_s" -v p="$pull_s" 'BEGIN { printf "%.3f s, %.1f%% of a full pull", a + b, 100 * (a + b) / p }'); bytes fetched for the whole file: $(awk -v a="$file_bytes" -v b="$pulled_bytes" 'BEGIN { printf "%.1f%%", 100 * a / b }') of a full pull"
fi
