"""The embedded default: what `escalator serve` runs with no configuration.

Real small models from PyPI packages served on loopback (server/local/models.py), route
`agent` with the 0.5B model as base and two interventions on the 1.5B model (`strong`, and
`best_of_n`: three samples and a majority vote, for answers that can be compared), SQLite
budgets and logs under `./escalator-data/`, auth off (bound to loopback only). The tenant
explores a little (ε = 0.1) so its logs can train a helper; once one is installed at
`escalator-data/helpers/current`, the route uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.local.models import STRONG, WEAK

TENANT = "local"
# Three samples of the strong model and a majority vote, for answers that can be compared.
BEST_OF_N: dict[str, Any] = {
    "kind": "best_of_n",
    "upstream": "strong",
    "model": STRONG.name,
    "n": 3,
    "sampling": "parallel",
    "verifier": "majority",
    "cost": 2,
}


def embedded_config(data_dir: Path = Path("escalator-data")) -> dict[str, Any]:
    helper = data_dir / "helpers" / "current"
    policy: dict[str, Any] = (
        {"kind": "learned", "artifact": str(helper)}
        if (helper / "helper.json").exists()
        else {"kind": "threshold", "threshold": 0.5}
    )
    return {
        "server": {"host": "127.0.0.1", "port": 8080, "anonymous_tenant": TENANT},
        "storage": {"dir": str(data_dir), "budget_store": "sqlite"},
        "upstreams": {
            "weak": {"local": WEAK.name, "timeout_s": 300, "models": [WEAK.name]},
            "strong": {"local": STRONG.name, "timeout_s": 600, "models": [STRONG.name]},
        },
        "routes": {
            "agent": {
                "base": {"upstream": "weak", "model": WEAK.name},
                "policy": policy,
                "interventions": [
                    {"kind": "strong", "upstream": "strong", "model": STRONG.name, "cost": 1},
                    BEST_OF_N,
                ],
            }
        },
        "tenants": {
            TENANT: {
                "interventions_per_session": 3,
                "exploration": 0.1,
                "capture_content": True,
            }
        },
    }
