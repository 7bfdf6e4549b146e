#!/usr/bin/env bash
# sealfs end to end, with nothing but Go: make an encrypted CocoonFS image
# with a generated key, write files in journaled transactions, list, read and
# verify them, show the root digest and update counter a rollback guard
# keeps, then flip one byte of a copy and watch it being refused.
set -euo pipefail
cd "$(dirname "$0")/.."
sealfs=$PWD/bin/sealfs

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# A 4 KiB IO block matches what file systems report for files, so no --force
# is needed (the reference tool's default is 512 bytes).
step "$sealfs" mkfs disk.img --size 4M --io-block 4K --gen-key disk.key
export SEALFS_KEY_FILE=$work/disk.key

printf 'TPM state, version 1\n' >nv.bin
head -c 200000 /dev/urandom >blob.bin
step "$sealfs" write disk.img 42 nv.bin
step "$sealfs" write disk.img 43 blob.bin
printf 'TPM state, version 2\n' | step "$sealfs" write disk.img 42 -
step "$sealfs" ls disk.img
step "$sealfs" read disk.img 42
step "$sealfs" read disk.img 43 -o out.bin
step cmp blob.bin out.bin
step "$sealfs" verify disk.img

echo
echo "The root digest and update counter bind every byte; keep them somewhere trusted:"
root=$("$sealfs" info disk.img --json | sed -n 's/.*"root_digest": "\([0-9a-f]*\)".*/\1/p')
counter=$("$sealfs" info disk.img --json | sed -n 's/.*"update_counter": "\([0-9]*\)".*/\1/p')
echo "root digest $root, update counter $counter"
cp disk.img before-rm.img
step "$sealfs" rm disk.img 43
echo "(a copy saved before the rm is refused as a rollback:)"
new=$("$sealfs" info disk.img --json | sed -n 's/.*"update_counter": "\([0-9]*\)".*/\1/p')
if step "$sealfs" ls before-rm.img --min-counter "$new"; then
	echo "demo: rollback NOT detected" >&2
	exit 1
fi

echo
echo "Flip one bit of inode 43's ciphertext in a copy of the image from before the"
echo "rm (found by trying 4 KiB blocks until 42 still reads but 43 no longer does):"
found=
for block in $(seq 1 1023); do
	cp before-rm.img tampered.img
	o=$((block * 4096 + 100))
	b=$(od -An -tu1 -j "$o" -N1 tampered.img | tr -d ' ')
	printf "$(printf '\\%03o' $((b ^ 1)))" | dd of=tampered.img bs=1 seek="$o" conv=notrunc status=none
	if "$sealfs" read tampered.img 42 >/dev/null 2>&1 && ! "$sealfs" read tampered.img 43 >/dev/null 2>&1; then
		found=$o
		break
	fi
done
[ -n "$found" ] || { echo "demo: no offset found" >&2; exit 1; }
echo "(flipped one bit at offset $found)"
if step "$sealfs" read tampered.img 43 -o /dev/null; then
	echo "demo: tampering was NOT detected" >&2
	exit 1
fi
echo "(inode 42 shares no data block with the damage and still reads:)"
step "$sealfs" read tampered.img 42
step "$sealfs" verify tampered.img || true

echo
echo "A wrong key is refused before any data is used:"
head -c 32 /dev/urandom >wrong.key
step "$sealfs" ls disk.img --key-file wrong.key || true

echo
echo "Container images (PuzzleFS): build two versions of a tree into one OCI layout;"
echo "the second reuses the unchanged chunks. The printed digest is the root of trust."
mkdir -p rootfs/etc rootfs/bin
head -c 400000 /dev/urandom >rootfs/bin/app
printf 'version=1\n' >rootfs/etc/release
ln -s ../bin/app rootfs/etc/app-link
step "$sealfs" image build rootfs oci:v1
printf 'version=2\n' >rootfs/etc/release
step "$sealfs" image build --base v1 rootfs oci:v2
step "$sealfs" image ls oci
root=$("$sealfs" --json image build --base v1 rootfs oci:v2 | sed -n 's/.*"root_digest": "\([0-9a-f]*\)".*/\1/p')
step "$sealfs" image extract --digest "$root" oci:v2 extracted
step diff -r --no-dereference rootfs extracted
echo
echo "The same image with one chunk damaged is refused, and nothing is extracted:"
# The first chunk v2's manifest lists (the largest blob may be one only v1 uses).
m2=$("$sealfs" --json image ls oci | grep -A1 '"tag": "v2"' | sed -n 's/.*"manifest": "sha256:\([0-9a-f]*\)".*/\1/p')
chunk=$(grep -o '"digest":"sha256:[0-9a-f]*"' "oci/blobs/sha256/$m2" | sed -n '3s/.*sha256:\([0-9a-f]*\)"/\1/p')
printf 'X' | dd of="oci/blobs/sha256/$chunk" bs=1 seek=1000 conv=notrunc status=none
if step "$sealfs" image extract --digest "$root" oci:v2 extracted2; then
	echo "demo: a damaged chunk was NOT detected" >&2
	exit 1
