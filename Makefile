# aiohttp-parent. Two commands set up everything on a fresh Debian host (as root):
#   make image   build the parent image (installs Docker, Packer, tools, base image as needed)
#   make test    the whole suite: lint, image and child-contract tests, molecule
# `make lint` alone needs no root, apt or Docker: the tool venv and a packer binary.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_HOME := $(CURDIR)/.cache/ansible
# make's own docker builds (the systemd images) use the classic builder: the
# client on PATH may have no buildx. The tests choose per build (tests/docker.py).
export DOCKER_BUILDKIT := 0

# --- what `make image` builds (see README.rst, "Variables") ---------------
DEBIAN_RELEASE ?= trixie
# CPU architecture: amd64 (this host's; plain tags) or arm64, built under QEMU
# emulation on an amd64 host. arm64's tags, and its base image's, end in
# -arm64: one tag per architecture, for a manifest list (README.rst, "arm64").
ARCH ?= amd64
ifeq ($(filter amd64 arm64,$(ARCH)),)
$(error ARCH=$(ARCH) is not supported: amd64 (the default) or arm64)
endif
ARCH_SUFFIX = $(if $(filter amd64,$(ARCH)),,-$(ARCH))
BASE_IMAGE ?= local/debian:$(DEBIAN_RELEASE)$(ARCH_SUFFIX)
IMAGE_NAME ?= aiohttp-parent
# The image and the collection share galaxy.yml's version.
IMAGE_VERSION ?= $(shell sed -n 's/^version: *//p' galaxy.yml | tr -d "\"'")
TAG_LATEST ?= true
# The build trusts what this host trusts (TLS-intercepting proxies), without
# leaving it in the image unless CA_CERTIFICATES_KEEP=true.
CA_CERTIFICATES ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
CA_CERTIFICATES_KEEP ?= false
# The time every file the build makes gets (README.rst, "Reproducible
# builds"), and its org.opencontainers.image.created label: that of the last
# commit that changed the build's inputs, so two builds of them agree. Empty
# (no git): the times of the build, and no created label.
SOURCE_DATE_EPOCH ?= $(shell python3 scripts/image_inputs.py --source-date-epoch)
# The base image's digest (a label): its registry digest, or, for a base made
# by `docker import` (which has none), its image ID. Expanded when used, after
# `make base` made the base.
BASE_IMAGE_DIGEST = $(shell docker image inspect -f '{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}' \
	$(BASE_IMAGE) 2>/dev/null | sed 's/.*@//')
# Inputs besides the files (scripts/image_inputs.py): a change rebuilds, a new
# base image too (its digest).
BUILD_SETTINGS = $(ARCH) $(DEBIAN_RELEASE) $(BASE_IMAGE) $(BASE_IMAGE_DIGEST) $(TAG_LATEST) $(CA_CERTIFICATES_KEEP) $(abspath $(CA_CERTIFICATES)) $(SOURCE_DATE_EPOCH)
# `make image` copies each image's SBOM here (`make audit SBOM=...` can read one).
SBOM_DIR := build/sbom
BUILD_INPUTS_DIGEST = $(shell python3 scripts/image_inputs.py $(BUILD_SETTINGS))

comma := ,
empty :=
space := $(empty) $(empty)
ca_list = [$(subst $(space),$(comma),$(foreach f,$(CA_CERTIFICATES),"$(abspath $(f))"))]

PACKER_VARS = \
	-var image_name=$(IMAGE_NAME) \
	-var image_version=$(IMAGE_VERSION) \
	-var tag_latest=$(TAG_LATEST) \
	-var debian_release=$(DEBIAN_RELEASE) \
	-var arch=$(ARCH) \
	-var base_image=$(BASE_IMAGE) \
	-var 'ca_certificates=$(ca_list)' \
	-var ca_certificates_keep=$(CA_CERTIFICATES_KEEP) \
	-var source_revision=$(shell git rev-parse --short HEAD 2>/dev/null) \
	-var source_date_epoch=$(SOURCE_DATE_EPOCH) \
	-var base_image_digest=$(BASE_IMAGE_DIGEST) \
	-var build_inputs_digest=$(BUILD_INPUTS_DIGEST)

