"""BabyAI's GoTo task (MiniGrid, a real environment nobody here wrote) played in text.

The environment is `BabyAI-GoTo` on four rooms of 6 × 6 joined by closed doors, with ten
distractor objects: "go to the green box". The agent reads each observation as a `user`
message (the mission, what lies ahead, left and right and how far, the objects in view) and
answers `Thought: ...` and `ACTION: <turn left | turn right | forward | toggle | done>`;
the action is then taken in the environment itself.

Two SIMULATED models choose the action. Both know the map: right is an action on a shortest
path (gridpath.py) to the object they are heading for, wrong is another action. Each is
right with a probability that depends on the step's HIDDEN difficulty (weak 0.4 on hard
steps, 0.985 on routine ones; strong 0.9 and 0.99). A step is hard when:

(i)   conjunction, visible in the newest observation: the target is in view, level with
      the agent (at most one step ahead) and off to one side: the agent must turn now, and
      which way is easy to get wrong. The target in view alone, or an object level with the
      agent alone, is routine.
(ii)  trajectory: the previous action failed ("You can't go that way.", "Nothing happens.").
(iii) silent: a look-alike of the target (same colour or same kind) has just come into
      view while the target is out of view or farther away. A wrong answer adopts it as
      the target: the agent walks to it with ordinary moves, says `done` in front of it,
      and the episode fails.

About 3 hard steps per episode under the oracle: (i) 1.9, (ii) 0.2, (iii) 1.0. Wrong moves
elsewhere only waste actions, but the episode allows the shortest path plus three actions.
The step reward is the progress along the shortest path to the real target (the drop in
its distance, as a share of the distance at the start); the outcome is the environment's
own success.

Needs the `worlds` extra (`pip install escalator[worlds]`: minigrid and gymnasium).
"""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import dataclass, field
from typing import Any

from demo.worlds.base import answers_rightly, simulated_answers
from demo.worlds.gridpath import FORWARD, LEFT, RIGHT, TOGGLE, Pose, best_actions, distances
from demo.worlds.gridview import describe
from router.state import Message

ACTIONS = (LEFT, RIGHT, FORWARD, TOGGLE)
ENV_ACTIONS = {LEFT: "left", RIGHT: "right", FORWARD: "forward", TOGGLE: "toggle"}
DONE = "done"
SYSTEM = (
    "You control a robot in a grid world. Think briefly, then give one action on a line of "
    "its own, as `ACTION: <turn left | turn right | forward | toggle | done>`."
)
THOUGHTS = (
    "The {target} should be this way.",
    "Keep heading for the {target}.",
    "I need a way towards the {target}.",
    "Let me get closer to the {target}.",
)
EVENTS = {LEFT: "You turn left.", RIGHT: "You turn right.", FORWARD: "You move forward."}
NO_WAY, NOTHING = "You can't go that way.", "Nothing happens."


class WorldUnavailable(ImportError):
    """The environment's package is not installed."""


@dataclass(frozen=True)
class GridTextConfig:
    weak_hard: float = 0.4
    strong_hard: float = 0.9
    weak_routine: float = 0.985
    strong_routine: float = 0.99
    room_size: int = 6
    rooms: int = 2  # per side
    distractors: int = 10
    slack: int = 3  # actions allowed beyond the shortest path at the start


@dataclass
class GridTextEpisode:
    env: Any
    seed: str
    target: tuple[Any, ...]  # the objects the mission names (usually one)
    belief: tuple[Any, ...]  # what the agent heads for: the target, or a look-alike
    limit: int
    start_distance: int
    messages: list[Message] = field(default_factory=list)
    step: int = 0
    seen: frozenset[int] = frozenset()  # ids of the objects in the previous view
    look_alike: Any = None  # a look-alike that just came into view, nearer than the target
    last_failed: bool = False
    reached: bool = False
    gave_up: bool = False  # said `done` in front of a look-alike

    @property
    def done(self) -> bool:
        return self.reached or self.gave_up or self.step >= self.limit

    @property
    def doomed(self) -> bool:
        return self.belief != self.target

    @property
    def target_in_view_to_the_side(self) -> bool:
        env = self.env
        for obj in self.target:
            if id(obj) in self.seen:
                where = env.relative_coords(*obj.cur_pos)
                size = env.agent_view_size
                if where is not None and where[0] != size // 2 and size - 1 - where[1] <= 1:
                    return True
        return False

    @property
    def hard(self) -> bool:
        if self.done or self.doomed:
            return False
        return self.last_failed or self.target_in_view_to_the_side or self.look_alike is not None


