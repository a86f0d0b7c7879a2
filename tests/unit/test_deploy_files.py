"""The deployment files parse and agree with the code: settings, ports, probes, secrets.

``docker compose config`` validates the compose file where Docker's compose plugin exists;
everywhere else these tests parse the files and check what a deployment relies on.
Every Kubernetes manifest is validated offline against Kubernetes' own JSON schemas
(``kubernetes-validate``, strict: an unknown field fails), and KEDA's custom resources,
which those schemas do not cover, against models of the fields KEDA documents.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
# What the autoscalers read: the group's lag plus the events waiting in the scheduler.
BACKLOG_METRIC = "acp_groq_backlog_events"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[dict[str, Any]]:
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
    example = Settings(_env_file=ENV_EXAMPLE)
    defaults = Settings(_env_file=None)

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
    loaded: dict[str, Any] = load(COMPOSE)
    return loaded


def test_compose_has_redis_worker_producer_and_prometheus(compose):
    """The four services, Redis with AOF on a volume, the worker built from the root."""
    services = {name: spec for name, spec in compose["services"].items() if "profiles" not in spec}
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


@pytest.mark.parametrize("service", ["worker", "producer", "worker-cluster", "producer-cluster"])
def test_compose_worker_settings_come_from_env_example_and_name_real_settings(compose, service):
    """.env.example (required) then .env; REDIS_URL points at the redis service (or, in the
    cluster profile, at the first node, with REDIS_MODE=cluster)."""
    spec = compose["services"][service]
    files = [(DEPLOY / item["path"]).resolve() for item in spec["env_file"]]
    assert files == [ENV_EXAMPLE, ROOT / ".env"]
    assert [item["required"] for item in spec["env_file"]] == [True, False]
    assert set(spec["environment"]) <= SETTING_NAMES
    if service.endswith("-cluster"):
        node = compose["services"]["redis-node-1"]["networks"]["cluster"]["ipv4_address"]
        assert spec["environment"]["REDIS_URL"] == f"redis://{node}:6379/0"
        assert spec["environment"]["REDIS_MODE"] == "cluster"
    else:
        assert spec["environment"]["REDIS_URL"].startswith("redis://redis:6379/")


def test_compose_cluster_profile_is_three_aof_primaries_joined_before_the_worker(compose):
    """The cluster profile: three cluster-enabled AOF nodes on fixed addresses, a one-shot
    create naming exactly those, and the worker waiting for it to complete."""
    services = compose["services"]
    nodes = [services[f"redis-node-{n}"] for n in (1, 2, 3)]
    addresses = [node["networks"]["cluster"]["ipv4_address"] for node in nodes]
    for node in nodes:
        command = " ".join(node["command"])
        assert "--cluster-enabled yes" in command
        assert "--appendonly yes" in command
        assert node["profiles"] == ["cluster"]
    init = " ".join(services["cluster-init"]["command"])
    assert "--cluster create " + " ".join(f"{a}:6379" for a in addresses) in init
    assert "--cluster-replicas 0" in init
    depends = services["worker-cluster"]["depends_on"]
    assert depends["cluster-init"]["condition"] == "service_completed_successfully"
    assert services["producer-cluster"]["command"][:3] == ["groq-worker", "demo", "--publish-only"]


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


def test_compose_tracing_profile_has_a_collector_exporting_to_jaeger(compose):
    """The `tracing` profile: an OpenTelemetry Collector taking OTLP/HTTP on 4318 (what the
    worker exports to) and sending traces to Jaeger, whose UI is on a local port; no
    service of the default run changes."""
    services = compose["services"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    assert collector["profiles"] == jaeger["profiles"] == ["tracing"]
    [mount] = collector["volumes"]
    source, target = mount.split(":")[:2]
    assert collector["command"] == [f"--config={target}"]
    config = load((DEPLOY / source).resolve())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    [pipeline_exporter] = config["service"]["pipelines"]["traces"]["exporters"]
    assert config["exporters"][pipeline_exporter]["endpoint"] == "jaeger:4317"
    assert "127.0.0.1:16686:16686" in jaeger["ports"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    example = env_example_lines()
    assert example["OTEL_EXPORTER_OTLP_ENDPOINT"] == (True, "")  # off unless .env turns it on


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


# -- metric names in queries ---------------------------------------------------------------------

DASHBOARD = DEPLOY / "grafana-dashboard.json"
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "topk"}
AGGREGATIONS |= {"bottomk", "quantile", "count_values"}


def exported_series() -> set[str]:
    """Every series name the worker's registry can expose: a counter's ``_total``, a
    histogram's ``_bucket``/``_count``/``_sum``, whether or not a labelled child exists."""
    from app.runtime.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for metric in Metrics().registry.collect():
        names |= {metric.name + suffix for suffix in suffixes.get(metric.type, ("",))}
        names |= {sample.name for sample in metric.samples}
    return names


