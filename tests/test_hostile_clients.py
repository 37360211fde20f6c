"""Hostile clients against a real `escalator serve` process on loopback: slow and silent
connections are closed, the number of open connections is capped, requests beyond the
in-flight limit get a 503 envelope, and `/healthz` and `/metrics` answer throughout.

Every test opens a bounded number of sockets and waits a bounded time."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import tomli_w

from tests.fake_upstream import FakeUpstream
from tests.helpers import answers, metric, user, wait_until
from tests.servers import KEYS, free_port, proxy_config

AUTH = {"authorization": f"Bearer {KEYS['acme']}"}
LIMITS = {
    "header_timeout_s": 1.0,
    "body_timeout_s": 1.0,
    "send_timeout_s": 1.0,
    "keep_alive_s": 30,  # longer than the header timeout: the header timeout is what closes
    "max_connections": 12,
    "max_requests_in_flight": 2,
}
WAIT_S = 15.0  # the longest any test waits for the proxy to act; far above every timeout


def start_serve(config: dict[str, Any], tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    path = tmp_path / "escalator.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    port = free_port()
    command = [sys.executable, "-m", "escalator", "serve", "--config", str(path)]
    process = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/healthz"), timeout_s=20)
    except AssertionError:
        process.kill()
        raise
    return process, url


@pytest.fixture
def serve(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `escalator serve` on the fake upstream with the limits above (or others)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(**server: Any) -> str:
        config = proxy_config(
            fake_upstream.base_url, tmp_path / "data", server={**LIMITS, **server}
        )
        config["upstreams"]["weak"]["timeout_s"] = 30
        config["upstreams"]["weak"]["models"].append("slow-3")
        process, url = start_serve(config, tmp_path)
        processes.append(process)
        return url

    yield start
    for process in processes:
        process.terminate()
        process.wait(15)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the proxy has closed this connection (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What the proxy sends until `marker` has arrived (headers and body may come apart)."""
    received = b""
    sock.settimeout(WAIT_S)
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the proxy kept the connection open; received {received!r}")


def trickle_headers(sock: socket.socket, request_line: bytes) -> bool:
    """Send a request line, then one header line every 0.2 s; True if the proxy closed the
    connection before the headers could finish (at most WAIT_S)."""
    try:
        sock.sendall(request_line)
        deadline = time.monotonic() + WAIT_S
        n = 0
        while time.monotonic() < deadline:
            sock.sendall(f"x-slow-{n}: 1\r\n".encode())
            n += 1
            time.sleep(0.2)
            if closed_by_peer(sock):
                return True
    except (BrokenPipeError, ConnectionResetError):
        return True
    return False


def test_a_client_trickling_its_headers_is_disconnected(serve: Callable[..., str]) -> None:
    url = serve()
    with connect(url) as sock:
        assert trickle_headers(sock, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
    with httpx.Client(base_url=url) as client:
        assert metric(client, "escalator_connections_closed_total", reason="header_timeout") >= 1


def test_a_kept_alive_connection_cannot_trickle_its_next_request(
    serve: Callable[..., str],
) -> None:
    url = serve()
    with connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b'{"status":"ok"}' in read_until(sock, b'{"status":"ok"}')
        assert trickle_headers(sock, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")


def test_a_silent_connection_is_closed(serve: Callable[..., str]) -> None:
    url = serve()
    with connect(url) as sock:
        assert read_until_closed(sock) == b""


def test_a_body_that_does_not_arrive_gets_408(serve: Callable[..., str]) -> None:
    url = serve()
    with connect(url) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            + f"authorization: {AUTH['authorization']}\r\n".encode()
            + b'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"model"'
        )
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in answer


def test_connections_beyond_the_limit_evict_idle_ones_and_health_checks_answer(
    serve: Callable[..., str],
) -> None:
    url = serve(header_timeout_s=60.0)  # silent connections stay until evicted
    silent = [connect(url) for _ in range(30)]
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=WAIT_S) as client:
            # Each new connection (the client's own included) evicts the longest-waiting one.
            assert client.get("/healthz").status_code == 200
            assert client.get("/metrics").status_code == 200
            step = client.post("/v1/chat/completions", json={"model": "never", "messages": user()})
            assert step.status_code == 200
            wait_until(lambda: sum(closed_by_peer(s) for s in silent) >= 30 - 12 + 1)
            assert metric(client, "escalator_connections_closed_total", reason="evicted") >= 19
            assert metric(client, "escalator_open_connections") <= 12
    finally:
        for sock in silent:
            sock.close()


def test_clients_that_never_read_cannot_hold_the_connections(
    serve: Callable[..., str],
) -> None:
    """Found in review: pipelined requests whose answers are never read kept every connection
    busy (and uncounted by the in-flight limit), so /healthz got 503 until they left."""
    url = serve(max_connections=4)
    host, port = url.removeprefix("http://").split(":")
    greedy = []
    try:
        for _ in range(4):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n" * 3000)
            greedy.append(sock)

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s=WAIT_S)
        with httpx.Client(base_url=url) as client:
            closed = sum(
                metric(client, "escalator_connections_closed_total", reason=reason)
                for reason in ("send_timeout", "evicted")
            )
        assert closed >= 1
    finally:
        for sock in greedy:
            sock.close()


def test_requests_beyond_the_in_flight_limit_get_503_and_health_checks_answer(
    serve: Callable[..., str], fake_upstream: FakeUpstream
) -> None:
    url = serve()
    slow_seen = fake_upstream.log.models().count("slow-3")
    results: list[int] = []

    def slow_step() -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=WAIT_S) as client:
            body = {"model": "slow-3", "messages": user()}
            results.append(client.post("/v1/chat/completions", json=body).status_code)

    threads = [threading.Thread(target=slow_step) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: fake_upstream.log.models().count("slow-3") == slow_seen + 2)
        with httpx.Client(base_url=url, headers=AUTH, timeout=WAIT_S) as client:
            refused = client.post(
                "/v1/chat/completions", json={"model": "never", "messages": user()}
            )
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            assert client.get("/healthz").status_code == 200
            assert metric(client, "escalator_requests_in_flight") == 2
            assert metric(client, "escalator_overload_rejections_total", limit="requests") == 1
    finally:
        for thread in threads:
            thread.join(WAIT_S)
    assert results == [200, 200]


def test_the_limits_must_leave_room_for_health_checks(tmp_path: Path) -> None:
    config = proxy_config("http://127.0.0.1:9/v1", tmp_path / "data")
    config["server"] = {"max_connections": 10, "max_requests_in_flight": 10}
    path = tmp_path / "escalator.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    done = subprocess.run(
        [sys.executable, "-m", "escalator", "serve", "--config", str(path)],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"max_requests_in_flight (10) must be below max_connections (10)" in done.stderr


@pytest.mark.parametrize(
    "request_head",
    [b"NOT HTTP AT ALL\r\n\r\n", b"GET /healthz HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n"],
)
def test_a_malformed_request_gets_a_400_envelope(
    serve: Callable[..., str], request_head: bytes
) -> None:
    url = serve()
    with connect(url) as sock:
        sock.sendall(request_head)
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"content-type: application/json" in head
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert "could not be parsed" in error["message"]
