"""Deployment examples and the path off ONBUILD, checked for real."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import docker, http
from tests.service import served

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "examples/kubernetes"
MANIFESTS = sorted(K8S.glob("*.yaml"))
SWARM_STACK = ROOT / "examples/swarm/stack.yaml"
CHECKOV_LOCK = ROOT / "tests/requirements-checkov.lock"
CHECKOV_VENV = ROOT / ".cache/checkov"

_spec = importlib.util.spec_from_file_location("role_docs", ROOT / "scripts/role_docs.py")
role_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_docs)
GRACEFUL_DEFAULT = next(
    s.default for s in role_docs.load_runtime().SETTINGS if s.name == "GUNICORN_GRACEFUL_TIMEOUT"
)


def manifest(name: str) -> dict:
    return yaml.safe_load((K8S / f"{name}.yaml").read_text())


def manifests() -> list[dict]:
    return [yaml.safe_load(m.read_text()) for m in MANIFESTS]


def deployment() -> dict:
    return manifest("deployment")


def hello_container() -> dict:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    return container


def drain_budget(env: dict[str, str]) -> int:
    """README, "Stopping": nginx, then gunicorn, each GUNICORN_GRACEFUL_TIMEOUT + 1 s."""
    return 2 * (int(env.get("GUNICORN_GRACEFUL_TIMEOUT", GRACEFUL_DEFAULT)) + 1)


def image_healthcheck() -> dict[str, int]:
    """The HEALTHCHECK Packer writes into the image: seconds of each option, and retries."""
    line = re.search(r"HEALTHCHECK (--[^\"]*?) CMD", (ROOT / "packer.pkr.hcl").read_text())
    assert line, "packer.pkr.hcl writes the image's HEALTHCHECK"
    options = dict(re.findall(r"--([a-z-]+)=(\d+)s?", line.group(1)))
    return {key: int(value) for key, value in options.items()}


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


def test_grace_period_covers_the_pre_stop_pause_and_the_drain() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    container = hello_container()
    env = {e["name"]: e["value"] for e in container["env"]}
    # The pause lets kube-proxy and ingresses drop the pod before it drains.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert pause >= 5
    # Kubernetes counts the grace period from the start of preStop.
    assert pod["terminationGracePeriodSeconds"] >= pause + drain_budget(env)


def test_rolling_update_never_goes_below_the_replica_count() -> None:
    strategy = deployment()["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    # With nothing unavailable, only a surge lets the rollout progress.
    assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")


def test_service_and_disruption_budget_select_the_deployments_pods() -> None:
    dep = deployment()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert manifest("service")["spec"]["selector"] == selector
    pdb = manifest("pdb")
    assert pdb["spec"]["selector"] == {"matchLabels": selector}
    # At the fewest replicas the autoscaler keeps, an eviction leaves one serving.
    assert manifest("hpa")["spec"]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 1


def test_autoscaler_scales_the_deployment_on_what_its_pods_request() -> None:
    dep, hpa = deployment(), manifest("hpa")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        dep["apiVersion"],
        dep["kind"],
        dep["metadata"]["name"],
    )
    # The autoscaler owns the count: a replicas field would reset it on apply.
    assert "replicas" not in dep["spec"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    requests = hello_container()["resources"]["requests"]
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Resource" and metric["resource"]["target"]["type"] == "Utilization":
            # Utilization is a share of the request: without one there is none.
            assert metric["resource"]["name"] in requests


def test_pods_request_what_they_need_within_their_limits() -> None:
    resources = hello_container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    quantity = {"m": 0.001, "Mi": 2**20, "Gi": 2**30, "": 1}

    def value(q: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(m|Mi|Gi|)", q).groups()
        return float(number) * quantity[unit]

    for name in ("cpu", "memory"):
        assert value(resources["requests"][name]) <= value(resources["limits"][name])
    # WEB_CONCURRENCY follows the CPU limit: one worker, as in compose.yaml.
    assert resources["limits"]["cpu"] == "1"


def test_probes_ask_what_the_image_healthcheck_asks_on_its_terms() -> None:
    container = hello_container()
    env = {e["name"]: e["value"] for e in container["env"]}
    check = image_healthcheck()
    probes = {kind: container[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}
    for probe in probes.values():
        assert probe["httpGet"] == {"path": env["HEALTHCHECK_PATH"], "port": "http"}
        assert probe.get("timeoutSeconds", 1) <= check["timeout"]
    live = probes["liveness"]
    assert (live["periodSeconds"], live["timeoutSeconds"], live["failureThreshold"]) == (
        check["interval"],
        check["timeout"],
        check["retries"],
    )
    startup = probes["startup"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= check["start-period"]


def test_every_manifest_lives_in_the_examples_own_namespace() -> None:
    namespace = manifest("namespace")
    assert namespace["kind"] == "Namespace"
    name = namespace["metadata"]["name"]
    assert name != "default"
    # The namespace admits only pods that meet the restricted standard.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for m in manifests():
        if m["kind"] != "Namespace":
            assert m["metadata"].get("namespace") == name, m["kind"]


def test_network_policy_admits_the_app_port_only() -> None:
    policy = manifest("networkpolicy")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (port,) = rule["ports"]
    (container_port,) = hello_container()["ports"]
    assert port == {"protocol": "TCP", "port": container_port["name"]}


def test_image_is_pinned_to_a_version() -> None:
    image = hello_container()["image"]
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name, image
    assert tag not in ("", "latest"), image


@pytest.fixture(scope="module")
def checkov() -> Path:
    """checkov from its lock (tests/requirements-checkov.txt's pins, hash-checked),
    in its own venv (created once per lock)."""
    stamp = CHECKOV_VENV / "requirements.txt"
    wanted = CHECKOV_LOCK.read_text()
    if not stamp.is_file() or stamp.read_text() != wanted:
        shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(CHECKOV_VENV)], check=True)
        subprocess.run(
            [
                CHECKOV_VENV / "bin/pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-hashes",
                "-r",
                str(CHECKOV_LOCK),
            ],
            check=True,
        )
        stamp.write_text(wanted)
    return CHECKOV_VENV / "bin/checkov"


def declared_skips() -> set[tuple[str, str]]:
    """(check, file) for every skip in examples/, each of which must give a reason."""
    skips = set()
    for path in sorted((ROOT / "examples").rglob("*")):
        if not path.is_file() or path.suffix not in ("", ".yaml"):
            continue
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        for check, reason in re.findall(r"checkov:skip=(\w+):?(.*)", text):
            assert reason.strip(), f"{rel}: {check} is skipped without a reason"
            skips.add((check, rel))
        if path.suffix == ".yaml":
            for doc in yaml.safe_load_all(text):
                notes = ((doc or {}).get("metadata") or {}).get("annotations") or {}
                for key, value in notes.items():
                    if key.startswith("checkov.io/skip"):
                        check, _, reason = value.partition("=")
                        assert reason.strip(), f"{rel}: {check} is skipped without a reason"
                        skips.add((check.strip(), rel))
    return skips


def test_checkov_passes_on_the_examples(checkov: Path) -> None:
    result = subprocess.run(
        [checkov, "--directory", "examples", "--skip-download", "--output", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    frameworks = {r["check_type"] for r in reports}
    assert {"kubernetes", "dockerfile"} <= frameworks, result.stdout[-2000:] + result.stderr
    failed = [
        f"{c['check_id']} {c['file_path']} {c['resource']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert result.returncode == 0, result.stderr
    for r in reports:
        assert r["summary"]["parsing_errors"] == 0, r["check_type"]

    # Every check skipped is one a file skips, with its reason, and vice versa.
    # checkov names Dockerfiles from the scanned directory (/hello/Dockerfile),
    # manifests from the working directory (/examples/kubernetes/...).
    def rel(path: str) -> str:
        path = path.lstrip("/")
        return path if path.startswith("examples/") else f"examples/{path}"

    skipped = {
        (c["check_id"], rel(c["file_path"]))
        for r in reports
        for c in r["results"]["skipped_checks"]
    }
    assert skipped == declared_skips()


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
        # The preStop hook's command is in the image and runs as the pod's user.
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert docker.docker("exec", svc.name, *pre_stop, check=False).returncode == 0


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
    # docker-bench-security's "privileges not restricted": a run-time flag only.
    assert "no-new-privileges:true" in service["security_opt"]


def seconds(duration: str) -> int:
    return int(duration.removesuffix("s"))


def test_swarm_stack_file_is_valid_and_fits_the_image() -> None:
    # `docker stack config` reads the file as `docker stack deploy` does,
    # without a swarm. tests/test_swarm.py deploys it.
    result = docker.docker("stack", "config", "-c", str(SWARM_STACK))
    stack = yaml.safe_load(result.stdout)
    hello = stack["services"]["hello"]
    check = image_healthcheck()
    assert hello["healthcheck"]["test"] == ["CMD", "/usr/local/lib/aiohttp-parent/healthcheck"]
    assert {
        "interval": seconds(hello["healthcheck"]["interval"]),
        "timeout": seconds(hello["healthcheck"]["timeout"]),
        "start-period": seconds(hello["healthcheck"]["start_period"]),
        "retries": hello["healthcheck"]["retries"],
    } == check
    assert seconds(hello["stop_grace_period"]) >= drain_budget(hello["environment"])
    update = hello["deploy"]["update_config"]
    assert (update["order"], update["failure_action"]) == ("start-first", "rollback")
    assert hello["deploy"]["rollback_config"]["order"] == "start-first"
    assert hello["deploy"]["endpoint_mode"] == "dnsrr"
    for name, service in stack["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["user"] == "10001:0", name
        # `docker stack deploy` drops the short tmpfs form without a word.
        assert "tmpfs" not in service, name
        tmpfs = {v["target"] for v in service["volumes"] if v["type"] == "tmpfs"}
        assert "/tmp" in tmpfs, name


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
