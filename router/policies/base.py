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
PolicyCheck = Callable[[Mapping[str, Any], PolicyContext], None]
_REGISTRY: dict[str, PolicyFactory] = {}
_CHECKS: dict[str, PolicyCheck] = {}


def register_policy(
    kind: str, check: PolicyCheck | None = None
) -> Callable[[PolicyFactory], PolicyFactory]:
    """Add a policy factory to the registry under `kind`. A factory that reads a helper
    artifact comes with a `check` of its parameters that reads nothing (see check_policy)."""

    def add(factory: PolicyFactory) -> PolicyFactory:
        _REGISTRY[kind] = factory
        if check is not None:
            _CHECKS[kind] = check
        return factory

    return add


def policy_kinds() -> list[str]:
    return sorted(_REGISTRY)


def build_policy(spec: Mapping[str, Any], context: PolicyContext) -> Policy:
    """Build a policy from its config table, e.g. `{"kind": "threshold", "threshold": 0.5}`.
    Every kind also takes `intervention`: the kind it escalates to (default: the route's
    first intervention)."""
    kind, params, context = _parse(spec, context)
    return _REGISTRY[kind](params, context)


def check_policy(spec: Mapping[str, Any], context: PolicyContext) -> None:
    """Check a policy's config table as build_policy would, but read no helper artifact:
    what the configuration's validators ask. The artifact is read once, when it is built."""
    kind, params, context = _parse(spec, context)
    check = _CHECKS.get(kind)
    if check is None:
        _REGISTRY[kind](params, context)  # a kind without a check reads nothing to be built
    else:
        check(params, context)


def _parse(
    spec: Mapping[str, Any], context: PolicyContext
) -> tuple[str, dict[str, Any], PolicyContext]:
    """The kind, its own parameters, and the context with the policy's intervention."""
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
    return kind, params, context


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
