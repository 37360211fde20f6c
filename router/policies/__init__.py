"""Policies (helpers) by name. Importing this package registers the built-in kinds."""

from router.policies import basic as _basic  # noqa: F401  (registers never/always/random/threshold)
from router.policies import trained as _trained  # noqa: F401  (registers learned/table)
from router.policies.base import (
    Policy,
    PolicyConfigError,
    PolicyContext,
    build_policy,
    check_policy,
    policy_kinds,
    register_policy,
)

__all__ = [
    "Policy",
    "PolicyConfigError",
    "PolicyContext",
    "build_policy",
    "check_policy",
    "policy_kinds",
    "register_policy",
]
