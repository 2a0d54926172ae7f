"""Deployment examples and the path off ONBUILD, checked for real."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import docker, http
from tests.service import served

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "examples/kubernetes"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def deployment() -> dict:
    return yaml.safe_load((K8S / "deployment.yaml").read_text())


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_manifest_is_valid_against_kubernetes_schemas(manifest: Path) -> None:
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "--kubernetes-version", "1.33.0", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/run", "/tmp"}


def test_grace_period_covers_the_drain() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    graceful = int(env["GUNICORN_GRACEFUL_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= 2 * (graceful + 1)


def test_image_runs_under_the_pods_restrictions(example_image: str) -> None:
    pod = deployment()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ctx = pod["securityContext"]
    opts = [
        f"--user={ctx['runAsUser']}:{ctx['runAsGroup']}",
        "--read-only",
        "--tmpfs=/run",
        "--tmpfs=/tmp",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--cpus={container['resources']['limits']['cpu']}",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    with served(example_image, env=env, opts=opts, ready="/healthz", ports=(8080, 8443)) as svc:
        health = http.request(svc.http, "/healthz")
        assert health.status == 200
        assert json.loads(health.body) == {"status": "ok"}
        assert svc.runtime()["workers"] == 1  # follows limits.cpu
        assert docker.wait_for(
            lambda: docker.state(svc.name)["Health"]["Status"] != "starting", timeout=30
        )
        assert docker.state(svc.name)["Health"]["Status"] == "healthy"


def test_compose_file_is_valid(tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is installed by make (scripts/host-setup.sh)"
    result = subprocess.run(
        [compose, "-f", str(ROOT / "examples/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["hello"]
    assert service["read_only"] is True
    assert service["healthcheck"]["test"][-1] == "/usr/local/lib/aiohttp-parent/healthcheck"


# --- without ONBUILD -----------------------------------------------------------


@pytest.fixture(scope="module")
def base_variant(parent_image: str) -> str:
    tag = f"{parent_image}-base"
    assert docker.image_exists(tag), f"make image builds {tag} next to {parent_image}"
    return tag


def test_base_variant_has_no_triggers_and_the_same_stack(
    base_variant: str, parent_image: str
) -> None:
    base, parent = docker.inspect(base_variant)["Config"], docker.inspect(parent_image)["Config"]
    assert not base["OnBuild"]
    assert parent["OnBuild"]
    assert base["Labels"]["aiohttp-parent.variant"] == "base"
    for key in ("aiohttp", "gunicorn", "uvloop", "python"):
        label = f"aiohttp-parent.{key}.version"
        assert base["Labels"][label] == parent["Labels"][label]
    assert base["Entrypoint"] == parent["Entrypoint"]


def test_each_variant_tells_serve_which_it_is(base_variant: str, parent_image: str) -> None:
    # `serve` stops a child of the ONBUILD tag whose triggers never ran, not one of -base.
    def env(image: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in docker.inspect(image)["Config"]["Env"])

    assert env(parent_image)["AIOHTTP_PARENT_VARIANT"] == "onbuild"
    assert env(base_variant)["AIOHTTP_PARENT_VARIANT"] == "base"


def test_child_without_onbuild_builds_and_serves(base_variant: str) -> None:
    tag = f"{docker.unique('aiohttp-parent-test/hello-base')}:latest"
    docker.build(
        ROOT / "examples/hello",
        tag,
        {"PARENT_IMAGE": base_variant},
        dockerfile=ROOT / "examples/hello-base/Dockerfile",
    )
    try:
        with served(tag) as svc:
            assert http.request(svc.http, "/").text == "Hello from aiohttp-parent\n"
    finally:
        docker.docker("rmi", "-f", tag, check=False)
