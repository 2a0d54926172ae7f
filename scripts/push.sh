#!/bin/sh
# Publish the images `make image` tagged to a registry, building nothing:
#   push.sh REGISTRY ARCHES [PACKER -var ARGUMENTS ...]
#       (make push REGISTRY=... [ARCHES="amd64 arm64"])
# REGISTRY is host[:port][/path]; every tag goes to REGISTRY/IMAGE_NAME:TAG.
# ARCHES lists the architectures to publish (make's default: $(ARCH)).
#
# Which names and tags: Packer's, so they have one source. `packer console`
# evaluates packer.pkr.hcl with the build's own -var arguments, for each
# variant (onbuild=true: the parent; onbuild=false: the -base image) and
# architecture (arch=...), and prints var.image_name and local.tags, the tags
# the build's docker-tag post-processor gives (amd64's are plain, 0.1.0;
# another architecture's end in -ARCH, 0.1.0-arm64). Packer's docker-push
# post-processor would need a build to push; this pushes what exists.
#
# Everything is checked before anything is pushed: each tag exists here, is
# the variant it is named for (label aiohttp-parent.variant) and the
# architecture (its config's), and the tags of a variant and architecture
# are one image (so :latest is this version, not an older build).
#
# One architecture: per tag, docker tag SOURCE DEST, docker push DEST.
# Several: each architecture's image goes to DEST-ARCH (DEST-amd64 too), then
# `docker manifest create` and `docker manifest push` make DEST a manifest
# list of them, from which a pull or a FROM takes the host's platform. The
# DEST and DEST-ARCH tags stay in the local store, as after any docker tag +
# docker push; the manifest lists do not (--purge).
set -eu

