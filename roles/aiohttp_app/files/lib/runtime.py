"""Runtime settings of an aiohttp-parent service, read from the environment.

One module for every consumer, so the rules live in one place:
  * `serve` (the container's main process) validates them and writes nginx's
    runtime includes before starting supervisord;
  * gunicorn.conf.py reads them for gunicorn's settings;
  * the healthcheck reads what `serve` wrote to runtime.json;
  * on a VM, `python3 runtime.py configure` does what `serve` does for nginx.
Standard library only: it runs on the system python3 and on the venv's.
"""

from __future__ import annotations

import configparser
import errno
import json
import math
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # written by the aiohttp_app role: /run/aiohttp-parent on VMs, under /tmp in images
    from site_paths import RUN_DIR as _RUN_DIR
except ImportError:
    _RUN_DIR = "/run/aiohttp-parent"
RUN_DIR = Path(os.environ.get("AIOHTTP_PARENT_RUN_DIR") or _RUN_DIR)
# gunicorn's directory (its user's): the socket, and the notes its workers
# leave: `ready` once one serves, `fatal` when the app cannot start.
APP_STATE = RUN_DIR / "gunicorn"
SOCKET = APP_STATE / "gunicorn.sock"
APP_READY = APP_STATE / "ready"
APP_FATAL = APP_STATE / "fatal"
TLS_DIR = Path("/etc/aiohttp-parent/tls")
FATAL_MARKER = RUN_DIR / "fatal"
RUNTIME_JSON = RUN_DIR / "runtime.json"

