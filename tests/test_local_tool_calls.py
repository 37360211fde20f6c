"""Tool calls on the embedded default (issue 14, item 3): the local model writes its calls as
text, the local server's chat handler (server/local/tool_calls.py) makes them OpenAI
`tool_calls`, and an agent on the proxy sees real calls, streamed or not.

Through the proxy on a fake local server (tests/fake_llama.py) that runs the real handler over
a scripted model; then (opt-in, `pytest -m local_models`) the real models through
`escalator serve`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from server.local.llama_chat import AcceptedRequests, accepted_request
from server.local.models import STRONG, WEAK
from server.local.tool_calls import read_tool_calls, stream_tool_calls
from tests.fake_llama import ARGUMENTS, PROSE, FakeLlama
from tests.helpers import records, user
from tests.servers import KEYS, RunningProxy, proxy_config

# A route per scripted model of the fake, named for what the model writes.
ROUTES = ["tagged", "bare", "prose", "broken", "stranger", "plain"]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def fake_llama() -> Iterator[FakeLlama]:
    server = FakeLlama().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(fake_llama: FakeLlama, tmp_path: Path) -> Iterator[RunningProxy]:
    """A route per scripted model (never escalated), and `escalated`: a plain base model
    whose every step goes to a strong model that calls tools."""
    strong = {"kind": "strong", "upstream": "strong", "model": "qwen-tagged", "cost": 1}
    routes: dict[str, Any] = {
        route: {
            "base": {"upstream": "weak", "model": f"qwen-{route}"},
            "policy": {"kind": "never"},
            "interventions": [strong],
        }
        for route in ROUTES
    }
    routes["escalated"] = {
        "base": {"upstream": "weak", "model": "qwen-plain"},
        "policy": {"kind": "always"},
        "interventions": [strong],
    }
    proxy = RunningProxy(proxy_config(fake_llama.base_url, tmp_path / "data", routes=routes))
    yield proxy.start()
    proxy.stop()


@pytest.fixture
def sdk(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=KEYS["acme"], max_retries=0) as client:
        yield client


def ask(sdk: openai.OpenAI, route: str, stream: bool, **request: Any) -> dict[str, Any]:
    """The answer's message and finish reason, read from its chunks when streamed."""
    request = {"messages": user("What is the weather in Paris?"), "tools": [WEATHER], **request}
    if not stream:
        choice = sdk.chat.completions.create(model=route, **request).choices[0]
        return {**choice.message.model_dump(), "finish_reason": choice.finish_reason}
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    for chunk in sdk.chat.completions.create(model=route, stream=True, **request):
        for choice in chunk.choices:
            content += [choice.delta.content] if choice.delta.content else []
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": call.id, "type": call.type})
                function = slot.setdefault("function", {"name": "", "arguments": ""})
                function["name"] += (call.function and call.function.name) or ""
                function["arguments"] += (call.function and call.function.arguments) or ""
            finish_reason = choice.finish_reason or finish_reason
    return {
        "content": "".join(content) or None,
        "tool_calls": [calls[i] for i in sorted(calls)] or None,
        "finish_reason": finish_reason,
        "content_chunks": len(content),
    }