log() { printf 'push: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

registry=${1-}
arches=${2-}
[ $# -lt 2 ] || shift 2
cd "$(dirname "$0")/.."

[ -n "$registry" ] || die "REGISTRY is not set. Say where to publish:
  make push REGISTRY=registry.example.com/team    (host[:port][/path])
Each tag goes to \$REGISTRY/IMAGE_NAME:TAG; for Docker Hub, REGISTRY=docker.io/NAMESPACE."

# A first component without '.' or ':' is not a host to Docker: it would be
# read as a Docker Hub namespace and push there.
case ${registry%%/*} in
*.* | *:* | localhost) ;;
*) die "REGISTRY=$registry does not start with a registry host (host[:port], such as
  registry.example.com or 127.0.0.1:5000); for Docker Hub, REGISTRY=docker.io/$registry" ;;
esac
printf '%s\n' "$registry" |
	grep -Eq '^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$' ||
	die "REGISTRY=$registry is not host[:port][/path] with a lower-case path (no trailing /)"

# Each architecture once, and one that packer.pkr.hcl builds.
archlist=""
for arch in $arches; do
	case $arch in
	amd64 | arm64) ;;
	*) die "ARCHES=\"$arches\": $arch is not supported (amd64, arm64)" ;;
	esac
	case " $archlist " in
	*" $arch "*) die "ARCHES=\"$arches\" names $arch twice" ;;
	esac
	archlist=${archlist:+$archlist }$arch
done
[ -n "$archlist" ] || die "ARCHES is empty: name the architectures to publish, such as
  make push REGISTRY=... ARCHES=\"amd64 arm64\""
case $archlist in
*" "*) multiarch=true ;;
*) multiarch=false ;;
esac

for tool in docker packer; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (make push needs Docker and Packer)"
done

# "NAME TAG..." for one variant and architecture, as packer.pkr.hcl names
# them (of two -var arguments for one name, Packer takes the last).
packer_tags() { # ONBUILD ARCH PACKER-ARGS...
	onbuild=$1 tag_arch=$2
	shift 2
	# packer console prints its errors on stdout.
	out=$(echo 'join(" ", concat([var.image_name], local.tags))' |
		packer console "$@" -var "onbuild=$onbuild" -var "arch=$tag_arch" .) ||
		die "packer console could not evaluate packer.pkr.hcl's image_name and tags:
$out"
	printf '%s\n' "$out"
}

# Word N (from 1) of the words that follow.
nth() { # N WORD...
	shift "$1"
	printf '%s' "$1"
}

plan=""     # one "SOURCE DEST" line per image to push
lists=""    # several architectures: one "LIST ENTRY..." line per plain tag
problems="" # every reason not to push, reported together
for onbuild in true false; do
	variant=$([ "$onbuild" = true ] && echo onbuild || echo base)
	# amd64's tags are the plain ones: with several architectures, the lists'.
	plain=$(packer_tags "$onbuild" amd64 "$@")
	plain=${plain#* }
	for arch in $archlist; do
		names=$(packer_tags "$onbuild" "$arch" "$@")
		name=${names%% *}
		first=""
		i=0
		for tag in ${names#* }; do
			i=$((i + 1))
			ref=$name:$tag
			# "ID ARCHITECTURE VARIANT-LABEL"; empty when the image does not exist.
			found=$(docker image inspect --format \
				'{{.Id}} {{.Architecture}} {{with .Config.Labels}}{{index . "aiohttp-parent.variant"}}{{end}}' \
				"$ref" 2>/dev/null) || found=""
			id=${found%% *}
			image_arch=${found#* } label=${found#* * }
			image_arch=${image_arch%% *}
			if [ -z "$found" ]; then
				problems="$problems
  $ref does not exist"
			elif [ "$label" != "$variant" ]; then
				problems="$problems
  $ref is not the $variant image (label aiohttp-parent.variant='$label')"
			elif [ "$image_arch" != "$arch" ]; then
				problems="$problems
  $ref is built for $image_arch, not $arch (its config's architecture)"
			elif [ -z "$first" ]; then
				first=$ref first_id=$id
			elif [ "$id" != "$first_id" ]; then
				problems="$problems
  $ref is another image than $first (built at another time)"
			fi
			# packer.pkr.hcl's local.tags is one expression for every
			# architecture: tag i of one is tag i of amd64 plus a suffix.
			# shellcheck disable=SC2086 # $plain: the words
			dest=$([ "$multiarch" = true ] && echo "$name:$(nth "$i" $plain)-$arch" || echo "$ref")
			plan="$plan$ref $registry/$dest
"
		done
	done
	[ "$multiarch" = true ] || continue
	for tag in $plain; do
		lists="$lists$registry/$name:$tag"
		for arch in $archlist; do
			lists="$lists $registry/$name:$tag-$arch"
		done
		lists="$lists
"
	done
done
if [ "$multiarch" = true ] && ! docker manifest --help >/dev/null 2>&1; then
	problems="$problems
  this docker client has no docker manifest command (Docker 20.10 and later have it)"
fi
[ -z "$problems" ] || die "nothing pushed:$problems
Build them with make image (ARCH=... for each of ARCHES) and the same IMAGE_NAME,
IMAGE_VERSION and TAG_LATEST, or name what was built (make push IMAGE_VERSION=...
TAG_LATEST=false ARCHES=...)."

publish() { # SOURCE DEST
	log "$1 -> $2"
	docker tag "$1" "$2"
	docker push "$2" || die "docker push $2 failed (see above). Is the registry up, and
  are you logged in (docker login ${2%%/*})? Pushing again is safe: make push."
}

count=0
while read -r source dest; do
	[ -n "$source" ] || continue
	publish "$source" "$dest"
	count=$((count + 1))
done <<EOF
$plan
EOF
if [ "$multiarch" = false ]; then
	log "published $count tags to $registry"
	exit 0
fi

# The daemon pushes over plain HTTP to a registry on 127.0.0.0/8 (localhost
# too) and to one named in daemon.json's insecure-registries, which `docker
# info` lists as not Secure. docker manifest talks to the registry itself, and
# against such a registry `manifest create` fails without --insecure (Docker
# 20.10 and 28.2 say "no such manifest"), so both manifest commands get the
# flag there. A TLS registry never does: the flag also accepts a certificate
# that does not verify.
host=${registry%%/*}
insecure=""
case $host in
localhost | localhost:* | 127.[0-9]*) insecure=--insecure ;;
*)
	secure=$(docker info --format \
		"{{with index .RegistryConfig.IndexConfigs \"$host\"}}{{.Secure}}{{end}}" 2>/dev/null) ||
		secure=""
	[ "$secure" != false ] || insecure=--insecure
	;;
esac

# Each list is made afresh: a local one that a failed run left is removed
# first. `manifest create --amend` would keep it, and with it the entries'
# manifests as they were then (the client reuses what it stored, measured with
# 28.2), so a rebuilt image would not reach the list.
lists_count=0
while read -r list entries; do
	[ -n "$list" ] || continue
	log "$list -> manifest list of $entries"
	docker manifest rm "$list" >/dev/null 2>&1 || true
	# shellcheck disable=SC2086 # $insecure: one word or none; $entries: words
	{ docker manifest create $insecure "$list" $entries >/dev/null &&
		docker manifest push $insecure --purge "$list" >/dev/null; } ||
		die "publishing the manifest list $list failed (see above); its images are
  pushed. Pushing again is safe: make push."
	lists_count=$((lists_count + 1))
done <<EOF
$lists
EOF
log "published $lists_count manifest lists ($archlist) of $count images to $registry"
