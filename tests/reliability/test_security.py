"""Security: who runs as what, what the image holds, what TLS offers."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests import ansible, docker, http
from tests.service import LOCKED_DOWN, processes, served

ROOT = Path(__file__).resolve().parents[2]

# Started as root (--user 0), root only where needed: PID 1 (serve running
# supervisord, which starts the rest) and nginx's master (switching its
# workers to www-data).
ROOT_ALLOWED = re.compile(r"^(/usr/bin/python3 /usr/local/lib/aiohttp-parent/serve|nginx: master)")


def short_name(cmd: str) -> str:
    """'serve', 'gunicorn', 'nginx: worker process', ..."""
    if cmd.startswith("nginx:"):
        return cmd.split(" process")[0] + " process"
    script = cmd.split()[1] if cmd.startswith("/usr/bin/python3 ") else cmd.split()[0]
    return "gunicorn" if "gunicorn" in cmd else script.rsplit("/", 1)[-1]


def test_default_run_has_no_root_process(example_image: str, figure) -> None:
    """Default run (no flags: the image's USER, the app user)
    Every process runs as `app` (uid 10001), nginx's master on port 80 too; not one as root."""
    with served(example_image) as svc:
        procs = [p for p in processes(svc.name) if "import json, os" not in p["cmd"]]
        user = docker.inspect(svc.name)["Config"]["User"]
        names = docker.docker("exec", svc.name, "id", "-un").stdout.strip()
    by_name = Counter(short_name(p["cmd"]) for p in procs)
    figure(
        f"User {user}; {len(procs)} processes, all {names} "
        f"({', '.join(f'{count} {name}' for name, count in sorted(by_name.items()))})"
    )
    assert {p["uid"] for p in procs} == {int(user.split(":")[0])}
    assert user.split(":")[0] not in ("", "0", "root")
    assert names == "app"
    assert by_name["nginx: master process"] == 1


def test_started_as_root_only_pid_1_and_the_nginx_master_keep_root(
    example_image: str, figure
) -> None:
    """Started as root on purpose (--user 0)
    Only PID 1 (supervisord) and nginx's master run as root; gunicorn's master and workers run as
    `app`, nginx's workers as `www-data`."""
    with served(example_image, opts=["--user=0"]) as svc:
        procs = [p for p in processes(svc.name) if "import json, os" not in p["cmd"]]
        users = {
            p["uid"]: docker.docker("exec", svc.name, "id", "-un", str(p["uid"])).stdout.strip()
            for p in procs
        }
    as_root = [p["cmd"] for p in procs if p["uid"] == 0]
    by_user = Counter((users[p["uid"]], short_name(p["cmd"])) for p in procs)
    figure("; ".join(f"{user}: {count} {name}" for (user, name), count in sorted(by_user.items())))
    assert all(ROOT_ALLOWED.match(cmd) for cmd in as_root), as_root
    gunicorn = [p for p in procs if "gunicorn" in p["cmd"]]
    nginx_workers = [p for p in procs if p["cmd"].startswith("nginx: worker")]
    assert len(gunicorn) >= 2
    assert {users[p["uid"]] for p in gunicorn} == {"app"}
    assert nginx_workers
    assert {users[p["uid"]] for p in nginx_workers} == {"www-data"}


def test_locked_down_run_serves_as_the_arbitrary_user(example_image: str, figure) -> None:
    """Locked down: --user 12345:0 --read-only --cap-drop ALL --security-opt no-new-privileges
    Serves the app and static files with every process as uid 12345 (the hostile
    HTTP tests in test_bad_input.py run against this setup too)."""
    with served(example_image, opts=LOCKED_DOWN) as svc:
        page = http.request(svc.http, "/")
        static = http.request(svc.http, "/static/hello.txt")
        uids = {p["uid"] for p in processes(svc.name)}
    figure(f"/ {page.status}, /static/hello.txt {static.status}; process uids {sorted(uids)}")
    assert page.status == static.status == 200
    assert uids == {12345}


def test_arbitrary_user_without_a_tmpfs_serves(example_image: str) -> None:
    """--user 12345:0 alone (OpenShift-style arbitrary uid, no tmpfs)
    Serves: the image's run dir is sticky and world-writable like /tmp, and holds
    nothing a build-time root left behind."""
    with served(example_image, opts=["--user=12345:0"]) as svc:
        assert http.request(svc.http, "/").status == 200
        assert http.request(svc.http, "/echo", method="POST", body=b"x" * 100_000).status in (
            200,
            404,  # hello has no /echo: what matters is nginx buffered the body to disk
            405,
        )


FIND_WRITABLE = (
    "find / -xdev -perm -0002 ! -type l ! -path '/proc/*' ! -path '/sys/*' "
    "! -path '/dev/*' ! -path '/tmp' ! -path '/tmp/*' ! -path '/var/tmp' ! -path '/var/tmp/*' "
    "! -path '/run/lock'"
)
FIND_KEYS = "grep -rlE -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' /etc /usr /var /app /root /opt"
CACHES = "/root/.cache /var/cache/apt/archives/*.deb /var/lib/apt/lists/*_Packages /root/.cache/pip"


def test_image_holds_no_keys_caches_or_world_writable_files(example_image: str, figure) -> None:
    """Image contents (the example child image)
    No private key anywhere; no pip or apt caches; no world-writable file or
    directory outside /tmp and /var/tmp."""
    writable = docker.run(example_image, "sh", "-c", FIND_WRITABLE).stdout.split()
    keys = docker.run(example_image, "sh", "-c", f"{FIND_KEYS} 2>/dev/null").stdout.split()
    caches = docker.run(example_image, "sh", "-c", f"ls -d {CACHES} 2>/dev/null").stdout.split()
    size = docker.inspect(example_image)["Size"] / 1e6
    figure(
        f"{len(keys)} private keys, {len(caches)} cache paths, "
        f"{len(writable)} world-writable paths outside /tmp; image {size:.0f} MB"
    )
    assert keys == []
    assert caches == []
    assert writable == []


def test_build_ca_is_removed_unless_kept(parent_image: str, figure) -> None:
    """Build-time CA certificates (the corporate-proxy feature)
    The image playbook's removal step (what `make image` runs unless
    CA_CERTIFICATES_KEEP=true) leaves neither the files nor their entries in the
    system bundle; the test image, built with it kept, has both."""
    marker = "/usr/local/share/ca-certificates/extra"
    # As root, as the image build is: the image's own user may remove nothing.
    with docker.container(parent_image, "sleep", "600", opts=["--user=0"]) as name:
        kept = docker.docker("exec", name, "sh", "-c", f"ls {marker}/*.crt | wc -l").stdout
        bundle_before = docker.docker(
            "exec", name, "grep", "-c", "BEGIN CERTIFICATE", "/etc/ssl/certs/ca-certificates.crt"
        ).stdout
        removal = ansible.playbook(name, ROOT / "tests/reliability/files/remove-ca.yml")
        assert removal.returncode == 0, removal.stdout + removal.stderr
        left = docker.docker("exec", name, "test", "-e", marker, check=False).returncode
        bundle_after = docker.docker(
            "exec", name, "grep", "-c", "BEGIN CERTIFICATE", "/etc/ssl/certs/ca-certificates.crt"
        ).stdout
        debian = docker.docker(
            "exec", name, "sh", "-c", "ls /usr/share/ca-certificates/mozilla/*.crt | wc -l"
        ).stdout
    figure(
        f"kept: {int(kept)} extra file(s), bundle {int(bundle_before)} certificates; "
        f"removed: no extra files, bundle {int(bundle_after)} (Debian's {int(debian)})"
    )
    assert int(kept) >= 1
    assert left != 0
    assert int(bundle_after) == int(debian) < int(bundle_before)


def test_server_header_hides_the_version_and_static_gets_nosniff(
    example_image: str, figure
) -> None:
    """Response headers (server_tokens off; security headers where they belong)
    `Server: nginx` without a version, on pages and on nginx's own error pages;
    static files carry X-Content-Type-Options: nosniff. App responses keep the
    app's own headers (CSP and framing are the app's decisions)."""
    with served(example_image) as svc:
        page = http.request(svc.http, "/")
        static = http.request(svc.http, "/static/hello.txt")
        error = http.request(svc.http, "/static/missing.txt")
    figure(
        f"Server: {page.headers['server']} ({error.status} page: {error.headers['server']}); "
        f"static X-Content-Type-Options: {static.headers.get('x-content-type-options')}"
    )
    assert page.headers["server"] == error.headers["server"] == "nginx"
    assert static.headers["x-content-type-options"] == "nosniff"
    assert b"nginx/" not in error.body


@pytest.fixture(scope="module")
def sslyze_scan(example_image: str, tls_dir: Path) -> dict:
    opts = [f"--volume={tls_dir}:/etc/aiohttp-parent/tls:ro", "--env=TLS_REDIRECT=1"]
    with served(example_image, opts=opts) as svc:
        out = subprocess.run(
            [
                "sslyze",
                "--json_out=-",
                "--sslv2",
                "--sslv3",
                "--tlsv1",
                "--tlsv1_1",
                "--tlsv1_2",
                "--tlsv1_3",
                "--heartbleed",
                "--robot",
                "--openssl_ccs",
                "--reneg",
                "--compression",
                f"127.0.0.1:{svc.https}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if not out.stdout.strip().startswith("{"):
        raise AssertionError(f"sslyze failed:\n{out.stdout}\n{out.stderr}")
    (result,) = json.loads(out.stdout)["server_scan_results"]
    assert result["scan_status"] == "COMPLETED", result
    return result["scan_result"]


WEAK = re.compile(r"NULL|EXPORT|anon|RC4|DES|MD5|CBC|_SHA$|PSK|SRP|CAMELLIA|ARIA|IDEA|SEED")


def test_tls_scan_finds_no_old_protocol_or_weak_cipher(sslyze_scan: dict, figure) -> None:
    """sslyze (from PyPI) against the TLS port with a test certificate
    SSL 2/3 and TLS 1.0/1.1 refused; TLS 1.2 offers only forward-secret AEAD
    suites; no Heartbleed, ROBOT, CCS injection, insecure renegotiation or
    compression."""
    accepted = {
        version: [
            c["cipher_suite"]["name"]
            for c in sslyze_scan[f"{version}_cipher_suites"]["result"]["accepted_cipher_suites"]
        ]
        for version in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3")
    }
    reneg = sslyze_scan["session_renegotiation"]["result"]
    figure(
        f"TLS 1.2: {len(accepted['tls_1_2'])} suites, TLS 1.3: {len(accepted['tls_1_3'])}; "
        f"older protocols: {sum(map(len, (accepted[v] for v in ('ssl_2_0', 'ssl_3_0', 'tls_1_0', 'tls_1_1'))))} suites; "
        f"ROBOT {sslyze_scan['robot']['result']['robot_result']}"
    )
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted[old] == [], old
    assert accepted["tls_1_2"]
    assert accepted["tls_1_3"]
    assert not [c for c in accepted["tls_1_2"] if WEAK.search(c)]
    assert all(c.startswith(("TLS_ECDHE_", "TLS_DHE_")) for c in accepted["tls_1_2"])
    assert not sslyze_scan["heartbleed"]["result"]["is_vulnerable_to_heartbleed"]
    assert sslyze_scan["robot"]["result"]["robot_result"].startswith("NOT_VULNERABLE")
    assert not sslyze_scan["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"]
    assert not reneg["is_vulnerable_to_client_renegotiation_dos"]
    assert not sslyze_scan["tls_compression"]["result"]["supports_compression"]


SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|(password|passwd|secret|token|api_key)\s*[:=]\s*['\"]?[^\s'\"{]{6,}",
    re.I,
)


def test_roles_and_playbooks_hold_no_secrets(figure) -> None:
    """Ansible roles, playbooks and the Packer template
    No private key and no literal password, secret or token in any template,
    default, task or variable file."""
    files = [
        p
        for base in ("roles", "playbooks", "molecule")
        for p in (ROOT / base).rglob("*")
        if p.is_file() and p.suffix in {".j2", ".yml", ".yaml", ".conf", ".cfg", ".py", ""}
    ] + [ROOT / "packer.pkr.hcl"]
    hits = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in files
        for m in SECRET.finditer(p.read_text(errors="replace"))
    ]
    figure(f"{len(files)} files scanned, {len(hits)} secrets")
    assert hits == []