# Mozilla's "intermediate" TLS 1.2 ciphers, ECDHE only (no dhparam needed);
# TLS 1.3 suites are always on and not configurable here.
TLS_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
APP_START_TIMEOUT_DEFAULT = 60
SUPERVISOR_CONF_D = Path("/etc/supervisor/conf.d")
# The parent's own programs (the aiohttp_app role's conf.d file).
PARENT_PROGRAMS_CONF = SUPERVISOR_CONF_D / "aiohttp-app.conf"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ACCESS_LOG_FORMATS = ("combined", "json", "off")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting has a value we refuse to start with; the text says which and why."""


# --- CPU limit ----------------------------------------------------------------


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the container may use per its cgroup quota, or None when unlimited.

    cgroup v2: cpu.max ("max 100000" or "150000 100000").
    cgroup v1: cpu.cfs_quota_us (-1 when unlimited) / cpu.cfs_period_us.
    """
    v2 = cgroup_root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    for v1 in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct", cgroup_root / "cpuacct,cpu"):
        quota_file, period_file = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            if quota > 0:
                return quota / int(period_file.read_text())
            return None
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Whole CPUs to size worker pools by: the quota rounded up, capped by the
    CPUs this process may run on (cpusets, taskset)."""
    affinity = len(os.sched_getaffinity(0))
    limit = cpu_limit(cgroup_root)
    if limit is None:
        return affinity
    return max(1, min(affinity, math.ceil(limit)))


# --- parsing helpers ----------------------------------------------------------


def module_hint(app_module: str) -> str:
    """For a file path where a module name belongs: the module it means."""
    module, _, attribute = app_module.partition(":")
    if "/" not in module and not module.endswith(".py"):
        return ""
    dotted = module.removesuffix(".py").strip("/").replace("/", ".")
    return f" (a module, not a file: {dotted}{':' + attribute if attribute else ''})"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} is out of range: use {minimum} to {maximum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not valid: use 1 or 0")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid: use one of {', '.join(choices)}")
    return value


def _match(env: Mapping[str, str], name: str, default: str, pattern: str, hint: str) -> str:
    value = env.get(name, "").strip() or default
    if not re.fullmatch(pattern, value):
        raise ConfigError(f"{name}={value!r} is not valid: {hint}")
    return value


def _exists(name: str, path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # e.g. a directory mounted with a mode we may not enter
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _readable(name: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


# --- settings -------------------------------------------------------------------


def child_programs(conf_d: Path = SUPERVISOR_CONF_D) -> dict[str, str]:
    """supervisord programs a child image added in conf.d: name -> command."""
    programs: dict[str, str] = {}
    for path in sorted(conf_d.glob("*.conf")) if conf_d.is_dir() else []:
        if path == PARENT_PROGRAMS_CONF:
            continue
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ConfigError(f"{path} is not a valid supervisord file: {exc}") from None
        for section in parser.sections():
            if section.startswith("program:"):
                programs[section.removeprefix("program:")] = parser.get(
                    section, "command", fallback=""
                )
    return programs


def gunicorn_binds(command: str) -> list[str]:
    """The addresses a gunicorn command line binds (-b/--bind), to wait for."""
    try:
        args = shlex.split(command)
    except ValueError:
        return []
    binds = []
    for i, arg in enumerate(args):
        if arg in ("-b", "--bind") and i + 1 < len(args):
            binds.append(args[i + 1])
        elif arg.startswith("--bind="):
            binds.append(arg.removeprefix("--bind="))
        elif arg.startswith("-b") and len(arg) > 2:
            binds.append(arg[2:])
    return binds


def own_app_programs(
    app_module: str, programs: Mapping[str, str], seed_entrypoint: bool = False
) -> list[str]:
    """The child's programs that serve its app themselves (a seed-style child):
    any that runs gunicorn, or all of them when its own entrypoint started
    supervisord and APP_MODULE names no app. (A background worker next to a
    forgotten APP_MODULE is not an app: that still fails, naming APP_MODULE.)"""
    return [
        n
        for n, cmd in programs.items()
        if "gunicorn" in cmd or (seed_entrypoint and not app_module)
    ]


@dataclass(frozen=True)
class Settings:
    app_module: str
    # The parent's gunicorn runs APP_MODULE; false when the child's own
    # supervisord programs serve the app (child_app_programs).
    gunicorn: bool
    child_app_programs: tuple[str, ...]
    child_app_binds: tuple[str, ...]
    dev: bool
    nginx: bool
    port: int
    https_port: int
    workers: int
    nginx_workers: int
    timeout: int
    start_timeout: int
    graceful_timeout: int
    keepalive: int
    max_requests: int
    max_requests_jitter: int
    log_level: str
    access_log: str
    access_log_format: str
    client_max_body_size: str
    client_timeout: int
    proxy_connect_timeout: int
    proxy_read_timeout: int
    proxy_send_timeout: int
    static_url: str
    static_root: str
    static_expires: str
    tls_cert: str
    tls_key: str
    tls_redirect: bool
    healthcheck_path: str
    forwarded_allow_ips: str

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def gunicorn_bind(self) -> str:
        return f"unix:{SOCKET}" if self.nginx else f"0.0.0.0:{self.port}"

    @property
    def stop_wait_seconds(self) -> int:
        """supervisord's stopwaitsecs per program: the drain time plus slack."""
        return self.graceful_timeout + 1

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        cpus: int | None = None,
        require_app: bool = True,
        check_tls: bool = True,
        seed_entrypoint: bool = False,
    ) -> Settings:
        env = os.environ if env is None else env
        cpus = available_cpus() if cpus is None else cpus
        dev = _bool(env, "DEV", False)

        app_module = env.get("APP_MODULE", "").strip()
        programs = child_programs() if require_app else {}
        own = tuple(own_app_programs(app_module, programs, seed_entrypoint))
        if require_app and not app_module and not own:
            raise ConfigError(
                "APP_MODULE is not set: name your aiohttp application as module:attribute, "
                "e.g. ENV APP_MODULE=myapp.main:app (an Application) or "
                "myapp.main:create_app (an async factory returning one)"
            )
        if app_module and not re.fullmatch(r"[\w.]+(:[\w.]+(\(.*\))?)?", app_module):
            raise ConfigError(
                f"APP_MODULE={app_module!r} is not valid: use module:attribute, e.g. myapp.main:app"
                + module_hint(app_module)
            )

        api_only = _bool(env, "API_ONLY", False)
        nginx = not api_only and shutil.which("nginx") is not None

        timeout = _int(env, "GUNICORN_TIMEOUT", 30, 1, 3600)
        graceful = _int(env, "GUNICORN_GRACEFUL_TIMEOUT", 4, 0, 3600)
        read_timeout = _int(env, "NGINX_PROXY_READ_TIMEOUT", max(60, timeout), 1, 86400)
        if read_timeout < timeout:
            raise ConfigError(
                f"NGINX_PROXY_READ_TIMEOUT={read_timeout} is shorter than GUNICORN_TIMEOUT={timeout}: "
                "nginx would give up on requests gunicorn still lets run"
            )

        # gunicorn (as the app user) has no business reading the TLS key.
        tls_cert, tls_key = _tls_files(env) if check_tls else ("", "")
        return cls(
            app_module=app_module,
            gunicorn=not own,
            child_app_programs=own,
            child_app_binds=tuple(b for name in own for b in gunicorn_binds(programs[name])),
            dev=dev,
            nginx=nginx,
            port=_int(env, "PORT", 80, 1, 65535),
            https_port=_int(env, "HTTPS_PORT", 443, 1, 65535),
            workers=_int(env, "WEB_CONCURRENCY", 1 if dev else cpus, 1, 1024),
            nginx_workers=_int(env, "NGINX_WORKER_PROCESSES", cpus, 1, 1024),
            timeout=timeout,
            start_timeout=_int(env, "APP_START_TIMEOUT", APP_START_TIMEOUT_DEFAULT, 1, 3600),
            graceful_timeout=graceful,
            keepalive=_int(env, "GUNICORN_KEEPALIVE", 75, 0, 3600),
            max_requests=_int(env, "GUNICORN_MAX_REQUESTS", 0, 0, 10**9),
            max_requests_jitter=_int(env, "GUNICORN_MAX_REQUESTS_JITTER", 0, 0, 10**9),
            log_level=_choice(env, "LOG_LEVEL", "debug" if dev else "info", LOG_LEVELS),
            access_log=env.get("NGINX_ACCESS_LOG", "").strip() or "/proc/1/fd/1",
            access_log_format=_choice(
                env, "NGINX_ACCESS_LOG_FORMAT", "combined", ACCESS_LOG_FORMATS
            ),
            client_max_body_size=_match(
                env,
                "NGINX_CLIENT_MAX_BODY_SIZE",
                "10m",
                r"\d+[kKmMgG]?",
                "use a size such as 512k or 10m",
            ),
            client_timeout=_int(env, "NGINX_CLIENT_TIMEOUT", 15, 1, 3600),
            proxy_connect_timeout=_int(env, "NGINX_PROXY_CONNECT_TIMEOUT", 5, 1, 3600),
            proxy_read_timeout=read_timeout,
            proxy_send_timeout=_int(env, "NGINX_PROXY_SEND_TIMEOUT", 60, 1, 86400),
            static_url=_match(
                env, "STATIC_URL", "/static/", r"/([\w.-]+/)*", "use a path such as /static/"
            ),
            static_root=_match(
                env,
                "STATIC_ROOT",
                "/app/static/",
                r"/([\w.-]+/)*",
                "use a directory such as /app/static/",
            ),
            static_expires=_match(
                env,
                "NGINX_STATIC_EXPIRES",
                "1h",
                r"off|\d+[smhdwMy]?",
                "use off or a time such as 1h or 7d",
            ),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_redirect=_bool(env, "TLS_REDIRECT", False),
            healthcheck_path=_match(
                env, "HEALTHCHECK_PATH", "/", r"/[^\s]*", "use a path such as /healthz"
            ),
            forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1",
        )


