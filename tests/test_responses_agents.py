"""openai-agents on its default model class (`OpenAIResponsesModel`, the Responses API)
through the proxy: an agent with a function tool runs to its final answer, each model call an
escalator step of one session, against an upstream speaking Responses and one speaking only
chat completions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from openai import AsyncOpenAI

from tests.fake_upstream import FakeUpstream
from tests.servers import KEYS, RunningProxy
from tests.test_responses import NATIVE, ROUTES, steps

agents = pytest.importorskip("agents")


@pytest.mark.parametrize(
    ("route", "path"),
    [("always", "/v1/chat/completions"), ("always-native", "/v1/responses")],
    ids=["chat-upstream", "responses-upstream"],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_an_agent_runs_to_its_answer_through_the_proxy(
    start_proxy: Callable[..., RunningProxy],
    fake_upstream: FakeUpstream,
    route: str,
    path: str,
    streamed: bool,
) -> None:
    proxy = start_proxy(
        upstreams={"native": {**NATIVE["native"], "base_url": fake_upstream.base_url}},
        routes=ROUTES,
    )
    calls: list[bool] = []

    @agents.function_tool
    def lookup(echo: bool) -> str:
        """Look the answer up."""
        calls.append(echo)
        return "42"

    async def run() -> str:
        client = AsyncOpenAI(
            base_url=f"{proxy.url}/v1",
            api_key=KEYS["acme"],
            default_headers={"x-session-id": "agent-ep"},
            max_retries=0,
        )
        provider = agents.OpenAIProvider(openai_client=client)
        assert isinstance(provider.get_model(route), agents.OpenAIResponsesModel)  # the default
        config = agents.RunConfig(model_provider=provider, tracing_disabled=True)
        agent = agents.Agent(
            name="solver", instructions="Use the tool.", model=route, tools=[lookup]
        )
        try:
            if streamed:
                result = agents.Runner.run_streamed(agent, "What is 6*7?", run_config=config)
                async for _ in result.stream_events():
                    pass
            else:
                result = await agents.Runner.run(agent, "What is 6*7?", run_config=config)
            return str(result.final_output)
        finally:
            await client.close()

    assert asyncio.run(run()).strip() == "tool said: 42"
    assert calls == [True]
    first, second = steps(proxy, 2)
    assert (first["session"], second["session"]) == ("agent-ep", "agent-ep")
    assert (first["step"], second["step"]) == (0, 1)
    assert first["response"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert second["state"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": first["response"]["tool_calls"][0]["id"],
        "content": "42",
    }
    models = [r.get("model") for r in fake_upstream.log.requests]
    paths = fake_upstream.log.paths
    strong = "strong-n" if route == "always-native" else "strong-model"
    assert {p for m, p in zip(models, paths, strict=True) if m == strong} == {path}