def the_call(message: dict[str, Any], name: str = "get_weather") -> None:
    assert message["finish_reason"] == "tool_calls"
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == name
    assert json.loads(call["function"]["arguments"]) == ARGUMENTS


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("route", ["tagged", "bare"])
def test_a_call_the_model_writes_comes_back_as_tool_calls(
    sdk: openai.OpenAI, route: str, stream: bool
) -> None:
    message = ask(sdk, route, stream, tool_choice="auto")
    the_call(message)
    assert message["content"] is None


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_prose_before_a_call_stays_content(sdk: openai.OpenAI, stream: bool) -> None:
    message = ask(sdk, "prose", stream)
    the_call(message)
    assert message["content"].strip() == "Let me look that up."


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("route", ["broken", "stranger"])
def test_text_that_is_no_valid_call_comes_back_as_the_model_wrote_it(
    sdk: openai.OpenAI, route: str, stream: bool
) -> None:
    message = ask(sdk, route, stream)
    assert message["tool_calls"] is None and message["finish_reason"] == "stop"
    assert message["content"].startswith("<tool_call>\n{")


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_tool_choice_none_hides_the_tools_and_reads_no_calls(
    sdk: openai.OpenAI, fake_llama: FakeLlama, stream: bool
) -> None:
    message = ask(sdk, "tagged", stream, tool_choice="none")
    assert fake_llama.seen[-1]["tools"] is None
    assert message["tool_calls"] is None and message["finish_reason"] == "stop"
    assert message["content"].startswith("<tool_call>")


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_required_constrains_the_model_to_a_call(
    sdk: openai.OpenAI, fake_llama: FakeLlama, stream: bool
) -> None:
    message = ask(sdk, "plain", stream, tools=[WEATHER, TIME], tool_choice="required")
    options = fake_llama.seen[-1]["grammar"]["anyOf"]
    assert [o["properties"]["name"]["const"] for o in options] == ["get_weather", "get_time"]
    assert options[0]["properties"]["arguments"] == WEATHER["function"]["parameters"]
    the_call(message)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_a_named_tool_choice_calls_that_tool(
    sdk: openai.OpenAI, fake_llama: FakeLlama, stream: bool
) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    message = ask(sdk, "tagged", stream, tools=[WEATHER, TIME], tool_choice=named)
    assert fake_llama.seen[-1]["grammar"]["properties"]["name"] == {"const": "get_time"}
    the_call(message, name="get_time")


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_a_plain_chat_is_unchanged(sdk: openai.OpenAI, stream: bool) -> None:
    # Without tools nothing is read as a call, even text that looks like one.
    tagged = ask(sdk, "tagged", stream, tools=openai.NOT_GIVEN)
    assert tagged["tool_calls"] is None and tagged["content"].startswith("<tool_call>")
    plain = ask(sdk, "plain", stream, tools=openai.NOT_GIVEN)
    assert plain["content"] == PROSE and plain["finish_reason"] == "stop"
    assert plain["tool_calls"] is None


def test_prose_streams_as_it_comes_when_tools_are_offered(sdk: openai.OpenAI) -> None:
    message = ask(sdk, "plain", stream=True)
    assert message["content"] == PROSE and message["tool_calls"] is None
    assert message["content_chunks"] >= len(PROSE) // 4 - 1  # not held back to the end


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_a_round_trip_shows_the_model_its_call_and_the_result(
    sdk: openai.OpenAI, fake_llama: FakeLlama, proxy: RunningProxy, stream: bool
) -> None:
    first = ask(sdk, "tagged", stream)
    the_call(first)
    [call] = first["tool_calls"]
    messages = [
        *user("What is the weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18 C and sunny"},
    ]
    answer = ask(sdk, "plain", stream, messages=messages)
    assert answer["content"] == PROSE and answer["finish_reason"] == "stop"
    shown = fake_llama.seen[-1]["messages"]
    # The chat template is given the call's arguments as an object, as it writes them.
    assert shown[1]["tool_calls"][0]["function"]["arguments"] == ARGUMENTS
    assert shown[2] == messages[2]
    # The step log holds the call as the agent received it.
    logged = records(proxy, 2)[0]["response"]
    assert logged["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_an_escalated_step_calls_tools_too(sdk: openai.OpenAI, stream: bool) -> None:
    the_call(ask(sdk, "escalated", stream))


# -- reading the model's text, case by case -------------------------------------------------

CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.mark.parametrize(
    ("text", "content", "names"),
    [
        (f"<tool_call>\n{CALL}\n</tool_call>", None, ["get_weather"]),
        (
            f"<tool_call>{CALL}</tool_call>\n<tool_call>{CALL}</tool_call>",
            None,
            ["get_weather"] * 2,
        ),
        (f"<tool_call>\n{CALL}\n", None, ["get_weather"]),  # stopped before closing the tag
        (f"Checking.\n<tool_call>{CALL}</tool_call>\nDone.", "Checking.\nDone.", ["get_weather"]),
        (f"```json\n{CALL}\n```", None, ["get_weather"]),
        (f"[{CALL}, {CALL}]", None, ["get_weather"] * 2),
        (
            '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
            None,
            ["get_weather"],
        ),
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', None, ["get_weather"]),
        # not calls: the text stays the content
        ('{"name": "get_time", "arguments": {}}', "same", []),
        ('{"name": "get_weather", "arguments": [1]}', "same", []),
        (f"<tool_call>{CALL}</tool_call><tool_call>oops</tool_call>", "same", []),
        (f"The call would be {CALL}", "same", []),
        ('{"city": "Paris"}', "same", []),
        ("", "same", []),
    ],
)
def test_reading_calls_from_text(text: str, content: str | None, names: list[str]) -> None:
    found, calls = read_tool_calls(text, ("get_weather",))
    assert found == (text if content == "same" else content)
    assert [c["function"]["name"] for c in calls] == names
    assert all(json.loads(c["function"]["arguments"]) == ARGUMENTS for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


def _chunks(pieces: list[str]) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "c",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    yield chunk({"role": "assistant"})
    yield from (chunk({"content": piece}) for piece in pieces)
    yield chunk({}, "length")


@pytest.mark.parametrize(
    ("pieces", "sent"),
    [
        # prose goes out as it comes; a possible start of the tag waits for the next piece
        (["Use <", "b> here"], ["Use ", "<b> here"]),
        (["Hi <tool", "box>"], ["Hi ", "<toolbox>"]),
        # a call cut off by the token limit is sent as the text it was, with that finish reason
        (
            ["<tool_call>", '{"name": "get_weather", "argu'],
            ['<tool_call>{"name": "get_weather", "argu'],
        ),
        (["  ", "{", "}"], ["  {}"]),
    ],
)
def test_streamed_text_is_held_only_where_a_call_may_begin(
    pieces: list[str], sent: list[str]
) -> None:
    out = list(stream_tool_calls(_chunks(pieces), ("get_weather",)))
    assert out[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert [c["choices"][0]["delta"].get("content") for c in out[1:-1]] == sent
    assert out[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}


# -- the real models through `escalator serve` (opt-in: pytest -m local_models) ---------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """`escalator serve` with no configuration: the embedded default on the real models."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[local]')")
    from tests.helpers import answers, wait_until
    from tests.servers import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "escalator", "serve", "--port", str(port)],
        cwd=tmp_path_factory.mktemp("serve"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), timeout_s=300)
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="local", timeout=300
        ) as client:
            yield client
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.local_models
@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("model", [WEAK.name, STRONG.name])
def test_the_real_models_call_tools(served: openai.OpenAI, model: str, stream: bool) -> None:
    message = ask(served, model, stream, tool_choice="auto", temperature=0, max_tokens=64)
    assert message["finish_reason"] == "tool_calls", message
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    assert "paris" in json.loads(call["function"]["arguments"])["city"].lower()


