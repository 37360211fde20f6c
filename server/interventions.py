"""The interventions that are more than "the same request to another model":
`reasoning` (the request with thinking turned on) and `best_of_n` (n samples, one chosen).

Best-of-N never streams from the upstream: the samples must all be complete before the
verifier can choose. A streaming client gets the chosen answer as SSE events once chosen.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson

from router.artifacts import HelperArtifact
from router.openai_shapes import (
    TOKEN_KINDS,
    Json,
    choice_message,
    choices_of,
    first_message,
    message_text,
    tool_calls,
    usage_of,
    usage_tokens,
)
from router.state import draft_features, extract_features
from router.verifiers import majority_vote
from server.errors import EscalatorError, UpstreamError
from server.settings import BestOfNIntervention, ReasoningIntervention
from server.upstreams import Upstream, UpstreamReply, Upstreams

_JUDGE_PROMPT = (
    "Several candidate answers to the same step of a task follow. Reply with the number of "
    "the best candidate and nothing else.\n\n"
)


def with_reasoning(body: dict[str, Any], spec: ReasoningIntervention) -> dict[str, Any]:
    """The request body with the intervention's parameters merged in."""
    return _merge(body, spec.params)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(slots=True)
class BestOfN:
    """The chosen sample as a complete chat completion, and how it was chosen."""

    reply: UpstreamReply
    record: dict[str, Any]


async def best_of_n(
    upstreams: Upstreams,
    spec: BestOfNIntervention,
    body: dict[str, Any],
    prm: HelperArtifact | None = None,
    headers: dict[str, str] | None = None,
) -> BestOfN:
    """`headers` go with every request of the intervention (a trace's `traceparent`)."""
    started = time.perf_counter()
    upstream = upstreams[spec.upstream]
    request = {
        **{k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")},
        "model": spec.model,
        "temperature": spec.temperature,  # samples need diversity, whatever the client asked
    }
    completions = await _sample(upstream, spec, request, headers)
    choices = [c for completion in completions for c in choices_of(completion)]
    messages = [choice_message(c) for c in choices]
    if not messages:
        raise UpstreamError(f"upstream {upstream.name!r} returned no samples for best-of-N")
    vote = majority_vote(messages)
    chosen, method = vote.chosen, "majority"
    scores: list[float] | None = None
    if prm is not None:
        scores = [_prm_score(prm, body, choice) for choice in choices]
        chosen, method = max(range(len(scores)), key=scores.__getitem__), "prm"
    if spec.judge is not None:
        judged = await _judge(upstreams, spec, body, messages, headers)
        if judged is not None:
            chosen, method = judged, "judge"
    first = completions[0]
    completion = {
        **first,
        "choices": [{**choices[chosen], "index": 0}],
        "usage": _total_usage(completions),
    }
    raw = orjson.dumps(completion)
    record = {
        "samples": len(messages),
        "chosen": chosen,
        "verifier": method,
        "agreement": vote.votes if method == "majority" else None,
        **({"scores": [round(x, 4) for x in scores]} if scores is not None else {}),
    }
    latency = (time.perf_counter() - started) * 1000
    return BestOfN(UpstreamReply(raw, completion, latency), record)


async def _sample(
    upstream: Upstream,
    spec: BestOfNIntervention,
    request: dict[str, Any],
    headers: dict[str, str] | None,
) -> list[dict[str, Any]]:
    if spec.sampling == "n":
        payload = orjson.dumps({**request, "n": spec.n})
        reply = await upstream.complete("chat/completions", payload, headers)
        return [reply.data]
    payload = orjson.dumps(request)
    results = await asyncio.gather(
        *(upstream.complete("chat/completions", payload, headers) for _ in range(spec.n)),
        return_exceptions=True,
    )
    replies = [r.data for r in results if isinstance(r, UpstreamReply)]
    if not replies:  # every sample failed: report the first failure
        error = next(r for r in results if isinstance(r, BaseException))
        raise error if isinstance(error, EscalatorError) else UpstreamError(str(error))
    return replies


async def _judge(
    upstreams: Upstreams,
    spec: BestOfNIntervention,
    body: dict[str, Any],
    messages: list[Json],
    headers: dict[str, str] | None,
) -> int | None:
    """Ask the judge model for the best sample's number; None if its answer is unusable."""
    assert spec.judge is not None
    task = next(
        (message_text(m) for m in reversed(body.get("messages", [])) if m.get("role") == "user"),
        "",
    )
    candidates = "\n\n".join(f"Candidate {i + 1}:\n{_render(m)}" for i, m in enumerate(messages))
    prompt = f"{_JUDGE_PROMPT}Task:\n{task}\n\n{candidates}"
    request = {
        "model": spec.judge.model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": 8,
    }
    try:
        reply = await upstreams[spec.judge.upstream].complete(
            "chat/completions", orjson.dumps(request), headers
        )
        text = message_text(first_message(reply.data))
        number = int("".join(ch for ch in text if ch.isdigit())[:3] or "0")
    except (EscalatorError, ValueError):
        return None  # the vote stands
    return number - 1 if 1 <= number <= len(messages) else None


def _prm_score(prm: HelperArtifact, body: dict[str, Any], choice: Json) -> float:
    """The PRM's P(success) for the state the step reaches with this sample as its answer."""
    messages = [*body.get("messages", []), choice_message(choice)]
    step = sum(1 for m in messages if m.get("role") == "assistant")
    features = extract_features(messages, step)
    features.update(draft_features({"choices": [choice]}))
    return prm.scorer.score(features, messages, 0)


def _render(message: Json) -> str:
    if calls := tool_calls(message):
        return "tool calls: " + orjson.dumps(calls).decode()
    return message_text(message)


def _total_usage(completions: list[dict[str, Any]]) -> dict[str, int]:
    usages = [usage for c in completions if (usage := usage_of(c)) is not None]
    return {
        f"{kind}_tokens": sum(usage_tokens(usage, kind) or 0 for usage in usages)
        for kind in TOKEN_KINDS
    }
