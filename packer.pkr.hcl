# aiohttp-parent: a parent image for aiohttp/gunicorn services, built by
# running playbooks/image.yml in a container and committing it.
# Debian's Packer 1.6.6 builds it as is; Packer 1.10+ first installs the plugins
# that packer/plugins.pkr.hcl names (`packer init packer/`, which `make image` runs).

packer {
  required_version = ">= 1.6.6"
}

variable "image_name" {
  type        = string
  default     = "aiohttp-parent"
  description = "Repository name the image is tagged with."
  validation {
    condition     = regex_replace(var.image_name, "^[a-z0-9]+([._/:-][a-z0-9]+)*$", "") == ""
    error_message = "The image_name must be a lower-case Docker repository name, such as aiohttp-parent or registry.example.com/team/aiohttp-parent."
  }
}

variable "image_version" {
  type        = string
  default     = ""
  description = "Tag for this build; also the org.opencontainers.image.version label. Empty: galaxy.yml's version."
  validation {
    condition     = length(var.image_version) <= 128 && regex_replace(var.image_version, "^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$", "") == ""
    error_message = "The image_version must be a valid Docker tag: letters, digits, _ . - (at most 128 characters)."
  }
}

variable "tag_latest" {
  type        = bool
  default     = true
  description = "Also tag the build as :latest (test builds turn this off)."
}

variable "debian_release" {
  type        = string
  default     = "trixie"
  description = "Debian release of the base image: trixie (Python 3.13) or bookworm (Python 3.11)."
  validation {
    condition     = contains(["trixie", "bookworm"], var.debian_release)
    error_message = "The debian_release must be \"trixie\" or \"bookworm\"."
  }
}

variable "arch" {
  type        = string
  default     = "amd64"
  description = "CPU architecture of the image, which the base image must have: amd64, or arm64 (on an amd64 host it builds under QEMU emulation). Tags of arm64 end in -arm64."
  validation {
    condition     = contains(["amd64", "arm64"], var.arch)
    error_message = "The arch must be \"amd64\" or \"arm64\"."
  }
}

variable "base_image" {
  type        = string
  default     = ""
  description = "Base image; empty means local/debian:<debian_release> (arm64: local/debian:<debian_release>-arm64), built offline by `make image`. With a registry, e.g. debian:trixie-slim (it must match debian_release and arch)."
}

variable "aiohttp_version" {
  type        = string
  default     = ""
  description = "aiohttp version; empty means the pin in roles/python_venv/defaults/main.yml. Another version installs the whole venv unlocked (no hashes), as the lock is made from the pins."
}

variable "gunicorn_version" {
  type        = string
  default     = ""
  description = "gunicorn version; empty means the pin in roles/python_venv/defaults/main.yml. Another version installs the whole venv unlocked (no hashes), as the lock is made from the pins."
}

variable "uvloop_version" {
  type        = string
  default     = ""
  description = "uvloop version; empty means the pin in roles/python_venv/defaults/main.yml. Another version installs the whole venv unlocked (no hashes), as the lock is made from the pins."
}

variable "ca_certificates" {
  type        = list(string)
  default     = []
  description = "PEM files (single certificates or bundles) on the build host to trust during the build, e.g. a TLS-intercepting proxy's CA."
  validation {
    condition     = length([for f in var.ca_certificates : f if ! fileexists(f)]) == 0
    error_message = "Every entry of ca_certificates must be a readable file on the build host."
  }
}

variable "ca_certificates_keep" {
  type        = bool
  default     = false
  description = "Keep the ca_certificates in the image's trust store, so child builds (pip) and the app trust them too."
}

variable "onbuild" {
  type        = bool
  default     = true
  description = "true: the parent with the ONBUILD child contract, tagged <version>. false: the same image without triggers, tagged <version>-base (README.rst, \"Without ONBUILD\")."
}

variable "build_inputs_digest" {
  type        = string
  default     = ""
  description = "Digest of the files the image is built from; the test suite uses it to reuse an up-to-date image."
}

variable "source_date_epoch" {
  type        = string
  default     = ""
  description = "Unix time (SOURCE_DATE_EPOCH; make: that of the last commit that changed the build's inputs) that every file the build creates or changes gets as its mtime, and the org.opencontainers.image.created label: two builds of one commit give the same files, times and label. Empty: the times of the build, and no created label."
  validation {
    condition     = regex_replace(var.source_date_epoch, "^[0-9]*$", "") == ""
    error_message = "The source_date_epoch must be a Unix time in seconds, such as the output of git log -1 --format=%ct, or empty."
  }
}

