#!/bin/sh
# Make this Debian host able to build and test the image: install the system
# packages that are missing and start a Docker daemon if none answers.
# Idempotent and quiet when there is nothing to do.
set -eu

log() { printf 'host-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian package -> command it provides; only missing commands are installed.
PACKAGES="docker.io:dockerd packer:packer debootstrap:debootstrap wrk:wrk openssl:openssl docker-compose:docker-compose python3-venv: buildah:buildah podman:podman skopeo:skopeo docker-registry:docker-registry debsecan:debsecan"

if ! [ -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
	die "this is not a Debian host. Install by hand: Docker engine (>= 20.10),
  Packer 1.6.6 or newer, debootstrap, wrk, openssl, docker-compose, buildah,
  podman, skopeo, Docker's registry (distribution), debsecan and Python 3.11+ with
  venv; start the Docker daemon; then run make again."
fi

missing=""
for entry in $PACKAGES; do
	pkg=${entry%%:*}
	cmd=${entry#*:}
	if [ -n "$cmd" ]; then
		command -v "$cmd" >/dev/null 2>&1 && continue
	elif dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
		continue
	fi
	missing="$missing $pkg"
done

if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || die "missing packages:$missing (run as root, or apt-get install them)"
	log "installing:$missing"
	apt-get update -qq
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || die "no Docker daemon answers and only root can start one"
	log "no Docker daemon answers: starting dockerd (log: /var/log/dockerd.log)"
	nohup dockerd >/var/log/dockerd.log 2>&1 &
	tries=0
	until docker info >/dev/null 2>&1; do
		tries=$((tries + 1))
		[ "$tries" -le 60 ] || die "dockerd did not come up within 30 s; see /var/log/dockerd.log"
		sleep 0.5
	done
	log "dockerd is up"
fi
