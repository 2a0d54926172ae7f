"""Load APP_MODULE in the forms aiohttp apps are written in, or say clearly why not.

gunicorn's wsgi_app is `aiohttp_parent_app:application`, an async factory.
The master imports APP_MODULE once (`preload`, in gunicorn.conf.py); each
worker then builds the app inside its own event loop (`application`), so a
factory's sessions and pools belong to the loop that serves them. Accepted:

  module:app                 an aiohttp.web.Application
  module:create_app          a function, async or not, returning one; with one
                             required argument it gets argv, like the
                             init_func of `python -m aiohttp.web`
  module:create_app(1, x=2)  the same, called with these literal arguments
  module                     module:app, or the app the module hands to a
                             web.run_app() call at import (a warning says so)

A load that fails (or a worker that fails to boot: aiohttp_parent_worker)
writes RUN_DIR/gunicorn/fatal: the first writer prints the error, so it
appears once however many workers fail, and the container's `serve` stops
the container instead of retrying.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import inspect
import json
import linecache
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import runtime
from aiohttp import web

FORMS = (
    "module:app (an aiohttp.web.Application), module:create_app (a function, async or not, "
    "returning one; it may take argv), or module:create_app(...) with literal arguments"
)
APP_LOAD_ERROR = 4  # gunicorn's exit status for an app that does not load
HERE = str(Path(__file__).resolve().parent)
# Standard library modules that Python 3.12 and 3.13 removed (PEP 594, 632):
# the release that removed each, and what replaces it (its own name is no
# package on PyPI).
_DEAD = "the app's code must change"
REMOVED_MODULES: dict[str, tuple[tuple[int, int], str]] = {
    "distutils": ((3, 12), "setuptools (it provides distutils again) in requirements.txt"),
    "imp": ((3, 12), f"importlib ({_DEAD})"),
    "asynchat": ((3, 12), "pyasynchat in requirements.txt"),
    "asyncore": ((3, 12), "pyasyncore in requirements.txt"),
    "smtpd": ((3, 12), f"aiosmtpd ({_DEAD})"),
    "cgi": ((3, 13), "legacy-cgi in requirements.txt"),
    "cgitb": ((3, 13), "legacy-cgi in requirements.txt"),
    "audioop": ((3, 13), "audioop-lts in requirements.txt"),
    **{
        name: ((3, 13), f"nothing ({_DEAD})")
        for name in ["lib2to3", "msilib", "nis", "ossaudiodev", "spwd"]
    },
    **{
        name: ((3, 13), f"standard-{name} (a copy of the old module) in requirements.txt")
        for name in [
            "aifc",
            "chunk",
            "crypt",
            "imghdr",
            "mailcap",
            "nntplib",
            "pipes",
            "sndhdr",
            "sunau",
            "telnetlib",
            "uu",
            "xdrlib",
        ]
    },
}


def start_hint(exc: BaseException) -> str:
    """What the usual causes of a failing start need said: the app writes next
    to its code (it runs as an unprivileged user, and the app dir and the
    venv are root's; sqlite writes the database's directory too), or reads
    a setting from an environment variable that is not set (os.environ[name]
    raises a KeyError naming it)."""
    denied = isinstance(exc, PermissionError) or any(
        text in str(exc) for text in ("unable to open database file", "readonly database")
    )
    if denied and os.geteuid() != 0:
        return (
            f" (the app runs as uid {os.geteuid()}, which may write only in /tmp and in volumes"
            ' it owns; the app dir and the venv are read-only to it: README.rst, "Non-root and'
            ' locked down")'
        )
    if "initialized with different loop" in str(exc):  # web.Application(loop=...)
        return (
            " (an Application made with loop=, or at import with asyncio.get_event_loop():"
            " make it without loop=, in a factory; the worker runs it on its own loop)"
        )
    if isinstance(exc, KeyError) and _raised_by(exc, os.environ):  # os.environ[name]
        name = exc.args[0]
        return f" (the environment variable {name} is not set: docker run -e {name}=..., or ENV)"
    return ""


def _raised_by(exc: BaseException, obj: object) -> bool:
    """Whether a method of obj raised exc (os is frozen: no file to compare)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_locals.get("self") is obj