@pytest.mark.local_models
@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_the_real_models_follow_tool_choice(served: openai.OpenAI, stream: bool) -> None:
    hello = user("Say hello in French.")
    required = ask(served, WEAK.name, stream, messages=hello, tool_choice="required", max_tokens=64)
    assert required["finish_reason"] == "tool_calls", required
    named = {"type": "function", "function": {"name": "get_time"}}
    chosen = ask(served, WEAK.name, stream, tools=[WEATHER, TIME], tool_choice=named)
    assert [c["function"]["name"] for c in chosen["tool_calls"]] == ["get_time"], chosen
    none = ask(served, WEAK.name, stream, tool_choice="none", temperature=0, max_tokens=64)
    assert none["tool_calls"] is None and none["content"], none
    plain = ask(served, "agent", stream, messages=hello, tools=openai.NOT_GIVEN, max_tokens=32)
    assert plain["tool_calls"] is None and plain["finish_reason"] in ("stop", "length"), plain


@pytest.mark.local_models
@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_the_real_agent_route_completes_a_round_trip(served: openai.OpenAI, stream: bool) -> None:
    first = ask(served, "agent", stream, tool_choice="auto", temperature=0, max_tokens=64)
    [call] = first["tool_calls"]
    messages = [
        *user("What is the weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18 degrees C and sunny"},
    ]
    answer = ask(served, "agent", stream, messages=messages, temperature=0, max_tokens=64)
    assert answer["tool_calls"] is None and "18" in answer["content"], answer


async def test_the_local_server_accepts_a_turn_that_called_tools() -> None:
    """llama-cpp-python's server refuses `content: null` on an assistant turn, which is how
    OpenAI clients send back a turn that called tools: the child's app is wrapped to accept it."""
    seen: list[bytes] = []

    async def llama_app(scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        seen.append(body)
        length = dict(scope["headers"])[b"content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": length})

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
        },
        *user("hi"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
    ]
    transport = httpx.ASGITransport(app=AcceptedRequests(llama_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://llama") as client:
        answer = await client.post("/v1/chat/completions", json={"messages": messages})
        await client.post("/v1/completions", json={"prompt": None})
    sent = json.loads(seen[0])["messages"]
    assert [m["content"] for m in sent] == ["Be brief.", "hi", "", "42"]
    assert sent[2]["tool_calls"] == [call]
    assert answer.text == str(len(seen[0]))
    assert json.loads(seen[1]) == {"prompt": None}
    assert accepted_request(b"not json") == b"not json"