def _tls_files(env: Mapping[str, str]) -> tuple[str, str]:
    """Both files, or neither. Named by TLS_CERT/TLS_KEY or mounted at TLS_DIR."""
    cert_env, key_env = env.get("TLS_CERT", "").strip(), env.get("TLS_KEY", "").strip()
    cert = Path(cert_env) if cert_env else TLS_DIR / "tls.crt"
    key = Path(key_env) if key_env else TLS_DIR / "tls.key"
    named = bool(cert_env or key_env)
    if not named and not _exists("TLS_CERT", cert) and not _exists("TLS_KEY", key):
        return "", ""
    for name, path in (("TLS_CERT", cert), ("TLS_KEY", key)):
        if not _exists(name, path):
            raise ConfigError(
                f"{name}: {path} does not exist (TLS needs both a certificate and its key)"
            )
        _readable(name, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS_KEY: {key} does not match the certificate {cert}, or one of them is not PEM ({exc.reason})"
        ) from None
    return str(cert), str(key)


# --- nginx runtime includes -------------------------------------------------------


def nginx_version() -> tuple[int, ...]:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(p) for p in found.groups()) if found else (0, 0, 0)


def render_main(s: Settings, as_root: bool) -> str:
    lines = [
        f"worker_processes {s.nginx_workers};",
        f"worker_shutdown_timeout {s.graceful_timeout}s;",
    ]
    if as_root:
        # Only a root master can switch its workers to another user.
        lines.insert(0, "user www-data;")
    return "\n".join(lines) + "\n"