class AppError(Exception):
    """APP_MODULE cannot be served; the text says why and what to change."""


class _OwnServer(Exception):
    """APP_MODULE's code started a site of its own (its address)."""


def _own_server(spec: str, exc: _OwnServer, when: str) -> AppError:
    fix = (
        'guard that with `if __name__ == "__main__":`, and name the app or the function '
        "that returns it"
        if when == "import"
        else "name the function that builds and returns the Application instead (or its "
        "AppRunner, not yet set up)"
    )
    return AppError(
        f"APP_MODULE={spec!r} starts a server of its own ({exc}) "
        f"{'when it is imported' if when == 'import' else 'when it is called'}: the image "
        f"runs the server, on PORT, in each gunicorn worker; {fix}"
    )


@dataclass
class Target:
    spec: str
    app: web.Application | None = None
    factory: Callable[..., Any] | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


# Set when the master imported an app that made an event loop at import:
# gunicorn.conf.py then leaves the import to each worker.
NO_PRELOAD = "AIOHTTP_PARENT_NO_PRELOAD"

# What APP_MODULE resolved to in this process: by the master (preload), or by
# a DEV worker before gunicorn's reloader starts (so it watches the app's
# files from the start); an error is raised when the worker builds the app.
_target: Target | AppError | None = None


def app_argv() -> list[str]:
    """What the app gets as its arguments: those given to `serve`, never gunicorn's."""
    return json.loads(os.environ.get("AIOHTTP_PARENT_APP_ARGS") or "[]")


def parse(spec: str) -> tuple[str, str, list[Any] | None, dict[str, Any]]:
    """module, attribute path, call arguments (None: not called), keyword arguments."""
    module, _, expr = spec.partition(":")
    try:
        node = ast.parse(expr or "app", mode="eval").body
        if isinstance(node, ast.Call):
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            node = node.func
        else:
            args, kwargs = None, {}
        name = ast.unparse(node)
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(name)
    except (SyntaxError, ValueError):
        raise AppError(
            f"APP_MODULE={spec!r} is not valid: use {FORMS}; call arguments must be literals"
        ) from None
    return module, name, args, kwargs


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the user's code on: without importlib's and our frames."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(("<frozen", HERE))
    ]
    lines = traceback.format_list(frames) if frames else []
    return "Traceback (most recent call last):\n" + "".join(lines) if lines else ""


def report(message: str, exc: BaseException | None = None) -> bool:
    """Print the error once per start, and leave the note that tells the
    container to stop rather than retry. False if another worker did."""
    note = runtime.APP_FATAL
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError:
        fd = None  # no run dir (a plain `python -c`): still say it
    if exc is not None and (tb := _user_traceback(exc)):
        sys.stderr.write(tb)
    print(f"aiohttp-parent: error: {message}", file=sys.stderr, flush=True)
    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(message + "\n")
    return True


def exited(exc: SystemExit) -> str:
    """SystemExit: the app exits (what it printed, argparse's usage, comes first)."""
    code = 0 if exc.code is None else exc.code
    return (
        f"it exits (SystemExit: {code!r}); an app that parses its command line gets "
        f"the arguments given after `serve`: {app_argv()}"
    )


def _describe(obj: object) -> str:
    if isinstance(obj, tuple):
        kinds = ", ".join(type(v).__name__ for v in obj)
        return f"a tuple ({kinds})"
    return "None" if obj is None else f"a {type(obj).__name__}"


def _candidates(module: object) -> str:
    """What the module offers that APP_MODULE could name."""
    found = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, web.Application):
            found.append(f"{name} (an Application)")
        elif (
            inspect.isfunction(value)
            and value.__module__ == module.__name__  # type: ignore[attr-defined]
            and "request" not in inspect.signature(value).parameters  # a handler
            and (
                inspect.iscoroutinefunction(value)
                or ("app" in name.lower() and _takes_what_a_factory_gets(value))
            )
        ):
            kind = "an async function" if inspect.iscoroutinefunction(value) else "a function"
            found.append(f"{name} ({kind})")
    return f"; it has {', '.join(found)}" if found else ""


