#!/bin/sh
# Ensure the base image named by $1 exists locally, for the CPU architecture
# $2 (amd64 or arm64; default: the host's).
#   present locally               -> nothing to do, if it is of that architecture
#   local/debian:<suite>[-<arch>] -> build it offline: debootstrap minbase + docker import
#                                    (another architecture's runs under QEMU: emulation.sh)
#   anything else                 -> docker pull (a registry is needed)
# The offline image mirrors debian:<suite>-slim: same dpkg path excludes, no apt lists.
set -eu

image=${1:?usage: base-image.sh IMAGE [ARCH] (e.g. local/debian:trixie, or local/debian:trixie-arm64 arm64)}
host=$(dpkg --print-architecture)
arch=${2:-$host}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(dirname "$0")

log() { printf 'base-image: %s\n' "$*" >&2; }

# Docker stores one architecture per tag: an image of another one is an error.
check_arch() {
	have=$(docker image inspect -f '{{.Architecture}}' "$image")
	[ "$have" = "$arch" ] && return 0
	log "error: $image is a $have image, not $arch. Name a $arch base image (BASE_IMAGE),"
	log "       or remove this one (docker rmi $image) to have it made again."
	exit 1
}

if docker image inspect "$image" >/dev/null 2>&1; then
	check_arch
	exit 0
fi

case $image in
local/debian:*)
	tag=${image#local/debian:}
	suite=${tag%"-$arch"}
	;;
*)
	log "pulling $image"
	if [ "$arch" = "$host" ]; then
		docker pull "$image"
	else
		docker pull --platform "linux/$arch" "$image"
	fi && check_arch && exit 0
	log "error: cannot pull $image. Without a registry, use base_image=local/debian:trixie"
	log "       (or local/debian:bookworm): make builds those offline with debootstrap."
	exit 1
	;;
esac

[ "$(id -u)" = 0 ] || { log "error: debootstrap needs root to build $image"; exit 1; }
log "$image is not present and no registry is used: building it offline with"
log "debootstrap --variant=minbase $suite from $mirror (a few minutes, once)"

root=$(mktemp -d "${TMPDIR:-/tmp}/base-$suite-$arch.XXXXXX")
cleanup() {
	# A second stage that failed can leave /proc, /sys or /dev mounted in the chroot.
	awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
		xargs -r -n 1 umount -l 2>/dev/null || true
	rm -rf --one-file-system "$root"
}
trap cleanup EXIT
if [ "$arch" = "$host" ]; then
	bootstrap() { debootstrap --variant=minbase "$suite" "$root" "$mirror"; }
else
	sh "$here/emulation.sh" "$arch"
	log "$arch on $host: debootstrap --foreign, then --second-stage under QEMU (about 4 min)"
	# The packages' own scripts are $arch programs: the second stage runs them under QEMU.
	bootstrap() {
		debootstrap --arch="$arch" --foreign --variant=minbase "$suite" "$root" "$mirror" &&
			chroot "$root" /debootstrap/debootstrap --second-stage
	}
fi
bootstrap >"$root.log" 2>&1 || {
	tail -n 20 "$root.log" >&2
	log "error: debootstrap of $suite ($arch) failed (full log: $root.log)"
	exit 1
}
rm -f "$root.log"

# What the official -slim images configure: no docs, man pages or locales from packages.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
	"$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log

platform=""
[ "$arch" = "$host" ] || platform="--platform=linux/$arch"
# shellcheck disable=SC2086 # $platform is one word or none
tar -C "$root" -c . | docker import $platform \
	--change 'CMD ["bash"]' \
	--change 'ENV LANG=C.UTF-8' \
	--message "debootstrap --variant=minbase $suite $mirror" \
	- "$image" >/dev/null
# Docker 20.10 records its own architecture whatever --platform says.
[ "$arch" = "$host" ] || python3 "$here/image_arch.py" "$image" "$arch"
check_arch
log "built $image ($arch, $(docker image inspect -f '{{.Size}}' "$image") bytes)"