fi
[ ! -e extracted2 ] || { echo "demo: partial extract left behind" >&2; exit 1; }

echo
echo "A vTPM manufactured into an image (offline): swtpm_setup runs in a private"
echo "temporary directory, the state lands in the image's NVRAM store in one"
echo "transaction, and no plaintext copy stays behind."
if command -v swtpm_setup >/dev/null && command -v swtpm >/dev/null && command -v swtpm_ioctl >/dev/null; then
	step "$sealfs" mkfs tpm.img --size 4M --io-block 4K --gen-key tpm.key
	step "$sealfs" tpm manufacture tpm.img --key-file tpm.key
	step "$sealfs" nvram ls tpm.img --key-file tpm.key
	echo "(the NVRAM directory is plain DER; openssl reads it:)"
	"$sealfs" read tpm.img 0x4e56524d00000001 --key-file tpm.key >directory.der
	openssl asn1parse -inform DER -i -in directory.der >directory.txt
	printf '\n\033[1m$ %s\033[0m\n' "openssl asn1parse -inform DER -i -in directory.der | grep -E '^ *[0-9]+:' | cut -c1-90"
	grep -E '^ *[0-9]+:' directory.txt | cut -c1-90
	for d in /dev/shm "${TMPDIR:-/tmp}"; do
		if [ -d "$d" ] && ls "$d" | grep -q '^sealfs-tpm-'; then
			echo "demo: a sealfs-tpm-* working directory is in $d (manufacture leaves none; another run in progress?)" >&2
			exit 1
		fi
	done
	echo "(no sealfs-tpm-* working directory is left in /dev/shm or ${TMPDIR:-/tmp})"
	step "$sealfs" tpm export tpm.img vtpm --key-file tpm.key
	if command -v tpm2_createprimary >/dev/null; then
		# A failure below must not leave swtpm running.
		trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
		runswtpm() {
			swtpm socket --tpm2 --tpmstate dir="$1" --server type=unixio,path="$work/tpm.sock" \
				--ctrl type=unixio,path="$work/tpm.sock.ctrl" --flags not-need-init,startup-clear --log file="$work/swtpm.log" &
			for _ in $(seq 100); do [ -S "$work/tpm.sock.ctrl" ] && break; sleep 0.05; done
		}
		export TPM2TOOLS_TCTI="swtpm:path=$work/tpm.sock"
		echo
		echo "swtpm runs on the export; a key made persistent there is imported back:"
		runswtpm vtpm
		step tpm2_nvreadpublic 0x01c00002
		step tpm2_createprimary -Q -C o -c primary.ctx
		step tpm2_evictcontrol -C o -c primary.ctx 0x81000001
		tpm2_readpublic -Q -c 0x81000001 -o before.pub
		step swtpm_ioctl --unix "$work/tpm.sock.ctrl" -s
		wait
		step "$sealfs" tpm import tpm.img vtpm --key-file tpm.key
		echo "(a fresh export of the image, a new swtpm: the key is still there)"
		step "$sealfs" tpm export tpm.img vtpm2 --key-file tpm.key
		runswtpm vtpm2
		step tpm2_getcap handles-persistent
		tpm2_readpublic -Q -c 0x81000001 -o after.pub
		step cmp before.pub after.pub
		swtpm_ioctl --unix "$work/tpm.sock.ctrl" -s
		wait
	fi
else
	echo "(skipped: swtpm and swtpm_setup are not installed; scripts/install-deps.sh installs them)"
fi

