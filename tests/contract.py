"""The contract (roles/aiohttp_parent/defaults/main.yml) as the tests read it,
and the roles' Jinja templates rendered with it as Ansible would."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nativetypes
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ROOT / "roles/aiohttp_parent/defaults/main.yml"


def to_bool(value: Any) -> bool:
    """Ansible's `bool` filter, for the values these roles use."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y", "t")


FILTERS = {
    "bool": to_bool,
    "comment": lambda text, decoration="# ": f"{decoration}{text}",
    "quote": lambda text: shlex.quote(str(text)),
    "to_json": json.dumps,
    "combine": lambda a, b: {**a, **b},
}


def variables(container: bool, roles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The contract's variables and the given roles' defaults and vars, every
    Jinja expression among them resolved, as a play with the switch set sees them."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULTS.read_text())
    for role in roles:
        for part in ("defaults", "vars"):
            path = ROOT / "roles" / role / part / "main.yml"
            if path.is_file():
                raw |= yaml.safe_load(path.read_text()) or {}
    raw |= {"aiohttp_parent_container": container, "ansible_managed": "Ansible managed"}
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    env.filters.update(FILTERS)

    def unresolved(value: Any) -> bool:
        if isinstance(value, str):
            return "{{" in value
        if isinstance(value, list):
            return any(map(unresolved, value))
        if isinstance(value, dict):
            return any(map(unresolved, value.values()))
        return False

    def names(value: Any) -> set[str]:
        if isinstance(value, str):
            return jinja2.meta.find_undeclared_variables(env.parse(value))
        if isinstance(value, list):
            return set().union(*map(names, value))
        if isinstance(value, dict):
            return set().union(*map(names, value.values()))
        return set()

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and "{{" in value:
            return env.from_string(value).render(raw)
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    # Lazily, as Ansible does: a value is rendered once what it names is.
    while pending := [name for name, value in raw.items() if unresolved(value)]:
        ready = [n for n in pending if not any(unresolved(raw.get(m)) for m in names(raw[n]))]
        assert ready, f"circular or undefined: {pending}"
        for name in ready:
            raw[name] = resolve(raw[name])
    return raw


def render(template: Path, container: bool, roles: tuple[str, ...] = ()) -> str:
    # As Ansible's template module renders (its trim_blocks default is true).
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True
    )
    env.filters.update(FILTERS)
    return env.from_string(template.read_text()).render(variables(container, roles))


# Where an image keeps its runtime state.
CONTAINER_RUN_DIR: str = variables(container=True)["aiohttp_parent_run_dir"]
# The image's default user (USER uid:gid) and its app user's ids.
CONTAINER_UID: int = variables(container=True)["aiohttp_parent_container_uid"]


# Where the image and the VMs keep the runtime's commands and modules.
LIB_DIR: str = variables(container=True)["aiohttp_parent_lib_dir"]
