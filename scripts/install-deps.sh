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
	[e2fsck]=e2fsprogs
	[nbdinfo]=libnbd-bin
	[nbdcopy]=libnbd-bin
	[qemu-io]=qemu-utils
	[qemu-img]=qemu-utils
	[fusermount3]=fuse3
	[docker-registry]=docker-registry
	[htpasswd]=apache2-utils
	[curl]=curl
	[swtpm]=swtpm
	[swtpm_ioctl]=swtpm-tools
	[swtpm_setup]=swtpm-tools
	[swtpm_localca]=swtpm-tools
	[tpm2_createprimary]=tpm2-tools
	[tpm2_evictcontrol]=tpm2-tools
	[tpm2_nvread]=tpm2-tools
	[tpm2_nvdefine]=tpm2-tools
	[tpm2_nvwrite]=tpm2-tools
	[tpm2_readpublic]=tpm2-tools
	[qemu-system-x86_64]=qemu-system-x86
)

# shared library (soname) -> Debian package, for what is loaded rather than run:
# tpm2-tools reaches swtpm through this TCTI module (TPM2TOOLS_TCTI=swtpm:...).
declare -A libs=(
	[libtss2-tcti-swtpm.so.0]=libtss2-tcti-swtpm0
)

missing=()
for cmd in "${!tools[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${tools[$cmd]}")
done
for lib in "${!libs[@]}"; do
	/sbin/ldconfig -p 2>/dev/null | grep -qF "$lib" || missing+=("${libs[$lib]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
