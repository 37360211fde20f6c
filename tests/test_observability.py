"""Operators' view: Prometheus config and alert rules pass promtool, a real Prometheus scrapes
a running proxy, and every metric the Grafana dashboard queries exists and its PromQL runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import answers, user, wait_until
from tests.servers import RunningProxy, free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "escalator.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus is not installed (apt-get install prometheus; .ci/run does)",
)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bescalator_[a-z_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_every_metric_the_dashboard_queries_is_exported(proxy: RunningProxy) -> None:
    exposition = httpx.get(f"{proxy.url}/metrics").text
    exported = set(re.findall(r"^# TYPE (escalator_[a-z_]+) ", exposition, re.MULTILINE))
    queried = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert queried and queried <= exported, queried - exported
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerted = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert alerted <= exported, alerted - exported


def test_the_dashboard_has_tenant_and_route_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"tenant", "route"}
    assert all(panel["targets"] for panel in dashboard["panels"])


@needs_prometheus
def test_promtool_accepts_the_config_and_rules() -> None:
    assert PROMTOOL is not None
    for args in (
        ["check", "config", str(DEPLOY / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "alerts.yml")],
    ):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def prometheus(proxy: RunningProxy, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus on loopback scraping the running proxy every second."""
    assert PROMETHEUS is not None
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "escalator", "static_configs": [{"targets": [f"127.0.0.1:{proxy.port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/-/ready"), timeout_s=30)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def query(prometheus: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr})
    body: dict[str, Any] = response.json()
    return body


@needs_prometheus
def test_a_real_prometheus_scrapes_the_proxy_and_runs_the_dashboard(
    prometheus: str, client: httpx.Client
) -> None:
    for session in ("a", "b"):
        client.post(
            "/v1/chat/completions",
            json={"model": "always", "messages": user()},
            headers={"x-session-id": session},
        )
    deadline = time.monotonic() + 30
    result: dict[str, Any] = {}
    while time.monotonic() < deadline:
        result = query(prometheus, 'escalator_requests_total{route="always",status="200"}')
        if result["data"]["result"] and result["data"]["result"][0]["value"][1] == "2":
            break
        time.sleep(0.5)
    assert result["data"]["result"][0]["value"][1] == "2", result
    for expr in dashboard_exprs():
        if expr.startswith("label_values"):
            continue
        concrete = expr.replace("$tenant", ".*").replace("$route", ".*").replace("$__range", "5m")
        answer = query(prometheus, concrete)
        assert answer["status"] == "success", (expr, answer)
    health: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and health != {"ok"}:
        rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"][0]["rules"]
        health = {r["health"] for r in rules}
        time.sleep(0.5)
    assert health == {"ok"}  # every alert rule evaluates against the real series
