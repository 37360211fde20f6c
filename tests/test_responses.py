"""`/v1/responses` through the proxy with the official SDK, against an upstream that serves
the Responses API itself and one reached through chat completions (the same fake, told
apart by the upstream's `responses` setting; which path it was sent to is checked)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fake_upstream import FakeUpstream
from tests.helpers import metric, records, wait_until
from tests.openai_spec import nonconforming
from tests.servers import KEYS, RunningProxy

STRONG = {"kind": "strong", "upstream": "strong", "model": "strong-model", "cost": 1}
NATIVE_STRONG = {"kind": "strong", "upstream": "native", "model": "strong-n", "cost": 1}
NATIVE = {
    "native": {
        "base_url": "",  # filled in with the fake's address
        "timeout_s": 1,
        "responses": "native",
        "models": ["n-echo", "die-mid-stream-n"],
    }
}
ROUTES = {
    "always-native": {
        "base": {"upstream": "native", "model": "weak-n"},
        "policy": {"kind": "always"},
        "interventions": [NATIVE_STRONG],
    },
    # Interventions that work on chat completions, on an upstream that speaks Responses.
    "vote-native": {
        "base": {"upstream": "native", "model": "weak-n"},
        "policy": {"kind": "always"},
        "interventions": [
            {"kind": "best_of_n", "upstream": "native", "model": "vote", "n": 4, "cost": 1}
        ],
    },
    "draft-native": {
        "base": {"upstream": "native", "model": "weak-n"},
        "policy": {"kind": "never"},
        "decide": "after_draft",
        "interventions": [NATIVE_STRONG],
    },
    "never-native": {
        "base": {"upstream": "native", "model": "weak-n"},
        "policy": {"kind": "never"},
        "interventions": [NATIVE_STRONG],
    },
}
STRONG_MODEL = {"always": "strong-model", "always-native": "strong-n"}
# (route, the upstream path its steps reach)
BOTH = pytest.mark.parametrize(
    ("route", "path"),
    [("always", "/v1/chat/completions"), ("always-native", "/v1/responses")],
    ids=["chat-upstream", "responses-upstream"],
)
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "calc",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
        "strict": False,
    }
]
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
def rproxy(start_proxy: Callable[..., RunningProxy], fake_upstream: FakeUpstream) -> RunningProxy:
    native = {"native": {**NATIVE["native"], "base_url": fake_upstream.base_url}}
    return start_proxy(upstreams=native, routes=ROUTES)


@pytest.fixture
def sdk(rproxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{rproxy.url}/v1",
        api_key=KEYS["acme"],
        default_headers={"x-session-id": "ep-1"},
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture
def chained(rproxy: RunningProxy) -> Iterator[openai.OpenAI]:
    """A client naming no session: a chain of responses is one."""
    with openai.OpenAI(base_url=f"{rproxy.url}/v1", api_key=KEYS["acme"], max_retries=0) as client:
        yield client


def steps(proxy: RunningProxy, count: int) -> list[dict[str, Any]]:
    """The step records, once `count` are logged (escalated steps also log agreement checks)."""
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [r for r in records(proxy, 0) if r["kind"] == "step"]
        return len(found) >= count

    wait_until(logged)
    return found


def sent_for(fake: FakeUpstream, model: str) -> dict[str, Any]:
    """The last request the fake upstream had for `model` (background checks send others)."""
    return next(r for r in reversed(fake.log.requests) if r.get("model") == model)


def path_of(fake: FakeUpstream, model: str) -> str:
    pairs = zip(fake.log.requests, fake.log.paths, strict=True)
    return next(p for r, p in reversed(list(pairs)) if r.get("model") == model)


def http(proxy: RunningProxy, tenant: str = "acme") -> httpx.Client:
    headers = {"authorization": f"Bearer {KEYS[tenant]}"}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=10)


@BOTH
def test_a_plain_response_is_a_step(
    sdk: openai.OpenAI,
    rproxy: RunningProxy,
    fake_upstream: FakeUpstream,
    route: str,
    path: str,
) -> None:
    raw = sdk.responses.with_raw_response.create(
        model=route, input="What is 2+2?", instructions="Answer briefly.", max_output_tokens=64
    )
    Response.model_validate_json(raw.http_response.content)  # the SDK's types, strictly
    assert nonconforming("Response", raw.http_response.json()) == []  # and OpenAI's spec
    response = raw.parse()
    assert response.output_text == "echo: What is 2+2?"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.total_tokens > 0
    assert raw.headers["x-escalator-action"] == "strong"
    assert raw.headers["x-escalator-budget-remaining"] == "1"
    assert raw.headers["x-escalator-score"] == "1.0000"
    assert path_of(fake_upstream, STRONG_MODEL[route]) == path
    sent = sent_for(fake_upstream, STRONG_MODEL[route])
    if path == "/v1/responses":  # the Responses request itself, the proxy keeping it
        assert sent["input"][-1]["content"] == "What is 2+2?"
        assert sent["instructions"] == "Answer briefly." and sent["store"] is False
        assert sent["max_output_tokens"] == 64
    else:
        assert sent["messages"] == [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is 2+2?"},
        ]
        assert sent["max_tokens"] == 64
    (record,) = steps(rproxy, 1)
    assert (record["session"], record["step"], record["route"]) == ("ep-1", 0, route)
    assert record["decision"]["action"] == "strong"
    assert record["upstream"]["model"] == "strong-" + ("n" if "native" in route else "model")
    assert record["upstream"]["prompt_tokens"] in (11, 13)
    assert record["state"]["messages"][-1] == {"role": "user", "content": "What is 2+2?"}
    assert record["response"] == {"content": "echo: What is 2+2?", "tool_calls": None}


@BOTH
def test_a_streamed_response_sends_typed_events_ending_in_completed(
    sdk: openai.OpenAI, rproxy: RunningProxy, fake_upstream: FakeUpstream, route: str, path: str
) -> None:
    with http(rproxy) as client:
        raw = client.post(
            "/v1/responses",
            json={"model": route, "input": "stream me", "stream": True},
            headers={"x-session-id": "ep-s"},
        )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-escalator-action"] == "strong"
    for block in raw.text.strip().split("\n\n"):  # every event validates against the SDK's types
        name, data = block.split("\n")
        event = STREAM_EVENT.validate_json(data.removeprefix("data: "))
        assert name == f"event: {event.type}"
        assert nonconforming("ResponseStreamEvent", orjson.loads(data[6:])) == [], event.type

    events = list(sdk.responses.create(model=route, input="stream me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.id == events[-1].response.id  # type: ignore[union-attr]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text and text.strip() == "echo: stream me"
    assert final.usage is not None and final.usage.output_tokens > 0
    assert path_of(fake_upstream, STRONG_MODEL[route]) == path
    logged = steps(rproxy, 2)
    assert [r["response"]["content"].strip() for r in logged] == ["echo: stream me"] * 2
    assert all(r["upstream"]["completion_tokens"] for r in logged)
    # the streamed response was stored before its last event: it can be read back at once
    assert sdk.responses.retrieve(final.id).output_text == text


@BOTH
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_function_call_round_trip_on_a_chain(
    chained: openai.OpenAI,
    rproxy: RunningProxy,
    fake_upstream: FakeUpstream,
    route: str,
    path: str,
    stream: bool,
) -> None:
    first = _create(chained, stream, model=route, input="What is 6*7?", tools=TOOLS)
    (call,) = first.output
    assert call.type == "function_call" and call.name == "calc"
    assert call.call_id and call.arguments == '{"echo":true}'
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "42"}
    second = _create(
        chained, stream, model=route, previous_response_id=first.id, input=[output], tools=TOOLS
    )
    assert second.output_text.strip() == "tool said: 42"
    assert second.previous_response_id == first.id
    sent = sent_for(fake_upstream, STRONG_MODEL[route])
    if path == "/v1/responses":
        assert [i.get("type", "message") for i in sent["input"]] == [
            "message",
            "function_call",
            "function_call_output",
        ]
    else:
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.call_id,
            "content": "42",
        }
        assert sent["tools"][0]["function"]["name"] == "calc"
    # one session, named by the chain's first response; the function's output an observation
    one, two = steps(rproxy, 2)
    assert one["session"] == two["session"] == first.id
    assert (one["step"], two["step"]) == (0, 1)
    assert one["response"]["tool_calls"][0]["function"]["name"] == "calc"
    assert two["state"]["messages"][-1]["role"] == "tool"
    assert two["state"]["features"]["n_messages"] == 3


def _create(client: openai.OpenAI, stream: bool, **params: Any) -> Response:
    if not stream:
        return client.responses.create(**params)
    events = list(client.responses.create(stream=True, **params))
    for event in events:  # each valid for the SDK's types (not merely constructed) and spec
        STREAM_EVENT.validate_python(event.to_dict())
        assert nonconforming("ResponseStreamEvent", event.to_dict()) == [], event.type
    assert events[-1].type == "response.completed"
    if any(e.type == "response.output_item.added" for e in events):
        done = [e for e in events if e.type == "response.output_item.done"]
        assert done, "every item added is done"
    return events[-1].response


def test_a_chain_is_one_session_and_spends_one_budget(
    rproxy: RunningProxy, chained: openai.OpenAI
) -> None:
    client = chained
    actions, previous = [], None
    for turn in range(3):
        raw = client.responses.with_raw_response.create(
            model="always", input=f"turn {turn}", previous_response_id=previous
        )
        actions.append(raw.headers["x-escalator-action"])
        previous = raw.parse().id
    assert actions == ["strong", "strong", "base"]  # acme's sessions hold 2 interventions
    logged = steps(rproxy, 3)
    assert len({r["session"] for r in logged}) == 1
    assert [r["step"] for r in logged] == [0, 1, 2]
    assert logged[2]["decision"]["reason"] == "budget_exhausted"
    assert [m["content"] for m in logged[2]["state"]["messages"] if m["role"] == "user"] == [
        "turn 0",
        "turn 1",
        "turn 2",
    ]
    with http(rproxy) as admin:
        session = admin.get(f"/v1/sessions/{logged[0]['session']}").json()
    assert session["steps"] == 3 and session["interventions_used"] == 2


def test_an_explicit_session_wins_and_store_false_keeps_nothing(rproxy: RunningProxy) -> None:
    with http(rproxy) as client:
        body = {"model": "never", "input": "hi", "metadata": {"session_id": "ep-meta"}}
        first = client.post("/v1/responses", json=body).json()
        alone = client.post("/v1/responses", json={"model": "never", "input": "x", "store": False})
        assert alone.status_code == 200
        missing = client.get(f"/v1/responses/{alone.json()['id']}")
    assert missing.status_code == 404
    one, two = steps(rproxy, 2)
    assert one["session"] == "ep-meta" and first["metadata"] == {"session_id": "ep-meta"}
    assert two.get("one_step") is True


def test_get_delete_and_tenants(rproxy: RunningProxy, sdk: openai.OpenAI) -> None:
    created = sdk.responses.create(model="never-native", input="keep me")
    assert sdk.responses.retrieve(created.id).output_text == "echo: keep me"
    with http(rproxy) as client, http(rproxy, "globex") as other:
        items = client.get(f"/v1/responses/{created.id}/input_items").json()
        assert items["object"] == "list"
        assert items["data"][0]["content"] == [{"type": "input_text", "text": "keep me"}]
        theirs = other.get(f"/v1/responses/{created.id}")
        assert theirs.status_code == 404
        assert theirs.json()["error"]["code"] == "response_not_found"
        chained = other.post(
            "/v1/responses",
            json={"model": "never", "input": "x", "previous_response_id": created.id},
        )
        assert chained.status_code == 404
        assert chained.json()["error"]["param"] == "previous_response_id"
        assert other.delete(f"/v1/responses/{created.id}").status_code == 404
        deleted = client.delete(f"/v1/responses/{created.id}")
        assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
        gone = client.get(f"/v1/responses/{created.id}")
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "invalid_request_error"
        assert client.delete(f"/v1/responses/{created.id}").status_code == 404
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_unknown")
    assert len(steps(rproxy, 1)) == 1  # reading and deleting are not steps


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


REFUSED = [
    ({"model": "always"}, "input"),
    ({"model": "always", "input": 3}, "input"),
    ({"model": "always", "input": [1]}, "input[0]"),
    (
        {"model": "always", "input": [{"role": "assistant", "content": [{"type": "output_text"}]}]},
        "input[0].content[0].text",
    ),
    ({"model": "always", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    (
        {"model": "always", "input": [{"type": "function_call_output", "output": "x"}]},
        "input[0].call_id",
    ),
    ({"model": "always", "input": "x", "max_output_tokens": 5}, "max_output_tokens"),
    ({"model": "always", "input": "x", "tools": [{"name": "f"}]}, "tools[0]"),
    ({"model": "always", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "always", "input": "x", "instructions": 7}, "instructions"),
    # what chat completions cannot carry, on a route whose upstreams take chat only
    ({"model": "always", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"model": "always", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    # ... or whose intervention works on chat completions, whatever the upstream speaks
    ({"model": "vote-native", "input": [{"type": "item_reference", "id": "m"}]}, "input[0].type"),
    # on a route whose upstreams speak Responses, a step with nothing the helper can read
    ({"model": "always-native", "input": [{"type": "item_reference", "id": "m"}]}, "input"),
    ({"model": 5, "input": "x"}, "model"),
    ({"model": "echo", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "n-echo", "input": "x", "background": True}, "background"),
    ({"model": "echo", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"model": "n-echo", "input": "x", "extra": _nested(300)}, "extra[0][0]"),
]


@pytest.mark.parametrize(("body", "param"), REFUSED)
def test_bad_input_is_a_400_envelope_naming_the_parameter(
    rproxy: RunningProxy, fake_upstream: FakeUpstream, body: dict[str, Any], param: str
) -> None:
    sent = len(fake_upstream.log.requests)
    with http(rproxy) as client:
        response = client.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert len(fake_upstream.log.requests) == sent  # nothing sent, decided or budgeted


def test_unknown_items_pass_through_where_the_upstream_speaks_responses(
    rproxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    odd = {"type": "shell_call_output", "call_id": "s1", "output": "ok"}
    user = {"role": "user", "content": "look"}
    extra = {"prompt_cache_key": "k", "some_new_field": {"a": 1}}
    with http(rproxy) as client:
        for model in ("n-echo", "always-native"):
            response = client.post(
                "/v1/responses", json={"model": model, "input": [user, odd], **extra}
            )
            assert response.status_code == 200, response.text
            sent = sent_for(fake_upstream, "strong-n" if model == "always-native" else model)
            assert sent["input"] == [user, odd] and sent["some_new_field"] == {"a": 1}
        # unknown fields reach a chat upstream too
        response = client.post("/v1/responses", json={"model": "echo", "input": "x", **extra})
        assert response.status_code == 200
        assert sent_for(fake_upstream, "echo")["some_new_field"] == {"a": 1}
        assert "prompt_cache_key" not in sent_for(fake_upstream, "echo")


UNKNOWN_ITEMS = [
    ({"type": "shell_call_output", "call_id": "s1", "output": "ok"}, "input[1].type"),
    ({"type": "item_reference", "id": "msg_1"}, "input[1].type"),
    ({"role": "user", "content": [{"type": "input_hologram"}]}, "input[1].content[0].type"),
]


@pytest.mark.parametrize(("item", "param"), UNKNOWN_ITEMS, ids=["shell", "reference", "part"])
@pytest.mark.parametrize("model", ["echo", "always"], ids=["pass-through", "route"])
def test_unknown_items_are_refused_where_a_chat_upstream_takes_the_step(
    rproxy: RunningProxy,
    fake_upstream: FakeUpstream,
    model: str,
    item: dict[str, Any],
    param: str,
) -> None:
    """A pass-through model or a route whose upstream takes chat completions only cannot
    send what chat has no form for: a 400 envelope names it, and nothing is sent."""
    sent = len(fake_upstream.log.requests)
    with http(rproxy) as client:
        response = client.post(
            "/v1/responses",
            json={"model": model, "input": [{"role": "user", "content": "hi"}, item]},
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_input_item")
    assert error["type"] == "invalid_request_error" and error["message"].startswith(param)
    assert len(fake_upstream.log.requests) == sent


@pytest.mark.parametrize("model", ["echo", "always"], ids=["pass-through", "route"])
def test_a_refused_item_on_a_chain_is_named_by_its_place_in_the_request(
    rproxy: RunningProxy, fake_upstream: FakeUpstream, model: str
) -> None:
    """The stored conversation comes before the request's input, but `input[k]` counts the
    request's own items: a client sending one item is never told of its third."""
    with http(rproxy) as client:
        first = client.post("/v1/responses", json={"model": model, "input": "hi"}).json()
        assert len(first["output"]) == 1  # two stored items: the input and the answer
        if model == "always":  # the escalated step's agreement check asks the base model
            records(rproxy, 2, agreement=True)
        sent = len(fake_upstream.log.requests)
        body = {
            "model": model,
            "previous_response_id": first["id"],
            "input": [{"type": "item_reference", "id": "msg_1"}],
        }
        response = client.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "input[0].type"
    assert len(fake_upstream.log.requests) == sent