# Role scenarios run in plain containers; `image` runs playbooks/image.yml;
# `vm` runs playbooks/vm.yml on systemd, for each Debian release.
MOLECULE_SCENARIOS := ca_certificates python_venv aiohttp_nginx supervisord container sbom image
MOLECULE_DISTROS := trixie bookworm

.PHONY: help host tools lock base image audit push lint test test-half-pytest test-half-molecule test-fleet test-reliability test-arm64 pytest molecule systemd-images bench clean

help:
	@echo "make image   build $(IMAGE_NAME):$(IMAGE_VERSION)$(ARCH_SUFFIX) (and :latest$(ARCH_SUFFIX)) on $(BASE_IMAGE)"
	@echo "make push REGISTRY=host[:port][/path]    publish what make image tagged, -base too;"
	@echo "             ARCHES=\"amd64 arm64\": each tag a manifest list of both images"
	@echo "make test    lint, image and child-contract tests, molecule scenarios"
	@echo "make lock    regenerate every lock file from its top-level pins (scripts/lock.py; needs PyPI)"
	@echo "make audit   known vulnerabilities in the image's SBOM (AUDIT_IMAGE=... for another image);"
	@echo "             fails, saying so, when no vulnerability source can be reached"
	@echo "make lint    linters only;  make pytest / make molecule    one half of the suite"
	@echo "make test-fleet    the rolling deploy across three VMs behind HAProxy (part of make test)"
	@echo "make test-reliability    load, faults, bad input, security (docs/reliability.rst)"
	@echo "make image ARCH=arm64    the arm64 image, under QEMU emulation (slow: README.rst, \"arm64\")"
	@echo "make test-arm64    that image, then a child of it must be arm64 and serve HTTP"
	@echo "make bench   this image against a classic Dockerfile (bench/results/latest.md)"

# Root, apt and Docker: what building and running images needs. Every goal but
# these sets the host up first, before the venv too (Debian's python3-venv):
# so `make test` has Packer for its lint, while `make lint` alone needs no root.
NO_HOST_GOALS := help tools lock lint clean
HOST_FIRST := $(if $(filter-out $(NO_HOST_GOALS),$(MAKECMDGOALS)),host)

host:
	@sh scripts/host-setup.sh

$(VENV)/.installed: requirements-tools.lock requirements-collections.lock scripts/tool-venv.py | $(HOST_FIRST)
	@echo "tools: creating $(VENV) from requirements-tools.lock"
	python3 scripts/tool-venv.py $(VENV) requirements-tools.lock requirements-collections.lock
	@touch $@

# The Python tool venv (linters included, shellcheck too): pip only, any user,
# every package hash-checked from requirements-tools.lock.
tools: $(VENV)/.installed

# Every lock file from its top-level pins, with uv from the tool venv. The
# list is LOCKS in scripts/lock.py: one line there adds a lock;
# tests/test_lock.py checks each, and that README.rst's table names it.
lock: tools
	python3 scripts/lock.py

# Another architecture than the host's needs QEMU; emulation.sh checks (and
# as root sets up) that, and does nothing for the host's own.
base: host tools
	@sh scripts/emulation.sh $(ARCH)
	@sh scripts/base-image.sh $(BASE_IMAGE) $(ARCH)

