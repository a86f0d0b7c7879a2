"""The deployment files parse and agree with the code: settings, ports, probes, secrets.

``docker compose config`` validates the compose file where Docker's compose plugin exists;
everywhere else these tests parse the files and check what a deployment relies on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import LLMProvider, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = DEPLOY / "kubernetes"

SETTING_NAMES = {name.upper() for name in Settings.model_fields}
METRICS_PORT: int = Settings.model_fields["metrics_port"].default
SHUTDOWN_TIMEOUT: float = Settings.model_fields["shutdown_timeout_seconds"].default
JOB = "acp-groq-worker"  # the scrape job the alert rules select on


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def env_example_lines() -> dict[str, tuple[bool, str]]:
    """Each NAME of .env.example: (set, i.e. not commented out; its value).

    A commented-out setting is a line ``# NAME=`` or ``# NAME=value`` (no spaces after it).
    """
    found: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(# ?)?([A-Z][A-Z0-9_]*)=(\S*)", line.strip())
        if match:
            found[match.group(2)] = (match.group(1) is None, match.group(3))
    return found


@pytest.fixture
def no_settings_env(monkeypatch):
    """No setting of this process's environment leaks into the settings under test."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


# -- .env.example -------------------------------------------------------------------------------


def test_env_example_lists_every_setting_by_its_env_name():
    """Every Settings field appears as NAME=..., and no name that is not a setting."""
    assert set(env_example_lines()) == SETTING_NAMES


def test_env_example_values_are_valid_and_the_defaults_but_the_offline_provider(
    no_settings_env,
):
    """Loaded as an env file, the values validate and equal the defaults (LLM_PROVIDER aside)."""
    example = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]

    assert example.llm_provider is LLMProvider.OFFLINE  # `docker compose up` needs no key
    assert example.groq_api_key is None  # no secret in the repository
    commented = {name for name, (is_set, _) in env_example_lines().items() if not is_set}
    assert commented == {"WORKER_ID"}  # its default is computed per process
    for name in Settings.model_fields:
        if name.upper() not in {"LLM_PROVIDER", "WORKER_ID"}:
            assert getattr(example, name) == getattr(defaults, name), name


# -- docker compose -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


def test_compose_has_redis_worker_producer_and_prometheus(compose):
    """The four services, Redis with AOF on a volume, the worker built from the root."""
    services = compose["services"]
    assert set(services) == {"redis", "worker", "producer", "prometheus"}

    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])

    worker = services["worker"]
    context = (DEPLOY / worker["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / worker["build"]["dockerfile"]).is_file()
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert int(worker["stop_grace_period"].rstrip("s")) > SHUTDOWN_TIMEOUT


@pytest.mark.parametrize("service", ["worker", "producer"])
def test_compose_worker_settings_come_from_env_example_and_name_real_settings(compose, service):
    """.env.example (required) then .env; REDIS_URL points at the redis service."""
    spec = compose["services"][service]
    files = [(DEPLOY / item["path"]).resolve() for item in spec["env_file"]]
    assert files == [ENV_EXAMPLE, ROOT / ".env"]
    assert [item["required"] for item in spec["env_file"]] == [True, False]
    assert set(spec["environment"]) <= SETTING_NAMES
    assert spec["environment"]["REDIS_URL"].startswith("redis://redis:6379/")


def test_compose_producer_publishes_sample_events_once_the_worker_is_ready(compose):
    """A one-shot `groq-worker demo --publish-only` after the worker's healthcheck passes."""
    producer = compose["services"]["producer"]
    assert producer["command"][:3] == ["groq-worker", "demo", "--publish-only"]
    assert producer["depends_on"]["worker"]["condition"] == "service_healthy"
    assert producer["restart"] == "no"
    assert producer["image"] == compose["services"]["worker"]["image"]


def test_compose_healthchecks_probe_each_long_running_service(compose):
    """Redis answers PING, the worker is ready (/health/ready), Prometheus is ready."""
    services = compose["services"]
    for name in ("redis", "worker", "prometheus"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert "/health/ready" in " ".join(services["worker"]["healthcheck"]["test"])
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])


def test_compose_prometheus_mounts_its_config_and_the_alert_rules(compose):
    """Both files it mounts exist next to the compose file."""
    mounts = {
        volume.split(":")[1]: (DEPLOY / volume.split(":")[0]).resolve()
        for volume in compose["services"]["prometheus"]["volumes"]
        if volume.startswith("./")
    }
    assert mounts == {
        "/etc/prometheus/prometheus.yml": PROMETHEUS,
        "/etc/prometheus/prometheus-alerts.yml": DEPLOY / "prometheus-alerts.yml",
    }
    assert all(path.is_file() for path in mounts.values())


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="no `docker compose` on this machine")
def test_compose_file_validates_with_docker_compose_config():
    """`docker compose config` accepts the file (where Docker's compose plugin exists)."""
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# -- prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_the_worker_port_and_loads_the_alert_rules():
    """Job acp-groq-worker on METRICS_PORT; the rule file exists and selects that job."""
    config = load(PROMETHEUS)
    assert config["rule_files"] == ["prometheus-alerts.yml"]
    rules_path = PROMETHEUS.parent / config["rule_files"][0]
    rules = load(rules_path)
    assert rules["groups"]
    assert all(group["rules"] for group in rules["groups"])
    assert f'job="{JOB}"' in rules_path.read_text(encoding="utf-8")

    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    ports = [sd["port"] for sd in job.get("dns_sd_configs", [])]
    ports += [
        int(target.rsplit(":", 1)[1])
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert ports == [METRICS_PORT]


# -- kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    (doc,) = load_all(K8S / "deployment.yaml")
    assert doc["kind"] == "Deployment"
    return doc


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    (doc,) = load_all(K8S / "secret.example.yaml")
    assert doc["kind"] == "Secret"
    return doc


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def test_kubernetes_probes_use_the_health_endpoints_on_the_metrics_port(deployment):
    """Liveness on /health/live, readiness on /health/ready, both on METRICS_PORT."""
    container = _container(deployment)
    env = _env(container)
    assert int(env["METRICS_PORT"]["value"]) == METRICS_PORT
    assert METRICS_PORT in [p["containerPort"] for p in container["ports"]]
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert _port_number(container, http["port"]) == METRICS_PORT


def test_kubernetes_container_has_resources_and_runs_as_the_images_non_root_user(deployment):
    """Requests and limits; runAsNonRoot with the Dockerfile's uid; no privilege escalation."""
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind

    image_user = re.search(r"^USER (\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert image_user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(image_user.group(1)) != 0
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


def test_kubernetes_env_names_settings_worker_id_from_pod_and_key_from_secret(deployment, secret):
    """Every variable is a setting; WORKER_ID is the pod's name; the key is a secretKeyRef."""
    env = _env(_container(deployment))
    assert set(env) <= SETTING_NAMES
    assert env["WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    key_ref = env["GROQ_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref["name"] == secret["metadata"]["name"]
    assert "value" not in env["GROQ_API_KEY"]
    for item in env.values():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"], ref["key"]
    assert not secret["stringData"]["GROQ_API_KEY"].startswith("gsk_")  # a placeholder


def test_kubernetes_grace_period_outlasts_the_shutdown_timeout(deployment):
    """SIGKILL comes after the worker had SHUTDOWN_TIMEOUT_SECONDS to drain."""
    env = _env(_container(deployment))
    drain = float(env.get("SHUTDOWN_TIMEOUT_SECONDS", {}).get("value", SHUTDOWN_TIMEOUT))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def test_kubernetes_selector_matches_the_pod_labels(deployment):
    """The Deployment selects the pods it creates."""
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