def test_a_chain_holding_what_chat_cannot_carry_is_refused_on_a_chat_model(
    rproxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    """A chain made on a model whose upstream speaks Responses may hold items chat has no
    form for; continued on one reached through chat, the refusal names the chain, not an
    index of an input the client never sent."""
    odd = {"type": "shell_call_output", "call_id": "s1", "output": "ok"}
    with http(rproxy) as client:
        body = {"model": "n-echo", "input": [{"role": "user", "content": "look"}, odd]}
        first = client.post("/v1/responses", json=body)
        assert first.status_code == 200, first.text
        sent = len(fake_upstream.log.requests)
        body = {"model": "echo", "previous_response_id": first.json()["id"], "input": "next"}
        response = client.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("previous_response_id", "unsupported_input_item")
    assert "input[" not in error["message"] and "'shell_call_output'" in error["message"]
    assert len(fake_upstream.log.requests) == sent


@BOTH
def test_tool_choice_reaches_the_upstream_in_its_protocol(
    sdk: openai.OpenAI, fake_upstream: FakeUpstream, route: str, path: str
) -> None:
    """A chat upstream is sent chat's `tool_choice`; one that speaks Responses, the field
    as the agent sent it."""
    chosen: list[Any] = [{"type": "function", "name": "calc"}, "required"]
    for choice in chosen:
        sdk.responses.create(model=route, input="add", tools=TOOLS, tool_choice=choice)
        assert path_of(fake_upstream, STRONG_MODEL[route]) == path
        sent = sent_for(fake_upstream, STRONG_MODEL[route])["tool_choice"]
        if path == "/v1/responses":
            assert sent == choice
        elif isinstance(choice, dict):
            assert sent == {"type": "function", "function": {"name": "calc"}}
        else:
            assert sent == "required"


def test_an_expired_response_is_a_404_envelope(
    start_proxy: Callable[..., RunningProxy],
) -> None:
    proxy = start_proxy(storage={"response_ttl_s": 1})
    with http(proxy) as client:
        created = client.post("/v1/responses", json={"model": "echo", "input": "brief"}).json()
        assert client.get(f"/v1/responses/{created['id']}").status_code == 200
        time.sleep(1.2)
        gone = client.get(f"/v1/responses/{created['id']}")
        chained = client.post(
            "/v1/responses",
            json={"model": "echo", "input": "again", "previous_response_id": created["id"]},
        )
    assert gone.status_code == 404 and chained.status_code == 404
    for response, param in ((gone, "response_id"), (chained, "previous_response_id")):
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, "response_not_found")
        assert error["type"] == "invalid_request_error" and "expired" in error["message"]


