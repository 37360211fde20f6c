"""Calibration: meet a target escalation rate by moving the threshold online.

The threshold q tracks the (1 - r) quantile of the helper's scores with the Robbins-Monro
update for quantiles,

    q ← q + η · (1[s ≥ q] - r),

which rises while more than a fraction r of steps score above it and falls while fewer do,
so that in steady state P(s ≥ q) = r. It needs O(1) memory and time per step and follows
drift in the score distribution. The achieved rate is an exponential moving average of the
escalations actually taken (after the budget), reported beside the target.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RateCalibrator:
    target_rate: float
    threshold: float = 0.5
    step: float = 0.01
    achieved_rate: float = 0.0
    smoothing: float = 0.01
    seen: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_rate < 1.0:
            raise ValueError(f"target escalation rate must be in (0, 1), got {self.target_rate}")

    def wants_escalation(self, score: float) -> bool:
        """Whether the score clears the current threshold; then move the threshold."""
        above = score >= self.threshold
        self.threshold += self.step * (float(above) - self.target_rate)
        self.threshold = min(max(self.threshold, 0.0), 1.0)
        return above

    def record(self, escalated: bool) -> None:
        """Count an escalation actually taken (or not) towards the achieved rate."""
        self.seen += 1
        weight = max(self.smoothing, 1.0 / self.seen)  # a plain mean until the EMA warms up
        self.achieved_rate += weight * (float(escalated) - self.achieved_rate)
