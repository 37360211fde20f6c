"""Helper artifacts: loading and checking them, the `learned` and `table` policies, the
hashed embedding, and reloading helpers on a running proxy."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.artifacts import ArtifactError, load_artifact
from router.decision import BudgetView
from router.embedding import HashedNgrams
from router.policies import PolicyConfigError, PolicyContext, build_policy, check_policy
from router.state import FEATURE_NAMES, StepState, extract_features
from tests.helpers import policy_of_next_step as next_step_policy
from tests.servers import RunningProxy

StartProxy = Callable[..., RunningProxy]
CONTEXT = PolicyContext(route="agent", intervention="strong")
ADMIN_KEY = "admin-secret"


def write_helper(
    directory: Path,
    kind: str = "learned",
    *,
    bias: float = -3.0,
    error_weight: float = 6.0,
    embedding: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
) -> Path:
    """A helper that escalates on a failed tool call (learned), or a table over its score."""
    directory.mkdir(parents=True, exist_ok=True)
    features = ["last_tool_error", "step"]
    helper: dict[str, Any] = {
        "format": 1,
        "kind": kind,
        "features": features,
        "embedding": embedding,
        "weights": "weights.json",
        "training": {"data_digest": "abc123"},
    }
    if kind == "learned":
        helper["thresholds"] = {"0": 2.0, "default": 0.5}  # no budget left: never worth it
    else:  # P(success) low → escalate while budget remains
        helper["bins"] = [0.0, 0.5, 1.0]
        helper["actions"] = [[0, 1, 1], [0, 0, 0]]
    helper.update(spec or {})
    dim = embedding.get("dim", 0) if embedding else 0
    weights = {
        "bias": bias,
        "features": [error_weight, 0.0],
        "embedding": [0.0] * dim,
        "budget": 0.0,
    }
    (directory / "helper.json").write_text(json.dumps(helper))
    (directory / "weights.json").write_text(json.dumps(weights))
    return directory


def state(error: bool) -> StepState:
    messages = [{"role": "user", "content": "go"}]
    if error:
        messages += [
            {"role": "assistant", "content": "run"},
            {"role": "tool", "content": "Error: boom"},
        ]
    return StepState("acme", "s", 1, "agent", messages, extract_features(messages, 1))


def test_a_learned_helper_escalates_where_it_learned_to(tmp_path: Path) -> None:
    policy = build_policy({"kind": "learned", "artifact": str(write_helper(tmp_path))}, CONTEXT)
    roomy = BudgetView(limit=3, used=0, cheapest_cost=1)
    stuck, calm = policy.decide(state(True), roomy), policy.decide(state(False), roomy)
    assert stuck.action == "strong" and stuck.p_escalate > 0.9 and stuck.reason == "learned"
    assert calm.action == "base" and calm.p_escalate < 0.1
    assert policy.policy_id.startswith("learned@")
    # The threshold for a remaining budget of 0 is out of reach: budget-aware.
    assert policy.decide(state(True), BudgetView(limit=3, used=3, cheapest_cost=1)).action == "base"


def test_a_table_helper_looks_up_score_bin_and_budget(tmp_path: Path) -> None:
    # A P(success) model that drops on a failed tool call: 1 - sigmoid(...) shape via bias.
    artifact = write_helper(tmp_path, "table", bias=3.0, error_weight=-6.0)
    policy = build_policy({"kind": "table", "artifact": str(artifact)}, CONTEXT)
    assert policy.decide(state(True), BudgetView(3, 0, 1)).action == "strong"
    assert policy.decide(state(True), BudgetView(3, 3, 1)).action == "base"  # budget 0 column
    assert policy.decide(state(False), BudgetView(3, 0, 1)).action == "base"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format 2"),
        ({"kind": "oracle"}, "kind 'oracle'"),
        ({"features": ["last_tool_error", "mood"]}, "does not compute: mood"),
        ({"weights": "../weights.json"}, "must name a .json file"),
        ({"thresholds": {"1": 0.5}}, "needs thresholds with a 'default'"),
        ({"embedding": {"kind": "word2vec"}}, "embedding must be"),
    ],
)
def test_a_bad_helper_json_is_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    write_helper(tmp_path, spec=change)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tmp_path, FEATURE_NAMES)


def test_nan_or_missing_weights_are_refused(tmp_path: Path) -> None:
    write_helper(tmp_path)
    (tmp_path / "weights.json").write_text('{"bias": NaN, "features": [1, 2]}')
    with pytest.raises(ArtifactError, match="bias must be a finite number"):
        load_artifact(tmp_path)
    (tmp_path / "weights.json").write_text('{"bias": 0, "features": [1]}')
    with pytest.raises(ArtifactError, match="features has 1 weights, expected 2"):
        load_artifact(tmp_path)
    (tmp_path / "weights.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(tmp_path)


def test_hidden_units_add_what_the_linear_part_cannot(tmp_path: Path) -> None:
    """One ReLU unit fires on a failed tool call late in a session only (a conjunction);
    malformed units are refused."""
    write_helper(tmp_path, bias=-3.0, error_weight=0.0)
    weights = json.loads((tmp_path / "weights.json").read_text())
    unit = {"features": [[4.0, 1.0]], "bias": [-8.0], "output": [1.0], "budget": [0.0]}
    (tmp_path / "weights.json").write_text(json.dumps({**weights, "hidden": unit}))
    policy = build_policy({"kind": "learned", "artifact": str(tmp_path)}, CONTEXT)
    roomy = BudgetView(limit=3, used=0, cheapest_cost=1)
    late = replace(state(True), features={**state(True).features, "step": 10.0})
    early = replace(late, features={**late.features, "step": 1.0})
    assert policy.decide(late, roomy).action == "strong"  # 4 + 10 - 8 = 6, minus 3
    assert policy.decide(early, roomy).action == "base"  # the unit stays off
    assert policy.decide(replace(late, features={"step": 10.0}), roomy).action == "base"
    for broken, message in [
        ({**unit, "output": [1.0, 2.0]}, "hidden.output has 2 weights, expected 1"),
        ({**unit, "features": [[4.0]]}, "hidden.features has 1 weights, expected 2"),
        ({**unit, "features": []}, "hidden.features needs one row per unit"),
        ({**unit, "bias": [float("nan")]}, "hidden.bias must be a finite number"),
    ]:
        (tmp_path / "weights.json").write_text(json.dumps({**weights, "hidden": broken}))
        with pytest.raises(ArtifactError, match=message):
            load_artifact(tmp_path)


def test_hidden_units_read_only_the_inputs_some_unit_weighs() -> None:
    """A network fitted on part of the embedding weighs the rest at zero: those inputs are
    skipped, and the units score as the full rows would."""
    from router.artifacts import hidden_units

    units = hidden_units([(0.0, 2.0, 0.0, 1.0), (0.0, -1.0, 0.0, 0.0)], (0.5, 0.0), (1.0, 2.0))
    assert units.columns == (1, 3) and units.rows == ((2.0, 1.0), (-1.0, 0.0))
    assert list(units.read([9.0, 3.0, 9.0, 4.0])) == [3.0, 4.0]
    assert list(hidden_units([(0.0, 2.0)], (0.0,), (1.0,)).read([5.0, 7.0])) == [7.0]
    assert list(hidden_units([(0.0, 0.0)], (1.0,), (1.0,)).read([5.0, 7.0])) == []


def test_a_policy_naming_a_bad_artifact_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match=r"helper\.json: missing"):
        build_policy({"kind": "learned", "artifact": str(tmp_path / "nothing")}, CONTEXT)
    table = write_helper(tmp_path / "t", "table")
    with pytest.raises(PolicyConfigError, match="holds a 'table' helper"):
        build_policy({"kind": "learned", "artifact": str(table)}, CONTEXT)


def test_checking_a_policy_reads_no_artifact(tmp_path: Path) -> None:
    """What the configuration's validators run: the table's shape, not the directory."""
    check_policy({"kind": "learned", "artifact": str(tmp_path / "none")}, CONTEXT)
    with pytest.raises(PolicyConfigError, match="needs artifact"):
        check_policy({"kind": "table"}, CONTEXT)
    with pytest.raises(PolicyConfigError, match=r"threshold must be in \[0, 1\]"):
        check_policy({"kind": "threshold", "threshold": 2.0, "prm": str(tmp_path)}, CONTEXT)


def test_the_hashed_embedding_is_stable_normalised_and_discriminating() -> None:
    embed = HashedNgrams(dim=64)
    a, b = embed.embed("Error: file not found"), embed.embed("error:   FILE not found")
    c = embed.embed("The answer is 42")
    assert a == b  # case and spacing do not matter
    assert sum(v * v for v in a) == pytest.approx(1.0)
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.5
    assert embed.embed("") == [0.0] * 64


def test_a_helper_with_an_embedding_loads_and_decides(tmp_path: Path) -> None:
    artifact = write_helper(tmp_path, embedding={"kind": "hashed", "dim": 32})
    policy = build_policy({"kind": "learned", "artifact": str(artifact)}, CONTEXT)
    assert policy.decide(state(True), BudgetView(3, 0, 1)).action == "strong"


# -- reloading on a running proxy ----------------------------------------------------------


def helped_route(artifact: Path) -> dict[str, Any]:
    return {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": "learned", "artifact": str(artifact)},
        "interventions": [{"kind": "strong", "upstream": "strong", "model": "strong-model"}],
    }


def test_reload_swaps_in_a_new_helper_and_refuses_a_bad_one(
    start_proxy: StartProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESCALATOR_TEST_ADMIN_KEY", ADMIN_KEY)
    current = write_helper(tmp_path / "current")
    proxy = start_proxy(
        routes={"helped": helped_route(current)},
        server={"admin_key_env": "ESCALATOR_TEST_ADMIN_KEY"},
    )
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}

    def policy_of_next_step() -> str:
        return next_step_policy(proxy, "helped", "sk-acme-test")

    before = policy_of_next_step()
    write_helper(current, bias=-1.0)  # a retrained helper in the same directory
    reloaded = httpx.post(f"{proxy.url}/admin/helpers/reload", headers=admin)
    assert reloaded.status_code == 200, reloaded.text
    after = policy_of_next_step()
    assert after != before and after.startswith("learned@")

    (current / "weights.json").write_text('{"bias": NaN}')
    refused = httpx.post(f"{proxy.url}/admin/helpers/reload", headers=admin)
    assert refused.status_code == 409
    assert "bias must be a finite number" in refused.json()["error"]["message"]
    assert policy_of_next_step() == after  # the running helper stayed


def test_reload_refuses_a_broken_prm_verifier(
    start_proxy: StartProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A best-of-N verifier's PRM is re-read on reload too, and refused like a helper."""
    monkeypatch.setenv("ESCALATOR_TEST_ADMIN_KEY", ADMIN_KEY)
    prm = write_helper(tmp_path / "prm")
    best_of_n = {"kind": "best_of_n", "upstream": "strong", "model": "strong-model"}
    route = {
        "base": {"upstream": "weak", "model": "weak-model"},
        "policy": {"kind": "never"},
        "interventions": [{**best_of_n, "verifier": "prm", "prm": str(prm)}],
    }
    proxy = start_proxy(
        routes={"sampled": route}, server={"admin_key_env": "ESCALATOR_TEST_ADMIN_KEY"}
    )
    (prm / "weights.json").write_text('{"bias": NaN}')
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    refused = httpx.post(f"{proxy.url}/admin/helpers/reload", headers=admin)
    assert refused.status_code == 409
    assert "bias must be a finite number" in refused.json()["error"]["message"]