@pytest.mark.parametrize("model", ["die-mid-stream", "die-mid-stream-n"])
def test_a_stream_that_breaks_ends_in_response_failed(
    rproxy: RunningProxy, sdk: openai.OpenAI, model: str
) -> None:
    events = list(sdk.responses.create(model=model, input="hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    (record,) = steps(rproxy, 1)
    assert record["upstream"]["error"]


def test_an_upstream_error_is_an_envelope(rproxy: RunningProxy, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.responses.create(model="error-500", input="hi")
    assert raised.value.status_code == 502
    with http(rproxy) as client:
        assert metric(client, "escalator_requests_total", status="502") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("route", "action", "text", "model"),
    [
        ("vote-native", "best_of_n", "The answer is 42", "vote"),
        ("draft-native", "base", "echo: hi", "weak-n"),
    ],
    ids=["best_of_n", "after_draft"],
)
def test_chat_only_interventions_are_translated_on_a_responses_upstream(
    sdk: openai.OpenAI,
    rproxy: RunningProxy,
    fake_upstream: FakeUpstream,
    route: str,
    action: str,
    text: str,
    model: str,
    stream: bool,
) -> None:
    """Best-of-N samples and drafts (with their logprobs) are chat completions, so such a
    step reaches even a Responses upstream as one, and its answer is translated back."""
    raw = sdk.responses.with_raw_response.create(model=route, input="hi", stream=stream)
    assert raw.headers["x-escalator-action"] == action
    if stream:
        events = list(raw.parse())
        assert events[-1].type == "response.completed"
        response = events[-1].response  # type: ignore[union-attr]
    else:
        response = raw.parse()
    assert response.output_text.strip() == text
    assert path_of(fake_upstream, model) == "/v1/chat/completions"
    (record,) = steps(rproxy, 1)
    assert record["decision"]["action"] == action
    assert record["response"]["content"].strip() == text


def test_a_long_conversation_chains_from_its_compressed_record(
    rproxy: RunningProxy, chained: openai.OpenAI
) -> None:
    long = "Take the key and open the door. " * 200
    first = chained.responses.create(model="never", input=long)
    second = chained.responses.create(model="never", input="again", previous_response_id=first.id)
    assert second.output_text == "echo: again"
    _, two = steps(rproxy, 2)
    assert [m["content"] for m in two["state"]["messages"]] == [long, f"echo: {long}", "again"]
    assert chained.responses.retrieve(first.id).output_text == f"echo: {long}"


def test_input_items_are_listed_a_page_at_a_time(
    rproxy: RunningProxy, chained: openai.OpenAI
) -> None:
    previous = None
    for turn in range(3):
        previous = chained.responses.create(
            model="never", input=f"turn {turn}", previous_response_id=previous
        ).id
    assert previous is not None
    listed = list(chained.responses.input_items.list(previous))  # every page, newest first
    texts = [i.content[0].text for i in listed if i.type == "message"]  # type: ignore[union-attr]
    assert texts == ["turn 2", "echo: turn 1", "turn 1", "echo: turn 0", "turn 0"]
    first = chained.responses.input_items.list(previous, order="asc", limit=2)
    assert first.has_more and [i.content[0].text for i in first.data] == [  # type: ignore[union-attr]
        "turn 0",
        "echo: turn 0",
    ]
    with http(rproxy) as client:
        page = client.get(f"/v1/responses/{previous}/input_items", params={"limit": 2})
        assert nonconforming("ResponseItemList", page.json()) == []
        bad = client.get(f"/v1/responses/{previous}/input_items", params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


@BOTH
def test_the_sdks_stream_helper_accumulates_the_events(
    sdk: openai.OpenAI, route: str, path: str
) -> None:
    """`client.responses.stream` checks that every delta belongs to an item it was told of."""
    with sdk.responses.stream(model=route, input="hello there") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text.strip() == "echo: hello there"
    with sdk.responses.stream(model=route, input="add", tools=TOOLS) as stream:
        for _ in stream:
            pass
        (call,) = stream.get_final_response().output
    assert call.type == "function_call" and call.name == "calc"


def test_logprobs_come_back_when_included(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model="echo", input="two words", include=["message.output_text.logprobs"]
    )
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert [t.token for t in part.logprobs] == ["echo:", "two", "words"]  # type: ignore[union-attr]
    plain = sdk.responses.create(model="echo", input="two words")
    assert plain.output[0].content[0].logprobs == []  # type: ignore[union-attr]
