#!/usr/bin/env bash
# Compares `sealfs fsverity` with `fsverity digest` (fsverity-utils) on a
# 1 GiB file with hyperfine, and prints the ratio of their mean times.
# Not part of `make test`. Needs hyperfine and fsverity (Debian packages
# hyperfine, fsverity). Usage: bench/fsverity.sh [SIZE_MIB]
set -euo pipefail

cd "$(dirname "$0")/.."
size_mib=${1:-1024}
for tool in hyperfine fsverity go; do
	command -v "$tool" >/dev/null || { echo "fsverity.sh: $tool is not installed" >&2; exit 1; }
done

CGO_ENABLED=0 go build -o bin/sealfs ./cmd/sealfs
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
file=$tmp/data
# Random data, so nothing compresses or dedups along the way.
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$file"

# Same digest first: a fast wrong answer is no answer.
ours=$(bin/sealfs fsverity --compact "$file")
theirs=$(fsverity digest --compact "$file")
if [ "$ours" != "$theirs" ]; then
	echo "fsverity.sh: digests differ: sealfs $ours, fsverity $theirs" >&2
	exit 1
fi
echo "digest: sha256:$ours (${size_mib} MiB, both tools agree)"

hyperfine --warmup 1 --runs 5 --export-json "$tmp/h.json" \
	-n "sealfs fsverity" "bin/sealfs fsverity $file" \
	-n "fsverity digest" "fsverity digest $file"

python3 - "$tmp/h.json" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
s, f = r["sealfs fsverity"], r["fsverity digest"]
print(f"sealfs fsverity: {s:.3f} s, fsverity digest: {f:.3f} s; "
      f"sealfs throughput = {f / s * 100:.0f}% of fsverity digest's")
PY