def sampled_gauges() -> set[str]:
    """The gauges sampled from Redis: every process reports the same value."""
    from app.runtime.metrics import Metrics

    sampled = {
        metric.name
        for metric in Metrics().registry.collect()
        if metric.type == "gauge" and "sampled" in metric.documentation
    }
    return sampled | {"acp_groq_dlq_size"}  # LLEN of the DLQ, sampled too


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(?:acp_groq|process)_[a-z0-9_]*[a-z0-9]", text))


def enclosing_aggregation(expr: str, at: int) -> str | None:
    """The innermost aggregation (``sum``, ``max``...) whose argument holds ``expr[at]``,
    past any function (``rate``, ``label_replace``...); None if there is none."""
    depth = 0
    for i in range(at - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(" and depth:
            depth -= 1
        elif expr[i] == "(":
            # expr[i] opens a group holding `at`: the word before it names it, past a
            # `by (...)` or `without (...)` clause (`max by (job) (x)`).
            named = re.search(r"(\w+)\s*(?:(?:by|without)\s*\([^()]*\)\s*)?$", expr[:i])
            if named and named.group(1) in AGGREGATIONS:
                return named.group(1)
    return None


def sums_of_sampled_gauges(expr: str) -> list[str]:
    """The sampled gauges ``expr`` sums: each pod reports the same Redis, so the sum
    would count it once per pod (max is the rule: docs/operations.md)."""
    gauges = sampled_gauges()
    return [
        match.group(0)
        for match in re.finditer(r"\bacp_groq_\w+", expr)
        if match.group(0) in gauges and enclosing_aggregation(expr, match.start()) == "sum"
    ]


def test_enclosing_aggregation_finds_the_operator_around_a_series():
    """The helper the checks below rely on, on the shapes the files use."""
    expr = "max by (job) (acp_groq_group_lag) > 0 unless on (job) sum by (job) (rate(x[5m]))"
    assert enclosing_aggregation(expr, expr.index("acp_groq_group_lag")) == "max"
    assert enclosing_aggregation(expr, expr.index("x[5m]")) == "sum"
    assert enclosing_aggregation("acp_groq_dlq_size > 0", 0) is None
    assert sums_of_sampled_gauges("sum(acp_groq_backlog_events)") == ["acp_groq_backlog_events"]
    assert sums_of_sampled_gauges('max(acp_groq_backlog_events{job=~"a|b"})') == []


# -- grafana dashboard ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target and every templating variable."""
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append((variable["name"], variable["definition"]))
    return queries


def test_dashboard_queries_read_metrics_the_worker_exports(dashboard):
    """Every series a panel or a variable queries is one the worker's registry exposes,
    and no sampled gauge is summed over the processes."""
    exported = exported_series()
    for title, expr in _dashboard_queries(dashboard):
        assert metric_names(expr), (title, expr)
        assert metric_names(expr) <= exported, (title, metric_names(expr) - exported)
        assert not sums_of_sampled_gauges(expr), (title, expr)


def test_dashboard_panels_use_the_datasource_variable_and_do_not_overlap(dashboard):
    """Unique ids; every panel, target and variable on ${datasource}; each panel inside the 24
    columns and on no other (rows included), so Grafana lays it out as written."""
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variable = {"type": "prometheus", "uid": "${datasource}"}
    for template in dashboard["templating"]["list"]:
        if template["type"] == "query":
            assert template["datasource"] == variable, template["name"]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == variable, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(target["datasource"] == variable for target in panel["targets"])
            refs = [target["refId"] for target in panel["targets"]]
            assert len(set(refs)) == len(refs), panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_dashboard_scheduling_row_shows_what_waits_and_the_service_tiers(dashboard):
    """The Scheduling row: the backlog beside the lag, what waits by severity and by
    tenant, the oldest wait, Groq's service tiers, the flex fallbacks and waits."""
    panels = dashboard["panels"]
    (row,) = [i for i, panel in enumerate(panels) if panel["title"] == "Scheduling"]
    assert panels[row]["type"] == "row"
    following = panels[row + 1 :]
    end = next((i for i, panel in enumerate(following) if panel["type"] == "row"), None)
    in_row = " ".join(
        target["expr"] for panel in following[:end] for target in panel.get("targets", [])
    )
    assert metric_names(in_row) >= {
        BACKLOG_METRIC,
        "acp_groq_group_lag",
        "acp_groq_waiting_events",
        "acp_groq_oldest_waiting_seconds",
        "acp_groq_waiting_events_by_tenant",
        "acp_groq_service_tier_requests_total",
        "acp_groq_service_tier_fallbacks_total",
        "acp_groq_capacity_waits_total",
    }


# -- prometheus alert rules -----------------------------------------------------------------------

ALERTS = DEPLOY / "prometheus-alerts.yml"
ROUTING_SEVERITIES = {"critical", "warning", "info"}  # the rules' own `severity` labels


def alert_rules() -> dict[str, dict[str, Any]]:
    rules = [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules)  # names are unique
    return {rule["alert"]: rule for rule in rules}


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"#{1,6} (.+)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_alert_rules_read_metrics_the_worker_exports():
    """Every series an expression reads is one the worker's registry exposes (but `up`,
    Prometheus' own), and so is every metric an annotation names (a histogram by its
    family's name too); no sampled gauge is summed."""
    from app.runtime.metrics import Metrics

    exported = exported_series()
    families = {metric.name for metric in Metrics().registry.collect()}
    for name, rule in alert_rules().items():
        named = metric_names(rule["expr"])
        assert named or "up{" in rule["expr"], name
        assert named <= exported, (name, named - exported)
        assert not sums_of_sampled_gauges(rule["expr"]), name
        mentioned = metric_names(" ".join(rule["annotations"].values()))
        assert mentioned <= exported | families, (name, mentioned - exported - families)


def test_alert_rules_have_a_routing_severity_a_summary_and_a_description():
    """The conventions of the file: a `severity` the routing knows, a summary and a
    description; an expression that keeps no `severity` label of its series (the rule's
    own would overwrite it: the events' severity is `event_severity` where it matters)."""
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in ROUTING_SEVERITIES, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        for clause in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", rule["expr"]):
            assert "severity" not in re.split(r"\s*,\s*", clause.strip()), (name, clause)


def test_alert_runbook_links_point_at_existing_sections():
    """A `docs/operations.md#anchor` or `README.md#anchor` in an annotation is a heading
    of that file."""
    files = {"docs/operations.md": ROOT / "docs/operations.md", "README.md": ROOT / "README.md"}
    linked = 0
    for name, rule in alert_rules().items():
        text = " ".join(rule["annotations"].values())
        for path, anchor in re.findall(r"((?:docs/operations|README)\.md)#([\w-]+)", text):
            assert anchor in github_anchors(files[path]), (name, f"{path}#{anchor}")
            linked += 1
    assert linked


def test_alert_rules_for_what_waits_in_the_scheduler_and_flex():
    """The scheduler's alerts: an urgent event waiting over a minute pages; flex refusing
    most requests for 15 minutes is a ticket; no throughput reads the backlog, which the
    lag alone misses under EVENT_ORDER=priority."""
    rules = alert_rules()
    urgent = rules["AcpGroqUrgentEventsWaiting"]
    assert metric_names(urgent["expr"]) == {"acp_groq_oldest_waiting_seconds"}
    assert 'severity=~"critical|high"' in urgent["expr"]
    assert (urgent["for"], urgent["labels"]["severity"]) == ("2m", "critical")

    flex = rules["AcpGroqFlexRefusing"]
    assert metric_names(flex["expr"]) == {"acp_groq_service_tier_requests_total"}
    assert 'result="capacity_exceeded"' in flex["expr"]
    assert (flex["for"], flex["labels"]["severity"]) == ("15m", "warning")

    assert BACKLOG_METRIC in rules["AcpGroqNoThroughput"]["expr"]


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    selector = ", ".join(f'{k}="{v}"' for k, v in {"job": JOB, "instance": "a", **labels}.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool on this machine")
def test_alert_rules_pass_promtool(tmp_path):
    """`promtool check rules` accepts the file, and `promtool test rules` runs the
    scheduler's alerts on made-up series (where Prometheus' promtool exists)."""
    check = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    rules = alert_rules()

    def expected(alert: str, summary: str, **labels: str) -> dict[str, Any]:
        rule = rules[alert]
        return {
            "exp_labels": {"job": JOB, **rule["labels"], **labels},
            "exp_annotations": {**rule["annotations"], "summary": summary},
        }

    oldest = "acp_groq_oldest_waiting_seconds"
    tiers = "acp_groq_service_tier_requests_total"
    flex = {"service_tier": "flex"}
    tests = [
        {  # a high event waits; two pods report it (max, not sum); low waits are not paged
            "interval": "1m",
            "input_series": [
                _series(oldest, "90+60x10", severity="high"),
                _series(oldest, "90+60x10", severity="high", instance="b"),
                _series(oldest, "600x10", severity="low"),
                _series(oldest, "0x10", severity="critical"),
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "AcpGroqUrgentEventsWaiting", "exp_alerts": []},
                {
                    "eval_time": "3m",
                    "alertname": "AcpGroqUrgentEventsWaiting",
                    "exp_alerts": [
                        expected(
                            "AcpGroqUrgentEventsWaiting",
                            "a high event has waited 4m 30s for a model slot",
                            event_severity="high",
                        )
                    ],
                },
            ],
        },
        {  # flex refuses 3 requests of 4 for 20 minutes
            "interval": "1m",
            "input_series": [
                _series(tiers, "0+30x40", result="capacity_exceeded", **flex),
                _series(tiers, "0+10x40", result="answered", **flex),
                _series(tiers, "0+50x40", result="answered", service_tier="on_demand"),
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "AcpGroqFlexRefusing", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "AcpGroqFlexRefusing",
                    "exp_alerts": [
                        expected(
                            "AcpGroqFlexRefusing",
                            "Groq's flex tier refuses 75% of the worker's requests",
                        )
                    ],
                },
            ],
        },
        {  # flex refuses all of a trickle (one request a minute): quiet
            "interval": "1m",
            "input_series": [_series(tiers, "0+1x40", result="capacity_exceeded", **flex)],
            "alert_rule_test": [
                {"eval_time": "35m", "alertname": "AcpGroqFlexRefusing", "exp_alerts": []},
            ],
        },
        {  # flex refuses a fifth of many, two pods summed: quiet
            "interval": "1m",
            "input_series": [
                _series(tiers, "0+10x40", result="capacity_exceeded", **flex),
                _series(tiers, "0+40x40", result="answered", **flex, instance="b"),
            ],
            "alert_rule_test": [
                {"eval_time": "35m", "alertname": "AcpGroqFlexRefusing", "exp_alerts": []},
            ],
        },
        {  # a flood waits in the scheduler (lag 0) and nothing is processed
            "interval": "1m",
            "input_series": [
                _series(BACKLOG_METRIC, "500x20"),
                _series("acp_groq_group_lag", "0x20"),
                _series("acp_groq_events_consumed_total", "7x20", result="enriched"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "AcpGroqNoThroughput",
                    "exp_alerts": [
                        expected(
                            "AcpGroqNoThroughput",
                            rules["AcpGroqNoThroughput"]["annotations"]["summary"],
                        )
                    ],
                },
            ],
        },
    ]
    unit = tmp_path / "alerts-test.yml"
    unit.write_text(
        yaml.safe_dump(
            {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        ["promtool", "test", "rules", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
    container: dict[str, Any]
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


# -- kubernetes: every manifest against Kubernetes' schemas ------------------------------------

# The oldest Kubernetes these manifests support (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is GA there), and a recent one, to catch removed fields.
KUBERNETES_VERSIONS = ("1.31", "1.35")
# Files of deploy/kubernetes/ that are not Kubernetes objects.
NOT_MANIFESTS = {"prometheus-adapter-values.yaml"}
# Kinds kubernetes-validate has no schema for: custom resources, checked by the models below.
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
DEPLOYMENT_NAME = "acp-groq-worker"


def k8s_documents() -> list[tuple[str, int, dict[str, Any]]]:
    """(file name, index in the file, object) for every object under deploy/kubernetes/."""
    found = []
    for path in sorted(K8S.glob("*.y*ml")):
        if path.name in NOT_MANIFESTS:
            continue
        for index, doc in enumerate(load_all(path)):
            found.append((path.name, index, doc))
    return found


def k8s_kinds() -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for _name, _index, doc in k8s_documents():
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def the(kind: str) -> dict[str, Any]:
    (doc,) = k8s_kinds()[kind]
    return doc


def test_kubernetes_directory_holds_only_manifests_and_the_adapter_rule():
    """Every YAML file there is a list of Kubernetes objects, but the one adapter values file.

    A new file is validated by the tests below automatically; a file that is not a
    Kubernetes object must be named in NOT_MANIFESTS.
    """
    for path in sorted(K8S.glob("*.y*ml")):
        docs = load_all(path)
        assert docs, path.name
        if path.name in NOT_MANIFESTS:
            assert all("apiVersion" not in doc for doc in docs), path.name
        else:
            assert all({"apiVersion", "kind", "metadata"} <= set(doc) for doc in docs), path.name
    assert set(k8s_kinds()) == {
        "Deployment",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        *KEDA_KINDS,
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(doc, id=f"{file}:{index}:{doc['kind']}")
        for file, index, doc in k8s_documents()
        if doc["kind"] not in KEDA_KINDS
    ],
)
def test_kubernetes_manifest_is_valid_against_the_kubernetes_schema(doc, version):
    """Strict validation: a misspelt or misplaced field, or a wrong type, fails."""
    assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_strict_kubernetes_validation_refuses_a_misspelt_field(deployment):
    """The validator used above does fail on a typo (so a pass above means something)."""
    broken = copy.deepcopy(deployment)
    pod = broken["spec"]["template"]["spec"]
    pod["terminationGracePeriodSecond"] = pod.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


# -- kubernetes: KEDA's custom resources against KEDA's documented fields ----------------------
#
# KEDA 2.x: the ScaledObject specification, the redis-streams and prometheus scalers'
# trigger metadata and the redis-streams TriggerAuthentication parameters, as KEDA's
# documentation lists them (its 2.11 and 2.15 pages; a field a later release adds goes here
# when it is used). Only the parts this deployment can use: a trigger of another type or
# an authentication provider other than a Secret or an environment variable fails until it
# is added here. Every model forbids unknown fields, so a typo (`lagcount`,
# `pollingIntervall`, `serveraddress`) fails the test.

_COUNT = r"^[0-9]+$"
_NUMBER = r"^[0-9]+(\.[0-9]+)?$"  # the prometheus scaler's thresholds may be floats
_BOOL = r"^(true|false)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RedisStreamsMetadata(_Strict):
    """The redis-streams trigger's metadata (all values are strings, as KEDA reads them)."""

    address: str | None = Field(None, pattern=r"^[^:/\s]+:[0-9]+$")  # host:port, no URL
    host: str | None = None
    port: str | None = Field(None, pattern=_COUNT)
    addressFromEnv: str | None = None
    hostFromEnv: str | None = None
    portFromEnv: str | None = None
    usernameFromEnv: str | None = None
    passwordFromEnv: str | None = None
    enableTLS: str | None = Field(None, pattern=_BOOL)
    unsafeSsl: str | None = Field(None, pattern=_BOOL)
    databaseIndex: str | None = Field(None, pattern=_COUNT)
    stream: str = Field(min_length=1)
    consumerGroup: str | None = Field(None, min_length=1)
    pendingEntriesCount: str | None = Field(None, pattern=_COUNT)
    streamLength: str | None = Field(None, pattern=_COUNT)
    lagCount: str | None = Field(None, pattern=_COUNT)
    activationLagCount: str | None = Field(None, pattern=_COUNT)

    @model_validator(mode="after")
    def _documented_combinations(self) -> RedisStreamsMetadata:
        if not (self.address or self.addressFromEnv or self.host or self.hostFromEnv):
            raise ValueError("address (or host and port, or their FromEnv forms) is required")
        if (self.host or self.hostFromEnv) and not (self.port or self.portFromEnv):
            raise ValueError("host needs port")
        if (self.lagCount or self.pendingEntriesCount) and not self.consumerGroup:
            raise ValueError("lagCount and pendingEntriesCount need consumerGroup")
        if self.lagCount and self.activationLagCount is None:
            raise ValueError("activationLagCount is required with lagCount")
        return self


class PrometheusMetadata(_Strict):
    """The prometheus trigger's metadata (strings, as KEDA reads them). `cortexOrgID` and
    `metricName`, deprecated in 2.10 and removed in 2.12, are left out; `queryParameters`
    is documented from 2.12 on."""

    serverAddress: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    query: str = Field(min_length=1)
    queryParameters: str | None = Field(None, pattern=r"^[^=,\s]+=[^,]*(,[^=,\s]+=[^,]*)*$")
    threshold: str = Field(pattern=_NUMBER)
    activationThreshold: str | None = Field(None, pattern=_NUMBER)
    namespace: str | None = Field(None, min_length=1)
    customHeaders: str | None = Field(None, pattern=r"^[^=,\s]+=[^,]*(,[^=,\s]+=[^,]*)*$")
    ignoreNullValues: str | None = Field(None, pattern=_BOOL)
    unsafeSsl: str | None = Field(None, pattern=_BOOL)
    authModes: str | None = Field(
        None, pattern=r"^(bearer|basic|tls|custom)(,(bearer|basic|tls|custom))*$"
    )


class AuthenticationRef(_Strict):
    name: str = Field(min_length=1)
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] = "TriggerAuthentication"


class _Trigger(_Strict):
    """What every trigger has besides its type and metadata."""

    # Optional, but unique within the ScaledObject when given (KEDA's admission webhook).
    name: str | None = None
    authenticationRef: AuthenticationRef | None = None
    metricType: Literal["AverageValue", "Value"] | None = None
    useCachedMetrics: bool | None = None


class RedisStreamsTrigger(_Trigger):
    type: Literal["redis-streams"]
    metadata: RedisStreamsMetadata


class PrometheusTrigger(_Trigger):
    type: Literal["prometheus"]
    metadata: PrometheusMetadata


# One model per trigger type, chosen by `type`: the metadata is checked against that
# scaler's fields, and an unknown type fails.
Trigger = Annotated[RedisStreamsTrigger | PrometheusTrigger, Field(discriminator="type")]


class ScaleTargetRef(_Strict):
    apiVersion: str = "apps/v1"
    kind: str = "Deployment"
    name: str = Field(min_length=1)
    envSourceContainerName: str | None = None


class Fallback(_Strict):
    failureThreshold: int = Field(ge=1)
    replicas: int = Field(ge=0)


class HorizontalPodAutoscalerConfig(_Strict):
    name: str | None = None
    # Kubernetes' HorizontalPodAutoscalerBehavior: validated with Kubernetes' schema below.
    behavior: dict[str, Any] | None = None


class ScalingModifiers(_Strict):
    formula: str
    target: str
    activationTarget: str | None = None
    metricType: Literal["AverageValue", "Value"] | None = None


class Advanced(_Strict):
    restoreToOriginalReplicaCount: bool | None = None
    horizontalPodAutoscalerConfig: HorizontalPodAutoscalerConfig | None = None
    scalingModifiers: ScalingModifiers | None = None


class ScaledObjectSpec(_Strict):
    scaleTargetRef: ScaleTargetRef
    pollingInterval: int = Field(30, ge=1)
    cooldownPeriod: int = Field(300, ge=0)
    initialCooldownPeriod: int | None = Field(None, ge=0)
    idleReplicaCount: int | None = Field(None, ge=0)
    minReplicaCount: int = Field(0, ge=0)
    maxReplicaCount: int = Field(100, ge=1)
    fallback: Fallback | None = None
    advanced: Advanced | None = None
    triggers: list[Trigger] = Field(min_length=1)

    @model_validator(mode="after")
    def _replica_bounds(self) -> ScaledObjectSpec:
        if self.minReplicaCount > self.maxReplicaCount:
            raise ValueError("minReplicaCount is above maxReplicaCount")
        if self.idleReplicaCount is not None and self.idleReplicaCount >= self.minReplicaCount:
            raise ValueError("idleReplicaCount must be less than minReplicaCount")
        return self

    @model_validator(mode="after")
    def _unique_trigger_names(self) -> ScaledObjectSpec:
        names = [trigger.name for trigger in self.triggers if trigger.name]
        if len(names) != len(set(names)):
            raise ValueError(f"trigger names must be unique: {names}")
        return self


class ObjectMeta(_Strict):
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ScaledObject(_Strict):
    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["ScaledObject"]
    metadata: ObjectMeta
    spec: ScaledObjectSpec


class SecretTargetRef(_Strict):
    # The redis-streams scaler's authentication parameters.
    parameter: Literal["username", "password", "tls", "ca", "cert", "key", "keyPassword"]
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class EnvRef(_Strict):
    parameter: Literal["username", "password", "tls", "ca", "cert", "key", "keyPassword"]
    name: str = Field(min_length=1)
    containerName: str | None = None


class TriggerAuthenticationSpec(_Strict):
    secretTargetRef: list[SecretTargetRef] | None = None
    env: list[EnvRef] | None = None


class TriggerAuthentication(_Strict):
    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["TriggerAuthentication"]
    metadata: ObjectMeta
    spec: TriggerAuthenticationSpec


_T = TypeVar("_T", RedisStreamsTrigger, PrometheusTrigger)


def keda_trigger(scaled_object: ScaledObject, kind: type[_T]) -> _T:
    """The ScaledObject's one trigger of that model (so of that type)."""
    (trigger,) = [t for t in scaled_object.spec.triggers if isinstance(t, kind)]
    return trigger


def raw_trigger(doc: dict[str, Any], trigger_type: str) -> dict[str, Any]:
    """The one trigger of that type in a ScaledObject as loaded (a dict), to break it."""
    found: list[dict[str, Any]]
    found = [t for t in doc["spec"]["triggers"] if t["type"] == trigger_type]
    (trigger,) = found
    return trigger


def keda_hpa_behavior(scaled_object: ScaledObject) -> dict[str, Any]:
    """The HPA behaviour KEDA is asked to use (advanced.horizontalPodAutoscalerConfig)."""
    advanced = scaled_object.spec.advanced
    config = advanced.horizontalPodAutoscalerConfig if advanced else None
    assert config is not None
    assert config.behavior is not None
    return config.behavior


@pytest.fixture(scope="module")
def scaled_object() -> ScaledObject:
    return ScaledObject.model_validate(the("ScaledObject"))


@pytest.fixture(scope="module")
def trigger_authentication() -> TriggerAuthentication:
    return TriggerAuthentication.model_validate(the("TriggerAuthentication"))


@pytest.fixture(scope="module")
def hpa() -> dict[str, Any]:
    return the("HorizontalPodAutoscaler")


def test_keda_scaled_object_and_trigger_authentication_have_only_documented_fields():
    """Both parse under the models (unknown fields forbidden); one trigger on the backlog
    (prometheus), one on the group's lag (redis-streams, not its pending entries)."""
    TriggerAuthentication.model_validate(the("TriggerAuthentication"))
    scaled_object = ScaledObject.model_validate(the("ScaledObject"))
    assert sorted(t.type for t in scaled_object.spec.triggers) == ["prometheus", "redis-streams"]
    lag = keda_trigger(scaled_object, RedisStreamsTrigger)
    assert lag.metadata.lagCount is not None  # Redis 7+: scale on the group's lag
    assert lag.metadata.pendingEntriesCount is None
    assert lag.metadata.streamLength is None


# A step naming a trigger type picks that trigger from spec.triggers, so that each typo
# hits the model of the scaler it belongs to whatever the triggers' order.
@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (("spec",), "pollingIntervall"),
        (("spec", "triggers", "redis-streams"), "authRef"),
        (("spec", "triggers", "redis-streams", "metadata"), "lagcount"),
        (("spec", "triggers", "redis-streams", "metadata"), "consumergroup"),
        (("spec", "triggers", "prometheus"), "authRef"),
        (("spec", "triggers", "prometheus", "metadata"), "serveraddress"),
        (("spec", "triggers", "prometheus", "metadata"), "ignoreNullValue"),
        (("spec", "triggers", "prometheus", "metadata"), "lagCount"),  # not this scaler's
        (("spec", "scaleTargetRef"), "nmae"),
    ],
)
def test_keda_models_refuse_a_misspelt_field(path, typo):
    """A field KEDA does not document, anywhere in the ScaledObject, fails validation."""
    broken = copy.deepcopy(the("ScaledObject"))
    node = broken
    for step in path:
        if isinstance(step, str) and step in {"redis-streams", "prometheus"}:
            node = raw_trigger(broken, step)
        else:
            node = node[step]
    assert typo not in node
    node[typo] = "1"
    with pytest.raises(ValidationError, match=typo):
        ScaledObject.model_validate(broken)


def test_keda_models_refuse_documented_fields_used_wrongly():
    """Numbers as YAML numbers (KEDA wants strings), lagCount without activationLagCount,
    a threshold that is no number, two triggers of one name, a trigger type not modelled."""
    as_number = copy.deepcopy(the("ScaledObject"))
    raw_trigger(as_number, "redis-streams")["metadata"]["lagCount"] = 160
    with pytest.raises(ValidationError, match="lagCount"):
        ScaledObject.model_validate(as_number)

    threshold_as_number = copy.deepcopy(the("ScaledObject"))
    raw_trigger(threshold_as_number, "prometheus")["metadata"]["threshold"] = 160
    with pytest.raises(ValidationError, match="threshold"):
        ScaledObject.model_validate(threshold_as_number)

    not_a_number = copy.deepcopy(the("ScaledObject"))
    raw_trigger(not_a_number, "prometheus")["metadata"]["threshold"] = "160 events"
    with pytest.raises(ValidationError, match="threshold"):
        ScaledObject.model_validate(not_a_number)

    no_activation = copy.deepcopy(the("ScaledObject"))
    del raw_trigger(no_activation, "redis-streams")["metadata"]["activationLagCount"]
    with pytest.raises(ValidationError, match="activationLagCount is required"):
        ScaledObject.model_validate(no_activation)

    same_names = copy.deepcopy(the("ScaledObject"))
    for trigger in same_names["spec"]["triggers"]:
        trigger["name"] = "backlog"
    with pytest.raises(ValidationError, match="trigger names must be unique"):
        ScaledObject.model_validate(same_names)

    other_type = copy.deepcopy(the("ScaledObject"))
    raw_trigger(other_type, "prometheus")["type"] = "redis-lists"
    with pytest.raises(ValidationError, match="redis-lists"):
        ScaledObject.model_validate(other_type)


def test_keda_triggers_have_unique_names():
    """Every trigger is named, and no two alike: KEDA's webhook refuses a duplicate name,
    and the names tell the triggers apart in KEDA's metrics and errors."""
    triggers = ScaledObject.model_validate(the("ScaledObject")).spec.triggers
    names = [trigger.name for trigger in triggers]
    assert all(names), names
    assert len(set(names)) == len(names), names


def test_keda_backlog_trigger_queries_the_exported_backlog_of_the_scrape_job(scaled_object):
    """The prometheus trigger's query reads one metric the worker exports, the backlog,
    of the scrape job the alert rules select on, as one number (max over the pods, which
    all report the same); an unknown backlog is an error (the HPA holds), not 0."""
    from app.runtime.metrics import Metrics

    exported = {metric.name for metric in Metrics().registry.collect()}
    backlog = keda_trigger(scaled_object, PrometheusTrigger)
    query = backlog.metadata.query
    assert set(re.findall(r"\bacp_groq_\w+", query)) == {BACKLOG_METRIC}
    assert BACKLOG_METRIC in exported
    selectors = re.findall(rf"\b{BACKLOG_METRIC}\{{([^}}]*)\}}", query)
    assert selectors, query
    assert all(f'job="{JOB}"' in selector for selector in selectors), query
    assert query.replace(" ", "").startswith("max(")  # never sum: one Redis, read by all
    assert backlog.metadata.ignoreNullValues == "false"


def test_keda_backlog_and_lag_triggers_share_one_target_per_replica(scaled_object, hpa):
    """The prometheus threshold, the redis-streams lagCount and the HPA's averageValue are
    one policy: so many events waiting per replica, whichever autoscaler reads them."""
    backlog = keda_trigger(scaled_object, PrometheusTrigger)
    lag = keda_trigger(scaled_object, RedisStreamsTrigger)
    (metric,) = hpa["spec"]["metrics"]
    target = metric["external"]["target"]["averageValue"]
    assert backlog.metadata.threshold == lag.metadata.lagCount == target
    assert backlog.metricType in (None, "AverageValue")  # divided among the replicas
    assert lag.metricType in (None, "AverageValue")


def test_keda_trigger_reads_the_workers_stream_and_group(scaled_object):
    """stream and consumerGroup are the worker's INSIGHT_STREAM and INSIGHT_GROUP defaults."""
    trigger = keda_trigger(scaled_object, RedisStreamsTrigger)
    assert trigger.metadata.stream == Settings.model_fields["insight_stream"].default
    assert trigger.metadata.consumerGroup == Settings.model_fields["insight_group"].default


def test_keda_trigger_reaches_the_redis_the_worker_uses(scaled_object, secret):
    """address, databaseIndex and TLS are REDIS_URL's (the example Secret's) host:port/db."""
    trigger = keda_trigger(scaled_object, RedisStreamsTrigger)
    url = urlsplit(secret["stringData"]["REDIS_URL"])
    assert trigger.metadata.address == f"{url.hostname}:{url.port or 6379}"
    assert trigger.metadata.databaseIndex == (url.path.strip("/") or "0")
    assert trigger.metadata.enableTLS == ("true" if url.scheme == "rediss" else "false")


def test_keda_password_comes_from_the_workers_secret(scaled_object, trigger_authentication, secret):
    """The trigger authenticates through the TriggerAuthentication, whose password is the
    Secret's REDIS_PASSWORD: the same password the example REDIS_URL carries."""
    trigger = keda_trigger(scaled_object, RedisStreamsTrigger)
    assert trigger.authenticationRef is not None
    assert trigger.authenticationRef.name == trigger_authentication.metadata.name
    refs = {ref.parameter: ref for ref in trigger_authentication.spec.secretTargetRef or []}
    assert refs["password"].name == secret["metadata"]["name"]
    assert refs["password"].key in secret["stringData"]
    password = secret["stringData"][refs["password"].key]
    assert password == (urlsplit(secret["stringData"]["REDIS_URL"]).password or "")
    assert trigger.metadata.passwordFromEnv is None  # one source of the password, not two


def test_keda_scales_the_deployment_between_sane_bounds(scaled_object, deployment):
    """It targets the Deployment by its name; at least 2 replicas, so one can claim."""
    spec = scaled_object.spec
    assert (spec.scaleTargetRef.apiVersion, spec.scaleTargetRef.kind) == ("apps/v1", "Deployment")
    assert spec.scaleTargetRef.name == deployment["metadata"]["name"] == DEPLOYMENT_NAME
    assert 2 <= spec.minReplicaCount <= deployment["spec"]["replicas"] <= spec.maxReplicaCount


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_keda_hpa_behavior_is_a_valid_kubernetes_hpa_behavior(scaled_object, version):
    """KEDA copies advanced.horizontalPodAutoscalerConfig.behavior into its HPA: it must be
    valid there, so it is validated inside an autoscaling/v2 HPA with Kubernetes' schema."""
    spec = scaled_object.spec
    behavior = keda_hpa_behavior(scaled_object)
    as_hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{the('ScaledObject')['metadata']['name']}"},
        "spec": {
            "scaleTargetRef": spec.scaleTargetRef.model_dump(exclude_none=True),
            "minReplicas": spec.minReplicaCount,
            "maxReplicas": spec.maxReplicaCount,
            "behavior": behavior,
        },
    }
    kubernetes_validate.validate(as_hpa, version, strict=True)


