"""Shortest paths in a MiniGrid grid: how many actions from each agent pose to facing a goal.

An agent pose is (x, y, direction) with MiniGrid's directions 0 = east, 1 = south,
2 = west, 3 = north. Actions cost 1: turn left, turn right, move forward into a free cell
or an open door; stepping through a closed (unlocked) door costs 2, a `toggle` that opens
it and the move. A pose is a goal when the cell in front of it holds a goal object, which is
when BabyAI's `GoToInstr` declares success. Distances come from a Dijkstra search backwards
from the goal poses; `best_actions` reads the optimal first actions off them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

VECTORS = ((1, 0), (0, 1), (-1, 0), (0, -1))
LEFT, RIGHT, FORWARD, TOGGLE = "turn left", "turn right", "forward", "toggle"
Pose = tuple[int, int, int]


def enterable(cell: Any) -> bool:
    """The agent may stand here (perhaps after opening a door)."""
    if cell is None:
        return True
    if cell.type == "door":
        return not cell.is_locked
    return cell.type in ("floor", "goal")


def entry_cost(cell: Any) -> int:
    return 2 if cell is not None and cell.type == "door" and not cell.is_open else 1


def distances(grid: Any, goals: Iterable[tuple[int, int]]) -> dict[Pose, int]:
    """Actions needed from each pose until the agent faces one of `goals`."""
    width, height = grid.width, grid.height
    dist: dict[Pose, int] = {}
    queue: list[tuple[int, Pose]] = []
    for gx, gy in goals:
        for d, (dx, dy) in enumerate(VECTORS):
            x, y = gx - dx, gy - dy
            if 0 <= x < width and 0 <= y < height and enterable(grid.get(x, y)):
                dist[(x, y, d)] = 0
                queue.append((0, (x, y, d)))
    heapq.heapify(queue)
    while queue:
        cost, (x, y, d) = heapq.heappop(queue)
        if cost > dist.get((x, y, d), 1 << 30):
            continue
        # Turning: (x, y, d ± 1) turns into (x, y, d) in one action.
        predecessors = [((x, y, (d + 1) % 4), 1), ((x, y, (d - 1) % 4), 1)]
        dx, dy = VECTORS[d]
        px, py = x - dx, y - dy
        if 0 <= px < width and 0 <= py < height and enterable(grid.get(px, py)):
            predecessors.append(((px, py, d), entry_cost(grid.get(x, y))))
        for pose, step in predecessors:
            if cost + step < dist.get(pose, 1 << 30):
                dist[pose] = cost + step
                heapq.heappush(queue, (cost + step, pose))
    return dist


def best_actions(grid: Any, dist: dict[Pose, int], pose: Pose) -> list[str]:
    """The actions that start a shortest path from `pose` (empty when none reaches)."""
    x, y, d = pose
    unreachable = 1 << 30
    dx, dy = VECTORS[d]
    front = grid.get(x + dx, y + dy)
    options = {
        LEFT: 1 + dist.get((x, y, (d - 1) % 4), unreachable),
        RIGHT: 1 + dist.get((x, y, (d + 1) % 4), unreachable),
    }
    if enterable(front):
        action = FORWARD if entry_cost(front) == 1 else TOGGLE
        options[action] = entry_cost(front) + dist.get((x + dx, y + dy, d), unreachable)
    best = min(options.values())
    if best >= unreachable:
        return []
    return [action for action, cost in options.items() if cost == best]
