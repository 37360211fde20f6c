"""Schemathesis against the control plane's own /openapi.json: what the document says is what
the proxy does. Every answer, to requests the schema calls valid and to ones it calls invalid,
has a documented status, content type and body (OpenAI's envelope on errors), and a request
the schema calls invalid is refused."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.fake_upstream import FakeUpstream
from tests.servers import RunningProxy, proxy_config

ADMIN_KEY = "admin-conformance"
ADMIN_ENV = "ESCALATOR_CONFORMANCE_ADMIN_KEY"


@pytest.fixture(scope="module")
def control_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    upstream = FakeUpstream().start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_ENV, ADMIN_KEY)
        config = proxy_config(
            upstream.base_url,
            tmp_path_factory.mktemp("control-conformance"),
            server={"admin_key_env": ADMIN_ENV},
        )
        proxy = RunningProxy(config).start()
        yield proxy
        proxy.stop()
    upstream.stop()


def _schema() -> schemathesis.BaseSchema:
    """Loaded from the app itself (no server needed to collect the tests)."""
    from server.app import create_app
    from server.control import ControlPlane
    from server.settings import validate_settings

    app = create_app(validate_settings(proxy_config("http://127.0.0.1:9/v1", "unused")))
    control = next(r for r in app.routes if isinstance(r, ControlPlane))
    loaded = schemathesis.openapi.from_dict(control.app.openapi())
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    loaded.config.phases.update(phases=["examples", "fuzzing"])
    return loaded


schema = _schema()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI must not flake
    suppress_health_check=list(HealthCheck),
)
def test_the_control_plane_does_what_its_openapi_says(
    case: schemathesis.Case, control_proxy: RunningProxy
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    if case.path.startswith("/v1/sessions"):
        headers = {"Authorization": "Bearer sk-acme-test"}
    case.call_and_validate(base_url=control_proxy.url, headers=headers)


def test_the_schema_is_served(control_proxy: RunningProxy) -> None:
    served = httpx.get(f"{control_proxy.url}/openapi.json").json()
    assert served["paths"].keys() == schema.raw_schema["paths"].keys()
