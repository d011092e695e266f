"""deploy/ checked offline: Kubernetes manifests against the API's schemas (kubernetes-validate)
and against each other, alert rules (promtool when installed, and always for shape), and the
Grafana dashboard; rules and panels may only name metrics the code defines."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from kubernetes_validate import utils as kubernetes

from core.observability import metrics
from tests.harness.processes import REPO, require_binary

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33.0"
# Prometheus' own series that rules may use besides ours.
PROMQL_WORDS = frozenset({"le", "by", "without", "on", "ignoring", "group_left", "group_right"})


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def defined_series() -> set[str]:
    """Every sample name the code exposes (counters' _total, histograms' _bucket/_count/_sum),
    and the scrape-time gauges of project/observability/exposition.py."""
    names = {metrics.QUEUE_DEPTH_NAME, metrics.BREAKER_OPEN_NAME}
    for value in vars(metrics).values():
        if isinstance(value, metrics.Counter | metrics.Gauge | metrics.Histogram):
            for family in value.describe():
                base = family.name
                names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def series_in(expr: str) -> set[str]:
    """The metric names an expression reads (Parley's all start with parley_)."""
    return set(re.findall(r"\bparley_[a-z_]+\b", expr))


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "doc"),
    manifests(),
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in manifests()],
)
def test_each_manifest_is_valid_for_the_kubernetes_api(path, doc):
    kubernetes.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == files


def test_deployments_run_each_part_with_probes_and_graceful_shutdown():
    deployments = by_kind("Deployment")
    assert set(deployments) == {
        "parley-web",
        "parley-worker-remote",
        "parley-worker-local",
        "parley-beat",
    }
    web = deployments["parley-web"]["spec"]["template"]["spec"]
    (daphne,) = web["containers"]
    assert daphne["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert daphne["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert daphne["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pre_stop = int(daphne["lifecycle"]["preStop"]["exec"]["command"][1])
    assert web["terminationGracePeriodSeconds"] > pre_stop
    rolling = deployments["parley-web"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    for queue in ("remote", "local"):
        spec = deployments[f"parley-worker-{queue}"]["spec"]["template"]["spec"]
        (worker,) = spec["containers"]
        # The same command compose.yaml runs for that queue, which the harness tests for real.
        assert worker["command"] == compose[f"worker-{queue}"]["command"]
        assert worker["livenessProbe"]["tcpSocket"]["port"] == "metrics"
        assert spec["terminationGracePeriodSeconds"] >= 120  # running replies may finish
    beat = deployments["parley-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert "parley-beat" not in by_kind("HorizontalPodAutoscaler")
    assert "parley-beat" not in by_kind("PodDisruptionBudget")


def test_services_budgets_and_autoscalers_point_at_real_deployments():
    deployments = by_kind("Deployment")
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}

    def selects(selector: dict[str, str]) -> list[str]:
        return [n for n, ls in labels.items() if selector.items() <= ls.items()]

    for name, service in by_kind("Service").items():
        assert selects(service["spec"]["selector"]) == ["parley-web"], name
    for name, budget in by_kind("PodDisruptionBudget").items():
        assert selects(budget["spec"]["selector"]["matchLabels"]) == [name]
    defined = defined_series()
    for name, hpa in by_kind("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name in deployments
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] in ("Pods", "External"):
                assert metric[metric["type"].lower()]["metric"]["name"] in defined
    (ingress,) = by_kind("Ingress").values()
    backends = [
        p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]
    assert backends == ["parley-web"]
    assert (
        int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        >= 60
    )


def body_size_bytes(value: str) -> int:
    """nginx's size syntax: 1m, 512k, 1048576."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def test_the_ingress_lets_parley_answer_every_body_it_refuses_in_the_api_shape():
    """ingress-nginx's own 413 is an HTML page: its limit must not be below any body Parley
    accepts or refuses itself (a document upload, as nginx.conf's largest limit), so that
    Parley's JSON 413s (too_large, document_too_large) are what clients get."""
    (ingress,) = by_kind("Ingress").values()
    limit = body_size_bytes(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    )
    nginx_limits = re.findall(r"client_max_body_size\s+(\w+);", (REPO / "nginx.conf").read_text())
    assert limit == max(body_size_bytes(v) for v in nginx_limits)
    assert limit > settings.DOCUMENTS_MAX_BYTES and limit > settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_the_ingress_needs_no_snippet_annotations():
    """ingress-nginx 1.9+ refuses an Ingress with a *-snippet annotation unless the controller
    allows snippets (allow-snippet-annotations; risk level Critical since 1.12)."""
    (ingress,) = by_kind("Ingress").values()
    snippets = [name for name in ingress["metadata"]["annotations"] if name.endswith("-snippet")]
    assert snippets == []


# --- alert rules ---------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_have_their_parts_and_cover_what_operators_need():
    rules = alert_rules()
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert {"summary", "description"} <= set(rule["annotations"])
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    names = {rule["alert"] for rule in rules}
    assert len(names) == len(rules)
    wanted = {"HighTimeToFirstToken", "BreakerOpen", "StuckReplies", "QueueBacklog"}
    wanted |= {"ReplyErrorRate", "BudgetExhausted"}
    assert {f"Parley{w}" for w in wanted} <= names


def test_alert_rules_and_dashboard_name_only_metrics_the_code_defines():
    defined = defined_series()
    for rule in alert_rules():
        assert series_in(rule["expr"]), rule["alert"]
        assert series_in(rule["expr"]) <= defined, (
            rule["alert"],
            series_in(rule["expr"]) - defined,
        )
    dashboard = json.loads((DEPLOY / "grafana" / "parley.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = series_in(target["expr"])
            assert used and used <= defined, (panel["title"], used - defined)


@pytest.mark.parametrize(
    "command",
    [("check", "rules", "alerts.yaml"), ("test", "rules", "alerts_test.yaml")],
    ids=["check", "fire"],
)
def test_promtool_accepts_the_alert_rules_and_they_fire_on_cue(command):
    """`check`: the rules parse; `test`: synthetic series fire (and do not fire) each alert as
    deploy/prometheus/alerts_test.yaml expects."""
    promtool = require_binary("promtool")  # Debian's prometheus (make system-deps); CI fails
    result = subprocess.run(
        [promtool, *command],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- dashboard ----------------------------------------------------------------------------


def test_the_dashboard_is_grafana_json_with_unique_panels_on_a_grid():
    dashboard = json.loads((DEPLOY / "grafana" / "parley.json").read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        cell = (grid["x"], grid["y"])
        assert cell not in cells
        cells.add(cell)
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        assert panel["datasource"]["uid"] == "${datasource}"
    templated = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in templated
    # Every kind of metric the issue lists has a panel.
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in (
        "parley_websocket_connections",
        "parley_reply_streams_active",
        "parley_reply_time_to_first_token_seconds_bucket",
        "parley_celery_queue_depth",
        "parley_breaker_open",
        "parley_cache_lookups_total",
        "parley_refusals_total",
        "parley_http_request_seconds_bucket",
        "parley_layer_publish_seconds_bucket",
    ):
        assert name in exprs, name