def _takes_what_a_factory_gets(function: Callable[..., Any]) -> bool:
    try:
        _default_args(function.__name__, function)
    except AppError:  # setup_app(app), a helper
        return False
    return True


_run_app_calls: list[object] = []
# A factory that takes the old `loop` argument (aiohttp 2) gets the running loop.
_LOOP = object()
# Names of init_func(argv)'s one argument that get the app's argv.
ARGV_NAMES = ("argv", "args", "extra_argv")


def _run_app(app: object, *args: object, **kwargs: object) -> None:
    """Stands in for web.run_app while APP_MODULE is imported or its factory
    runs: the image serves the app itself (a module that bound it with
    `from aiohttp.web import run_app` keeps this one)."""
    _run_app_calls.append(app)


async def _site_start(site: web.BaseSite) -> None:
    """Stands in for BaseSite.start (which TCPSite's and the others' start
    call first) while APP_MODULE is imported or its factory runs: code that
    runs its own AppRunner and site, then waits forever, would hold a worker
    until the start deadline, and a second worker would fail on the address
    in use."""
    raise _OwnServer(site.name)


@contextlib.contextmanager
def _capturing_servers() -> Iterator[list[object]]:
    _run_app_calls.clear()
    real_run_app, web.run_app = web.run_app, _run_app
    real_start, web.BaseSite.start = web.BaseSite.start, _site_start
    try:
        yield _run_app_calls
    finally:
        web.run_app, web.BaseSite.start = real_run_app, real_start


