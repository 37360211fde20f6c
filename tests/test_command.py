"""The `escalator` dispatcher: each subcommand loads only its own package."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import tomli_w

from tests.servers import proxy_config

ROOT = Path(__file__).resolve().parent.parent

# The proxy's process, from `escalator serve` up to its app: the dispatcher, the server's
# command and app modules and the decision package, with the server's start replaced by a
# no-op so nothing binds a port.
SERVE_IMPORT_PATH = """
import sys
import escalator
import server.cli

server.cli.serve = lambda *args, **kwargs: 0
assert escalator.main(["serve", "--port", "0"]) == 0
import server.app, router.policies  # what serve() itself loads before it listens
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))
print(",".join(loaded))
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter in the project's directory."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_serve_loads_no_training_code() -> None:
    heavy = ["training", "demo", "numpy", "rich", "httpx", "sklearn", "torch"]
    result = python(SERVE_IMPORT_PATH, *heavy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# The proxy's app built from a configuration without [telemetry]: none of its tracing is
# loaded (server/otel.py, the SDK's tracer, the exporter, protobuf). Where the `otel` extra is
# installed, other libraries load parts of OpenTelemetry themselves at import (redis-py 8 its
# SDK's metrics, FastAPI its API and propagators): not on a step's path, and not ours.
APP_WITHOUT_TELEMETRY = """
import sys
from server.app import create_app
from server.settings import validate_settings
from tests.servers import proxy_config

create_app(validate_settings(proxy_config("http://127.0.0.1:9/v1", sys.argv[1])))
prefixes = (
    "server.otel",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "google.protobuf",
)
print(",".join(sorted(name for name in sys.modules if name.startswith(prefixes))))
"""


def test_telemetry_off_loads_no_opentelemetry(tmp_path: Path) -> None:
    result = python(APP_WITHOUT_TELEMETRY, str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_training_package_imports_only_router() -> None:
    """`training/` is the offline pipeline: no proxy, no demo, no simulated worlds."""
    code = (
        "import pkgutil, importlib, sys, training\n"
        "for m in pkgutil.walk_packages(training.__path__, 'training.'):\n"
        "    if m.name != 'training.prm_transformers':  # the `prm` extra's torch\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'server', 'demo', 'bench'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_train_still_shows_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "escalator.py", "train", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--logs" in result.stdout and "--install" in result.stdout


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Before, the proxy printed "escalator ready" and only then failed to bind."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = tmp_path / "escalator.toml"
        config.write_text(tomli_w.dumps(proxy_config("http://127.0.0.1:9/v1", tmp_path / "data")))
        result = subprocess.run(
            [
                *(sys.executable, "escalator.py", "serve", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "--port" in result.stderr and "escalator ready" not in result.stderr
