from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.servers import KEYS, RedisServer, RunningProxy, proxy_config


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def start_proxy(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[Callable[..., RunningProxy]]:
    """Start a proxy on the fake upstream; keyword arguments replace config sections."""
    started: list[RunningProxy] = []

    def start(**sections: Any) -> RunningProxy:
        proxy = RunningProxy(proxy_config(fake_upstream.base_url, tmp_path / "data", **sections))
        started.append(proxy.start())
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start_proxy: Callable[..., RunningProxy]) -> RunningProxy:
    return start_proxy()


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as http:
        yield http
