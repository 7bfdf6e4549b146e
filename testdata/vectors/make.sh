#!/usr/bin/env bash
# Rebuilds testdata/vectors from ../shared/vectors and the reference cocoonfs
# tool in ../shared/reference (see README.md here). Run from anywhere; needs
# ../shared beside the repository, gzip and sha256sum.
#
# The copies are byte-identical to ../shared (large, mostly-zero images are
# stored gzipped). The f0* feature images are made here by the reference tool;
# like every CocoonFS image they are not byte-reproducible (fresh random IVs),
# so they are only made when missing: delete one to make it again.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
shared=$(cd "$here/../../../shared" && pwd)
ref=$shared/reference/cocoonfs
cd "$here"

# copy SRC DST: a plain copy, or gzip -9 -n when DST ends in .gz.
copy() {
	mkdir -p "$(dirname "$2")"
	case $2 in
	*.gz) gzip -9 -n -c "$1" >"$2" ;;
	*) cp "$1" "$2" ;;
	esac
	chmod 644 "$2"
}

# CocoonFS: one small image per hash family x strength, the creation info
# headers, and the plaintexts of the files the small images hold.
for f in s01-sha2-aes128-1m s02-sha3-camellia128-1m s03-sm3-sm4-1m \
	s04-sha2-aes192-1m s05-sha3-camellia192-1m s06-sha2-aes256-1m \
	s07-sha3-camellia256-1m v08-mkfsinfo-header-sha2-aes128; do
	copy "$shared/vectors/cocoonfs/$f.img" "cocoonfs/$f.img.gz"
done
copy "$shared/vectors/cocoonfs/v09-mkfsinfo-header-trimmed.img" cocoonfs/v09-mkfsinfo-header-trimmed.img
for p in small.bin rand100k.bin empty.bin aux-online.bin aux-offline.bin; do
	copy "$shared/vectors/cocoonfs/plaintext/$p" "cocoonfs/plaintext/$p"
done

# PuzzleFS and FastCDC: small enough to copy whole.
for d in puzzlefs cdc; do
	(cd "$shared/vectors" && find "$d" -type f) | while read -r f; do
		copy "$shared/vectors/$f" "$f"
	done
done

# Feature images: what the 8 MiB random-filled v02, v06 and v11 show, at
# 1 MiB with free space left zero (-n), so that they compress.
plain=$shared/vectors/cocoonfs/plaintext
key=(-K aabbcc)
feature() { # NAME: build cocoonfs/NAME.img.gz with the commands on stdin
	local out=cocoonfs/$1.img.gz
	[ -e "$out" ] && return
	local img tmp
	tmp=$(mktemp -d)
	img=$tmp/$1.img
	truncate -s 1M "$img"
	while read -r -a args; do
		"$ref" -f -i "$img" "${args[@]}" </dev/null
	done
	gzip -9 -n -c "$img" >"$out"
	chmod 644 "$out"
	rm -rf "$tmp"
}
mkfs=(mkfs "${key[@]}" -H sha2 -C aes -t 128 -I ddeeff -s 1M -n)
feature f01-sha2-aes128-io4k-1m <<EOF
${mkfs[*]} --io-block-size 4K
write-file ${key[*]} -n -i $plain/small.bin 42
write-file ${key[*]} -n -i $plain/rand100k.bin 43
write-file ${key[*]} -n -i $plain/empty.bin 45
EOF
feature f02-sha2-aes128-removed42-1m <<EOF
${mkfs[*]}
write-file ${key[*]} -n -i $plain/small.bin 42
write-file ${key[*]} -n -i $plain/rand100k.bin 43
remove-file ${key[*]} -n 42
EOF
feature f03-sha2-aes128-auxmeta-1m <<EOF
${mkfs[*]}
write-file ${key[*]} -n -i $plain/small.bin 42
aux-fs-metadata edit ${key[*]} -n add-entry -i $plain/aux-online.bin 12345678-9abc-def0-1122-334455667788
aux-fs-metadata edit -n add-entry -i $plain/aux-offline.bin 12345678-9abc-def0-1122-334455667788
EOF

# SHA256SUMS lists every vector by its name under vectors/, with the sha256
# of its uncompressed bytes: testutil.Vector serves exactly these names, and
# `cd ../shared/vectors && sha256sum -c --ignore-missing THIS/SHA256SUMS`
# checks the copies against their originals.
find . -type f ! -name SHA256SUMS ! -name make.sh ! -path ./README.md | LC_ALL=C sort | while read -r f; do
	f=${f#./}
	case $f in
	*.gz) printf '%s  %s\n' "$(gzip -dc "$f" | sha256sum | cut -d' ' -f1)" "${f%.gz}" ;;
	*) printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f" ;;
	esac
done >SHA256SUMS
