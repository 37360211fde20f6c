"""A MiniGrid observation told in words, as a text agent would be given it.

What lies straight ahead, to the left and to the right of the agent and how far, then
every object in the agent's field of view (MiniGrid's own partial view, occlusion
included) with its place relative to the agent, then what the agent carries.
"""

from __future__ import annotations

from typing import Any

from demo.worlds.gridpath import VECTORS


def describe(env: Any, event: str) -> str:
    lines = [event] if event else []
    heading = env.agent_dir
    for label, direction in (
        ("Ahead", heading),
        ("Left", (heading - 1) % 4),
        ("Right", (heading + 1) % 4),
    ):
        lines.append(f"{label}: {_ray(env, direction)}.")
    lines.append(f"In view: {'; '.join(_in_view(env)) or 'nothing but walls'}.")
    carrying = env.carrying
    lines.append(f"You are carrying {_name(carrying) if carrying else 'nothing'}.")
    return "\n".join(lines)


def _ray(env: Any, direction: int) -> str:
    dx, dy = VECTORS[direction]
    x, y = (int(v) for v in env.agent_pos)
    for steps in range(1, max(env.width, env.height)):
        cell = env.grid.get(x + dx * steps, y + dy * steps)
        if cell is None:
            continue
        if steps == 1:
            return f"{_name(cell)} right in front of you"
        plural = "s" if steps > 2 else ""
        return f"open floor for {steps - 1} step{plural}, then {_name(cell)}"
    return "open floor"


def _in_view(env: Any) -> list[str]:
    grid, visible = env.gen_obs_grid()
    size = env.agent_view_size
    seen = []
    for j in range(grid.height - 1, -1, -1):  # nearest rows first
        for i in range(grid.width):
            cell = grid.get(i, j)
            if not visible[i, j] or cell is None or cell.type == "wall":
                continue
            ahead, side = size - 1 - j, i - size // 2
            if ahead == 0 and side == 0:
                continue  # what the agent carries
            where = [f"{ahead} ahead"] if ahead else []
            if side:
                where.append(f"{abs(side)} to the {'right' if side > 0 else 'left'}")
            seen.append(f"{_name(cell)} {' and '.join(where)}")
    return seen


def _name(cell: Any) -> str:
    if cell.type == "wall":
        return "a wall"
    if cell.type == "door":
        state = "locked" if cell.is_locked else "open" if cell.is_open else "closed"
        return f"{'an' if state == 'open' else 'a'} {state} {cell.color} door"
    article = "an" if cell.color[0] in "aeiou" else "a"
    return f"{article} {cell.color} {cell.type}"