def render_http(s: Settings) -> str:
    log = (
        "access_log off;"
        if s.access_log_format == "off"
        # One write per 4 KiB of lines, not per request: a pipe write up to
        # PIPE_BUF (4 KiB) is atomic, so lines of two workers never interleave.
        else f"access_log {s.access_log} {s.access_log_format} buffer=4k flush=1s;"
    )
    return f"""{log}

# nginx's 60 s would let slow clients (slowloris) hold connections 4x longer.
client_header_timeout {s.client_timeout}s;
client_body_timeout {s.client_timeout}s;

# Upgrade only when the client asks; otherwise keep the upstream connection alive.
map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      '';
}}

upstream aiohttp_app {{
    server {s.gunicorn_bind.replace("0.0.0.0", "127.0.0.1")};
    # Idle connections kept per nginx worker: enough for a burst of clients to
    # reuse connections instead of opening one per request.
    keepalive 128;
    # Shorter than gunicorn's keep-alive ({s.keepalive}s), so nginx never reuses a
    # connection gunicorn is closing.
    keepalive_timeout {max(1, min(60, s.keepalive - 5))}s;
}}
"""


def _listen(port: int, flags: str) -> str:
    lines = f"    listen {port}{flags} default_server;\n"
    if Path("/proc/net/if_inet6").exists():  # IPv6 may be disabled in the container
        lines += f"    listen [::]:{port}{flags} default_server;\n"
    return lines


def render_site(s: Settings, http2_directive: bool) -> str:
    hsts = (
        'add_header Strict-Transport-Security "max-age=31536000" always;' if s.tls_redirect else ""
    )
    proxy = _proxy(s)
    app = f"""
    include /etc/nginx/server.d/*.conf;
    client_max_body_size {s.client_max_body_size};
    # HTTP/0.9 and Host-less HTTP/1.0 requests: nginx answers, not the app.
    if ($http_host = "") {{
        return 400;
    }}

    # Files that exist under STATIC_ROOT come from nginx; any other path
    # under STATIC_URL goes to the app, which may serve its own static route.
    location {s.static_url} {{
        alias {s.static_root};
        expires {s.static_expires};
        add_header X-Content-Type-Options "nosniff";
        {hsts}
        try_files $uri @aiohttp_app;
    }}

    location / {{
{proxy}    }}

    location @aiohttp_app {{
{proxy}    }}
"""
    http_body = "    return 301 https://$host$request_uri;\n" if s.tls and s.tls_redirect else app
    site = f"server {{\n{_listen(s.port, '')}    server_name _;\n{http_body}}}\n"
    if not s.tls:
        return site
    if http2_directive:  # nginx >= 1.25.1 deprecates "listen ... http2"
        tls_listen = _listen(s.https_port, " ssl") + "    http2 on;\n"
    else:
        tls_listen = _listen(s.https_port, " ssl http2")
    return (
        site
        + f"""
server {{
{tls_listen}    server_name _;
    ssl_certificate {s.tls_cert};
    ssl_certificate_key {s.tls_key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {TLS_CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:TLS:10m;
    ssl_session_timeout 1d;
    ssl_session_tickets off;
    {hsts}
{app}}}
"""
    )


