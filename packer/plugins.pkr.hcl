# The plugins ../packer.pkr.hcl needs on Packer 1.10 and later, which no longer
# bundle them. Install them once per user (into ~/.config/packer/plugins):
#
#   packer init packer/    (`make image` does this when Packer is 1.10+)
#   packer build .         (as with 1.6.6: the template stays at the top level)
#
# This file lives in its own directory because Packer 1.6.6 reads every
# *.pkr.hcl at the top level and rejects `required_plugins` (added in 1.7), and
# because `packer build packer/` would make ${path.root} this directory, so the
# template's file() calls would miss galaxy.yml and the playbooks. A `packer
# build .` without this block loads the highest installed version of each
# plugin (the "discover the remainder of the installed plugins" phase of
# https://developer.hashicorp.com/packer/docs/plugins/creation/plugin-load-spec);
# the constraints below are enforced when `packer init` installs them.
#
# Checked against the plugins' current docs: the docker builder still takes
# image, pull, commit, container_dir and changes; docker-tag repository and
# tags; the ansible provisioner playbook_file, user, extra_arguments and
# ansible_env_vars. The ansible plugin (1.1+) gives its SSH proxy an ECDSA key;
# this template does not use the proxy (Ansible reaches the build container
# with `docker exec`).
packer {
  required_plugins {
    docker = {
      source  = "github.com/hashicorp/docker"
      version = "~> 1.1"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = "~> 1.1"
    }
  }
}
