"""Schemathesis against OpenAI's own OpenAPI specification, positive mode: requests the spec
calls valid must be accepted, and every answer must match the spec.

Operations checked: POST /chat/completions, POST /completions, GET /models. Filtered, and why:
- GET /chat/completions (listing stored completions) and the rest of the spec: Escalator does
  not serve OpenAI's stored-completion, file, batch or assistant APIs.
- Requests without a body: the spec leaves `requestBody` optional, yet no OpenAI server
  accepts a completion request without one (Escalator answers 400, as they do).
- The generated `model` is replaced by one Escalator serves (a route, or a pass-through model
  for completions); a random model name is rightly a 404, which the spec does not list.
- The spec's discriminators without a `mapping` (e.g. tool calls by `type`) would, by OpenAPI's
  rules, expect schema names as values; real answers carry `"function"`. The mapping is filled
  in from each variant's one-value `enum`, which is what the spec means.
- Streamed answers (`text/event-stream`) are checked for their content type but not against
  a schema: the spec (OpenAPI 3.1) gives the schema of each event's JSON payload, while
  schemathesis validates the raw events (`{"data": "..."}`), so every correct stream would
  fail. The streams' events are checked by tests/test_gateway.py and by the `openai` SDK's own
  models in tests/test_openai_sdk.py. `POST /completions` streams too, as OpenAI's does,
  though the spec lists only JSON for it: `text/event-stream` is added there.
- Every answer passes through the proxy from the fake upstream, which answers as OpenAI does.
- `max_tokens` and `max_completion_tokens` below 1: the spec sets no minimum, yet OpenAI
  refuses them with a 400, and so does Escalator on a route (it budgets by them). The
  routes' `max_n` (an operator's guard, 8 by default) is raised to the spec's maximum, 128.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis import GenerationMode

from tests.fake_upstream import FakeUpstream
from tests.servers import KEYS, RunningProxy, proxy_config

# A copy in the repository (MIT, LICENSE beside it): a fresh clone has nothing beside it.
SPEC = Path(__file__).resolve().parent / "data" / "openai-openapi" / "openapi.json.gz"


def _with_discriminator_mappings(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            discriminator = node.get("discriminator")
            variants = node.get("oneOf") or node.get("anyOf") or []
            if isinstance(discriminator, dict) and "mapping" not in discriminator and variants:
                mapping = {}
                for variant in variants:
                    ref = variant.get("$ref", "")
                    target = schemas.get(ref.rsplit("/", 1)[-1], {})
                    prop = target.get("properties", {}).get(discriminator["propertyName"], {})
                    if len(prop.get("enum", [])) == 1:
                        mapping[prop["enum"][0]] = ref
                if len(mapping) == len(variants):
                    discriminator["mapping"] = mapping
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(spec)
    for path in ("/chat/completions", "/completions"):
        spec["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"] = {}
    return spec


schema = (
    schemathesis.openapi.from_dict(
        _with_discriminator_mappings(json.loads(gzip.decompress(SPEC.read_bytes())))
    )
    .include(path_regex=r"^/(chat/completions|completions|models)$")
    .exclude(operation_id="listChatCompletions")
)
# Positive mode only, from the spec's examples and by fuzzing. The coverage phase also sends
# requests without credentials or body, which are negative cases under another name.
schema.config.generation.update(modes=[GenerationMode.POSITIVE])
schema.config.phases.update(phases=["examples", "fuzzing"])

MODEL_FOR = {"/chat/completions": "agent", "/completions": "echo"}


@pytest.fixture(scope="module")
def conformance_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    upstream = FakeUpstream()
    upstream.log.keep_requests = False
    upstream.start()
    data = tmp_path_factory.mktemp("conformance")
    config = proxy_config(
        upstream.base_url,
        data,
        server={"max_body_bytes": 8 * 1024 * 1024},
        upstreams={
            "weak": {"base_url": upstream.base_url, "timeout_s": 10, "models": ["echo"]},
            "strong": {"base_url": upstream.base_url, "timeout_s": 10},
        },
    )
    for route in config["routes"].values():
        route["max_n"] = 128
    proxy = RunningProxy(config).start()
    yield proxy
    proxy.stop()
    upstream.stop()


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI must not flake
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_the_proxy_conforms_to_the_openai_spec(
    case: schemathesis.Case, conformance_proxy: RunningProxy
) -> None:
    if case.path in MODEL_FOR:
        assume(isinstance(case.body, dict))
        case.body["model"] = MODEL_FOR[case.path]
        for limit in ("max_tokens", "max_completion_tokens"):
            assume(not isinstance(case.body.get(limit), int) or case.body[limit] >= 1)
    headers: dict[str, Any] = {"Authorization": f"Bearer {KEYS['acme']}"}
    case.call_and_validate(base_url=f"{conformance_proxy.url}/v1", headers=headers)


def test_the_spec_was_found() -> None:
    assert SPEC.exists(), SPEC
    assert len(list(schema.get_all_operations())) == 3