def warn_once(key: str, message: str) -> None:
    """A warning every worker would give, given by the first."""
    try:
        os.close(os.open(runtime.APP_STATE / f"warned-{key}", os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return
    except OSError:
        pass
    print(f"aiohttp-parent: warning: {message}", file=sys.stderr, flush=True)


def _warn_run_app(where: str) -> None:
    warn_once(
        "run-app",
        f"{where} calls web.run_app(); the image serves the app it passes itself "
        "(run_app's host and port are ignored: it binds PORT). "
        'Guard that call with `if __name__ == "__main__":` and name the app or the '
        "function that returns it",
    )


def _from_run_app(spec: str, module_name: str, value: object) -> Target:
    """A module that calls web.run_app(X) at import and names nothing else: serve X."""
    if isinstance(value, web.Application):
        return Target(spec, app=value)
    if inspect.iscoroutine(value):
        # web.run_app(init()): call init again in each worker, with the same arguments.
        for candidate in value.cr_frame.f_globals.values():
            if getattr(candidate, "__code__", None) is value.cr_code:
                kwargs = dict(value.cr_frame.f_locals)
                value.close()  # never started: no "was never awaited" warning
                return Target(spec, factory=candidate, kwargs=kwargs)
    raise AppError(
        f"APP_MODULE={spec!r}: {module_name} calls web.run_app() at import with {_describe(value)}, "
        f'which cannot be served; guard that call with `if __name__ == "__main__":` and name '
        f"the app or its factory in APP_MODULE ({FORMS})"
    )


def load(spec: str) -> Target:
    """Import APP_MODULE and resolve what it names, without calling any factory."""
    module_name, name, args, kwargs = parse(spec)
    sys.argv = [module_name, *app_argv()]  # not gunicorn's --config ...
    try:
        with _capturing_servers() as calls:
            module = importlib.import_module(module_name)
            captured = list(calls)
    except _OwnServer as exc:
        raise _own_server(spec, exc, "import") from None
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise AppError(
                f"APP_MODULE={spec!r} cannot be loaded: "
                f"ModuleNotFoundError: No module named {exc.name!r}" + runtime.module_hint(spec)
            ) from None
        top = (exc.name or "").split(".")[0]
        removed, instead = REMOVED_MODULES.get(top, ((99, 0), ""))
        hint = (
            f"(Python {removed[0]}.{removed[1]} removed the {top} module: use {instead})"
            if sys.version_info >= removed
            else "(is the package that provides it in requirements.txt?)"
        )
        raise AppError(
            f"APP_MODULE={spec!r} cannot be loaded: {type(exc).__name__}: {exc} {hint}"
        ) from exc
    except SystemExit as exc:  # sys.exit(), argparse's parse_args() at import
        raise AppError(f"APP_MODULE={spec!r} cannot be loaded: {exited(exc)}") from exc
    except Exception as exc:  # any error in the user's module is reported the same way
        raise AppError(
            f"APP_MODULE={spec!r} cannot be loaded: {type(exc).__name__}: {exc}{start_hint(exc)}"
        ) from exc

    obj: object = module
    try:
        for part in name.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        if captured and ":" not in spec:
            _warn_run_app(f"{module_name}, when it is imported,")
            return _from_run_app(spec, module_name, captured[0])
        raise AppError(
            f"APP_MODULE={spec!r} cannot be loaded: AttributeError: module "
            f"{module_name!r} has no attribute {name!r}{_candidates(module)}"
        ) from None
    if captured:
        _warn_run_app(f"{module_name}, when it is imported,")
    return _resolve(spec, obj, args, kwargs)


def _resolve(spec: str, obj: object, args: list[Any] | None, kwargs: dict[str, Any]) -> Target:
    if isinstance(obj, web.Application):
        if args is not None:
            raise AppError(f"APP_MODULE={spec!r} calls an Application: drop the parentheses")
        return Target(spec, app=obj)
    is_app_class = isinstance(obj, type) and issubclass(obj, web.Application)
    if not callable(obj) or (isinstance(obj, type) and not is_app_class):
        raise AppError(f"APP_MODULE={spec!r} is {_describe(obj)}, not one of: {FORMS}")
    if args is None:
        args = _default_args(spec, obj)
    return Target(spec, factory=obj, args=args, kwargs=kwargs)


def _default_args(spec: str, factory: Callable[..., Any]) -> list[Any]:
    """No arguments, or argv for a function that requires exactly one."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) == 0:
        return []
    if len(required) == 1 and required[0].name == "loop":
        return [_LOOP]
    if len(required) == 1 and required[0].name in ARGV_NAMES:
        return [app_argv()]  # python -m aiohttp.web's init_func(argv)
    names = ", ".join(p.name for p in required)
    raise AppError(
        f"APP_MODULE={spec!r} requires {len(required)} argument(s) ({names}): a factory "
        f"takes none, argv ({' or '.join(ARGV_NAMES)}), or the old loop; pass other "
        f"values as literals: {spec.split('(')[0]}(...)"
    )


async def build(target: Target) -> web.Application | web.AppRunner:
    """The Application to serve, made in this worker's loop."""
    if target.app is not None:
        return target.app
    assert target.factory is not None
    loop = asyncio.get_running_loop()
    args = [loop if a is _LOOP else a for a in target.args]
    try:
        with _capturing_servers() as calls:
            result = target.factory(*args, **target.kwargs)
            if inspect.isawaitable(result):
                result = await result
            handed = list(calls)
        if result is None and handed:  # a main() that ends in web.run_app(app)
            _warn_run_app(target.spec)
            result = handed[0]
            if inspect.isawaitable(result):
                result = await result
    except _OwnServer as exc:
        raise _own_server(target.spec, exc, "call") from None
    except SystemExit as exc:
        raise AppError(f"APP_MODULE={target.spec!r} failed to start: {exited(exc)}") from exc
    except Exception as exc:
        raise AppError(
            f"APP_MODULE={target.spec!r} failed to start: {type(exc).__name__}: {exc}"
            + start_hint(exc)
        ) from exc
    if isinstance(result, (web.Application, web.AppRunner)):
        return result
    hint = (
        ": return the Application alone; the image chooses host and port (PORT)"
        if isinstance(result, tuple)
        else ": did the factory forget to return the app?"
        if result is None
        else ""
    )
    raise AppError(
        f"APP_MODULE={target.spec!r} returned {_describe(result)}, "
        f"not an aiohttp.web.Application{hint}"
    )


def _current_loop() -> asyncio.AbstractEventLoop | None:
    """The loop asyncio.get_event_loop() hands out here, without making one
    (the policy's, a private attribute: None where it is not there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the policy API, from 3.14
        policy = getattr(asyncio, "get_event_loop_policy", lambda: None)()
    return getattr(getattr(policy, "_local", None), "_loop", None)


def _is_app_file(path: str) -> bool:
    return path.startswith(runtime.contract.APP_DIR.rstrip("/") + "/")


def _awaited_frames(coro: object) -> Iterator[Any]:
    """The frames of a suspended coroutine and of what it awaits, outermost
    first; through async generators too (cleanup_ctx's, which aiohttp wraps
    in an asynccontextmanager)."""
    seen: set[int] = set()
    while coro is not None and id(coro) not in seen:
        seen.add(id(coro))
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        frame = frame or getattr(coro, "gi_frame", None)
        if not inspect.isframe(frame):
            return
        yield frame
        awaited = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        awaited = awaited or getattr(coro, "gi_yieldfrom", None)
        if awaited is not None and not hasattr(awaited, "cr_frame"):
            # anext(gen) hides its generator: the running one this frame holds.
            held = [*frame.f_locals.values()]
            held += [getattr(v, "gen", None) for v in held]
            generators = [g for g in held if inspect.isasyncgen(g) and g.ag_running]
            awaited = generators[0] if generators else awaited
        coro = awaited


def waiting_at(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits: the innermost frame of the app's own code
    (else the innermost), as `file:line in function: source`; empty if it
    cannot tell."""
    try:
        frames = list(_awaited_frames(task.get_coro()))
    except Exception:  # a best effort for a message: never the reason it fails
        return ""
    mine = [f for f in frames if _is_app_file(f.f_code.co_filename)]
    if not (frames := mine or frames):
        return ""
    frame = frames[-1]
    where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    source = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{where}: {source}" if source else where


def preload(spec: str) -> None:
    """In gunicorn's master: import once before forking; exit with one clear
    message if that fails, so that no worker starts."""
    global _target
    argv, loop_before = list(sys.argv), _current_loop()  # load() sets the app's argv
    threads_before = set(threading.enumerate())
    try:
        _target = load(spec)
    except AppError as exc:
        report(str(exc), exc.__cause__)
        sys.exit(APP_LOAD_ERROR)
    # What the import made that a fork leaves behind: gunicorn starts again
    # without preloading, as plain gunicorn does, and each worker imports
    # the app itself.
    if loop_before is None and _current_loop() is not None:
        # aiohttp 2's habit, asyncio.get_event_loop() at import: what the import
        # bound to that loop (a ClientSession, a pool) would fail in every
        # worker, which runs its own ("Timeout context manager should be used
        # inside a task").
        warn_once(
            "import-loop",
            f"importing APP_MODULE={spec!r} made an asyncio event loop "
            "(asyncio.get_event_loop() at import), which no worker would run: gunicorn "
            "starts again without importing the app first, and each worker imports it "
            "under its own loop. Create sessions and pools in on_startup or cleanup_ctx, "
            "or in a factory, to have it imported once",
        )
    elif started := sorted(
        t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()
    ):
        # A poller, a scheduler (APScheduler), a metrics server: threads do not
        # survive fork(), so they would run in the master alone, and no worker
        # would see what they do.
        warn_once(
            "import-threads",
            f"importing APP_MODULE={spec!r} started thread(s) {', '.join(started)}, which "
            "would run in gunicorn's master alone (threads do not survive its fork): gunicorn "
            "starts again without importing the app first, and each worker imports it and "
            "starts its own. Start them in on_startup or cleanup_ctx, or in a factory, to "
            "have the app imported once",
        )
    else:
        return
    os.environ[NO_PRELOAD] = "1"
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv])


def prepare(spec: str) -> None:
    """In a worker, unless the master preloaded: import APP_MODULE now."""
    global _target
    if _target is None:
        try:
            _target = load(spec)
        except AppError as exc:
            _target = exc


async def application() -> web.Application | web.AppRunner:
    """gunicorn's wsgi_app: the aiohttp worker awaits it in each worker."""
    prepare(os.environ["APP_MODULE"].strip())
    if isinstance(_target, AppError):
        raise _target
    assert _target is not None
    return await build(_target)
