"""The embedded default's models: assembly from part packages (with stand-in parts built
here), the local-upstream configuration, and a clear failure when the `local` extra is
missing. Real-model checks are opt-in: `pytest -m local_models` where the extra is installed."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.local.models import LocalModel, ModelSetupError, assemble
from server.settings import ConfigError, validate_settings


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalModel, Path]]:
    """Three installed 'part packages' of a stand-in model, as pip would lay them out."""
    site = tmp_path / "site"
    chunks = [os.urandom(300_000) for _ in range(3)]
    for i, chunk in enumerate(chunks, 1):
        package = site / f"standin_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        (package / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{i:02d}.bin')\n"
        )
        info = site / f"standin_part{i}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: standin-part{i}\nVersion: 1.0\n"
        )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    blob = b"".join(chunks)
    model = LocalModel(
        "standin",
        "standin-part",
        "standin_part",
        3,
        "1.0",
        hashlib.sha256(blob).hexdigest(),
        len(blob),
    )
    yield model, tmp_path / "cache"
    for i in range(1, 4):
        sys.modules.pop(f"standin_part{i}", None)


def test_parts_assemble_once_into_a_verified_file(parts: tuple[LocalModel, Path]) -> None:
    model, cache = parts
    seen: list[int] = []
    path = assemble(model, cache, progress=seen.append)
    assert path.stat().st_size == model.size and sum(seen) == model.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model.sha256
    # Later starts trust the marker: the parts are not read again.
    seen.clear()
    assert assemble(model, cache, progress=seen.append) == path and seen == []
    # A file changed behind the marker's back is assembled and checked again.
    path.write_bytes(b"tampered")
    assert assemble(model, cache).stat().st_size == model.size


def test_a_part_that_is_not_the_pinned_one_is_refused(parts: tuple[LocalModel, Path]) -> None:
    model, cache = parts
    wrong = LocalModel(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelSetupError, match="not the pinned ones"):
        assemble(wrong, cache)
    assert not any(cache.iterdir())  # nothing half-written is left behind


def test_missing_or_mismatched_parts_say_what_to_install(parts: tuple[LocalModel, Path]) -> None:
    model, cache = parts
    more = LocalModel(**{**model.__dict__, "parts": 5})
    with pytest.raises(ModelSetupError, match=r"missing standin-part4==1.0.*\.\[local\]"):
        assemble(more, cache)
    newer = LocalModel(**{**model.__dict__, "version": "2.0"})
    with pytest.raises(ModelSetupError, match=r"wrong versions: standin-part1 1\.0"):
        assemble(newer, cache)


def test_an_upstream_is_a_server_or_a_local_model_never_both() -> None:
    base = {
        "routes": {
            "agent": {"base": {"upstream": "weak", "model": "m"}, "policy": {"kind": "never"}}
        }
    }
    local = {"weak": {"local": "qwen2.5-coder-0.5b-instruct-q4_k_m"}}
    assert validate_settings({**base, "upstreams": local}).upstreams["weak"].base_url is None
    for upstreams, message in [
        ({"weak": {"local": "llama-70b"}}, "unknown local model 'llama-70b'"),
        ({"weak": {}}, "set exactly one of base_url"),
        ({"weak": {**local["weak"], "base_url": "http://x"}}, "set exactly one of base_url"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_settings({**base, "upstreams": upstreams})


def test_the_embedded_default_validates_and_binds_to_loopback(tmp_path: Path) -> None:
    from server.local.embedded import embedded_config

    settings = validate_settings(embedded_config(tmp_path))
    assert settings.server.host == "127.0.0.1" and settings.server.anonymous_tenant == "local"
    assert settings.storage.budget_store == "sqlite"
    route = settings.routes["agent"]
    assert [iv.kind for iv in route.interventions] == ["strong", "best_of_n"]
    assert route.policy["kind"] == "threshold"  # no trained helper installed yet


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is not None, reason="the local extra is installed"
)
def test_serve_without_the_local_extra_says_how_to_get_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "escalator", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert done.returncode == 1
    assert "pip install -e '.[local]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.local_models
def test_the_embedded_default_answers_with_real_models(tmp_path: Path) -> None:
    """Opt-in (`pytest -m local_models`, needs the local extra): `escalator serve` with no
    configuration brings up both models and answers through the official SDK."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[local]')")
    from openai import OpenAI

    from tests.helpers import answers, wait_until
    from tests.servers import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "escalator", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), timeout_s=300)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local")
        reply = client.chat.completions.with_raw_response.create(
            model="agent",
            messages=[{"role": "user", "content": "What is the capital of France? One word."}],
            max_tokens=10,
            temperature=0,
        )
        assert "paris" in (reply.parse().choices[0].message.content or "").lower()
        assert reply.headers["x-escalator-action"] in ("base", "strong", "best_of_n")
    finally:
        server.terminate()
        server.wait(timeout=60)


_PARENT_OF_A_SLEEPER = """
import subprocess, sys, time
from server.local.process import dying_with_parent

child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"],
    start_new_session=True,
    preexec_fn=dying_with_parent(),
)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_model_server_dies_with_the_proxy_however_it_dies() -> None:
    """SIGKILL leaves no chance to clean up: the kernel must stop the model server."""
    import signal
    import time

    def alive(pid: int) -> bool:  # a zombie (dead, not yet reaped by init) counts as gone
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_OF_A_SLEEPER], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    with parent.stdout:
        child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child), "the child outlived its parent"