def test_reload_needs_the_admin_key(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = start_proxy()
    assert httpx.post(f"{proxy.url}/admin/helpers/reload").status_code == 404  # admin API off
    monkeypatch.setenv("ESCALATOR_TEST_ADMIN_KEY", ADMIN_KEY)
    proxy = start_proxy(server={"admin_key_env": "ESCALATOR_TEST_ADMIN_KEY"})
    wrong = httpx.post(f"{proxy.url}/admin/helpers/reload", headers={"authorization": "Bearer no"})
    assert wrong.status_code == 401


# -- reading them at start ----------------------------------------------------------------


def serve_config(tmp_path: Path, helper: Path, prm: Path, verifier: Path) -> Path:
    """A configuration naming three helper directories: a policy's, a shadow policy's PRM and
    a best-of-N verifier's."""
    config = tmp_path / "escalator.toml"
    config.write_text(
        f"""
[storage]
dir = {json.dumps(str(tmp_path / "data"))}
budget_store = "memory"

[upstreams.weak]
base_url = "http://127.0.0.1:9/v1"

[routes.helped]
base = {{ upstream = "weak", model = "weak-model" }}
policy = {{ kind = "learned", artifact = {json.dumps(str(helper))} }}
shadow_policy = {{ kind = "threshold", prm = {json.dumps(str(prm))} }}
interventions = [{{ kind = "best_of_n", upstream = "weak", model = "strong-model", \
verifier = "prm", prm = {json.dumps(str(verifier))} }}]
"""
    )
    return config


def test_serve_reads_each_helper_artifact_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from server.cli import serve

    directories = [write_helper(tmp_path / name) for name in ("helper", "prm", "verifier")]
    config = serve_config(tmp_path, *directories)
    reads: list[Path] = []
    read_text = Path.read_text

    def counted(path: Path, *args: Any, **kwargs: Any) -> str:
        if path.name == "helper.json":
            reads.append(path)
        return read_text(path, *args, **kwargs)

    served: list[Any] = []
    monkeypatch.setattr(Path, "read_text", counted)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(app))
    assert serve(str(config), host=None, port=0, log_level="warning") == 0
    assert sorted(reads) == sorted(d / "helper.json" for d in directories)
    plan = served[0].state.service.routes["helped"]
    assert plan.policy.policy_id.startswith("learned@") and plan.shadow is not None
    assert plan.interventions["best_of_n"][0].prm is not None