def _proxy(s: Settings) -> str:
    """The body of the locations that proxy to gunicorn."""
    return f"""        proxy_pass http://aiohttp_app;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Request-ID $request_id;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_redirect off;
        proxy_connect_timeout {s.proxy_connect_timeout}s;
        proxy_read_timeout {s.proxy_read_timeout}s;
        proxy_send_timeout {s.proxy_send_timeout}s;
        # nginx replays a GET whose reused upstream connection closed without
        # an answer: right when gunicorn closed it idle, wrong when the request
        # killed its worker (a blocked loop after GUNICORN_TIMEOUT): the replay
        # would block and kill a second worker. Replays only within 1 s.
        proxy_next_upstream_timeout 1s;
"""


def child_sites() -> list[Path]:
    """Sites a child image ships in sites-enabled: they replace the generated one."""
    sites = Path("/etc/nginx/sites-enabled")
    return sorted(p for p in sites.iterdir()) if sites.is_dir() else []


def nginx_files(s: Settings) -> dict[Path, str]:
    """The runtime includes nginx.conf picks up, by path."""
    nginx = RUN_DIR / "nginx"
    files = {
        nginx / "main.d/runtime.conf": render_main(s, os.geteuid() == 0),
        nginx / "http.d/00-runtime.conf": render_http(s),
    }
    # A child's own sites replace the generated one; so do its own app
    # programs, whose site proxies to them (there is no gunicorn socket).
    if s.gunicorn and not child_sites():
        files[nginx / "http.d/50-site.conf"] = render_site(s, nginx_version() >= (1, 25, 1))
    return files


def sync(directory: Path, files: dict[Path, str]) -> bool:
    """Make directory/**/*.conf exactly `files`; True if anything changed."""
    changed = False
    for old in directory.glob("*/*.conf"):
        if old not in files:
            old.unlink()
            changed = True
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed = True
    return changed


def write_nginx(s: Settings) -> tuple[bool, list[str]]:
    """Write nginx's runtime includes; return (changed, notes for the log)."""
    notes = (
        [f"nginx: using the child's site(s) {', '.join(map(str, sites))}"]
        if (sites := child_sites())
        else []
    )
    return sync(RUN_DIR / "nginx", nginx_files(s)), notes


def write_runtime_json(s: Settings) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data = asdict(s) | {"tls": s.tls, "bind": s.gunicorn_bind}
    RUNTIME_JSON.write_text(json.dumps(data, indent=2) + "\n")


def configure(s: Settings) -> tuple[bool, list[str]]:
    """Prepare everything `serve` (or nginx on a VM) needs before starting:
    (whether nginx's configuration changed, notes for the log)."""
    try:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        # A run dir that outlived its container (docker restart keeps /tmp)
        # holds the last start's notes; nginx must not take `ready` for this one.
        for note in (FATAL_MARKER, APP_READY, APP_FATAL, *APP_STATE.glob("warned-*")):
            note.unlink(missing_ok=True)
        changed, notes = write_nginx(s) if s.nginx else (False, [])
        write_runtime_json(s)
    except OSError as exc:
        hint = (
            ": with --read-only, give the container a writable /tmp "
            "(docker run --tmpfs /tmp; Kubernetes: an emptyDir volume at /tmp)"
            if exc.errno == errno.EROFS
            else ""
        )
        raise ConfigError(
            f"cannot write the runtime state in {RUN_DIR}: {exc.strerror}{hint}"
        ) from None
    return changed, notes


