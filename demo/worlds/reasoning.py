"""A SIMULATED multi-step reasoning agent on reasoning-gym puzzles, with three kinds of hard step.

The puzzles and their checkers are reasoning-gym's (a PyPI package nobody here wrote; its
generators are procedural, nothing is downloaded): `chain_sum` ("657 + 233 - 718 - 585 + 9
="), `leg_counting` ("how many legs ... 13 woodlouses, 8 crabs, 11 humans?") and
`base_conversion` ("convert the base-14 number 16d to base-13"). Each puzzle is solved the
way a careful solver writes it out: one term at a time left to right; one kind of animal at
a time added to the running total; Horner's rule digit by digit to decimal, then repeated
division by the target base.

No tools and no `ACTION:` lines: the first user message is the puzzle, each assistant reply
is one step, `Step k: [premise, so] <calculation> = <result>.`, and the last is `Final
answer: <answer>`, which the dataset's own `score_answer` scores: that is the outcome.
Between steps the agent loop's checker answers as a `user` message. It recomputes the
step's arithmetic, never its premises, and shows what is left ("Checked: 13 × 14 = 182.
Legs so far: 182. Still to count: 8 crabs, 11 humans.") or flags a slip ("Check failed:
13 × 14 is not 172. Redo step 1.").

Two simulated models answer: each step is right with a probability that depends on its
HIDDEN difficulty (weak 0.55 on hard steps, 0.985 on routine ones; strong 0.97 and 0.99:
the puzzles are short, so a hard step costs more than in the longer worlds). A step is
hard when any of these holds:

(i)   large operands, visible in the newest observation as a conjunction of two numbers it
      shows: a running value and a term that take two or more carries (or borrows) to
      add; a three-digit leg total and ten or more animals next; a value of 20 or more and
      a base above ten (Horner), or 100 or more to divide by a base above ten. Each number
      alone is routine. A wrong answer here is a guessed final answer half the time (the
      episode is lost), else a slip the checker flags.
(ii)  trajectory: the checker flagged the previous step. A wrong answer is flagged again,
      or now and then a guessed final answer.
(iii) silent: the step rests on a premise the checker cannot see: a minus followed by a
      plus (the weak model subtracts both: "33 - (30 + 8)"), an animal whose legs are often
      miscounted (a spider taken for six-legged, a crab for eight-legged...), a source
      digit written as a letter ("b is 12"). A wrong answer is right arithmetic on a wrong
      premise: the checker says "Checked", the work goes on from the wrong value, and only
      the final answer fails. The step reward (0 instead of progress) tells at once.

About 1.3 hard steps per episode of some 5.7 under the oracle: (i) 0.7, (ii) 0.1 and
(iii) 0.6 (under `never`, where slips are flagged more often, (ii) 0.2). A routine slip is
flagged, which makes the retry hard. The step reward is progress: a share of 1 for each
right step (the final answer included) while the puzzle can still be solved; an episode
may take the procedure's length plus two steps. Measured on 2,000 episodes: never 60 %,
the strong model alone 96 %, the oracle at C = 4 96 % at 1.3 escalations per episode.

Needs the `worlds` extra (`pip install escalator[worlds]`: reasoning-gym).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from demo.worlds.base import answers_rightly, simulated_answers
from demo.worlds.puzzles import TASKS, BaseConversion, ChainSum, LegCount, Procedure
from router.state import Message

SYSTEM = (
    "Solve the problem one step per reply, written `Step <k>: <calculation> = <result>.`; a "
    "checker recomputes each step's arithmetic and shows what is left. When nothing is left, "
    "reply `Final answer: <answer>`."
)


@dataclass(frozen=True)
class ReasoningConfig:
    weak_hard: float = 0.55
    strong_hard: float = 0.97
    weak_routine: float = 0.985
    strong_routine: float = 0.99
    p_guess_large: float = 0.5  # a wrong answer on large operands is a guessed final answer
    p_guess_retry: float = 0.15  # ... and right after a flagged step
    slack: int = 2  # steps allowed beyond the procedure's length


@dataclass
class ReasoningEpisode:
    procedure: Procedure
    score: Callable[[str], float]  # the dataset's own scorer, bound to the puzzle
    state: Any
    seed: str
    plan: int  # the procedure's steps, the final answer included
    messages: list[Message] = field(default_factory=list)
    step: int = 0
    position: int = 0  # steps accepted: the next is `Step {position + 1}`
    flagged: bool = False  # the checker flagged the previous step
    doomed: bool = False  # a wrong premise was accepted: the answer cannot be right any more
    answer: str | None = None
    slack: int = 2

    @property
    def done(self) -> bool:
        return self.answer is not None or self.step >= self.plan + self.slack

    @property
    def hard(self) -> bool:
        if self.done or self.doomed:
            return False  # nothing an intervention does can save the puzzle any more
        move = self.procedure.move(self.state)
        return self.flagged or (move is not None and (move.large or move.misread is not None))


class ReasoningWorld:
    name = "reasoning"

    def __init__(self, config: ReasoningConfig | None = None) -> None:
        try:
            import reasoning_gym
            from reasoning_gym.arithmetic.leg_counting import ANIMALS
        except ImportError as exc:
            raise ImportError(  # make_world's callers skip a world on ImportError
                "the reasoning world needs reasoning-gym: pip install 'escalator[worlds]'"
            ) from exc
        self.config = config or ReasoningConfig()
        self._create: Callable[..., Any] = reasoning_gym.create_dataset
        self._procedures: dict[str, Procedure] = {
            "chain_sum": ChainSum(),
            "leg_counting": LegCount(ANIMALS),
            "base_conversion": BaseConversion(),
        }
        self._datasets: dict[tuple[str, int], Any] = {}

    def new_episode(self, index: int, seed: int) -> ReasoningEpisode:
        task, params = random.Random(f"{seed}/{index}").choice(TASKS)
        if (task, seed) not in self._datasets:  # items are generated from seed + index
            dataset_seed = random.Random(f"{task}/{seed}").getrandbits(31)
            self._datasets[task, seed] = self._create(
                task, size=1 << 30, seed=dataset_seed, **params
            )
        dataset = self._datasets[task, seed]
        entry = dataset[index]
        procedure = self._procedures[task]
        state = procedure.start(entry["metadata"])
        plan = 1
        while (move := procedure.move(state)) is not None:
            state, plan = move.after, plan + 1
        episode = ReasoningEpisode(
            procedure,
            lambda answer: float(dataset.score_answer(answer, entry)),
            procedure.start(entry["metadata"]),
            f"{seed}/{index}",
            plan,
            slack=self.config.slack,
        )
        episode.messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": str(entry["question"]).strip()},
        ]
        return episode

    def answers(self, episode: ReasoningEpisode) -> tuple[bool, bool]:
        """Whether the strong and the weak model, both asked this step, answer it rightly."""
        return simulated_answers(self.config, episode.seed, episode.step, episode.hard)

    def act(self, episode: ReasoningEpisode, escalated: bool) -> float:
        c = self.config
        rng = random.Random(f"{episode.seed}/{episode.step}")
        hard = episode.hard
        right = answers_rightly(c, rng, hard, escalated)
        move = episode.procedure.move(episode.state)
        reward, reply = 0.0, ""
        if move is None:  # the final answer, scored by the dataset
            answer = episode.procedure.answer(episode.state)
            text = self._answer(episode, answer if right else _slip(answer, rng))
            reward = 1.0 / episode.plan if self.succeeded(episode) else 0.0
        elif right or move.misread is not None:  # a wrong premise passes the check
            taken = move if right else move.misread
            assert taken is not None
            episode.doomed |= not right
            reward = 0.0 if episode.doomed else 1.0 / episode.plan
            text = f"Step {episode.position + 1}: {taken.text}."
            episode.state, episode.flagged = taken.after, False
            episode.position += 1
            reply = f"Checked: {taken.calculation} = {taken.result}."
        elif hard and rng.random() < (c.p_guess_large if move.large else c.p_guess_retry):
            text = self._answer(episode, _slip(move.result.split()[0], rng))  # a botched guess
        else:
            slipped = replace(move, result=_slip(move.result, rng))
            text = f"Step {episode.position + 1}: {slipped.text}."
            episode.flagged = True
            reply = (
                f"Check failed: {move.calculation} is not {slipped.result}. "
                f"Redo step {episode.position + 1}."
            )
        episode.messages.append({"role": "assistant", "content": text})
        episode.step += 1
        if not episode.done:
            view = episode.procedure.view(episode.state)
            episode.messages.append({"role": "user", "content": f"{reply}\n{view}"})
        return reward

    @staticmethod
    def _answer(episode: ReasoningEpisode, answer: str) -> str:
        episode.answer = answer
        return f"Final answer: {answer}"

    def succeeded(self, episode: ReasoningEpisode) -> bool:
        return episode.answer is not None and episode.score(episode.answer) == 1.0


def _slip(text: str, rng: random.Random) -> str:
    """An arithmetic slip: the first number in `text` off by one or by ten."""
    found = re.search(r"\d+", text)
    if found is None:
        return text + "0"
    number = int(found.group())
    wrong = abs(number + rng.choice((-10, -1, 1, 10)))
    return (
        text[: found.start()] + str(wrong if wrong != number else number + 1) + text[found.end() :]
    )
