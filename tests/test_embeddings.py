"""The MiniLM embedding from PyPI-packaged models, and the fallback when it is missing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import router.minilm
from router.artifacts import load_artifact
from router.decision import BudgetView
from router.embedding import HashedNgrams
from router.minilm import EmbedderUnavailable, MiniLm
from router.policies import PolicyContext, build_policy
from tests.test_helper_artifacts import state, write_helper


@pytest.fixture(scope="module")
def minilm() -> MiniLm:
    return MiniLm(max_tokens=64)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_minilm_embeds_meaning(minilm: MiniLm) -> None:
    failure = minilm.embed("The tool call failed with a KeyError")
    similar = minilm.embed("the function raised an exception: KeyError 'cost'")
    unrelated = minilm.embed("What a lovely sunny day at the beach")
    assert len(failure) == 384
    assert dot(failure, failure) == pytest.approx(1.0, abs=1e-4)
    assert dot(failure, similar) > dot(failure, unrelated) + 0.3


def test_a_helper_on_minilm_runs_off_the_event_loop(tmp_path: Path) -> None:
    artifact = write_helper(tmp_path, embedding={"kind": "minilm", "max_tokens": 64, "dim": 384})
    policy = build_policy(
        {"kind": "learned", "artifact": str(artifact)},
        PolicyContext(route="agent", intervention="strong"),
    )
    assert policy.inline is False
    assert policy.decide(state(True), BudgetView(3, 0, 1)).action == "strong"


def test_without_minilm_the_helper_falls_back_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def not_installed(name: str) -> Path:
        raise EmbedderUnavailable(f"package {name} is not installed")

    monkeypatch.setattr(router.minilm, "_package_dir", not_installed)
    fallback = {"kind": "hashed", "dim": 16}
    with_fallback = write_helper(tmp_path / "a", embedding={"kind": "minilm", "fallback": fallback})
    # weights for the fallback embedding sit beside the (absent) MiniLM ones
    import json

    weights = json.loads((with_fallback / "weights.json").read_text())
    weights["fallback_embedding"] = [0.0] * 16
    (with_fallback / "weights.json").write_text(json.dumps(weights))
    with caplog.at_level(logging.WARNING, logger="escalator.helper"):
        artifact = load_artifact(with_fallback)
    assert isinstance(artifact.scorer.embedding, HashedNgrams)
    assert "falls back to hashed n-grams" in caplog.text

    alone = write_helper(tmp_path / "b", embedding={"kind": "minilm"})
    assert load_artifact(alone).scorer.embedding is None
    assert "features alone" in caplog.text
