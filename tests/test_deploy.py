"""The deployment files, checked without a Docker engine: the compose file against the
compose specification, every file it mounts or builds exists, the configuration it mounts is
valid, the image is multi-stage, non-root, health-checked and carries the proxy only."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from server.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_the_compose_file_follows_the_compose_specification() -> None:
    checker = shutil.which("check-jsonschema") or f"{Path(sys.executable).parent}/check-jsonschema"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_the_compose_file_names_exists() -> None:
    services = compose()["services"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_the_mounted_configuration_is_valid() -> None:
    settings = load_settings(ROOT / "deploy" / "escalator.compose.toml")
    assert settings.storage.budget_store == "redis"
    services = compose()["services"]
    upstream_hosts = {
        re.sub(r"^https?://([^:/]+).*", r"\1", u.base_url) for u in settings.upstreams.values()
    }
    assert upstream_hosts <= set(services)  # the upstreams are compose services
    assert re.sub(r"redis://([^:/]+).*", r"\1", settings.storage.redis_url) in services


def test_prometheus_scrapes_every_replica() -> None:
    services = compose()["services"]
    replicas = {n for n, s in services.items() if s.get("image") == "escalator:local"}
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for t in static["targets"]
    }
    assert replicas == targets == {"escalator-1", "escalator-2"}


def test_the_image_is_slim_multi_stage_non_root_and_health_checked() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "training" not in text and "torch" not in text  # the proxy only
    mounted = [v for v in compose()["x-escalator"]["volumes"] if "escalator.toml" in v]
    assert mounted and mounted[0].split(":")[1] in text  # the config lands where CMD reads it


KUBERNETES = ROOT / "deploy" / "kubernetes"


def kubernetes_documents() -> list[dict[str, Any]]:
    return [
        d for f in sorted(KUBERNETES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d
    ]


def test_the_kubernetes_manifests_follow_the_kubernetes_schemas() -> None:
    checker = shutil.which("kubernetes-validate") or (
        f"{Path(sys.executable).parent}/kubernetes-validate"
    )
    result = subprocess.run(
        [checker, "--strict", "--quiet", str(KUBERNETES / "escalator.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_topology_holds_together(tmp_path: Path) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in kubernetes_documents()}
    config = docs[("ConfigMap", "escalator")]["data"]["escalator.toml"]
    (tmp_path / "escalator.toml").write_text(config)
    settings = load_settings(tmp_path / "escalator.toml")
    assert settings.storage.redis_url.startswith("redis://escalator-redis:")
    assert ("Service", "escalator-redis") in docs
    deployment = docs[("Deployment", "escalator")]
    assert (
        docs[("HorizontalPodAutoscaler", "escalator")]["spec"]["scaleTargetRef"]["name"]
        == (deployment["metadata"]["name"])
    )
    monitor = docs[("ServiceMonitor", "escalator")]
    service = docs[("Service", "escalator")]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_training_job_reads_the_shared_logs_and_reloads_every_replica() -> None:
    import argparse

    from training.cli import add_arguments

    services = compose()["services"]
    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"]  # not started by a plain `docker compose up`
    replicas = {n for n, s in services.items() if s.get("image") == "escalator:local"}
    shared = {v for v in services["escalator-1"]["volumes"] if not v.startswith("./")}
    assert shared <= set(trainer["volumes"])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    command = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg) for arg in trainer["command"]]
    args = parser.parse_args(command)
    assert args.logs == "/data/logs" and args.install.startswith("/data/helpers/")
    assert {re.sub(r"http://([^:/]+).*", r"\1", url) for url in args.reload} == replicas
    settings = load_settings(ROOT / "deploy" / "escalator.compose.toml")
    assert args.logs == f"{settings.storage.dir}/logs"
    dockerfile = (ROOT / "deploy" / "Dockerfile.trainer").read_text()
    assert ".[train]" in dockerfile and re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
