"""The configuration contract: DESIGN.md's file works as written; bad files fail clearly."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from server.settings import ConfigError, load_settings, validate_settings

EXAMPLE = Path(__file__).parent.parent / "deploy" / "escalator.example.toml"


def example() -> dict[str, Any]:
    with EXAMPLE.open("rb") as fh:
        return tomllib.load(fh)


def test_the_design_configuration_loads_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "secret")
    settings = load_settings(EXAMPLE)
    route = settings.routes["agent"]
    assert route.base.upstream == "weak" and route.policy == {"kind": "threshold", "threshold": 0.5}
    assert route.interventions[0].kind == "strong" and route.interventions[0].cost == 1
    assert settings.tenants["acme"].interventions_per_day == 10000
    assert settings.upstreams["weak"].api_key() == "secret"
    assert settings.storage.budget_store == "sqlite"
    assert len(settings.config_hash()) == 16


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "secret")
    monkeypatch.setenv("ESCALATOR_SERVER__PORT", "9123")
    assert load_settings(EXAMPLE).server.port == 9123


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_settings(data)
    return str(caught.value)


def test_unknown_keys_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "x")
    data = example()
    data["tenants"]["acme"]["interventions_per_sesion"] = 3
    data["server"]["colour"] = "blue"
    message = problems(data)
    assert "tenants.acme.interventions_per_sesion: unknown key" in message
    assert "server.colour: unknown key" in message


def test_a_route_naming_an_unknown_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "x")
    data = example()
    data["routes"]["agent"]["interventions"][0]["upstream"] = "strongest"
    assert "routes.agent.interventions[0]: unknown upstream 'strongest'" in problems(data)


def test_every_problem_is_named_in_one_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema mistake does not hide an unresolved name behind it, nor the reverse."""
    monkeypatch.delenv("WEAK_API_KEY", raising=False)
    data = example()
    data["server"]["colour"] = "blue"
    data["routes"]["agent"]["interventions"][0]["upstream"] = "strongest"
    message = problems(data)
    assert "(3 problem(s))" in message
    assert "server.colour: unknown key" in message
    assert "routes.agent.interventions[0]: unknown upstream 'strongest'" in message
    assert "upstreams.weak.api_key_env: environment variable WEAK_API_KEY is not set" in message
    assert "(top level)" not in message


def test_a_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEAK_API_KEY", raising=False)
    assert "environment variable WEAK_API_KEY is not set" in problems(example())


def test_a_plain_api_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "x")
    data = example()
    data["tenants"]["acme"]["api_keys"] = ["sk-live-123"]
    assert "sha256 digests" in problems(data)


def test_a_bad_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "x")
    data = example()
    data["routes"]["agent"]["policy"] = {"kind": "threshold", "threshold": 2}
    assert "routes.agent.policy" in problems(data)


def test_anonymous_access_only_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "x")
    data = example()
    data["server"].update(host="0.0.0.0", anonymous_tenant="acme")
    assert "loopback" in problems(data)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escalator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_serve_with_a_bad_config_exits_nonzero_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(EXAMPLE.read_text().replace("cost = 1", "cost = 1\nprice = 3", 1))
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "routes.agent.interventions.0.strong.price: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "config file not found"), ("[server\nport = 1", "not valid TOML")],
)
def test_serve_with_an_unreadable_config(tmp_path: Path, content: str | None, message: str) -> None:
    config = tmp_path / "config.toml"
    if content is not None:
        config.write_text(content)
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_commented_intervention_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_API_KEY", "x")
    text = EXAMPLE.read_text()
    block = text[text.index("# [[routes.agent.interventions]]") : text.index("[tenants.acme]")]
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") else "" for line in block.splitlines()
    )
    settings = validate_settings(tomllib.loads(text.replace(block, uncommented)))
    kinds = [iv.kind for iv in settings.routes["agent"].interventions]
    assert kinds == ["strong", "reasoning", "best_of_n"]


def test_a_policy_may_escalate_to_any_intervention_of_its_route(tmp_path: Path) -> None:
    from server.route_plans import RoutePlan

    route = {
        "base": {"upstream": "weak", "model": "w"},
        "policy": {"kind": "always", "intervention": "best_of_n"},
        "interventions": [
            {"kind": "strong", "upstream": "weak", "model": "s"},
            {"kind": "best_of_n", "upstream": "weak", "model": "s", "n": 3},
        ],
    }
    data = {
        "upstreams": {"weak": {"base_url": "http://127.0.0.1:1/v1"}},
        "routes": {"agent": route},
    }
    settings = validate_settings(data)
    plan = RoutePlan.build("agent", settings.routes["agent"])
    from router.decision import BudgetView
    from router.state import StepState

    state = StepState("t", "s", 0, "agent", [{"role": "user", "content": "hi"}])
    assert plan.policy.decide(state, BudgetView(3, 0, 1)).action == "best_of_n"
    route["policy"] = {"kind": "always", "intervention": "reasoning"}
    with pytest.raises(ConfigError, match=r"policy\.intervention 'reasoning' is not one of"):
        validate_settings(data)