# -- kubernetes: the HPA alternative, the disruption budget --------------------------------------


def test_hpa_targets_the_deployment_by_its_real_name(hpa, deployment):
    """scaleTargetRef is apps/v1 Deployment acp-groq-worker, the name deployment.yaml uses."""
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }


def test_hpa_scales_on_the_exported_backlog_gauge_served_by_the_adapter_rule(hpa):
    """An External AverageValue target on acp_groq_backlog_events of the scrape job, and the
    adapter rule serves exactly that name from that gauge.

    The backlog, not the lag: with EVENT_ORDER=priority what waits in the scheduler was
    acknowledged in the stream, so the lag stays near 0 however much waits.
    """
    from app.runtime.metrics import Metrics

    exported = {metric.name for metric in Metrics().registry.collect()}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    name = metric["external"]["metric"]["name"]
    assert name == BACKLOG_METRIC
    assert name in exported
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"job": JOB}
    assert metric["external"]["target"]["type"] == "AverageValue"

    values = load(K8S / "prometheus-adapter-values.yaml")
    (rule,) = values["rules"]["external"]
    assert rule["seriesQuery"].startswith(f"{name}{{")
    assert f'job="{JOB}"' in rule["seriesQuery"]
    assert re.fullmatch(rule["name"]["matches"], name)
    assert rule["name"]["as"] == name
    assert rule["metricsQuery"].startswith("max(")  # every pod reports the same backlog
    assert ">= 0)" in rule["metricsQuery"]  # NaN (an unknown lag) is no sample, not a number


def test_hpa_and_keda_scale_alike(hpa, scaled_object):
    """The two alternatives have the same bounds, the same metric (the backlog) and target
    per replica, and the same behaviour."""
    spec = scaled_object.spec
    backlog = keda_trigger(scaled_object, PrometheusTrigger)
    assert hpa["spec"]["minReplicas"] == spec.minReplicaCount
    assert hpa["spec"]["maxReplicas"] == spec.maxReplicaCount
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] in backlog.metadata.query
    assert metric["external"]["target"]["averageValue"] == backlog.metadata.threshold
    assert hpa["spec"]["behavior"] == keda_hpa_behavior(scaled_object)


def test_disruption_budget_selects_the_workers_pods_and_lets_one_go(deployment):
    """It selects exactly the Deployment's pods and allows one voluntary eviction at a time."""
    pdb = the("PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
