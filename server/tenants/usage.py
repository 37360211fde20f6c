"""Per-tenant usage by day: steps on routes, escalated steps, intervention units.

Each replica tallies the steps it answers in memory (a dict update per step, nothing awaited
on the step's path) and the tenant directory adds the tally to the tenant store's counts
every poll (server/tenants/directory.py), so the counts of all replicas meet in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.trace import StepTrace

USAGE_TTL_S = 8 * 86_400  # a week of days back, and today
_DAY_S = 86_400


@dataclass(slots=True)
class UsageCounts:
    steps: int = 0
    escalated: int = 0
    units: int = 0  # intervention budget units taken

    def add(self, other: UsageCounts) -> None:
        self.steps += other.steps
        self.escalated += other.escalated
        self.units += other.units


def today() -> str:
    """The UTC day, as the budget's daily window names it."""
    return time.strftime("%Y-%m-%d", time.gmtime())


class UsageTally:
    """This replica's counts since the last flush, by day and tenant."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], UsageCounts] = {}
        self._day = ""
        self._day_ends = 0.0

    def count(self, trace: StepTrace) -> None:
        """Count a step on a route (called as its answer starts; pass-through calls are not
        agent steps and are not counted)."""
        if trace.route is None or trace.step is None:
            return
        now = time.time()
        if now >= self._day_ends:  # formatting the day costs more than the rest: once a day
            self._day = today()
            self._day_ends = (now // _DAY_S + 1) * _DAY_S
        key = (self._day, trace.tenant)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = UsageCounts()
        counts.steps += 1
        if trace.action not in ("base", "none"):
            counts.escalated += 1
            if trace.budget_before is not None and trace.budget_after is not None:
                counts.units += trace.budget_before - trace.budget_after

    def take(self) -> dict[tuple[str, str], UsageCounts]:
        """The counts so far, leaving the tally empty."""
        counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: dict[tuple[str, str], UsageCounts]) -> None:
        """Counts a flush could not write, kept for the next one."""
        for key, value in counts.items():
            self._counts.setdefault(key, UsageCounts()).add(value)
