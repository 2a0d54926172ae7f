#!/bin/sh
# Ensure the base image named by $1 exists locally.
#   present locally               -> nothing to do
#   local/debian:<suite>          -> build it offline: debootstrap minbase + docker import
#   anything else                 -> docker pull (a registry is needed)
# The offline image mirrors debian:<suite>-slim: same dpkg path excludes, no apt lists.
set -eu

image=${1:?usage: base-image.sh IMAGE (e.g. local/debian:trixie)}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'base-image: %s\n' "$*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then
	exit 0
fi

case $image in
local/debian:*) suite=${image#local/debian:} ;;
*)
	log "pulling $image"
	docker pull "$image" && exit 0
	log "error: cannot pull $image. Without a registry, use base_image=local/debian:trixie"
	log "       (or local/debian:bookworm): make builds those offline with debootstrap."
	exit 1
	;;
esac

[ "$(id -u)" = 0 ] || { log "error: debootstrap needs root to build $image"; exit 1; }
log "$image is not present and no registry is used: building it offline with"
log "debootstrap --variant=minbase $suite from $mirror (a few minutes, once)"

root=$(mktemp -d "${TMPDIR:-/tmp}/base-$suite.XXXXXX")
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
	tail -n 20 "$root.log" >&2
	log "error: debootstrap of $suite failed (full log: $root.log)"
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

tar -C "$root" -c . | docker import \
	--change 'CMD ["bash"]' \
	--change 'ENV LANG=C.UTF-8' \
	--message "debootstrap --variant=minbase $suite $mirror" \
	- "$image" >/dev/null
log "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
