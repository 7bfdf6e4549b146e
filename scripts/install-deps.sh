#!/usr/bin/env bash
# Installs the Debian packages sealfs's tests compare against, if missing.
# Idempotent; does nothing when everything is present. Needs root (or sudo)
# only when something has to be installed.
set -euo pipefail

# command -> Debian package
declare -A tools=(
	[zstd]=zstd
	[fsverity]=fsverity
	[veritysetup]=cryptsetup-bin
	[openssl]=openssl
	[mke2fs]=e2fsprogs
	[debugfs]=e2fsprogs
	[nbdinfo]=libnbd-bin
	[nbdcopy]=libnbd-bin
	[qemu-io]=qemu-utils
	[qemu-img]=qemu-utils
	[fusermount3]=fuse3
	[docker-registry]=docker-registry
	[htpasswd]=apache2-utils
	[curl]=curl
)

missing=()
for cmd in "${!tools[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${tools[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
