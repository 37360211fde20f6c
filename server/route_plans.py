"""A configured route made ready to serve: its policy built, its interventions resolved.

The plans are where the helper artifacts a configuration names are read: once at start
(load_plans, after the settings are validated), and again only on a helper reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.artifacts import ArtifactError, HelperArtifact, load_artifact
from router.policies import Policy, PolicyConfigError, PolicyContext, build_policy
from router.state import FEATURE_NAMES
from server.settings import (
    BestOfNIntervention,
    ConfigError,
    InterventionSettings,
    ModelRef,
    RouteSettings,
    Settings,
)

NO_INTERVENTION_COST = 2**31


@dataclass(frozen=True, slots=True)
class Target:
    """Where a step goes: an upstream, a model on it, and what it is (base or a kind), with
    the intervention's settings when it is one."""

    kind: str
    upstream: str
    model: str
    intervention: InterventionSettings | None = None
    prm: HelperArtifact | None = None  # best-of-N's verifier, when it is a PRM


@dataclass(frozen=True, slots=True)
class RoutePlan:
    name: str
    base: Target
    policy: Policy
    interventions: dict[str, tuple[Target, int]]  # kind → (target, cost)
    primary: str | None  # the kind a policy escalates to by default
    decision_timeout_s: float
    shadow: Policy | None = None  # decides beside the policy without acting
    after_draft: bool = False  # the base model answers first; the helper sees the draft
    agreement_checks: bool = True  # escalated steps: would the base have answered the same?

    @classmethod
    def build(cls, name: str, settings: RouteSettings, seed: int | None = None) -> RoutePlan:
        """The route's plan, its helper artifacts read; PolicyConfigError names the field of
        `routes.<name>` whose policy or artifact is bad."""
        primary = settings.interventions[0].kind if settings.interventions else None
        context = PolicyContext(route=name, intervention=primary or "none", seed=seed)
        where = f"routes.{name}"
        policy = _policy(f"{where}.policy", settings.policy, context)
        shadow = None
        if settings.shadow_policy is not None:
            shadow = _policy(f"{where}.shadow_policy", settings.shadow_policy, context)
        interventions: dict[str, tuple[Target, int]] = {
            iv.kind: (_intervention_target(f"{where}.interventions.{i}.{iv.kind}", iv), iv.cost)
            for i, iv in enumerate(settings.interventions)
        }
        return cls(
            name=name,
            base=_target("base", settings.base),
            policy=policy,
            interventions=interventions,
            primary=primary,
            decision_timeout_s=settings.decision_timeout_ms / 1000,
            shadow=shadow,
            after_draft=settings.decide == "after_draft",
            agreement_checks=settings.agreement_checks,
        )

    @property
    def cheapest_cost(self) -> int:
        costs = [cost for _, cost in self.interventions.values()]
        return min(costs) if costs else NO_INTERVENTION_COST

    def intervention(self, kind: str) -> tuple[Target, int]:
        """The intervention of that kind, or the primary one if the route lacks it."""
        found = self.interventions.get(kind)
        if found is None:
            assert self.primary is not None
            found = self.interventions[self.primary]
        return found


def build_plans(settings: Settings) -> dict[str, RoutePlan]:
    """Every route's plan, reading the helper artifacts it names; PolicyConfigError if one is bad
    (a helper reload refuses it and the running plans stay)."""
    return {name: RoutePlan.build(name, route) for name, route in settings.routes.items()}


def load_plans(settings: Settings, source: str = "config") -> dict[str, RoutePlan]:
    """The plans a starting proxy serves: a bad helper artifact is a ConfigError naming the
    configuration, the field and the artifact's file, as a bad configuration is."""
    try:
        return build_plans(settings)
    except PolicyConfigError as exc:
        raise ConfigError(f"{source}: invalid configuration (1 problem(s)):\n  {exc}") from None


def _policy(where: str, spec: dict[str, Any], context: PolicyContext) -> Policy:
    try:
        return build_policy(spec, context)
    except PolicyConfigError as exc:
        raise PolicyConfigError(f"{where}: {exc}") from None


def _target(kind: str, ref: ModelRef) -> Target:
    return Target(kind, ref.upstream, ref.model)


def _intervention_target(where: str, iv: InterventionSettings) -> Target:
    prm = None
    if isinstance(iv, BestOfNIntervention) and iv.prm is not None:
        try:
            prm = load_artifact(iv.prm, FEATURE_NAMES)
        except ArtifactError as exc:  # refused on reload like a helper: the running plans stay
            raise PolicyConfigError(f"{where}: prm: {exc}") from None
    return Target(iv.kind, iv.upstream, iv.model, iv, prm)