def check_nginx_at_build() -> int:
    """nginx -t on the config `serve` would generate with default settings, so a
    child whose container/files break nginx fails its build, not its first start.
    What it writes is removed afterwards; the run dir stays as the image has it
    (any run-time user must be able to fill it)."""
    settings = Settings.from_env(cpus=1, require_app=False, check_tls=False)
    if not settings.nginx:
        return 0
    before = set(RUN_DIR.rglob("*"))
    try:
        configure(settings)
        check = subprocess.run(["nginx", "-t", "-q"], capture_output=True, text=True, check=False)
    finally:
        for path in sorted(set(RUN_DIR.rglob("*")) - before, reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
    if check.returncode != 0:
        print("aiohttp-parent: the nginx configuration is invalid; nginx -t says:", file=sys.stderr)
        sys.stderr.write(check.stderr)
    return check.returncode


def supervisor_env(s: Settings) -> dict[str, str]:
    """Values supervisord's program sections read as %(ENV_...)s, and what
    nginx's launcher waits for before it starts (wait_for_app)."""
    return {
        # A child's own [program:gunicorn] merges into the parent's section
        # (supervisord reads conf.d non-strictly): it is theirs, and must start.
        "AIOHTTP_PARENT_GUNICORN": "true"
        if s.gunicorn or "gunicorn" in s.child_app_programs
        else "false",
        "AIOHTTP_PARENT_NGINX": "true" if s.nginx else "false",
        "AIOHTTP_PARENT_STOPWAITSECS": str(s.stop_wait_seconds),
        "AIOHTTP_PARENT_APP_READY": str(APP_READY) if s.gunicorn else "",
        "AIOHTTP_PARENT_APP_BINDS": " ".join(s.child_app_binds),
    }


def _accepts(bind: str) -> bool:
    """Whether a gunicorn bind address (unix:PATH, HOST:PORT) takes connections."""
    try:
        if bind.startswith("unix:"):
            family, address = socket.AF_UNIX, bind.removeprefix("unix:")
        else:
            host, _, port = bind.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            address = ("127.0.0.1" if host == "0.0.0.0" else host, int(port))
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(address)
    except (OSError, ValueError):
        return False
    return True


def wait_for_app(env: Mapping[str, str]) -> None:
    """Before nginx starts: until the app answers, its clients get refused
    connections rather than 502s. The parent's gunicorn leaves a note
    (APP_READY); a seed-style child's own gunicorn is reached at its binds.
    serve stops the container if the parent's app never serves; a child's
    own app gets nginx anyway after APP_START_TIMEOUT."""
    ready = env.get("AIOHTTP_PARENT_APP_READY", "")
    binds = env.get("AIOHTTP_PARENT_APP_BINDS", "").split()
    timeout = int(env.get("APP_START_TIMEOUT") or APP_START_TIMEOUT_DEFAULT)
    deadline = time.monotonic() + timeout
    while not (not ready or Path(ready).exists()) or not all(map(_accepts, binds)):
        if time.monotonic() > deadline:
            print(
                f"aiohttp-parent: warning: nothing answers at {' '.join(binds) or ready} "
                f"after {timeout} s (APP_START_TIMEOUT); starting nginx anyway",
                file=sys.stderr,
                flush=True,
            )
            return
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    """On VMs, where systemd starts nginx and supervisord:
    `runtime.py configure`       validate, write nginx's includes; print "changed" if they did
    `runtime.py supervisor-env`  validate, write RUN_DIR/supervisor.env for supervisord's unit
    `runtime.py check`           validate only (Ansible runs it on the controller first)
    `runtime.py check-nginx`     at image build time: nginx -t on the defaults, leaving no state
    In a container, nginx's launcher runs:
    `runtime.py wait-for-app`    return once the app answers (supervisor_env says where)
    """
    commands = ("configure", "supervisor-env", "check", "check-nginx", "wait-for-app")
    command = argv[1] if len(argv) == 2 else ""
    if command not in commands:
        print(f"usage: runtime.py {'|'.join(commands)}", file=sys.stderr)
        return 64
    if command == "wait-for-app":
        wait_for_app(os.environ)
        return 0
    try:
        if command == "check":
            Settings.from_env(cpus=1, check_tls=False)
            return 0
        if command == "check-nginx":
            return check_nginx_at_build()
        settings = Settings.from_env()
        if command == "configure":
            changed, notes = configure(settings)
            for note in notes:
                print(f"aiohttp-parent: {note}", file=sys.stderr)
            print("changed" if changed else "unchanged")
        else:
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            env = "".join(f"{k}={v}\n" for k, v in supervisor_env(settings).items())
            (RUN_DIR / "supervisor.env").write_text(env)
    except ConfigError as exc:
        print(f"aiohttp-parent: error: {exc}", file=sys.stderr)
        return 78
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
