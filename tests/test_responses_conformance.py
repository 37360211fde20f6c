"""Schemathesis against OpenAI's own specification for `POST /responses`, positive mode, as
tests/test_openapi_conformance.py does for chat: requests the spec calls valid are accepted,
and every answer matches the spec. Three models: one passed through to an upstream that speaks
Responses, a route whose upstreams all do, and a route reached through chat completions.

Filtered, and why (each a documented 400 or 404, see README):
- `previous_response_id`: a random id is rightly unknown (404).
- `conversation`, `background`: the proxy keeps no Conversations and runs no background jobs.
- On the routes, a step the helper cannot read (no message, call or call output); on the chat
  route, items, parts and tools chat completions cannot carry, and stored prompts.
- Streams: schemathesis validates each raw event (`{"data": "..."}`) against the event's
  schema, so every correct stream would fail; tests/test_responses.py checks every event's
  JSON against the spec instead.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis import GenerationMode

from server.responses.translate import item_type
from tests.fake_upstream import FakeUpstream
from tests.servers import KEYS, RunningProxy, proxy_config
from tests.test_openapi_conformance import SPEC, _with_discriminator_mappings

schema = schemathesis.openapi.from_dict(
    _with_discriminator_mappings(json.loads(gzip.decompress(SPEC.read_bytes())))
).include(path_regex=r"^/responses$", method="POST")
schema.config.generation.update(modes=[GenerationMode.POSITIVE])
schema.config.phases.update(phases=["examples", "fuzzing"])

CHAT_ITEMS = {"message", "function_call", "function_call_output", "reasoning"}
CHAT_PARTS = {"input_text", "output_text", "refusal", "input_image", "input_file", "input_audio"}
READABLE = {"message", "function_call", "function_call_output"}


@pytest.fixture(scope="module")
def conformance_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    upstream = FakeUpstream()
    upstream.log.keep_requests = False
    upstream.start()
    native = {"upstream": "native", "model": "weak-n"}
    config = proxy_config(
        upstream.base_url,
        tmp_path_factory.mktemp("responses-conformance"),
        server={"max_body_bytes": 8 * 1024 * 1024},
        upstreams={
            "native": {
                "base_url": upstream.base_url,
                "timeout_s": 10,
                "responses": "native",
                "models": ["n-echo"],
            }
        },
    )
    config["routes"]["native-route"] = {
        "base": native,
        "policy": {"kind": "always"},
        "interventions": [{"kind": "strong", "upstream": "native", "model": "strong-n"}],
    }
    proxy = RunningProxy(config).start()
    yield proxy
    proxy.stop()
    upstream.stop()


def _items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    return value if isinstance(value, list) else []


def _readable(body: dict[str, Any]) -> bool:
    if isinstance(body.get("input"), str):
        return True
    return any(isinstance(i, dict) and item_type(i) in READABLE for i in _items(body))


def _speakable_in_chat(body: dict[str, Any]) -> bool:
    for item in _items(body):
        kind = item_type(item)
        if kind not in CHAT_ITEMS:
            return False
        if kind == "function_call" and not all(
            isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")
        ):
            return False
        if kind == "function_call_output" and not isinstance(item.get("call_id"), str):
            return False
        content = item.get("content")
        parts = content if kind == "message" and isinstance(content, list) else []
        if any(p.get("type") not in CHAT_PARTS for p in parts if isinstance(p, dict)):
            return False
    tools = body.get("tools") or []
    return all(t.get("type") == "function" for t in tools) and body.get("prompt") is None


@pytest.mark.parametrize("model", ["n-echo", "native-route", "agent"])
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI must not flake
    suppress_health_check=list(HealthCheck),
)
def test_responses_conform_to_the_openai_spec(
    case: schemathesis.Case, conformance_proxy: RunningProxy, model: str
) -> None:
    assume(isinstance(case.body, dict))
    body = case.body
    body["model"] = model
    body.pop("previous_response_id", None)
    assume(body.get("stream") is not True)  # schemathesis reads an event as {"data": "..."}
    assume(body.get("conversation") in (None, False) and body.get("background") in (None, False))
    if model != "n-echo":
        assume(_readable(body))
    if model == "agent":
        assume(_speakable_in_chat(body))
    headers = {"Authorization": f"Bearer {KEYS['acme']}"}
    case.call_and_validate(base_url=f"{conformance_proxy.url}/v1", headers=headers)
