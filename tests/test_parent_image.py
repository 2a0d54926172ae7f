"""The parent image: its metadata (the child contract) and what it contains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests import contract, docker, http
from tests.service import served

ROOT = Path(__file__).resolve().parent.parent
PINS = yaml.safe_load((ROOT / "roles/python_venv/defaults/main.yml").read_text())
VENV = "/var/www/venv"
LIB_DIR = contract.LIB_DIR
# The role's regex of the paths of pip and the other installers.
INSTALLERS = yaml.safe_load((ROOT / "roles/python_venv/vars/main.yml").read_text())[
    "__python_venv_installers"
]
RUNTIME_MODULES = yaml.safe_load((ROOT / "roles/aiohttp_app/vars/main.yml").read_text())[
    "__aiohttp_app_modules"
]


@pytest.fixture(scope="module")
def config(parent_image: str) -> dict:
    return docker.inspect(parent_image)["Config"]


@pytest.mark.parametrize("package", ["aiohttp", "gunicorn", "uvloop"])
def test_version_labels_show_the_pins(config: dict, package: str) -> None:
    assert (
        config["Labels"][f"aiohttp-parent.{package}.version"]
        == PINS[f"python_venv_{package}_version"]
    )


@pytest.mark.parametrize("package", ["aiohttp", "gunicorn", "uvloop"])
def test_venv_holds_the_pinned_versions(parent_host, package: str) -> None:
    out = parent_host.check_output(f"{VENV}/bin/pip show {package}")
    assert f"Version: {PINS[f'python_venv_{package}_version']}" in out


def test_python_label_matches_the_interpreter(config: dict, parent_host) -> None:
    version = parent_host.check_output(
        f"{VENV}/bin/python -c 'import sys; print(*sys.version_info[:2], sep=\".\")'"
    )
    assert config["Labels"]["aiohttp-parent.python.version"] == version


@pytest.mark.parametrize(
    "label",
    [
        "title",
        "description",
        "version",
        "licenses",
        "base.name",
        "base.digest",
        "revision",
        "created",
    ],
)
def test_oci_labels_are_set(config: dict, label: str) -> None:
    assert f"org.opencontainers.image.{label}" in config["Labels"]


def test_entrypoint_cmd_and_workdir(config: dict) -> None:
    # Outside /app: a checkout mounted over /app (DEV=1) must not hide it.
    assert config["Entrypoint"] == ["/usr/local/lib/aiohttp-parent/entrypoint"]
    assert config["Cmd"] == ["python"]
    assert config["WorkingDir"] == "/app"


def test_venv_is_first_on_path(config: dict) -> None:
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].split(":")[0] == f"{VENV}/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_onbuild_triggers_follow_the_contract_order(config: dict) -> None:
    # The steps run as root (the venv and / are root's); the child ends unprivileged.
    assert config["OnBuild"][0] == "USER root"
    assert config["OnBuild"][-1] == f"USER {config['User']}"
    triggers = config["OnBuild"][1:-1]
    kinds = [t.split()[0] for t in triggers]
    assert kinds == ["ARG", "ENV", "COPY", "COPY", "COPY", "RUN", "COPY", "RUN"]
    # BUILD_CA_CERTIFICATES is a build arg only: an ENV would keep the CA in the child's config.
    assert triggers[0] == "ARG DEV=0 PYTHONASYNCIODEBUG= BUILD_CA_CERTIFICATES="
    assert "BUILD_CA_CERTIFICATES" not in triggers[1]
    # The steps run in the app dir: the image's own WORKDIR, no trigger of their own.
    assert config["WorkingDir"] == "/app"
    # What the dependencies need comes first, the whole build context after them.
    assert [t.split()[-2] for t in triggers[2:5]] == ["constraints*.txt", "bi[n]", "containe[r]"]
    assert triggers[5].endswith('"/usr/local/lib/aiohttp-parent/onbuild", "dependencies"]')
    assert triggers[6] == "COPY . /app"
    for run in (triggers[5], triggers[7]):
        assert "/usr/local/lib/aiohttp-parent/with-build-ca" in run
    assert triggers[7].endswith('"/usr/local/lib/aiohttp-parent/onbuild"]')


def test_readme_shows_the_copy_and_run_triggers_as_they_are(config: dict) -> None:
    # README.rst, "Two parts: what the build cache keeps", lists them verbatim.
    readme = (ROOT / "README.rst").read_text()
    for trigger in config["OnBuild"]:
        if trigger.split()[0] in ("COPY", "RUN"):
            assert f"    {trigger}\n" in readme


def test_exposes_http_and_https(config: dict) -> None:
    assert set(config["ExposedPorts"]) == {"80/tcp", "443/tcp"}


@pytest.mark.parametrize("package", ["nginx", "supervisor", "ca-certificates"])
def test_system_packages_installed(parent_host, package: str) -> None:
    assert parent_host.package(package).is_installed


def test_debian_default_site_is_removed(parent_host) -> None:
    assert not parent_host.file("/etc/nginx/sites-enabled/default").exists


def test_nginx_config_is_valid(parent_image: str) -> None:
    # Its own container: nginx -t writes a pid file.
    assert docker.run(parent_image, "nginx", "-t").returncode == 0


def test_supervisord_runs_nginx_in_the_foreground(parent_host) -> None:
    program = parent_host.file("/etc/supervisor/conf.d/aiohttp-app.conf").content_string
    assert "[program:nginx]" in program
    assert "daemon off;" in parent_host.file("/etc/nginx/nginx.conf").content_string


@pytest.mark.parametrize("directory", ["/run", "/tmp/aiohttp-parent"])
def test_no_service_was_left_running_at_build_time(parent_host, directory: str) -> None:
    assert parent_host.run(f"find {directory} -name '*.pid' -o -name '*.sock'").stdout == ""


@pytest.mark.parametrize(
    "path",
    ["/var/lib/apt/lists", "/var/cache/apt/archives", "/root/.cache", "/root/.ansible", "/mnt"],
)
def test_build_leaves_nothing_behind(parent_host, path: str) -> None:
    leftovers = parent_host.run(f"find {path} -mindepth 1 -not -name partial -not -name lock")
    assert leftovers.stdout.strip() == ""


def test_build_only_settings_are_gone(parent_host) -> None:
    """Packer's first step sets up dpkg and apt for the build (no fsync, apt's
    binary cache kept); the image and its children get the base's settings."""
    build_only = parent_host.run("find /etc/apt /etc/dpkg -name '*aiohttp-parent-build*'")
    assert build_only.stdout == ""
    config = parent_host.run("apt-config dump Dir::Cache::pkgcache DPkg::Post-Invoke").stdout
    assert 'Dir::Cache::pkgcache "";' in config
    assert "/var/cache/apt/*.bin" in config
    assert parent_host.run("find /var/cache/apt -maxdepth 1 -name '*.bin'").stdout == ""


