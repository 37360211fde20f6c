"""The decision core: step state, policies (helpers), budget stores.

Pure Python, importable without FastAPI or any HTTP library.
"""

from router.decision import BASE, BudgetView, Decision
from router.state import StepState, extract_features

__all__ = ["BASE", "BudgetView", "Decision", "StepState", "extract_features"]
