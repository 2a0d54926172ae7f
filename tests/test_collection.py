"""The repository as an Ansible collection: `ansible-galaxy collection build`
packs the roles and playbooks and leaves the image build and the test suite
out; another repository installs the tarball and provisions a VM with it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import docker

# An Ansible run of several minutes: make test runs it beside the molecule scenarios.
pytestmark = pytest.mark.beside_molecule

ROOT = Path(__file__).resolve().parent.parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
DISTRO = os.environ.get("MOLECULE_DISTRO", "trixie")
VM_IMAGE = f"local/debian-systemd:{DISTRO}"
# The options molecule/vm/molecule.yml gives the systemd stand-in
# (--privileged is refused on this host).
VM_OPTS = [
    "--cap-add=SYS_ADMIN",
    "--tmpfs=/run",
    "--tmpfs=/run/lock",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro",
    "--stop-signal=SIGRTMIN+3",
]
# The roles of playbooks/vm.yml, in its order.
VM_ROLES = ["ca_certificates", "python_venv", "aiohttp_nginx", "supervisord", "aiohttp_app"]


def run(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{output}"
    return output


def clean_env(**ansible: str) -> dict[str, str]:
    """The environment without the caller's ANSIBLE_* settings (this repository's
    ansible.cfg, roles and collections paths), plus `ansible`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "ANSIBLE_NOCOLOR": "1", **ansible}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    run(
        "ansible-galaxy",
        "collection",
        "build",
        "--output-path",
        str(out),
        str(ROOT),
        cwd=out,
        env=clean_env(ANSIBLE_HOME=str(out / ".ansible")),
    )
    (path,) = out.glob(f"{GALAXY['namespace']}-{GALAXY['name']}-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def members(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as tar:
        return set(tar.getnames())


@pytest.mark.parametrize(
    "path",
    [
        "packer.pkr.hcl",
        "Makefile",
        "scripts",
        "tests",
        "molecule",
        "bench",
        "docs",
        ".venv",
        ".cache",
        ".config",
        "pyproject.toml",
        "requirements-tools.txt",
        "requirements-tools.lock",
        "requirements-collections.txt",
        "requirements-collections.lock",
    ],
)
def test_build_leaves_out_the_image_build_and_the_tests(members: set[str], path: str) -> None:
    assert not {m for m in members if m == path or m.startswith(f"{path}/")}


@pytest.mark.parametrize(
    "path",
    [
        "README.rst",
        "CHANGELOG.rst",
        "meta/runtime.yml",
        "playbooks/vm.yml",
        "playbooks/tasks/lb-haproxy.yml",
        "playbooks/vars/runtime-nginx.yml",
        "examples/hello/hello/app.py",
        *(f"roles/{role}/tasks/main.yml" for role in [*VM_ROLES, "container"]),
        # The contract every role depends on: defaults and a spec, no tasks.
        "roles/aiohttp_parent/defaults/main.yml",
        "roles/aiohttp_parent/meta/main.yml",
    ],
)
def test_build_keeps_the_roles_and_playbooks(members: set[str], path: str) -> None:
    assert path in members


def test_build_keeps_the_executable_bits(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        serve = tar.getmember("roles/aiohttp_app/files/lib/serve")
    assert serve.mode & 0o111


# --- used from another repository ------------------------------------------------


@pytest.fixture(scope="module")
def consumer(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another repository: its own ansible.cfg and inventory, the collection
    installed from the tarball into an empty collections path, and no roles path
    that could reach this checkout's roles/."""
    path = tmp_path_factory.mktemp("consumer")
    collections = path / "collections"
    (path / "roles").mkdir()
    (path / "ansible.cfg").write_text(
        "[defaults]\n"
        "roles_path = roles\n"
        # community.docker only for the test's docker connection to the VM.
        f"collections_path = collections:{ROOT / '.venv/collections'}\n"
        "interpreter_python = auto_silent\n"
        "[connection]\n"
        "pipelining = true\n"
    )
    env = consumer_env(path)
    run(
        "ansible-galaxy",
        "collection",
        "install",
        "--offline",
        "-p",
        str(collections),
        str(tarball),
        cwd=path,
        env=env,
    )
    assert (collections / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]).is_dir()
    return path


def consumer_env(path: Path) -> dict[str, str]:
    return clean_env(ANSIBLE_CONFIG=str(path / "ansible.cfg"), ANSIBLE_HOME=str(path / ".ansible"))


def system_running(name: str) -> bool:
    state = docker.docker("exec", name, "systemctl", "is-system-running", check=False)
    return state.stdout.strip() in {"running", "degraded"}


@pytest.fixture
def vm() -> Iterator[str]:
    """A fresh systemd stand-in, removed afterwards whatever happens."""
    assert docker.image_exists(VM_IMAGE), f"{VM_IMAGE} is built by `make systemd-images`"
    with docker.container(VM_IMAGE, "/lib/systemd/systemd", opts=VM_OPTS) as name:
        assert docker.wait_for(lambda: system_running(name), timeout=60), docker.logs(name)
        yield name


def fetch(name: str, path: str) -> dict:
    """GET http://127.0.0.1PATH inside the VM (nginx's port 80)."""
    script = (
        "import json, urllib.request\n"
        f"r = urllib.request.urlopen('http://127.0.0.1{path}', timeout=10)\n"
        "print(json.dumps({'status': r.status, 'server': r.headers.get('Server', ''),"
        " 'body': r.read().decode()}))\n"
    )
    return json.loads(docker.docker("exec", name, "python3", "-c", script).stdout)


def changed(output: str) -> int:
    (count,) = re.findall(r"changed=(\d+)", output)
    return int(count)


@pytest.mark.slow
def test_collection_provisions_a_vm_from_another_directory(consumer: Path, vm: str) -> None:
    """A playbook of FQCN roles provisions the VM; the example app answers
    through nginx; the collection's own playbook then finds nothing to change."""
    namespace = GALAXY["namespace"]
    installed = consumer / "collections/ansible_collections" / namespace / GALAXY["name"]
    (consumer / "inventory.yml").write_text(
        yaml.safe_dump(
            {
                "aiohttp_parent": {
                    "hosts": {vm: {"ansible_connection": "community.docker.docker"}},
                    "vars": {
                        "aiohttp_app_src": str(ROOT / "examples/hello"),
                        "aiohttp_app_module": "hello.app:create_app",
                        "aiohttp_app_env": {"HEALTHCHECK_PATH": "/healthz"},
                        # Behind this host's TLS-intercepting proxy, as in molecule/vm.
                        "ca_certificates_files": ["/etc/ssl/certs/ca-certificates.crt"],
                    },
                }
            }
        )
    )
    # What the collection's vm playbook loads with vars_files, given as play
    # vars (the README's example writes them out).
    nginx_vars = yaml.safe_load((installed / "playbooks/vars/runtime-nginx.yml").read_text())
    (consumer / "site.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Provision the app servers",
                    "hosts": "aiohttp_parent",
                    "vars": nginx_vars,
                    "roles": [{"role": f"{FQCN}.{role}"} for role in VM_ROLES],
                }
            ],
            sort_keys=False,
        )
    )
    env = consumer_env(consumer)
    start = time.monotonic()
    first = run("ansible-playbook", "-i", "inventory.yml", "site.yml", cwd=consumer, env=env)
    # Handlers notified across roles (aiohttp_app -> nginx, supervisord) ran
    # from the installed collection.
    assert f"RUNNING HANDLER [{FQCN}.aiohttp_nginx : " in first
    assert f"RUNNING HANDLER [{FQCN}.supervisord : " in first

    response = fetch(vm, "/")
    assert response["status"] == 200
    assert response["server"].startswith("nginx")
    assert response["body"].strip() == "Hello from aiohttp-parent"
    assert fetch(vm, "/static/hello.txt")["body"].strip() == "static file"

    # The collection's playbook by its FQCN: its vars_files and short role
    # names resolve inside the collection, and it is the same provisioning.
    second = run("ansible-playbook", "-i", "inventory.yml", f"{FQCN}.vm", cwd=consumer, env=env)
    assert changed(second) == 0, second
    assert fetch(vm, "/")["status"] == 200
    print(f"provisioned and re-checked in {time.monotonic() - start:.0f} s")
