"""The official `openai` SDK pointed at the proxy: what an agent actually runs."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.helpers import user
from tests.servers import KEYS, RunningProxy


@pytest.fixture
def sdk(proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{proxy.url}/v1",
        api_key=KEYS["acme"],
        max_retries=0,
        default_headers={"x-session-id": "sdk-1"},
    ) as client:
        yield client


def test_a_chat_completion(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="always", messages=user())
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: What is 2+2?"
    assert completion.usage is not None and completion.usage.total_tokens == 18
    assert raw.headers["x-escalator-action"] == "strong"


def test_a_streamed_chat_completion(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="never", messages=user(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "echo: What is 2+2?"
    assert chunks[-1].usage is not None


def test_tools(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="agent",
        messages=user(),
        tools=[
            {"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}
        ],
        tool_choice="auto",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "calc"  # type: ignore[union-attr]


def test_models(sdk: openai.OpenAI) -> None:
    assert "agent" in {m.id for m in sdk.models.list()}


def test_error_classes(sdk: openai.OpenAI, proxy: RunningProxy) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="gpt-9", messages=user())
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="bad-request", messages=user())
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="429", messages=user())
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="html-502", messages=user())
    assert failed.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as late:
        sdk.chat.completions.create(model="stall", messages=user())
    assert late.value.status_code == 504
    stranger = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-wrong", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_an_upstream_dying_mid_stream_raises_in_the_sdk(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="die-mid-stream", messages=user(), stream=True)
    with pytest.raises(openai.APIError, match="broke off the stream"):
        for _ in stream:
            pass
