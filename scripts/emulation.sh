#!/bin/sh
# Make this Debian host run ARCH programs (in chroots and containers) under
# QEMU user emulation, for `make image ARCH=arm64` on an amd64 host: the
# packages qemu-user-static and binfmt-support, the binfmt_misc file system,
# and the interpreter registered with the F flag (the kernel keeps it open, so
# it works inside containers that lack it). Does nothing, and needs nothing,
# when ARCH is the host's own architecture.
set -eu

arch=${1:?usage: emulation.sh ARCH (amd64 or arm64)}

log() { printf 'emulation: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

host=$(dpkg --print-architecture)
[ "$arch" != "$host" ] || exit 0

case $arch in
amd64) qemu=x86_64 ;;
arm64) qemu=aarch64 ;;
*) die "ARCH=$arch is not supported: amd64 or arm64" ;;
esac
binfmt=/proc/sys/fs/binfmt_misc

need_root() {
	[ "$(id -u)" = 0 ] || die "building $arch images on this $host host needs $1; run make as root once, or do it by hand"
}

missing=""
command -v "qemu-$qemu-static" >/dev/null 2>&1 || missing="$missing qemu-user-static"
command -v update-binfmts >/dev/null 2>&1 || missing="$missing binfmt-support"
if [ -n "$missing" ]; then
	need_root "the packages$missing"
	log "$arch on $host runs under QEMU: installing$missing"
	apt-get update -qq
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! [ -e "$binfmt/register" ]; then
	need_root "binfmt_misc mounted on $binfmt"
	log "mounting binfmt_misc on $binfmt"
	mount -t binfmt_misc binfmt_misc "$binfmt" ||
		die "cannot mount binfmt_misc (in a container, the host must mount it and register qemu-$qemu)"
fi

if ! grep -qx enabled "$binfmt/qemu-$qemu" 2>/dev/null; then
	need_root "qemu-$qemu registered in binfmt_misc"
	log "registering qemu-$qemu with binfmt_misc"
	update-binfmts --enable "qemu-$qemu" || die "update-binfmts --enable qemu-$qemu failed"
fi
grep -q '^flags: .*F' "$binfmt/qemu-$qemu" ||
	die "qemu-$qemu is registered without the F flag (fix_binary), so containers cannot
  find the interpreter: register qemu-user-static's (update-binfmts --display qemu-$qemu)"
