"""The policy (helper) interface and its registry by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from router.decision import BudgetView, Decision
from router.state import StepState


class PolicyConfigError(ValueError):
    """A policy's configuration is invalid (unknown kind, bad or unknown parameter)."""


class Policy(Protocol):
    """Decides, for one step, between the base model and the route's intervention.

    `decide` is pure and fast: no I/O. `inline` says it is cheap enough to run on the event
    loop; other policies run in a worker thread under the route's decision timeout.
    `thresholded` says its action is its score against a threshold, which calibration to a
    target escalation rate may then move.
    """

    policy_id: str
    inline: bool
    thresholded: bool

    def decide(self, state: StepState, budget: BudgetView) -> Decision: ...


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a policy factory learns from the route it serves."""

    route: str
    intervention: str
    seed: int | None = None


PolicyFactory = Callable[[Mapping[str, Any], PolicyContext], Policy]
_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(kind: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Add a policy factory to the registry under `kind`."""

    def add(factory: PolicyFactory) -> PolicyFactory:
        _REGISTRY[kind] = factory
        return factory

    return add


def policy_kinds() -> list[str]:
    return sorted(_REGISTRY)


def build_policy(spec: Mapping[str, Any], context: PolicyContext) -> Policy:
    """Build a policy from its config table, e.g. `{"kind": "threshold", "threshold": 0.5}`.
    Every kind also takes `intervention`: the kind it escalates to (default: the route's
    first intervention)."""
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in _REGISTRY:
        raise PolicyConfigError(
            f"unknown policy kind {kind!r}; known kinds: {', '.join(policy_kinds())}"
        )
    intervention = params.pop("intervention", None)
    if intervention is not None:
        if not isinstance(intervention, str):
            raise PolicyConfigError("policy intervention must be the kind of an intervention")
        context = replace(context, intervention=intervention)
    return _REGISTRY[kind](params, context)


def take_params(kind: str, params: Mapping[str, Any], allowed: dict[str, type]) -> dict[str, Any]:
    """Check a policy's parameters against the names and types it accepts."""
    unknown = set(params) - set(allowed)
    if unknown:
        raise PolicyConfigError(
            f"policy {kind!r} does not accept {', '.join(sorted(unknown))}; "
            f"it accepts: {', '.join(sorted(allowed)) or 'nothing'}"
        )
    checked: dict[str, Any] = {}
    for name, value in params.items():
        expected = allowed[name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise PolicyConfigError(
                f"policy {kind!r}: {name} must be {expected.__name__}, got {value!r}"
            )
        checked[name] = value
    return checked
