"""A real agent workload: reasoning-gym tasks answered by a small text agent.

Tasks come from reasoning-gym's generators, each with its own answer checker. The agent
talks to the proxy with the official `openai` SDK, one session per task, in plain text: a
reply holds its answer on an `ANSWER: <answer>` line, which ends the episode. A reply
without one is answered with a format error (and, for arithmetic it wrote, its value) that
the next step must recover from. At most `max_steps` model calls; the checked outcome is
reported to `/v1/sessions/{id}/outcome`.

Plain-text answers rather than tool calls: the 0.5B model's tool-call JSON often failed to
parse, which measured the parser more than the model; and on 2 shared cores every generated
token counts, so the agent asks for the answer, not a worked solution.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from demo.episodes import EpisodeResult, escalated, had_budget, report_outcome


@dataclass(frozen=True)
class Family:
    """One reasoning-gym generator with its difficulty parameters."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()


# A mix where *which* task decides whether the strong model helps, and the task's text says
# which it is. Solved by the 0.5B / 1.5B model answering alone, measured through the proxy
# on 20 tasks each (README, "The learning loop"): least common multiples of numbers up to 20
# 20% / 100%; three words reversed 0% / 50%; two-term arithmetic 60% / 90%; letters counted
# in three or four words 65% / 10% (the 1.5B model does worse there: escalating hurts).
FAMILIES: tuple[Family, ...] = (
    Family("lcm", (("max_value", 20),)),
    Family("letter_counting", (("min_words", 3), ("max_words", 4))),
    Family("basic_arithmetic", (("min_terms", 2), ("max_terms", 2), ("max_digits", 2))),
    Family("word_sequence_reversal", (("min_words", 3), ("max_words", 3))),
)
SYSTEM = "Reply with only the final answer, on one line."
_ANSWER = re.compile(
    r"^[ \t*#]*(?:the )?(?:final )?answer[ \t*]*(?:is)?[ \t*]*:?[ \t*]*(.+?)[ \t*]*$", re.I | re.M
)
FORMAT_ERROR = "ERROR: that was not an answer. Reply with only the final answer, on one line."


@cache
def _dataset(family: Family, seed: int, size: int) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(family.name, size=size, seed=seed, **dict(family.params))


def task(
    families: tuple[Family, ...], index: int, seed: int, size: int = 2_000
) -> tuple[Any, dict[str, Any]]:
    """Task `index` of the mix seeded `seed`: (its dataset, for scoring; the entry)."""
    family = families[index % len(families)]
    dataset = _dataset(family, seed, size)
    return dataset, dataset[(index // len(families)) % size]


class GymWorkload:
    def __init__(
        self,
        families: tuple[Family, ...] = FAMILIES,
        max_steps: int = 2,
        max_tokens: int = 32,
    ) -> None:
        self.families = families
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.name = "reasoning-gym (" + ", ".join(f.name for f in families) + ")"

    def play(
        self, proxy_url: str, api_key: str, route: str, index: int, seed: int
    ) -> EpisodeResult:
        from openai import OpenAI

        dataset, entry = task(self.families, index, seed)
        session = f"gym-{seed}-{index}-{uuid.uuid4().hex[:8]}"
        client = OpenAI(
            base_url=f"{proxy_url}/v1",
            api_key=api_key,
            default_headers={"X-Session-Id": session},
            max_retries=0,
            timeout=600,
        )
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": entry["question"]},
        ]
        answer: str | None = None
        used = eligible = steps = 0
        while answer is None and steps < self.max_steps:
            raw = client.chat.completions.with_raw_response.create(
                model=route,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=self.max_tokens,
                temperature=0.0,
            )
            steps += 1
            headers = httpx.Response(200, headers=dict(raw.headers))
            used += escalated(headers)
            eligible += had_budget(headers)
            text = raw.parse().choices[0].message.content or ""
            messages.append({"role": "assistant", "content": text})
            answer = stated_answer(text)
            if answer is None:
                messages.append({"role": "user", "content": FORMAT_ERROR})
        score = float(dataset.score_answer(answer, entry)) if answer else 0.0
        success = score >= 1.0
        with httpx.Client(
            base_url=proxy_url,
            headers={"authorization": f"Bearer {api_key}", "x-session-id": session},
        ) as http:
            report_outcome(http, session, success, score)
        return EpisodeResult(success, steps, used, eligible)


def stated_answer(text: str) -> str | None:
    """The answer a reply states: its `Answer:` line if it has one, else its last line; the
    value after the last `=` of a worked line ("91 / 7 = 13"). None for an empty reply."""
    found = _ANSWER.search(text)
    lines = [line for line in text.splitlines() if line.strip().strip("`")]
    if found is None and not lines:
        return None
    line = found.group(1) if found else lines[-1]
    value = line.rsplit("=", 1)[-1].strip().strip("`*$ ").removesuffix(".").strip()
    return value or None
