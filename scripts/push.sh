#!/bin/sh
# Publish the images `make image` tagged to a registry, building nothing:
#   push.sh REGISTRY [PACKER -var ARGUMENTS ...]     (make push REGISTRY=...)
# REGISTRY is host[:port][/path]; every tag goes to REGISTRY/IMAGE_NAME:TAG.
#
# Which names and tags: Packer's, so they have one source. `packer console`
# evaluates packer.pkr.hcl with the build's own -var arguments, for each
# variant (onbuild=true: the parent; onbuild=false: the -base image), and
# prints var.image_name and local.tags, the tags the build's docker-tag
# post-processor gives. Packer's docker-push post-processor would need a
# build to push; this pushes what exists.
#
# Everything is checked before anything is pushed: each tag exists here, is
# the variant it is named for (label aiohttp-parent.variant), and the tags of a
# variant are one image (so :latest is this version, not an older build).
# Then, per tag: docker tag SOURCE DEST, docker push DEST. The DEST tags stay
# in the local store, as after any docker tag + docker push.
set -eu

log() { printf 'push: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

registry=${1-}
[ $# -eq 0 ] || shift
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

for tool in docker packer; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (make push needs Docker and Packer)"
done

# "NAME TAG..." for one variant, as packer.pkr.hcl names it.
packer_tags() { # ONBUILD PACKER-ARGS...
	onbuild=$1
	shift
	# packer console prints its errors on stdout.
	out=$(echo 'join(" ", concat([var.image_name], local.tags))' |
		packer console "$@" -var "onbuild=$onbuild" .) ||
		die "packer console could not evaluate packer.pkr.hcl's image_name and tags:
$out"
	printf '%s\n' "$out"
}

plan=""     # one "SOURCE DEST" line per tag to push
problems="" # every reason not to push, reported together
for onbuild in true false; do
	variant=$([ "$onbuild" = true ] && echo onbuild || echo base)
	names=$(packer_tags "$onbuild" "$@")
	name=${names%% *}
	first=""
	for tag in ${names#* }; do
		ref=$name:$tag
		# "ID VARIANT-LABEL"; empty when the image does not exist.
		found=$(docker image inspect --format \
			'{{.Id}} {{with .Config.Labels}}{{index . "aiohttp-parent.variant"}}{{end}}' \
			"$ref" 2>/dev/null) || found=""
		id=${found%% *}
		if [ -z "$found" ]; then
			problems="$problems
  $ref does not exist"
		elif [ "${found#* }" != "$variant" ]; then
			problems="$problems
  $ref is not the $variant image (label aiohttp-parent.variant='${found#* }')"
		elif [ -z "$first" ]; then
			first=$ref first_id=$id
		elif [ "$id" != "$first_id" ]; then
			problems="$problems
  $ref is another image than $first (built at another time)"
		fi
		plan="$plan$ref $registry/$ref
"
	done
done
[ -z "$problems" ] || die "nothing pushed:$problems
Build them with make image and the same IMAGE_NAME, IMAGE_VERSION and TAG_LATEST,
or name what was built (make push IMAGE_VERSION=... TAG_LATEST=false)."

# One image per tag. A multi-arch release slots in here: push each
# architecture's image under a tag of its own (DEST-amd64, DEST-arm64), then
# `docker manifest create DEST DEST-amd64 DEST-arm64` and
# `docker manifest push DEST` make DEST a manifest list.
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
log "published $count tags to $registry"