def test_serve_refuses_a_bad_helper_artifact_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import serve

    helper, verifier = write_helper(tmp_path / "helper"), write_helper(tmp_path / "verifier")
    config = serve_config(tmp_path, helper, tmp_path / "missing", verifier)
    assert serve(str(config), host=None, port=0, log_level="warning") == 2
    error = capsys.readouterr().err
    assert f"{config}: invalid configuration" in error
    assert f"routes.helped.shadow_policy: policy 'threshold': prm: {tmp_path}/missing" in error
    assert "helper.json: missing" in error and "Traceback" not in error


def test_threshold_on_a_prm_score(tmp_path: Path) -> None:
    # A PRM whose P(success) drops on a failed tool call: the risk 1 - P(success) rises.
    prm = write_helper(tmp_path, bias=3.0, error_weight=-6.0)
    policy = build_policy({"kind": "threshold", "threshold": 0.5, "prm": str(prm)}, CONTEXT)
    stuck, calm = (
        policy.decide(state(True), BudgetView(3, 0, 1)),
        policy.decide(state(False), BudgetView(3, 0, 1)),
    )
    assert stuck.action == "strong" and stuck.p_escalate > 0.9
    assert calm.action == "base" and calm.p_escalate < 0.1
    assert "/prm@" in policy.policy_id
    with pytest.raises(PolicyConfigError, match="prm:"):
        build_policy({"kind": "threshold", "prm": str(tmp_path / "none")}, CONTEXT)
