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
import contextlib
import errno
import importlib.util
import ipaddress
import json
import math
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Protocol


def source_contract() -> SimpleNamespace:
    """The contract read from the aiohttp_parent role's defaults, for this module
    run from the source tree (the tests, the controller's `check`,
    scripts/role_docs.py), where the role has rendered no site_paths.py. Plain
    `aiohttp_parent_<name>: <value>` lines only: the standard library reads no YAML."""
    defaults = Path(__file__).resolve().parents[3] / "aiohttp_parent/defaults/main.yml"
    if not defaults.is_file():
        sys.exit(
            f"aiohttp-parent: {SITE_PATHS} is missing, and this runtime.py is not in the"
            " source tree: install it with the aiohttp_app role, which renders that file"
        )
    found = re.findall(r"^aiohttp_parent_(\w+): *([^\s>{][^#\n]*?) *$", defaults.read_text(), re.M)
    values = dict(found)
    return SimpleNamespace(
        CONF_DIR=values["conf_dir"],
        APP_DIR=values["app_dir"],
        HTTP_PORT=int(values["http_port"]),
        HTTPS_PORT=int(values["https_port"]),
        RUN_DIR=values["host_run_dir"],
    )


def rendered_contract(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("site_paths", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Paths, user and ports: the contract as the aiohttp_app role rendered it next
# to this module (hosts and images alike), else the contract's source. Found
# by this file's location, not sys.path, so that any way of running it agrees.
SITE_PATHS = Path(__file__).resolve().with_name("site_paths.py")
contract = rendered_contract(SITE_PATHS) if SITE_PATHS.is_file() else source_contract()

RUN_DIR = Path(contract.RUN_DIR)
# gunicorn's directory (its user's): the socket, and the notes its workers
# leave: `ready` once one serves, `fatal` when the app cannot start.
APP_STATE = RUN_DIR / "gunicorn"
SOCKET = APP_STATE / "gunicorn.sock"
APP_READY = APP_STATE / "ready"
APP_FATAL = APP_STATE / "fatal"
TLS_DIR = Path(contract.CONF_DIR) / "tls"
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


# --- settings as data ------------------------------------------------------------
#
# Every environment variable the image reads is declared once, in SETTINGS:
# its name, the parser that checks it (with its bounds), its default and one
# line of doc. Settings.from_env loops over the declarations, and README.rst's
# settings table is written from them (scripts/role_docs.py; a test fails when
# the README differs). An unset or empty variable takes the default.


def module_hint(app_module: str) -> str:
    """For a file path where a module name belongs: the module it means."""
    module, _, attribute = app_module.partition(":")
    if "/" not in module and not module.endswith(".py"):
        return ""
    dotted = module.removesuffix(".py").strip("/").replace("/", ".")
    return f" (a module, not a file: {dotted}{':' + attribute if attribute else ''})"


class Parser(Protocol):
    def __call__(self, name: str, raw: str) -> Any:
        """The value of a non-empty, stripped setting, or ConfigError naming it."""

    def describe(self) -> str:
        """The accepted values, for the README's table (reStructuredText)."""


@dataclass(frozen=True)
class Whole:
    """A whole number from minimum to maximum."""

    minimum: int
    maximum: int

    def __call__(self, name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if not self.minimum <= value <= self.maximum:
            raise ConfigError(
                f"{name}={value} is out of range: use {self.minimum} to {self.maximum}"
            )
        return value

    def describe(self) -> str:
        return f"{self.minimum} to {self.maximum}"


@dataclass(frozen=True)
class Flag:
    """On or off: 1, true, yes, on or 0, false, no, off."""

    def __call__(self, name: str, raw: str) -> bool:
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not valid: use 1 or 0")

    def describe(self) -> str:
        return "``1`` or ``0``"


@dataclass(frozen=True)
class ZeroOrOne:
    """Exactly 0 or 1: for a variable shell scripts read too (DEV), so that
    every reader agrees on what it means."""

    off: str
    on: str

    def __call__(self, name: str, raw: str) -> bool:
        if raw not in ("0", "1"):
            raise ConfigError(
                f"{name}={raw!r} is not valid: use {name}=0 ({self.off}) or {name}=1 ({self.on})"
            )
        return raw == "1"

    def describe(self) -> str:
        return "``0`` or ``1``"


@dataclass(frozen=True)
class Choice:
    """One of a few words, in any case."""

    choices: tuple[str, ...]

    def __call__(self, name: str, raw: str) -> str:
        value = raw.lower()
        if value not in self.choices:
            raise ConfigError(
                f"{name}={value!r} is not valid: use one of {', '.join(self.choices)}"
            )
        return value

    def describe(self) -> str:
        return ", ".join(f"``{c}``" for c in self.choices)


@dataclass(frozen=True)
class Match:
    """Text matching a regular expression; `hint` says what to write instead,
    `explain` may add what a wrong value probably meant."""

    pattern: str
    hint: str
    values: str
    explain: Callable[[str], str] = lambda value: ""

    def __call__(self, name: str, raw: str) -> str:
        if not re.fullmatch(self.pattern, raw):
            raise ConfigError(f"{name}={raw!r} is not valid: {self.hint}" + self.explain(raw))
        return raw

    def describe(self) -> str:
        return self.values


@dataclass(frozen=True)
class Text:
    """Any text: what reads it (nginx, Python) judges it."""

    values: str

    def __call__(self, name: str, raw: str) -> str:
        return raw

    def describe(self) -> str:
        return self.values


def nginx_size(size: str) -> int:
    """An nginx size (NGINX_CLIENT_MAX_BODY_SIZE's syntax: 512k, 10m, 1g) in bytes."""
    unit = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(size[-1:].lower())
    return int(size[:-1]) * unit if unit else int(size)


# gunicorn's own parser, run by the venv's python (runtime.py may run on the
# system's, which has no gunicorn): a flag it refuses stops every start.
_GUNICORN_PARSE = """
import json
import sys
try:
    from gunicorn.config import Config
except ImportError:  # no gunicorn here (the source tree's tests): nothing to say
    sys.exit()
parser = Config().parser()
parser.prog = "gunicorn"
args = parser.parse_args(sys.argv[1:])
print(json.dumps({"worker_class": args.worker_class, "bind": args.bind}))
"""


def _gunicorn_refuses(args: list[str]) -> str | None:
    """Why these flags cannot serve: gunicorn refuses them, or they set what
    the image sets itself."""
    if "gunicorn" in sys.modules:  # in gunicorn's master, which parses them next itself
        return None
    python = Path(os.environ.get("VIRTUAL_ENV") or sys.prefix) / "bin/python"
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", _GUNICORN_PARSE, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 0:
        # What the image itself must set. Another worker class would serve but
        # never say it is ready (nor trust X-Forwarded-* from nginx alone): a
        # start that fails at APP_START_TIMEOUT, blaming the app. Another bind
        # leaves nginx's upstream socket empty: a 502 for every request.
        try:
            parsed = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):  # gunicorn not there (the source tree's tests)
            return None
        if worker := parsed.get("worker_class"):
            return (
                f"it sets the worker class ({worker}), and the image's own worker "
                "(aiohttp's uvloop worker, which says when the app is ready) is the one that "
                "can serve here: leave --worker-class out"
            )
        if bind := parsed.get("bind"):
            return (
                f"it sets where gunicorn listens ({', '.join(bind)}), and nginx passes requests "
                "to gunicorn's own socket: leave --bind out, and set PORT to move the port "
                "served (API_ONLY=1: gunicorn serves PORT itself)"
            )
        return None
    if done.returncode != 2:  # argparse's refusal; anything else is not the flags' doing
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else "gunicorn refuses them"


@dataclass(frozen=True)
class CommandLine:
    """Arguments split as a shell would (gunicorn splits GUNICORN_CMD_ARGS so)."""

    def __call__(self, name: str, raw: str) -> str:
        try:
            args = shlex.split(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
        if args and (refused := _gunicorn_refuses(args)):
            raise ConfigError(f"{name}={raw!r} is not valid: {refused}")
        return raw

    def describe(self) -> str:
        return "command-line flags"


@dataclass(frozen=True)
class Addresses:
    """Addresses and networks, comma-separated, or *."""

    def __call__(self, name: str, raw: str) -> str:
        for address in (a.strip() for a in raw.split(",")):
            try:
                if address != "*":
                    ipaddress.ip_network(address)  # strict, as gunicorn checks it
            except ValueError as exc:
                raise ConfigError(
                    f"{name}={raw!r} is not valid: {exc} (an address, or a network such as "
                    "10.0.0.0/8; separated by commas, or * for every peer)"
                ) from None
        return raw

    def describe(self) -> str:
        return "addresses or networks, comma-separated, or ``*``"


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Parser
    # The value when unset or empty, or a function of the settings declared
    # before it (by name) and the CPUs available that returns it.
    default: Any
    doc: str
    # The table's Default column, where the value alone does not say it.
    default_doc: str = ""
    # The Settings attribute it fills; "" when from_env derives others from
    # it (API_ONLY, TLS_*) or another program reads it (named in doc).
    field: str = ""

    def value(self, env: Mapping[str, str], earlier: Mapping[str, Any], cpus: int) -> Any:
        raw = str(env.get(self.name, "")).strip()
        if raw:
            try:
                return self.parse(self.name, raw)
            except ConfigError as exc:
                # docker run --env-file keeps quotes that docker compose's
                # .env and a shell would remove.
                if len(raw) > 1 and raw[0] == raw[-1] and raw[0] in "\"'":
                    raise ConfigError(
                        f"{exc} (the quotes are part of the value: docker run --env-file "
                        f"keeps them; write {self.name}={raw[1:-1]})"
                    ) from None
                raise
        return self.default(earlier, cpus) if callable(self.default) else self.default

    def default_text(self) -> str:
        if self.default_doc:
            return self.default_doc
        if isinstance(self.default, bool):
            return f"``{int(self.default)}``"
        return f"``{self.default}``" if self.default != "" else "(empty)"


DIRECTORY_PATH = r"/([\w.-]+/)*"
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "APP_MODULE",
        Match(
            r"[\w.]+(:[\w.]+(\(.*\))?)?",
            "use module:attribute, e.g. myapp.main:app",
            "``module:attribute``",
            module_hint,
        ),
        "",
        "The app or its factory (see `The app: APP_MODULE`_).",
        default_doc="(required)",
        field="app_module",
    ),
    Setting(
        "DEV",
        ZeroOrOne(off="production", on="development"),
        False,
        "``1``: development, one worker that reloads on code changes and logs debug lines "
        "(see `Development`_). Set with ``--build-arg DEV``; the build and the "
        "entrypoint refuse other values too.",
        default_doc="``0`` (the build arg)",
        field="dev",
    ),
    Setting(
        "APP_START_TIMEOUT",
        Whole(1, 3600),
        APP_START_TIMEOUT_DEFAULT,
        "Seconds the app may take to import and, in each worker, to start (factory, "
        "``on_startup``); then the container stops.",
        field="start_timeout",
    ),
    Setting(
        "WEB_CONCURRENCY",
        Whole(1, 1024),
        lambda earlier, cpus: 1 if earlier["DEV"] else cpus,
        "gunicorn workers, each with its own memory (see `Per-worker state`_).",
        default_doc="CPU limit (DEV=1: 1)",
        field="workers",
    ),
    Setting(
        "PORT",
        Whole(1, 65535),
        contract.HTTP_PORT,
        "HTTP port (nginx, or gunicorn when API-only).",
        field="port",
    ),
    Setting(
        "HTTPS_PORT",
        Whole(1, 65535),
        contract.HTTPS_PORT,
        "HTTPS port when TLS is on.",
        field="https_port",
    ),
    Setting("API_ONLY", Flag(), False, "``1``: no nginx; gunicorn serves ``PORT`` itself."),
    Setting(
        "GUNICORN_ACCESS_LOG",
        Flag(),
        True,
        "API-only: gunicorn logs each request to stdout; ``0``: no access log.",
        field="gunicorn_access_log",
    ),
    Setting(
        "LOG_LEVEL",
        Choice(LOG_LEVELS),
        lambda earlier, cpus: "debug" if earlier["DEV"] else "info",
        "gunicorn log level.",
        default_doc="``info`` (DEV=1: ``debug``)",
        field="log_level",
    ),
    Setting(
        "GUNICORN_TIMEOUT",
        Whole(1, 3600),
        30,
        "Seconds a worker may block its event loop before it is killed and replaced.",
        field="timeout",
    ),
    Setting(
        "GUNICORN_GRACEFUL_TIMEOUT",
        Whole(0, 3600),
        4,
        "Drain time on stop, per stage (see `Stopping`_).",
        field="graceful_timeout",
    ),
    Setting(
        "GUNICORN_KEEPALIVE",
        Whole(0, 3600),
        75,
        "Idle keep-alive seconds (longer than nginx's 60 s upstream keep-alive, so nginx "
        "never reuses a connection gunicorn is closing).",
        field="keepalive",
    ),
    Setting(
        "GUNICORN_MAX_REQUESTS",
        Whole(0, 10**9),
        0,
        "Recycle a worker after this many requests (plus up to the jitter): a bound on "
        "slow memory leaks.",
        default_doc="``0`` (off)",
        field="max_requests",
    ),
    Setting(
        "GUNICORN_MAX_REQUESTS_JITTER",
        Whole(0, 10**9),
        0,
        "Up to this many more requests, drawn per worker, so workers do not recycle together.",
        field="max_requests_jitter",
    ),
    Setting(
        "GUNICORN_CMD_ARGS",
        CommandLine(),
        "",
        "Any other gunicorn flag; overrides the above (gunicorn reads it).",
    ),
    Setting(
        "FORWARDED_ALLOW_IPS",
        Addresses(),
        "127.0.0.1,::1",
        "Peers trusted for ``X-Forwarded-*``: a load balancer in front (see "
        "`Behind a load balancer`_); ``*`` trusts all.",
        field="forwarded_allow_ips",
    ),
    Setting(
        "NGINX_WORKER_PROCESSES",
        Whole(1, 1024),
        lambda earlier, cpus: cpus,
        "nginx workers.",
        default_doc="CPU limit",
        field="nginx_workers",
    ),
    Setting(
        "NGINX_CLIENT_MAX_BODY_SIZE",
        Match(r"\d+[kKmMgG]?", "use a size such as 512k or 10m", "a size: ``512k``, ``10m``"),
        "10m",
        "Largest request body (413 beyond).",
        field="client_max_body_size",
    ),
    Setting(
        "NGINX_CLIENT_TIMEOUT",
        Whole(1, 3600),
        15,
        "Seconds a client may take to send its headers, or between two reads of its body "
        "(408 beyond): slow clients cannot hold connections for long.",
        field="client_timeout",
    ),
    Setting(
        "NGINX_PROXY_CONNECT_TIMEOUT",
        Whole(1, 3600),
        5,
        "Seconds nginx waits to connect to the app.",
        field="proxy_connect_timeout",
    ),
    Setting(
        "NGINX_PROXY_READ_TIMEOUT",
        Whole(1, 86400),
        lambda earlier, cpus: max(60, earlier["GUNICORN_TIMEOUT"]),
        "Seconds nginx waits for the app; never shorter than ``GUNICORN_TIMEOUT`` "
        "(refused if set so).",
        default_doc="60, or GUNICORN_TIMEOUT if longer",
        field="proxy_read_timeout",
    ),
    Setting(
        "NGINX_PROXY_SEND_TIMEOUT",
        Whole(1, 86400),
        60,
        "Seconds nginx may take to send a request to the app.",
        field="proxy_send_timeout",
    ),
    Setting(
        "NGINX_PROXY_REQUEST_BUFFERING",
        Choice(("on", "off")),
        "on",
        "``on``: nginx reads each request body whole before the app sees the request; "
        "``off``: the app reads it as it arrives (see `Request bodies`_).",
        field="proxy_request_buffering",
    ),
    Setting(
        "NGINX_ACCESS_LOG_FORMAT",
        Choice(ACCESS_LOG_FORMATS),
        "combined",
        "The access log's format, or no access log.",
        field="access_log_format",
    ),
    Setting(
        "NGINX_ACCESS_LOG",
        Text("a file"),
        "/proc/1/fd/1",
        "Where nginx writes its access log.",
        default_doc="container stdout",
        field="access_log",
    ),
    Setting(
        "NGINX_STATIC_EXPIRES",
        Match(
            r"off|\d+[smhdwMy]?",
            "use off or a time such as 1h or 7d",
            "``off`` or a time: ``1h``, ``7d``",
        ),
        "1h",
        "``expires`` for static files (``off`` to disable).",
        field="static_expires",
    ),
    Setting(
        "STATIC_URL",
        Match(DIRECTORY_PATH, "use a path such as /static/", "a path, ending in ``/``"),
        "/static/",
        "Where nginx serves static files (see `Static files`_).",
        field="static_url",
    ),
    Setting(
        "STATIC_ROOT",
        Match(
            DIRECTORY_PATH,
            f"use a directory such as {contract.APP_DIR}/static/",
            "a directory, ending in ``/``",
        ),
        f"{contract.APP_DIR}/static/",
        "What it serves them from.",
        field="static_root",
    ),
    Setting(
        "TLS_CERT",
        Text("a PEM file"),
        "",
        "Certificate (chain); see `TLS`_.",
        default_doc="``tls.crt`` in the TLS directory",
    ),
    Setting(
        "TLS_KEY",
        Text("a PEM file"),
        "",
        "Its key.",
        default_doc="``tls.key`` in the TLS directory",
    ),
    Setting(
        "TLS_REDIRECT",
        Flag(),
        False,
        "``1``: HTTP answers 301 to HTTPS, and HSTS is sent.",
        field="tls_redirect",
    ),
    Setting(
        "HEALTHCHECK_PATH",
        Match(r"/[^\s]*", "use a path such as /healthz", "a path"),
        "/",
        "What the health check requests.",
        field="healthcheck_path",
    ),
    Setting(
        "AIOHTTP_PARENT_CRASH_LIMIT",
        Whole(1, 1000),
        5,
        "Unexpected exits of one program within the crash window that stop the container "
        "(``serve`` counts them; see `Faults`_).",
        field="crash_limit",
    ),
    Setting(
        "AIOHTTP_PARENT_CRASH_WINDOW",
        Whole(1, 86400),
        60,
        "The crash window, in seconds.",
        field="crash_window",
    ),
    Setting(
        "PYTHONASYNCIODEBUG",
        Text("``1`` (on), ``0`` (off)"),
        "",
        "asyncio's debug mode (see `Build arguments and environment`_).",
        default_doc="(empty: follows DEV)",
    ),
)


def procfile_app(path: Path) -> str:
    """The module:attribute a Heroku-style Procfile's web process serves
    (gunicorn's, or python -m aiohttp.web's argument), or ""."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    for line in lines:
        process, _, command = line.partition(":")
        if process.strip() == "web":
            specs = re.findall(r"(?<![\w.:/$-])([A-Za-z_][\w.]*:[A-Za-z_]\w*)(?![\w:/])", command)
            return specs[0] if specs else ""
    return ""


def trusted_networks(addresses: str) -> list[str]:
    """FORWARDED_ALLOW_IPS as networks nginx reads ("*": every address)."""
    listed = [a.strip() for a in addresses.split(",") if a.strip()]
    if "*" in listed:
        return ["0.0.0.0/0", "::/0"]
    return [str(ipaddress.ip_network(a, strict=False)) for a in listed]


def parse_settings(env: Mapping[str, str], cpus: int) -> dict[str, Any]:
    """Every declared setting, by name: its value in env, checked, or its default."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.name] = setting.value(env, values, cpus)
    return values


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


def _child_program_sections(
    conf_d: Path = SUPERVISOR_CONF_D,
) -> Iterator[tuple[Path, str, configparser.SectionProxy]]:
    """(file, section, its settings) of every supervisord program a child
    image added in conf.d."""
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
                yield path, section, parser[section]


def child_programs(conf_d: Path = SUPERVISOR_CONF_D) -> dict[str, str]:
    """supervisord programs a child image added in conf.d: name -> command."""
    return {
        section.removeprefix("program:"): settings.get("command", fallback="")
        for _, section, settings in _child_program_sections(conf_d)
    }


def foreign_program_users(conf_d: Path = SUPERVISOR_CONF_D, uid: int | None = None) -> list[str]:
    """Warnings for a child's supervisord programs with user=SOMEONE ELSE, which
    supervisord cannot switch to unless it runs as root (the image's default
    user is the app's). A seed habit (user=www-data): `serve` runs them as
    this user instead, rather than leave them FATAL with exit 127."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return []
    found = []
    for path, section, settings in _child_program_sections(conf_d):
        user = settings.get("user", fallback="").strip()
        if not user or "%(" in user:
            continue
        try:
            wanted = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            continue  # supervisord names an unknown user itself
        if wanted != uid:
            found.append(
                f"supervisord [{section}] in {path} has user={user}, but the container runs"
                f" as uid {uid}, not root, and supervisord cannot switch users: it runs as"
                f" uid {uid} (remove user= to say so, or run the container as root, --user 0)"
            )
    return found


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
    gunicorn_access_log: bool
    access_log: str
    access_log_format: str
    client_max_body_size: str
    client_timeout: int
    proxy_connect_timeout: int
    proxy_read_timeout: int
    proxy_send_timeout: int
    proxy_request_buffering: str
    static_url: str
    static_root: str
    static_expires: str
    tls_cert: str
    tls_key: str
    tls_redirect: bool
    healthcheck_path: str
    forwarded_allow_ips: str
    crash_limit: int
    crash_window: int

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
        # Before the other settings: without an app, nothing else matters.
        app_module = str(env.get("APP_MODULE", "")).strip()
        programs = child_programs() if require_app else {}
        own = tuple(own_app_programs(app_module, programs, seed_entrypoint))
        if require_app and not app_module and not own:
            # The uvicorn-gunicorn images name the app in two variables.
            module, variable = env.get("MODULE_NAME", ""), env.get("VARIABLE_NAME", "")
            procfile = Path(contract.APP_DIR) / "Procfile"
            if module or variable:
                other = (
                    f" (MODULE_NAME and VARIABLE_NAME are other images' settings: here, "
                    f"APP_MODULE={module or 'main'}:{variable or 'app'})"
                )
            elif spec := procfile_app(procfile):  # Heroku's habit
                other = f" ({procfile}'s web process serves {spec}: here, APP_MODULE={spec})"
            else:
                other = ""
            raise ConfigError(
                "APP_MODULE is not set: name your aiohttp application as module:attribute, "
                "e.g. ENV APP_MODULE=myapp.main:app (an Application) or "
                f"myapp.main:create_app (an async factory returning one){other}"
            )
        values = parse_settings(env, cpus)
        timeout, read_timeout = values["GUNICORN_TIMEOUT"], values["NGINX_PROXY_READ_TIMEOUT"]
        if read_timeout < timeout:
            raise ConfigError(
                f"NGINX_PROXY_READ_TIMEOUT={read_timeout} is shorter than GUNICORN_TIMEOUT={timeout}: "
                "nginx would give up on requests gunicorn still lets run"
            )
        # gunicorn (as the app user) has no business reading the TLS key.
        tls_cert, tls_key = (
            _tls_files(values["TLS_CERT"], values["TLS_KEY"]) if check_tls else ("", "")
        )
        return cls(
            **{s.field: values[s.name] for s in SETTINGS if s.field},
            gunicorn=not own,
            child_app_programs=own,
            child_app_binds=tuple(b for name in own for b in gunicorn_binds(programs[name])),
            nginx=not values["API_ONLY"] and shutil.which("nginx") is not None,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )


def _tls_files(cert_env: str, key_env: str) -> tuple[str, str]:
    """Both files, or neither. Named by TLS_CERT/TLS_KEY or mounted at TLS_DIR."""
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
    # Imported here: about 4 MB of resident memory, which serve (PID 1 for
    # the container's whole life) pays only when TLS is on.
    import ssl

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


# The text of nginx's http-level settings and of the site lives in template
# files next to this module (nginx-*.conf.tmpl); a child image replaces any of
# them with a file of the same name in CHILD_TEMPLATES. Here only the values
# are computed: each ${...} in a template is one of nginx_values(); lines that
# start with ## are the template's own comments; the rest is copied as it is.
TEMPLATES = Path(__file__).resolve().parent
CHILD_TEMPLATES = Path(contract.CONF_DIR) / "templates"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def template(name: str) -> Path:
    """The child's template of this name if it ships one, else the parent's."""
    child = CHILD_TEMPLATES / name
    return child if child.is_file() else TEMPLATES / name


def parent_templates() -> list[str]:
    return sorted(path.name for path in TEMPLATES.glob("nginx-*.conf.tmpl"))


def child_templates() -> list[Path]:
    """The child's templates. A file that replaces none of the parent's would
    be ignored without a word: it is refused, naming the names that work."""
    if not CHILD_TEMPLATES.is_dir():
        return []
    found = sorted(path for path in CHILD_TEMPLATES.iterdir() if not path.name.startswith("."))
    names = parent_templates()
    for path in found:
        if path.name not in names:
            raise ConfigError(
                f"{path} replaces none of the parent's nginx templates: "
                f"name it after one of {', '.join(names)}"
            )
    return found


def fill(name: str, values: Mapping[str, str]) -> str:
    """The template `name` with its ${...} placeholders replaced. A value of
    several lines placed alone on a line takes that line's indentation."""
    path = template(name)
    try:
        lines = path.read_text().splitlines(keepends=True)
    except OSError as exc:
        raise ConfigError(f"cannot read the nginx template {path}: {exc.strerror}") from None
    text = "".join(line for line in lines if not line.lstrip().startswith("##"))

    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise ConfigError(
                f"{path}: ${{{match[1]}}} is not a value it can use; "
                f"these are: {', '.join(sorted(values))}"
            )
        indent = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
        if indent.strip():  # not alone on its line
            return values[match[1]]
        return re.sub(r"\n(?=.)", "\n" + indent, values[match[1]])

    return PLACEHOLDER.sub(value, text)


def nginx_values(s: Settings) -> dict[str, str]:
    """What templates may use: every setting that reaches Settings, by its
    variable's name, and values computed from them."""
    values = {
        setting.name: str(int(v) if isinstance(v := getattr(s, setting.field), bool) else v)
        for setting in SETTINGS
        if setting.field
    }
    peers = trusted_networks(s.forwarded_allow_ips)
    return values | {
        "TLS_CERT": s.tls_cert,
        "TLS_KEY": s.tls_key,
        "TLS_CIPHERS": TLS_CIPHERS,
        "ACCESS_LOG_DIRECTIVE": "access_log off;"
        if s.access_log_format == "off"
        else f"access_log {s.access_log} {s.access_log_format} buffer=4k flush=1s;",
        "UPSTREAM_SERVER": s.gunicorn_bind.replace("0.0.0.0", "127.0.0.1"),
        "UPSTREAM_KEEPALIVE_TIMEOUT": str(max(1, min(60, s.keepalive - 5))),
        "REAL_IP": "\n".join(
            [
                *(f"set_real_ip_from {peer};" for peer in peers),
                "real_ip_header X-Forwarded-For;",
                "real_ip_recursive on;",
            ]
        ),
        "TRUSTED_PEERS": "\n".join(f"{peer} 1;" for peer in peers),
        "HSTS_HEADER": 'add_header Strict-Transport-Security "max-age=31536000" always;'
        if s.tls_redirect
        else "",
    }


def render_http(s: Settings) -> str:
    return fill("nginx-http.conf.tmpl", nginx_values(s))


def _listen(port: int, flags: str) -> str:
    lines = f"listen {port}{flags} default_server;"
    if Path("/proc/net/if_inet6").exists():  # IPv6 may be disabled in the container
        lines += f"\nlisten [::]:{port}{flags} default_server;"
    return lines


def render_site(s: Settings, http2_directive: bool) -> str:
    values = nginx_values(s)
    values["LISTEN_HTTP"] = _listen(s.port, "")
    values["LISTEN_HTTPS"] = (
        # nginx >= 1.25.1 deprecates "listen ... http2"
        _listen(s.https_port, " ssl") + "\nhttp2 on;"
        if http2_directive
        else _listen(s.https_port, " ssl http2")
    )
    values["PROXY"] = fill("nginx-proxy.conf.tmpl", values).removesuffix("\n")
    values["LOCATIONS"] = fill("nginx-locations.conf.tmpl", values).removesuffix("\n")
    redirect = s.tls and s.tls_redirect
    site = fill("nginx-server-redirect.conf.tmpl" if redirect else "nginx-server.conf.tmpl", values)
    return (site + "\n" + fill("nginx-server-tls.conf.tmpl", values)) if s.tls else site


def check_tls_templates(s: Settings) -> None:
    """Fill the TLS templates too, which default settings leave unused: a wrong
    placeholder in a child's would otherwise stop its first TLS start."""
    for redirect in (False, True):
        tls = replace(s, tls_cert="tls.crt", tls_key="tls.key", tls_redirect=redirect)
        render_site(tls, http2_directive=True)


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
    notes = [f"nginx: using the child's template {t}" for t in child_templates()]
    if sites := child_sites():
        notes.append(f"nginx: using the child's site(s) {', '.join(map(str, sites))}")
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
        tmp = RUN_DIR.parent
        hint = (
            f": with --read-only, give the container a writable {tmp} "
            f"(docker run --tmpfs {tmp}; Kubernetes: an emptyDir volume at {tmp})"
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
        check_tls_templates(settings)
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


def trim_heap() -> None:
    """Give the free pages of the C heap back to the kernel (glibc's
    malloc_trim). gunicorn's master calls it after preloading the app, before
    it forks: the heap room the import left free would otherwise stay
    resident in the master and in every worker for the container's life."""
    import ctypes  # here: only gunicorn's master pays for it

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
        # PORT for the app when nobody set it (run-gunicorn), not for every program.
        "AIOHTTP_PARENT_PORT": str(s.port),
        # The checked values (an empty one is the default), for a seed-style
        # child's own tooling; serve's give-up watch reads Settings itself.
        "AIOHTTP_PARENT_CRASH_LIMIT": str(s.crash_limit),
        "AIOHTTP_PARENT_CRASH_WINDOW": str(s.crash_window),
    }


# The names the VM's settings file sets, set by it too: what a reload replaces.
ENV_FILE_KEYS = "AIOHTTP_PARENT_ENV_KEYS"
_ENV_FILE_LINE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def reloaded_environ(env: Mapping[str, str], path: str) -> dict[str, str]:
    """env with the settings file's variables as the file has them now: those
    it set before (ENV_FILE_KEYS) go, its current ones come in. The file is
    the role's (KEY="value", with \\ and \" escaped, as systemd reads it)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        print(
            f"aiohttp-parent: warning: {path}: {exc.strerror}; keeping the settings",
            file=sys.stderr,
        )
        return dict(env)
    current = {
        m[1]: re.sub(r"\\(.)", r"\1", m[2])
        for line in lines
        if (m := _ENV_FILE_LINE.fullmatch(line.strip()))
    }
    kept = {k: v for k, v in env.items() if k not in env.get(ENV_FILE_KEYS, "").split()}
    return kept | current


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
            path = RUN_DIR / "supervisor.env"
            before = path.read_text() if path.exists() else None
            path.write_text(env)
            # The role restarts supervisord only when these change.
            print("changed" if env != before else "unchanged")
    except ConfigError as exc:
        print(f"aiohttp-parent: error: {exc}", file=sys.stderr)
        return 78
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
