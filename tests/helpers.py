"""Small readers for what the proxy leaves behind: step-log records and metric samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import RunningProxy


def user(text: str = "What is 2+2?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def records(
    proxy: RunningProxy, count: int, timeout_s: float = 5.0, agreement: bool = False
) -> list[dict[str, Any]]:
    """Wait until the step log holds at least `count` records; return them all. Agreement
    checks (written after an escalated step's answer, tests/test_agreement.py) are left out
    unless asked for."""
    directory = Path(proxy.settings.storage.dir) / "logs"
    deadline = time.monotonic() + timeout_s
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [
            orjson.loads(line)
            for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()
            if line
        ]
        if not agreement:
            found = [r for r in found if r.get("kind") != "agreement"]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"expected {count} log records, found {len(found)}")


def policy_of_next_step(proxy: RunningProxy, model: str, api_key: str) -> str:
    """Send one step to `model` and return the policy id its step record logged."""
    logged = len(records(proxy, 0))
    httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {api_key}"},
        json={"model": model, "messages": user("hi")},
    )
    return str(records(proxy, logged + 1)[-1]["decision"]["policy"])


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    text = client.get("/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def answers(url: str) -> bool:
    """Whether a server answers 200 at `url` yet."""
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False
