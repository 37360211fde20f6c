"""SIMULATED worlds for measuring helpers: tasks with hidden hard steps, played through the
proxy's own record format (base.py). By name:

- `textgame`: a text adventure played by a ReAct text agent; observations are user
  messages; visible, trajectory and silent hard steps (textgame.py).
- `gridtext`: BabyAI's GoTo (MiniGrid) told in text; needs the `worlds` extra (gridtext.py).
- `reasoning`: a multi-step reasoning agent on reasoning-gym's puzzles, one checked step
  per reply; needs the `worlds` extra (reasoning.py).
- `dataagent`: the tool-calling data agent of demo/sim/world.py (dataagent.py).
"""

from __future__ import annotations

from typing import Any

from demo.worlds.base import World

NAMES = ("textgame", "gridtext", "reasoning", "dataagent")


def make_world(name: str) -> World[Any]:
    """A world by name; raises ImportError when its environment's package is missing."""
    if name == "textgame":
        from demo.worlds.textgame import TextGameWorld

        return TextGameWorld()
    if name == "gridtext":
        from demo.worlds.gridtext import GridTextWorld

        return GridTextWorld()
    if name == "reasoning":
        from demo.worlds.reasoning import ReasoningWorld

        return ReasoningWorld()
    if name == "dataagent":
        from demo.worlds.dataagent import DataAgentWorld

        return DataAgentWorld()
    raise ValueError(f"unknown world {name!r}; known: {', '.join(NAMES)}")
