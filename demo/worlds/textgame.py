"""A SIMULATED text adventure played by a ReAct text agent, with three kinds of hard step.

The agent reads each observation as a `user` message ("You are in the kitchen. You see a
sink, a red mug... You are carrying: a key ring.") and answers `Thought: ...` and one line
`ACTION: <command>`, as text agents on TextWorld or ALFWorld do; no tool calls anywhere.
The task is a household chore of some 6 to 20 commands (12 on average) (house.py builds the levels).

Two simulated models answer: each command is right with a probability that depends on the
step's HIDDEN difficulty (weak 0.4 on hard steps, 0.985 on routine ones; strong 0.9 and
0.99). A step is hard when any of these holds:

(i)   conjunction, visible in the newest observation: the player stands in a wet room
      (kitchen, bathroom, ...) while carrying something fragile (a mug, a vase, ...).
      Neither fact alone makes a step hard; both appear on plenty of routine steps.
      A wrong command here breaks the fragile thing half the time (the game is lost).
(ii)  trajectory: the previous command failed ("That is locked.", "Nothing happens.",
      "You can't go that way."), whether the player erred or the house put an obstacle
      in the way. A wrong command fails again, or now and then ends the game.
(iii) silent: the object or receptacle the step needs shares its room with a look-alike.
      A wrong command takes or fills the look-alike, the game answers exactly as it would
      have for the right one, play goes on, and the task fails at the end. Only the step
      reward (the score increment, 0 instead of progress) tells.

About 3.2 hard steps per episode under the oracle: (i) 1.3, (ii) 1.5, (iii) 0.7. A
routine slip leaves a failed-command observation, which makes the next step hard. The step
reward is the task's progress: a share of 1 for each subgoal achieved (take, treat, put)
while the task is still winnable; the outcome is whether the task was done within the
plan's length plus slack.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from demo.worlds.base import answers_rightly, simulated_answers
from demo.worlds.house import Level, Room, Step, fragile, make_level
from router.state import Message

SYSTEM = (
    "You are playing a text adventure. Think briefly, then give exactly one command on a "
    "line of its own, as `ACTION: <command>`."
)
THOUGHTS = {
    "go": ("I should head {arg}.", "Nothing more to do here; {arg} next.", "Let me try {arg}."),
    "take": ("I'll pick that up.", "That looks like what the task asks for.", "Take it."),
    "treat": ("Now to prepare it.", "The task wants it treated first.", "Use the device."),
    "switch": ("Maybe it needs power.", "Let me get this working.", "Try switching it on."),
    "unlock": ("The key ring might help.", "I have a key; try it.", "Unlock it first."),
    "open": ("It's closed; open it.", "I need to get inside.", "Open it up."),
    "put": ("Time to finish the task.", "This is where it goes.", "Put it away."),
}


@dataclass(frozen=True)
class TextGameConfig:
    weak_hard: float = 0.4
    strong_hard: float = 0.9
    weak_routine: float = 0.985
    strong_routine: float = 0.99
    p_lookalike: float = 0.4  # per target object and per receptacle: a silent hard step
    p_locked: float = 0.12  # per door on the route
    p_off: float = 0.3  # the device is off
    p_fatal_fragile: float = 0.5  # a wrong command with a fragile thing in a wet room
    p_fatal_stuck: float = 0.15  # a wrong command right after a failed one
    slack: int = 3  # commands allowed beyond the plan's length


@dataclass
class TextGameEpisode:
    level: Level
    seed: str
    limit: int
    messages: list[Message] = field(default_factory=list)
    step: int = 0
    position: int = 0  # the plan's next command
    room: int = 0
    held: str = ""  # the object carried for the task (a look-alike after a silent mistake)
    receptacle: str = ""
    last_failed: bool = False
    doomed: bool = False  # a silent mistake was made: the task cannot succeed any more
    lost: bool = False  # the game ended in defeat

    @property
    def done(self) -> bool:
        return self.lost or self.position >= len(self.level.plan) or self.step >= self.limit

    @property
    def carrying_fragile_in_wet_room(self) -> bool:
        return self.level.rooms[self.room].wet and any(map(fragile, self.level.inventory))

    @property
    def hard(self) -> bool:
        if self.done or self.doomed:
            return False  # nothing an intervention does can save the task any more
        return (
            self.last_failed
            or self.carrying_fragile_in_wet_room
            or self.level.plan[self.position].decoy is not None
        )


class TextGameWorld:
    name = "textgame"

    def __init__(self, config: TextGameConfig | None = None) -> None:
        self.config = config or TextGameConfig()

    def new_episode(self, index: int, seed: int) -> TextGameEpisode:
        c = self.config
        level = make_level(random.Random(f"{seed}/{index}"), c.p_lookalike, c.p_locked, c.p_off)
        episode = TextGameEpisode(
            level, f"{seed}/{index}", len(level.plan) + c.slack, held=level.target
        )
        episode.receptacle = level.receptacle
        intro = (
            f"Welcome to {level.house}, {level.player}! Your task: {level.goal}.\n\n"
            + _describe(level.rooms[0], level.inventory)
        )
        episode.messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": intro},
        ]
        return episode

    def answers(self, episode: TextGameEpisode) -> tuple[bool, bool]:
        """Whether the strong and the weak model, both asked this step, answer it rightly."""
        return simulated_answers(self.config, episode.seed, episode.step, episode.hard)

    def act(self, episode: TextGameEpisode, escalated: bool) -> float:
        c = self.config
        rng = random.Random(f"{episode.seed}/{episode.step}")
        hard = episode.hard
        right = answers_rightly(c, rng, hard, escalated)
        plan_step = episode.level.plan[episode.position]
        reward = 0.0
        if right or plan_step.decoy is not None:
            if not right:  # the look-alike: accepted like the right one
                episode.doomed = True
                if plan_step.kind == "take":
                    episode.held = plan_step.decoy or episode.held
                else:
                    episode.receptacle = plan_step.decoy or episode.receptacle
            action, event = self._advance(episode, plan_step)
            if right and not episode.doomed:
                reward = plan_step.reward
        else:
            action = self._text(episode, plan_step.wrong_action)
            fatal = c.p_fatal_fragile if episode.carrying_fragile_in_wet_room else c.p_fatal_stuck
            if hard and rng.random() < fatal:
                episode.lost = True
                event = _defeat(episode)
            else:
                event = self._text(episode, plan_step.wrong_event)
                event += "\n" + _status(episode.level.rooms[episode.room], episode.level.inventory)
            episode.last_failed = not episode.lost
        thought = rng.choice(THOUGHTS[plan_step.kind]).format(arg=action.split()[-1])
        episode.messages.append(
            {"role": "assistant", "content": f"Thought: {thought}\nACTION: {action}"}
        )
        episode.step += 1
        if not episode.done or episode.lost:
            episode.messages.append({"role": "user", "content": event})
        return reward

    def succeeded(self, episode: TextGameEpisode) -> bool:
        finished = episode.position >= len(episode.level.plan)
        return finished and not episode.doomed and not episode.lost

    def _advance(self, episode: TextGameEpisode, step: Step) -> tuple[str, str]:
        """The plan's command (or its silent look-alike) is carried out."""
        level = episode.level
        action = self._text(episode, step.action)
        room = level.rooms[episode.room]
        if step.kind == "take" and not step.blocked:
            room.items.remove(episode.held)
            level.inventory.append(episode.held)
        if step.kind == "put":
            level.inventory.remove(episode.held)
        if step.to_room is not None:
            episode.room = step.to_room
            event = _describe(level.rooms[episode.room], level.inventory)
        else:
            event = self._text(episode, step.event)
            event += "\n" + _status(level.rooms[episode.room], level.inventory)
        episode.position += 1
        episode.last_failed = step.blocked
        return action, event

    @staticmethod
    def _text(episode: TextGameEpisode, template: str) -> str:
        return template.format(obj=episode.held, rec=episode.receptacle)


def _describe(room: Room, inventory: Sequence[str]) -> str:
    seen = ", ".join(_a(item) for item in room.items) or "nothing of note"
    lines = [
        f"-= {room.name.title()} =-",
        f"You are in the {room.name}. {room.decor}".rstrip(),
        f"You see {seen}.",
        f"Exits: {', '.join(room.exits)}.",
        f"You are carrying: {_listing(inventory)}.",
    ]
    return "\n".join(lines)


def _status(room: Room, inventory: Sequence[str]) -> str:
    return f"You are in the {room.name}. You are carrying: {_listing(inventory)}."


def _listing(items: Sequence[str]) -> str:
    return ", ".join(_a(item) for item in items) or "nothing"


def _a(item: str) -> str:
    return ("an " if item[0] in "aeiou" else "a ") + item


def _defeat(episode: TextGameEpisode) -> str:
    breakable = [item for item in episode.level.inventory if fragile(item)]
    if breakable and episode.carrying_fragile_in_wet_room:
        what = f"The {breakable[-1]} slips from your wet hands and shatters on the tiles."
    else:
        what = "You stumble over the threshold and twist your ankle badly."
    return f"{what}\n\n*** You have lost ***"
