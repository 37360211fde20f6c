"""An LLM judge as the PRM, asked through any OpenAI-compatible endpoint (e.g. vLLM).

For each state the judge reads the newest turns and answers whether the agent will succeed;
P(success) is read off the first token's top logprobs, P(yes) / (P(yes) + P(no)), or, for a
server that returns no logprobs, off the answer itself. A judge is not trained, but its raw
probabilities are rarely calibrated, so `fit` learns a Platt scaling (a logistic on the
judge's logit) on the training sessions' outcomes.

Identical states are asked once; requests run concurrently on a small thread pool.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from router.openai_shapes import choice_message, first_choice, message_text, token_logprobs
from training.linear import ScoreModel, fit_logistic
from training.prm import PrmConfig, StateInputs

PROMPT = (
    "You review an AI agent's work in progress. Read the latest turns of its transcript "
    "and answer with one word, Yes or No: will the agent complete its task correctly?"
)


class JudgeError(RuntimeError):
    pass


class JudgePrm:
    kind = "judge"

    def __init__(self, config: PrmConfig, concurrency: int = 8, timeout_s: float = 60.0) -> None:
        if not config.endpoint or not config.judge_model:
            raise JudgeError("the judge PRM needs an endpoint and a model")
        self.config = config
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.platt: ScoreModel | None = None
        self._cache: dict[str, float] = {}

    def fit(self, inputs: StateInputs, success: np.ndarray, train: np.ndarray) -> None:
        raw = self.raw(inputs)
        logit = _logit(raw)[:, None]
        self.platt = fit_logistic(logit, success, train, l2=1e-3, seed=self.config.seed)

    def state_value(self, inputs: StateInputs) -> np.ndarray:
        raw = self.raw(inputs)
        return raw if self.platt is None else self.platt.predict(_logit(raw)[:, None])

    def raw(self, inputs: StateInputs) -> np.ndarray:
        if inputs.texts is None:
            raise JudgeError("the judge PRM reads the transcript: log with capture_content")
        missing = sorted(set(inputs.texts) - set(self._cache))
        headers = {}
        if key := self.config.extra.get("api_key"):
            headers["authorization"] = f"Bearer {key}"
        with (
            httpx.Client(
                base_url=str(self.config.endpoint).rstrip("/"),
                timeout=self.timeout_s,
                headers=headers,
            ) as client,
            ThreadPoolExecutor(self.concurrency) as pool,
        ):
            for text, p in zip(
                missing, pool.map(lambda t: self._ask(client, t), missing), strict=True
            ):
                self._cache[text] = p
        return np.array([self._cache[t] for t in inputs.texts])

    def _ask(self, client: httpx.Client, text: str) -> float:
        body = {
            "model": self.config.judge_model,
            "messages": [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": f"Transcript:\n{text}\n\nWill the agent succeed?"},
            ],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 10,
        }
        try:
            response = client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge endpoint unreachable: {exc}") from None
        if response.status_code != 200:
            raise JudgeError(
                f"judge endpoint answered {response.status_code}: {response.text[:200]}"
            )
        return judge_probability(response.json())


def judge_probability(completion: dict[str, Any]) -> float:
    """P(yes) from a chat completion: top logprobs of the first token, else the text."""
    choice = first_choice(completion)
    tokens = token_logprobs(choice)
    if tokens:
        yes = no = 0.0
        for candidate in tokens[0].get("top_logprobs") or [tokens[0]]:
            word = str(candidate.get("token", "")).strip().lower()
            if word in ("yes", "y"):
                yes += math.exp(candidate["logprob"])
            elif word in ("no", "n"):
                no += math.exp(candidate["logprob"])
        if yes + no > 0:
            return yes / (yes + no)
    text = message_text(choice_message(choice)).strip().lower()
    if text.startswith("yes"):
        return 0.9
    if text.startswith("no"):
        return 0.1
    return 0.5


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    logit: np.ndarray = np.log(p / (1 - p))
    return logit