echo
echo "An image mounted read-write with FUSE (sealfs mount): files by inode number,"
echo "every close one durable transaction. Then swtpm running on an image's NVRAM"
echo "store (sealfs tpm run): a key made persistent survives kill -9 of the whole"
echo "process group, and the next run finds it."
if command -v fusermount3 >/dev/null && [ -w /dev/fuse ]; then
	mkdir -p "$work/run" "$work/mnt"
	# The TPM's private state mount goes under here, and is cleaned up with it.
	export XDG_RUNTIME_DIR=$work/run
	demo_mounts() { awk -v w="$work" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo; }
	demo_cleanup() {
		if [ -s "$work/tpmrun.pid" ]; then kill -9 -- "-$(cat "$work/tpmrun.pid")" 2>/dev/null || true; fi
		kill $(jobs -p) 2>/dev/null || true
		sleep 0.2
		for m in $(demo_mounts); do fusermount3 -u -z "$m" 2>/dev/null || true; done
		rm -rf "$work"
	}
	trap demo_cleanup EXIT
	# wait_ready FILE PID: until FILE has its first line, or PID exited.
	wait_ready() {
		for _ in $(seq 300); do
			[ -s "$1" ] && { head -1 "$1"; return 0; }
			kill -0 "$2" 2>/dev/null || return 1
			sleep 0.05
		done
		return 1
	}

	step "$sealfs" mkfs files.img --size 16M --io-block 4K --gen-key files.key
	printf '\n\033[1m$ %s\033[0m\n' "sealfs mount files.img mnt --key-file files.key &"
	"$sealfs" mount files.img "$work/mnt" --key-file files.key >mount.out 2>mount.err &
	mount_pid=$!
	wait_ready mount.out "$mount_pid" || { cat mount.err >&2; exit 1; }
	head -c 300000 /dev/urandom >payload.bin
	step cp payload.bin "$work/mnt/100"
	printf 'state, version 1\n' >"$work/mnt/101"
	step mv "$work/mnt/101" "$work/mnt/102"
	step ls -l "$work/mnt"
	step df -h "$work/mnt"
	if touch "$work/mnt/not-a-number" 2>/dev/null; then
		echo "demo: a file that is not an inode number was created" >&2
		exit 1
	fi
	echo "(a name that is not an inode number is refused: EINVAL)"
	step fusermount3 -u "$work/mnt"
	wait "$mount_pid"
	tail -n +2 mount.out
	step "$sealfs" ls files.img --key-file files.key
	step "$sealfs" read files.img 100 --key-file files.key -o payload.out
	step cmp payload.bin payload.out

	if command -v swtpm >/dev/null && command -v swtpm_setup >/dev/null && command -v tpm2_createprimary >/dev/null; then
		step "$sealfs" mkfs vtpm.img --size 4M --io-block 4K --gen-key vtpm.key
		step "$sealfs" tpm manufacture vtpm.img --key-file vtpm.key
		# tpm_run: start `sealfs tpm run` in a process group of its own, on a
		# random pair of ports P, P+1 (the swtpm TCTI wants the control port
		# at P+1), retrying if a port is taken.
		tpm_run() {
			for _ in 1 2 3 4 5; do
				port=$((20000 + RANDOM % 20000))
				printf '\n\033[1m$ %s\033[0m\n' "sealfs tpm run vtpm.img --key-file vtpm.key --server-port $port --ctrl-port $((port + 1)) &"
				setsid "$sealfs" tpm run vtpm.img --key-file vtpm.key --server-port "$port" --ctrl-port "$((port + 1))" >tpmrun.out 2>tpmrun.err &
				echo $! >tpmrun.pid
				disown # killed on purpose below: no job report
				if wait_ready tpmrun.out "$(cat tpmrun.pid)"; then
					export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
					return 0
				fi
				cat tpmrun.err >&2
			done
			echo "demo: sealfs tpm run did not start" >&2
			exit 1
		}
		tpm_run
		step tpm2_createprimary -Q -C o -c primary.ctx
		step tpm2_evictcontrol -C o -c primary.ctx 0x81000001
		tpm2_readpublic -Q -c 0x81000001 -o before.pub
		echo "(the response has arrived: the key is in the image; now kill -9 the whole process group)"
		step kill -9 -- "-$(cat tpmrun.pid)"
		sleep 0.5
		step "$sealfs" nvram ls vtpm.img --key-file vtpm.key
		tpm_run
		grep 'detaching' tpmrun.err || true
		step tpm2_getcap handles-persistent
		tpm2_readpublic -Q -c 0x81000001 -o after.pub
		step cmp before.pub after.pub
		echo "(the same key survived the kill and the restart)"
		printf '\n\033[1m$ %s\033[0m\n' "kill -TERM $(cat tpmrun.pid)"
		kill -TERM "$(cat tpmrun.pid)"
		for _ in $(seq 200); do kill -0 "$(cat tpmrun.pid)" 2>/dev/null || break; sleep 0.05; done
		tail -n +2 tpmrun.out
		: >tpmrun.pid
		step "$sealfs" verify vtpm.img --key-file vtpm.key
	else
		echo "(tpm run skipped: swtpm, swtpm_setup and tpm2-tools are needed; scripts/install-deps.sh installs them)"
	fi