# Packer 1.10 and later ship without the docker builder and the ansible
# provisioner: `packer init packer/` installs them (once per user, into
# ~/.config/packer/plugins) from packer/plugins.pkr.hcl, which Packer 1.6.6
# never reads. Up to 1.9 both are built in and this does nothing.
PACKER_PLUGINS = v=$$(packer version | sed -n '1s/^Packer v//p'); \
	case $$v in \
	0.* | 1.[0-9] | 1.[0-9].*) ;; \
	*) echo "packer: Packer $$v has no built-in docker and ansible plugins: packer init packer/"; \
		packer init packer/ ;; \
	esac

# The parent (ONBUILD) and its -base variant (no triggers), one Packer run
# each; either is skipped while it carries the digest of what it is built
# from (an emulated run takes long: a second one is not redone for the first).
# Both must have the architecture asked for. IMAGE_ONBUILD=true builds the
# parent alone (all make test-arm64 needs), false the -base variant alone.
IMAGE_ONBUILD ?= true false
image: base
	@for onbuild in $(IMAGE_ONBUILD); do \
		tag=$(IMAGE_NAME):$(IMAGE_VERSION)$$([ "$$onbuild" = true ] || echo -base)$(ARCH_SUFFIX); \
		if python3 scripts/image_inputs.py --up-to-date "$$tag" -- $(BUILD_SETTINGS); then \
			echo "image: $$tag is up to date"; \
		else \
			$(PACKER_PLUGINS) && \
			packer build -color=false $(PACKER_VARS) -var onbuild=$$onbuild .; \
		fi; \
		arch=$$(docker image inspect -f '{{.Architecture}}' "$$tag"); \
		[ "$$arch" = $(ARCH) ] || { echo "image: error: $$tag is $$arch, not $(ARCH)" >&2; exit 1; }; \
		sbom=$$(docker image inspect -f '{{index .Config.Labels "aiohttp-parent.sbom"}}' "$$tag"); \
		mkdir -p $(SBOM_DIR) && docker run --rm "$$tag" cat "$$sbom" >"$(SBOM_DIR)/$${tag//[:\/]/_}.cdx.json"; \
		echo "image: $$tag's SBOM: $(SBOM_DIR)/$${tag//[:\/]/_}.cdx.json"; \
	done

# Known vulnerabilities in AUDIT_IMAGE's SBOM (what `docker run IMAGE sbom`
# prints, or the file SBOM names): pip-audit against OSV for its Python
# packages, debsecan against Debian's security tracker for its Debian ones
# (scripts/audit.py). It passes only when both audited every package and found
# nothing; an unreachable source fails, saying which and that nothing was
# audited. AUDIT_OSV_URL and AUDIT_DEBSECAN_SOURCE point to mirrors.
AUDIT_IMAGE ?= $(IMAGE_NAME):$(IMAGE_VERSION)$(ARCH_SUFFIX)
SBOM ?=
AUDIT_OSV_URL ?=
AUDIT_DEBSECAN_SOURCE ?=
audit: host tools
	python3 scripts/audit.py '$(AUDIT_IMAGE)' $(if $(SBOM),--sbom '$(SBOM)') \
		$(if $(AUDIT_OSV_URL),--osv-url '$(AUDIT_OSV_URL)') \
		$(if $(AUDIT_DEBSECAN_SOURCE),--debsecan-source '$(AUDIT_DEBSECAN_SOURCE)')

# Publish every tag `make image` gives both variants to $(REGISTRY)/$(IMAGE_NAME),
# building nothing: scripts/push.sh asks Packer for the names and tags. ARCHES:
# the architectures to publish. One: its tags as they are (make push ARCH=arm64
# pushes the -arm64 ones). Several, such as "amd64 arm64" (each built first
# with make image ARCH=...): each plain tag becomes a manifest list of them
# (README.rst, "Publishing to a registry").
ARCHES ?= $(ARCH)
push:
	@$(PACKER_PLUGINS)
	@sh scripts/push.sh '$(REGISTRY)' '$(ARCHES)' $(PACKER_VARS)