class GridTextWorld:
    name = "gridtext"

    def __init__(self, config: GridTextConfig | None = None) -> None:
        try:
            from minigrid.envs.babyai.goto import GoTo
        except ImportError as exc:
            raise WorldUnavailable(
                "the gridtext world needs minigrid: pip install 'escalator[worlds]'"
            ) from exc
        self.config = config or GridTextConfig()
        self._env_class: Any = GoTo
        self._paths: dict[tuple[Any, ...], dict[Pose, int]] = {}

    def new_episode(self, index: int, seed: int) -> GridTextEpisode:
        c = self.config
        env = self._env_class(
            room_size=c.room_size, num_rows=c.rooms, num_cols=c.rooms, num_dists=c.distractors
        )
        with contextlib.redirect_stdout(io.StringIO()):  # its level sampler prints rejections
            env.reset(seed=random.Random(f"{seed}/{index}").getrandbits(31))
        target = tuple(env.instrs.desc.obj_set)
        episode = GridTextEpisode(env, f"{seed}/{index}", target, target, 0, 0)
        episode.start_distance = self._distance(episode, target)
        episode.limit = episode.start_distance + c.slack
        episode.seen = self._in_view(env)
        episode.messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Mission: {env.mission}.\n" + describe(env, "")},
        ]
        return episode

    def answers(self, episode: GridTextEpisode) -> tuple[bool, bool]:
        """Whether the strong and the weak model, both asked this step, answer it rightly."""
        return simulated_answers(self.config, episode.seed, episode.step, episode.hard)

    def act(self, episode: GridTextEpisode, escalated: bool) -> float:
        c = self.config
        env = episode.env
        rng = random.Random(f"{episode.seed}/{episode.step}")
        right = answers_rightly(c, rng, episode.hard, escalated)
        if episode.look_alike is not None and not right:
            episode.belief = (episode.look_alike,)  # silently heads for the wrong object
        best = self._best(episode, episode.belief)
        if self._distance(episode, episode.belief) == 0:
            action = DONE
        elif right or episode.doomed:
            action = rng.choice(best)
        else:
            action = rng.choice([a for a in ACTIONS if a not in best])
        before = self._distance(episode, episode.target)
        event = self._take(episode, action)
        after = 0 if episode.reached else self._distance(episode, episode.target)
        seen = self._in_view(env)
        lures = [o for o in self._look_alikes(episode) if id(o) in seen - episode.seen]
        target_seen = any(id(o) in seen for o in episode.target)
        nearer = [o for o in lures if not target_seen or self._distance(episode, (o,)) < after]
        episode.look_alike = min(nearer, key=lambda o: self._distance(episode, (o,)), default=None)
        episode.seen = seen
        name = " ".join((episode.target[0].color, episode.target[0].type))
        thought = rng.choice(THOUGHTS).format(target=name)
        episode.messages.append(
            {"role": "assistant", "content": f"Thought: {thought}\nACTION: {action}"}
        )
        episode.step += 1
        if not episode.done:
            episode.messages.append({"role": "user", "content": describe(env, event)})
        return (before - after) / max(episode.start_distance, 1)

    def succeeded(self, episode: GridTextEpisode) -> bool:
        return episode.reached

    def _take(self, episode: GridTextEpisode, action: str) -> str:
        """Take the action in the environment; the event line the agent reads."""
        env = episode.env
        if action == DONE:  # BabyAI checks the mission after every action, `done` included
            _, _, terminated, _, _ = env.step(env.actions.done)
            episode.reached = bool(terminated)
            episode.gave_up = not episode.reached
            return ""
        pose_before = (*env.agent_pos, env.agent_dir)
        front = env.grid.get(*env.front_pos)
        was_open = front is not None and front.type == "door" and front.is_open
        _, _, terminated, _, _ = env.step(getattr(env.actions, ENV_ACTIONS[action]))
        episode.reached = bool(terminated)
        if action == TOGGLE:
            opened = front is not None and front.type == "door" and front.is_open != was_open
            episode.last_failed = not opened
            state = "open" if opened and front.is_open else "close"
            return f"You {state} the {front.color} door." if opened else NOTHING
        moved = (*env.agent_pos, env.agent_dir) != pose_before
        episode.last_failed = not moved
        return EVENTS[action] if moved else NO_WAY

    def _look_alikes(self, episode: GridTextEpisode) -> list[Any]:
        kinds = {(o.type, o.color) for o in episode.target}
        types, colours = {t for t, _ in kinds}, {c for _, c in kinds}
        return [
            o
            for o in episode.env.grid.grid
            if o is not None
            and o.type in ("ball", "box", "key")
            and (o.type, o.color) not in kinds
            and (o.type in types or o.color in colours)
        ]

    def _distance(self, episode: GridTextEpisode, goal: tuple[Any, ...]) -> int:
        env = episode.env
        dist = self._field(episode, goal)
        return dist.get(_pose(env), 1 << 20)

    def _best(self, episode: GridTextEpisode, goal: tuple[Any, ...]) -> list[str]:
        env = episode.env
        return best_actions(env.grid, self._field(episode, goal), _pose(env)) or list(ACTIONS)

    def _field(self, episode: GridTextEpisode, goal: tuple[Any, ...]) -> dict[Pose, int]:
        """Distances to `goal` given which doors stand open; shared across replays of the
        same episode (every policy plays the same levels)."""
        env = episode.env
        doors = tuple(o.is_open for o in env.grid.grid if o is not None and o.type == "door")
        cells = tuple((int(o.cur_pos[0]), int(o.cur_pos[1])) for o in goal)
        key = (episode.seed, doors, cells)
        if key not in self._paths:
            if len(self._paths) > 200_000:
                self._paths.clear()
            self._paths[key] = distances(env.grid, cells)
        return self._paths[key]

    @staticmethod
    def _in_view(env: Any) -> frozenset[int]:
        grid, visible = env.gen_obs_grid()
        return frozenset(
            id(grid.get(i, j))
            for i in range(grid.width)
            for j in range(grid.height)
            if visible[i, j] and grid.get(i, j) is not None and grid.get(i, j).type != "wall"
        )


def _pose(env: Any) -> Pose:
    return int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir)