variable "base_image_digest" {
  type        = string
  default     = ""
  description = "Digest of the base image, for the org.opencontainers.image.base.digest label: its registry digest when it has one, else its local image ID (a base made by docker import has no registry digest)."
}

variable "source_revision" {
  type        = string
  default     = ""
  description = "VCS revision of this repository, for the org.opencontainers.image.revision label."
}

locals {
  # The image and the collection (galaxy.yml) share one version.
  image_version = var.image_version != "" ? var.image_version : yamldecode(file("${path.root}/galaxy.yml")).version
  pins          = yamldecode(file("${path.root}/roles/python_venv/defaults/main.yml"))
  # The contract the roles read too (paths, ports): the aiohttp_parent role's
  # defaults. Only its plain values: yamldecode takes Jinja literally, so never
  # the switch or the run dir (tests/test_contract.py).
  contract = yamldecode(file("${path.root}/roles/aiohttp_parent/defaults/main.yml"))
  lib_dir  = local.contract.aiohttp_parent_lib_dir
  app_dir  = local.contract.aiohttp_parent_app_dir
  venv     = local.contract.aiohttp_parent_venv
  # The default USER, numeric (Kubernetes' runAsNonRoot verifies only numbers):
  # the app user, its uid and gid in images.
  user = "${local.contract.aiohttp_parent_container_uid}:${local.contract.aiohttp_parent_container_uid}"
  versions = {
    aiohttp  = var.aiohttp_version != "" ? var.aiohttp_version : local.pins.python_venv_aiohttp_version
    gunicorn = var.gunicorn_version != "" ? var.gunicorn_version : local.pins.python_venv_gunicorn_version
    uvloop   = var.uvloop_version != "" ? var.uvloop_version : local.pins.python_venv_uvloop_version
  }
  # The build's date, from source_date_epoch (HCL has no other way from Unix time).
  created = var.source_date_epoch == "" ? "" : timeadd("1970-01-01T00:00:00Z", "${var.source_date_epoch}s")
  # The venv's lock (roles/python_venv/files/requirements.lock) is made from
  # the role's pins: other versions install unlocked, without hashes.
  locked = local.versions == {
    aiohttp  = local.pins.python_venv_aiohttp_version
    gunicorn = local.pins.python_venv_gunicorn_version
    uvloop   = local.pins.python_venv_uvloop_version
  }
  # Marks the start of the build in the build container (source_date_epoch).
  build_start = "/var/tmp/aiohttp-parent-build-start"
  # Settings for the build only (the first and last shell steps): dpkg skips
  # its fsync()s, and apt keeps its binary cache. Debian's docker-clean, which
  # base images have, turns that cache off, so each apt run of the roles would
  # parse the package lists again (1 to 2 s); apt reads apt_build_cache after
  # docker-clean, whose hooks it clears (nothing else sets those two hooks in
  # the build). The container role's clean-up removes the cache files.
  dpkg_unsafe_io  = "/etc/dpkg/dpkg.cfg.d/aiohttp-parent-build-unsafe-io"
  apt_build_cache = "/etc/apt/apt.conf.d/zz-aiohttp-parent-build-cache"
  apt_build_cache_settings = [
    "#clear DPkg::Post-Invoke;",
    "#clear APT::Update::Post-Invoke;",
    "Dir::Cache::pkgcache \"pkgcache.bin\";",
    "Dir::Cache::srcpkgcache \"srcpkgcache.bin\";",
  ]
  python_version = { trixie = "3.13", bookworm = "3.11" }[var.debian_release]
  # amd64 keeps plain tags; another architecture's tags (and its offline base
  # image's) end in -<arch>, one tag per architecture for a manifest list.
  arch_suffix = var.arch == "amd64" ? "" : "-${var.arch}"
  base_image  = var.base_image != "" ? var.base_image : "local/debian:${var.debian_release}${local.arch_suffix}"

  ansible_vars = {
    python_venv_python_version   = local.python_version
    python_venv_aiohttp_version  = local.versions.aiohttp
    python_venv_gunicorn_version = local.versions.gunicorn
    python_venv_uvloop_version   = local.versions.uvloop
    ca_certificates_files        = [for f in var.ca_certificates : abspath(f)]
    image_keep_ca_certificates   = var.ca_certificates_keep
  }

  # aiohttp-parent.sbom: where the image's CycloneDX SBOM is, written at the
  # end of the build (`docker run IMAGE sbom` makes a new one).
  labels = {
    "org.opencontainers.image.title"       = "aiohttp-parent"
    "org.opencontainers.image.description" = "Parent image for aiohttp/gunicorn services: nginx + gunicorn (uvloop) under supervisord, ONBUILD child contract"
    "org.opencontainers.image.version"     = local.image_version
    "org.opencontainers.image.revision"    = var.source_revision
    "org.opencontainers.image.created"     = local.created
    "org.opencontainers.image.licenses"    = "MIT"
    "org.opencontainers.image.base.name"   = local.base_image
    "org.opencontainers.image.base.digest" = var.base_image_digest
    "aiohttp-parent.aiohttp.version"       = local.versions.aiohttp
    "aiohttp-parent.gunicorn.version"      = local.versions.gunicorn
    "aiohttp-parent.uvloop.version"        = local.versions.uvloop
    "aiohttp-parent.python.version"        = local.python_version
    "aiohttp-parent.venv.locked"           = local.locked ? "true" : "false"
    "aiohttp-parent.debian.release"        = var.debian_release
    "aiohttp-parent.build.inputs"          = var.build_inputs_digest
    "aiohttp-parent.sbom"                  = local.contract.aiohttp_parent_sbom_file
  }

  # The child-image contract, run in this order by `FROM aiohttp-parent`:
  # build args and environment; then in two parts, so that a change to the
  # app's code reuses the layer of its dependencies: only what they need
  # (requirements*.txt, constraints*.txt, bin/, container/) into the app dir
  # and `onbuild dependencies` (container/files into /, bin/setup.sh, the
  # requirements), then the whole build context and `onbuild` (what the first
  # part deferred, setup.py or pyproject.toml, bin/cleanup.sh, nginx -t).
  # Logic lives in the script (README.rst, "The child contract").
  # A COPY fails when none of its sources exists (the classic builder, Buildah),
  # so each names requirements*.txt, Dockerfile and Containerfile too; the
  # brackets make the names globs, which may match nothing. A COPY of several
  # sources copies a directory's contents, hence one COPY per directory, into
  # its place; `onbuild dependencies` removes the extra files it brings.
  # BUILD_CA_CERTIFICATES is an ARG only, never ENV: with-build-ca trusts it
  # for the onbuild steps and keeps it out of every layer. The steps run as
  # root (they install into the root-owned venv and copy container/files
  # into /); the last trigger hands the child back to the unprivileged USER,
  # so the child's own instructions and its containers run as that user.
  # No RUN --mount here: the classic builder refuses a child that has one.
  # Each trigger costs the classic builder a container (0.1 s or more): one
  # ARG for the three, and no WORKDIR (the image's own is the app dir).
  anchors = "requirements*.txt Dockerfil[e] Containerfil[e]"
  onbuild = [
    "ONBUILD USER root",
    "ONBUILD ARG DEV=0 PYTHONASYNCIODEBUG= BUILD_CA_CERTIFICATES=",
    "ONBUILD ENV DEV=$DEV PYTHONASYNCIODEBUG=$PYTHONASYNCIODEBUG",
    "ONBUILD COPY ${local.anchors} constraints*.txt ${local.app_dir}/",
    "ONBUILD COPY ${local.anchors} bi[n] ${local.app_dir}/bin/",
    "ONBUILD COPY ${local.anchors} containe[r] ${local.app_dir}/container/",
    format("ONBUILD RUN [%q, %q, %q]", "${local.lib_dir}/with-build-ca", "${local.lib_dir}/onbuild", "dependencies"),
    "ONBUILD COPY . ${local.app_dir}",
    format("ONBUILD RUN [%q, %q]", "${local.lib_dir}/with-build-ca", "${local.lib_dir}/onbuild"),
    "ONBUILD USER ${local.user}",
  ]

  suffix = "${var.onbuild ? "" : "-base"}${local.arch_suffix}"
  tags = concat(
    ["${local.image_version}${local.suffix}"],
    var.tag_latest ? ["latest${local.suffix}"] : [],
  )

  changes = concat(
    [
      # Packer starts the build container with --entrypoint=/bin/sh; this replaces it.
      # Outside the app dir, so a checkout mounted over it still starts.
      format("ENTRYPOINT [%q]", "${local.lib_dir}/entrypoint"),
      "CMD [\"python\"]",
      "WORKDIR ${local.app_dir}",
      # Nothing runs as root by default (README.rst, "Non-root and locked down").
      "USER ${local.user}",
      "ENV VIRTUAL_ENV=${local.venv}",
      "ENV PATH=${local.venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1",
      "EXPOSE ${local.contract.aiohttp_parent_http_port}/tcp ${local.contract.aiohttp_parent_https_port}/tcp",
      # Through nginx to the app; healthy for containers not running `serve`.
      format("HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD [%q]", "${local.lib_dir}/healthcheck"),
    ],
    [for k, v in local.labels : format("LABEL %q=%q", k, v)],
  )
  # The variant as a label, and as ENV for `serve`: in a child of the ONBUILD
  # variant whose builder skipped the triggers (an OCI-format parent has none),
  # it finds no record of the onbuild script and stops at once, saying why.
  variant = var.onbuild ? "onbuild" : "base"
  all_changes = concat(
    local.changes,
    [
      format("LABEL %q=%q", "aiohttp-parent.variant", local.variant),
      "ENV AIOHTTP_PARENT_VARIANT=${local.variant}",
    ],
    var.onbuild ? local.onbuild : [],
  )
}

