#!/bin/sh
# The `vm` scenario step by step, with one step `molecule test` lacks: on the
# converged host, `ansible-playbook --check --diff` must report no change.
# MOLECULE_DISTRO=trixie|bookworm picks the Debian release.
set -eu

export MOLECULE_DISTRO="${MOLECULE_DISTRO:-trixie}"
trap 'molecule destroy -s vm >/dev/null 2>&1 || true' EXIT

for step in destroy syntax create prepare converge idempotence; do
	molecule "$step" -s vm
done

log=$(mktemp)
if ! molecule converge -s vm -- --check --diff >"$log" 2>&1 || grep -Eq 'changed=[1-9]' "$log"; then
	cat "$log"
	echo "molecule-vm: check mode on the converged $MOLECULE_DISTRO host reported changes or failed" >&2
	rm -f "$log"
	exit 1
fi
rm -f "$log"
echo "molecule-vm: check mode reports no change on the converged $MOLECULE_DISTRO host"

molecule verify -s vm
molecule side-effect -s vm