@pytest.mark.parametrize("path", ["/app", "/usr/local"])
def test_no_bytecode_from_the_build_but_the_runtime_modules(parent_host, path: str) -> None:
    found = parent_host.run(f"find {path} -name '*.pyc'").stdout.split()
    runtime = [p for p in found if p.startswith(f"{LIB_DIR}/__pycache__/")]
    assert found == runtime


def test_venv_packages_are_compiled_hash_checked_but_not_pip(parent_host) -> None:
    """Each module of the web stack has its .pyc (a missing one is None), valid
    whatever the files' times (flags 3: checked hash, PEP 552); the installers,
    which run only in builds, have none."""
    flags = (
        "import importlib.util as u, json, pathlib as p, site;"
        "s = p.Path(site.getsitepackages()[0]);"
        "pyc = {str(f): p.Path(u.cache_from_source(str(f))) for f in s.rglob('*.py')};"
        "print(json.dumps({f: b.read_bytes()[4] if b.exists() else None for f, b in pyc.items()}))"
    )
    found = json.loads(parent_host.run(f'{VENV}/bin/python -c "{flags}"').stdout)
    installers = re.compile(INSTALLERS)
    assert {f: v for f, v in found.items() if installers.search(f) and v is not None} == {}
    served = [v for f, v in found.items() if not installers.search(f)]
    assert len(served) > 100
    assert set(served) == {3}


def test_runtime_modules_are_compiled_hash_checked(parent_host) -> None:
    """Every start of serve imports them: from .pyc, valid whatever the files'
    times (flags 3: checked hash, PEP 552)."""
    check = (
        "import importlib.util as u, pathlib as p;"
        f"print([p.Path(u.cache_from_source('{LIB_DIR}/' + m)).read_bytes()[4] for m in {RUNTIME_MODULES}])"
    )
    assert parent_host.run(f'python3 -c "{check}"').stdout.strip() == str(
        [3] * len(RUNTIME_MODULES)
    )