# Any user on Linux or macOS: the venv's linters, then Packer's checks, which
# read files only (no Docker) but need a packer binary on PATH. Scripts that
# are Jinja templates are shellchecked rendered, by tests/test_scripts.py.
lint: tools
	yamllint --strict .
	ansible-lint --profile production --offline
	ruff check .
	ruff format --check .
	shellcheck scripts/*.sh $$(grep -l "^#!/bin/.*sh" roles/container/files/lib/*)
	@command -v packer >/dev/null || { echo "lint: packer is not on PATH, so packer fmt and \
	packer validate cannot run (the other linters passed). Install Packer 1.6.6 or newer \
	(Debian: apt-get install packer, or make host as root) and run make lint again." >&2; exit 1; }
	packer fmt -check -diff .
	@$(PACKER_PLUGINS)
	packer validate $(PACKER_VARS) .

# The collection test provisions a systemd stand-in too. PYTEST_MARKERS: a
# marker expression (-m), which make test uses to split the suite.
PYTEST_MARKERS ?=
pytest: base systemd-images
	pytest $(if $(PYTEST_MARKERS),-m '$(PYTEST_MARKERS)')

# The hostile suite alone (also part of `make pytest`); rewrites docs/reliability.rst.
test-reliability: base
	pytest -m reliability

# arm64 under emulation, not part of `make test`: the arm64 parent as `make
# image ARCH=arm64` builds it (skipped while up to date; not the -base variant,
# which it does not use), then examples/hello built FROM it must be arm64 and
# serve HTTP (tests/test_arm64.py).
test-arm64: host tools
	@$(MAKE) --no-print-directory image ARCH=arm64 IMAGE_ONBUILD=true
	AIOHTTP_PARENT_ARM64_IMAGE=$(IMAGE_NAME):$(IMAGE_VERSION)-arm64 pytest tests/test_arm64.py

systemd-images: host tools
	@for d in $(MOLECULE_DISTROS); do \
		sh scripts/base-image.sh local/debian:$$d; \
		docker image inspect local/debian-systemd:$$d >/dev/null 2>&1 || \
			docker build -q --build-arg BASE=local/debian:$$d -t local/debian-systemd:$$d \
				-f molecule/resources/systemd.Dockerfile molecule/resources; \
	done

molecule: base systemd-images
	@for s in $(MOLECULE_SCENARIOS); do \
		echo "== molecule test -s $$s"; molecule test -s $$s || exit 1; \
	done
	@for d in $(MOLECULE_DISTROS); do \
		echo "== molecule vm ($$d)"; MOLECULE_DISTRO=$$d sh scripts/molecule-vm.sh || exit 1; \
	done

# playbooks/vm.yml rolled out to three systemd hosts behind HAProxy, under
# load (about 15 minutes): part of `make test`, and on its own.
test-fleet: systemd-images
	molecule test -s fleet

# Two halves side by side, each in its own order: pytest then the fleet, and
# the molecule scenarios then the few tests marked beside_molecule (the
# collection's and the bench's smoke run, Ansible-heavy too), which even out
# the halves' times. Their containers, networks and images have distinct names.
# Each half's output is printed whole when it ends (--output-sync).
test: lint base systemd-images
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-half-pytest test-half-molecule

test-half-pytest:
	@$(MAKE) --no-print-directory pytest PYTEST_MARKERS='not beside_molecule'
	@$(MAKE) --no-print-directory test-fleet

test-half-molecule:
	@$(MAKE) --no-print-directory molecule
	@$(MAKE) --no-print-directory pytest PYTEST_MARKERS=beside_molecule

# This image against bench/peer's classic Dockerfile (about 17 min); writes
# bench/results/latest.{md,json,png}. Not part of `make test` (a smoke run is).
bench: IMAGE_VERSION = bench
bench: TAG_LATEST = false
bench: CA_CERTIFICATES_KEEP = true
bench: base
	python3 bench/run.py --base $(BASE_IMAGE) -- $(PACKER_VARS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