else
	echo "(skipped: FUSE (/dev/fuse, fusermount3) is not available)"
fi

echo
echo "Images through an OCI registry: push an image to a local registry (the"
echo "reference distribution registry, Debian's docker-registry, on a loopback"
echo "port), then mount it back lazily: the metadata at mount time, each chunk"
echo "fetched on first read and verified against the root digest before use."
if ! command -v docker-registry >/dev/null || ! command -v fusermount3 >/dev/null || [ ! -c /dev/fuse ]; then
	echo "(skipped: needs docker-registry, fusermount3 and /dev/fuse; scripts/install-deps.sh installs the tools)"
	exit 0
fi
regpid=
cleanup_registry() {
	if grep -qs " $work/lazy " /proc/mounts; then
		"$sealfs" image umount "$work/lazy" || fusermount3 -u -z "$work/lazy" || true
	fi
	if [ -n "$regpid" ]; then
		kill "$regpid" 2>/dev/null || true
		wait "$regpid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup_registry EXIT
port=$(( (RANDOM % 20000) + 30000 ))
while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
cat >registry.yml <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
  secret: demo
YML
docker-registry serve registry.yml >registry.log 2>&1 &
regpid=$!
for _ in $(seq 100); do
	(echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done
reg=127.0.0.1:$port
head -c 3000000 /dev/urandom >rootfs/bin/tool
root=$("$sealfs" --json image build rootfs oci-reg:v3 | sed -n 's/.*"root_digest": "\([0-9a-f]*\)".*/\1/p')
echo "(image oci-reg:v3, root digest $root)"
step "$sealfs" image push --plain-http oci-reg:v3 "$reg/demo/rootfs:v3"
echo "(pushing it again uploads nothing:)"
step "$sealfs" image push --plain-http oci-reg:v3 "$reg/demo/rootfs:v3"
step "$sealfs" image ls --plain-http --cache cache "$reg/demo/rootfs"
mkdir lazy
step "$sealfs" image mount --plain-http --cache cache --digest "$root" "$reg/demo/rootfs:v3" lazy
echo "(after mounting, the cache holds $(ls cache/blobs/sha256 | wc -l) blob: the metadata)"
step cat lazy/etc/release
echo "(after reading etc/release: $(ls cache/blobs/sha256 | wc -l) blobs of $(ls oci-reg/blobs/sha256 | wc -l))"
step cmp lazy/bin/tool rootfs/bin/tool
echo "(after reading bin/tool: $(ls cache/blobs/sha256 | wc -l) blobs)"
step "$sealfs" image umount lazy
echo
echo "A chunk altered in the registry's storage is an I/O error for the reads"
echo "that need it, and is never cached; the rest of the image stays readable:"
# The middle chunk layer of v3's manifest: the layers follow the chunk
# stream (bin/app, bin/tool, etc/release), so it lies inside bin/tool.
m3=$("$sealfs" --json image ls oci-reg | grep -A1 '"tag": "v3"' | sed -n 's/.*"manifest": "sha256:\([0-9a-f]*\)".*/\1/p')
layers=$(grep -o '"digest":"sha256:[0-9a-f]*"' "oci-reg/blobs/sha256/$m3" | sed -n '3,$s/.*sha256:\([0-9a-f]*\)"/\1/p')
victim=$(sed -n "$(( $(wc -l <<<"$layers") / 2 + 1 ))p" <<<"$layers")
chunk=$work/registry/docker/registry/v2/blobs/sha256/${victim:0:2}/$victim/data
printf 'X' | dd of="$chunk" bs=1 seek=1000 conv=notrunc status=none
rm -rf cache
step "$sealfs" image mount --plain-http --cache cache --digest "$root" "$reg/demo/rootfs:v3" lazy
if step cmp lazy/bin/tool rootfs/bin/tool; then
	echo "demo: an altered chunk was NOT detected" >&2
	exit 1
fi
[ ! -e "cache/blobs/sha256/$victim" ] || { echo "demo: the altered chunk was cached" >&2; exit 1; }
echo "(chunk $victim failed its check and is not in the cache)"
step cmp lazy/bin/app rootfs/bin/app
step cat lazy/etc/release
step "$sealfs" image umount lazy