def test_debian_python_keeps_bytecode_only_for_what_the_image_runs(parent_host) -> None:
    """The container role removes Debian's .pyc files of the modules nothing
    in the image imports (pydoc, the test suites) and keeps the rest."""
    check = (
        "import importlib.util as u, json;"
        "print(json.dumps({m: u.cache_from_source(u.find_spec(m).origin) for m in %r}))"
    )
    modules = ["pydoc", "doctest", "asyncio.base_events", "email.utils", "supervisor.options"]
    pyc = json.loads(parent_host.run(f'/usr/bin/python3 -c "{check % modules}"').stdout)
    present = {m: parent_host.file(path).exists for m, path in pyc.items()}
    assert present == {
        "pydoc": False,
        "doctest": False,
        "asyncio.base_events": True,
        "email.utils": True,
        "supervisor.options": True,
    }


def test_serving_imports_no_debian_module_without_its_bytecode(example_image: str) -> None:
    """Python's import trace (PYTHONVERBOSE) of serve, supervisord, gunicorn,
    its workers and the app, through a start, requests and a stop: every
    module of Debian's Python comes from its .pyc (the container role's
    container_python_bytecode lists them), none is compiled from source."""
    with served(example_image, env={"PYTHONVERBOSE": "1"}) as svc:
        assert http.request(svc.http, "/").status == 200
        assert http.request(svc.http, "/static/hello.txt").status == 200
        docker.docker("stop", svc.name)
        trace = docker.logs(svc.name)
    from_pyc = re.findall(r"^# \S+\.pyc matches (/usr/lib/python3\S+)", trace, re.M)
    assert len(from_pyc) > 100
    # Python quotes the path of a .pyc in its trace, not that of a source file.
    from_source = re.findall(r"^# code object from (/usr/lib/python3\S+\.py)$", trace, re.M)
    assert sorted(set(from_source)) == []


def test_pip_uses_the_system_trust_store(parent_host) -> None:
    assert parent_host.file(f"{VENV}/pip.conf").contains(
        "cert = /etc/ssl/certs/ca-certificates.crt"
    )


def test_extra_ca_kept_when_asked(parent_host) -> None:
    # The test image is built with CA_CERTIFICATES_KEEP=true and this host's bundle.
    assert parent_host.file("/usr/local/share/ca-certificates/extra/ca-certificates.crt").exists


def test_default_entrypoint_hands_over_to_the_parent_script(parent_host) -> None:
    entrypoint = parent_host.file("/app/bin/entrypoint.sh")
    assert entrypoint.mode == 0o755
    assert re.search(
        r"^exec /usr/local/lib/aiohttp-parent/entrypoint", entrypoint.content_string, re.M
    )


# --- no root by default ---------------------------------------------------------


def runs_as_root(user: str) -> bool:
    """docker-bench-security's check 4.1: an image whose Config.User is empty, 0 or
    root runs its containers as root."""
    return user.split(":")[0] in ("", "0", "root")


@pytest.mark.parametrize("variant", ["", "-base"], ids=["onbuild", "base"])
def test_image_runs_as_the_app_user_by_number(parent_image: str, variant: str) -> None:
    user = docker.inspect(f"{parent_image}{variant}")["Config"]["User"]
    assert not runs_as_root(user)
    # Numbers: Kubernetes' runAsNonRoot cannot verify a name.
    assert user == f"{contract.CONTAINER_UID}:{contract.CONTAINER_UID}"


def test_the_default_user_is_the_app_user(parent_image: str) -> None:
    # Named in /etc/passwd (so ps shows `app`), and it may start supervisord
    # programs with user=app: supervisord switches to no other user.
    out = docker.run(parent_image, "id").stdout.strip()
    uid = contract.CONTAINER_UID
    assert out == f"uid={uid}(app) gid={uid}(app) groups={uid}(app)"


def test_no_setuid_or_setgid_files(parent_host) -> None:
    # su, mount, passwd...: a web service gains no privileges.
    assert parent_host.run("find / -xdev -type f -perm /6000").stdout == ""


@pytest.mark.parametrize("package", ["python3-apt"])
def test_build_only_packages_are_gone(parent_host, package: str) -> None:
    assert not parent_host.package(package).is_installed
