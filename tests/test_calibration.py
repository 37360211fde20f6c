"""Online threshold calibration to a target escalation rate."""

from __future__ import annotations

import random

import pytest

from router.calibration import RateCalibrator


@pytest.mark.parametrize("target", [0.05, 0.2, 0.5])
def test_the_threshold_converges_to_the_score_quantile(target: float) -> None:
    rng = random.Random(0)
    calibrator = RateCalibrator(target_rate=target)
    for _ in range(20_000):
        calibrator.wants_escalation(rng.random())  # uniform scores: the quantile is 1 - r
    assert calibrator.threshold == pytest.approx(1 - target, abs=0.03)
    escalated = sum(calibrator.wants_escalation(rng.random()) for _ in range(10_000))
    assert escalated / 10_000 == pytest.approx(target, abs=0.02)


def test_it_follows_a_drifting_score_distribution() -> None:
    rng = random.Random(1)
    calibrator = RateCalibrator(target_rate=0.1)
    for _ in range(10_000):
        calibrator.wants_escalation(rng.random() * 0.5)  # scores in [0, 0.5)
    assert calibrator.threshold == pytest.approx(0.45, abs=0.05)
    for _ in range(10_000):
        calibrator.wants_escalation(0.5 + rng.random() * 0.5)  # then in [0.5, 1)
    assert calibrator.threshold == pytest.approx(0.95, abs=0.05)


def test_the_achieved_rate_counts_escalations_taken() -> None:
    calibrator = RateCalibrator(target_rate=0.2)
    for i in range(1000):
        calibrator.record(escalated=i % 4 == 0)
    assert calibrator.achieved_rate == pytest.approx(0.25, abs=0.05)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_a_target_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        RateCalibrator(target_rate=bad)
