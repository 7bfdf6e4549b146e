#!/usr/bin/env bash
# The read path end to end on an image written by the reference CocoonFS
# implementation: header fields without a key, the root digest and update
# counter with it, listing, reading, verifying, and a one-byte tamper that is
# refused. (Once the write path lands, this demo makes its own image.)
set -euo pipefail
cd "$(dirname "$0")/.."
sealfs=bin/sealfs
vectors=../shared/vectors/cocoonfs
if [ ! -f "$vectors/v01-sha2-aes128.img" ]; then
	echo "demo: the reference images are expected in $vectors (the shared/ directory beside this repository)" >&2
	exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$vectors/v01-sha2-aes128.img" "$work/image"
chmod u+w "$work/image"
printf '\xaa\xbb\xcc' >"$work/key"
export SEALFS_KEY_FILE="$work/key"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

(unset SEALFS_KEY_FILE; step "$sealfs" info "$work/image")
step "$sealfs" info "$work/image"
step "$sealfs" ls "$work/image"
step "$sealfs" read "$work/image" 42
step "$sealfs" read "$work/image" 43 -o "$work/43.bin"
step sha256sum "$work/43.bin"
step "$sealfs" verify "$work/image"

echo
echo "Flip one bit of inode 43's ciphertext (offset 0x81234) in a copy:"
cp "$work/image" "$work/tampered"
byte=$(od -An -tu1 -j $((0x81234)) -N1 "$work/tampered" | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$work/tampered" bs=1 seek=$((0x81234)) conv=notrunc status=none
if step "$sealfs" read "$work/tampered" 43 -o "$work/43-tampered.bin"; then
	echo "demo: tampering was NOT detected" >&2
	exit 1
fi
echo "(inode 42 shares no data block with the damage and still reads:)"
step "$sealfs" read "$work/tampered" 42
step "$sealfs" verify "$work/tampered" || true
echo
echo "A wrong key is refused before any data is used:"
printf '\x00\x11\x22' >"$work/wrong"
step "$sealfs" ls "$work/image" --key-file "$work/wrong" || true