source "docker" "parent" {
  image  = local.base_image
  pull   = false
  commit = true
  # Packer's upload mount goes on /mnt, which Debian bases already have empty,
  # so the commit leaves no mount point behind (not /tmp: apt's sandbox user
  # could not write to it).
  container_dir = "/mnt"
  changes       = local.all_changes
  # The layer's comment in `docker history` (the base layer's says how
  # scripts/base-image.sh made it).
  message = "packer build of aiohttp-parent ${local.image_version} (${local.variant}): playbooks/image.yml on ${local.base_image}, source revision ${var.source_revision}"
}

build {
  sources = ["source.docker.parent"]

  # Ansible needs a Python on the target; the base image is minbase. The
  # marker dates the start: what is newer, the build made (source_date_epoch).
  # python3-apt comes in the same apt run: Ansible's apt module would
  # otherwise install it itself, a second apt run (the container role purges
  # it at the end). dpkg skips its fsync()s and apt keeps its binary cache for
  # this build only (a container that is committed or thrown away as a whole,
  # never a VM): the last step removes both settings, so neither the image
  # nor its children keep them.
  provisioner "shell" {
    inline = [
      "touch ${local.build_start}",
      "echo force-unsafe-io >${local.dpkg_unsafe_io}",
      format("printf '%%s\\n' %s >%s", join(" ", [for l in local.apt_build_cache_settings : "'${l}'"]), local.apt_build_cache),
      "apt-get update -qq",
      "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-apt >/dev/null",
    ]
  }

  provisioner "ansible" {
    playbook_file = "${path.root}/playbooks/image.yml"
    user          = "root"
    # Talk to the build container through `docker exec`, not Packer's SSH proxy.
    extra_arguments = concat([
      "-e", "ansible_connection=community.docker.docker",
      "-e", "ansible_host=${build.ID}",
      "-e", "ansible_python_interpreter=/usr/bin/python3",
      "-e", jsonencode(local.ansible_vars),
    ], local.locked ? [] : ["-e", jsonencode({ python_venv_lock_file = "" })])
    ansible_env_vars = [
      "ANSIBLE_CONFIG=${path.root}/ansible.cfg",
      "ANSIBLE_FORCE_COLOR=0",
    ]
  }

  # Ansible keeps its remote temp directory under root's home; the build-only
  # dpkg and apt settings go too. Then every
  # file the build made or changed gets source_date_epoch as its time (files
  # from Debian's packages keep theirs): the same times in every build. The
  # script runs from the upload mount, outside the image, so that Packer's
  # removal of it afterwards changes no time in the image.
  provisioner "shell" {
    remote_folder = "/mnt"
    inline = concat(
      ["rm -rf /root/.ansible ${local.dpkg_unsafe_io} ${local.apt_build_cache}"],
      var.source_date_epoch == "" ? ["rm ${local.build_start}"] : [
        "find / -xdev -newer ${local.build_start} -print0 >/mnt/aiohttp-parent-clamp",
        "rm ${local.build_start}",
        "xargs -0 -r touch --no-dereference --date=@${var.source_date_epoch} </mnt/aiohttp-parent-clamp ${dirname(local.build_start)}",
      ],
    )
  }

  post-processor "docker-tag" {
    repository = var.image_name
    tags       = local.tags
  }
}
