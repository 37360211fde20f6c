"""Configuration: one TOML file validated by pydantic, unknown keys rejected.

Environment variables `ESCALATOR_<SECTION>__<KEY>` override the file, e.g.
`ESCALATOR_SERVER__PORT=9000`, so one file serves every replica of a deployment.

Validation checks the configuration's shape and reads no helper artifact: those are read
once, when server/route_plans.py builds the routes' plans.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from router.policies import PolicyConfigError, PolicyContext, check_policy

MiB = 1024 * 1024
KEY_DIGEST_PREFIX = "sha256:"


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    admin_key_env: str | None = None
    max_body_bytes: Annotated[int, Field(gt=0)] = 8 * MiB
    # Limits on clients (server/limits.py). A connection with no request in flight is closed
    # header_timeout_s after it opened or after its last response; a request body must
    # arrive within body_timeout_s (408); idle keep-alive connections close after
    # keep_alive_s; a client that stops reading its answer for send_timeout_s is cut off.
    # Requests beyond max_requests_in_flight get 503 with retry-after (the operations
    # endpoints always answer); connections beyond max_connections evict the one idle (or
    # not reading) longest.
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    send_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    keep_alive_s: Annotated[int, Field(ge=1)] = 5
    max_connections: Annotated[int, Field(ge=2)] = 4096
    max_requests_in_flight: Annotated[int, Field(ge=1)] = 1024
    # Requests with no Authorization header are served as this tenant. Allowed only on a
    # loopback address: the embedded local default uses it, a network-facing proxy cannot.
    anonymous_tenant: str | None = None

    @model_validator(mode="after")
    def _anonymous_only_on_loopback(self) -> ServerSettings:
        if self.anonymous_tenant is not None and not _is_loopback(self.host):
            raise ValueError(
                "anonymous_tenant turns authentication off and is allowed only when host "
                f"is a loopback address, not {self.host!r}"
            )
        return self

    @model_validator(mode="after")
    def _room_beside_requests_in_flight(self) -> ServerSettings:
        # Some connection must always be free of a request in flight, so that one can be
        # evicted for a health check when the connection limit is reached.
        if self.max_requests_in_flight >= self.max_connections:
            raise ValueError(
                f"max_requests_in_flight ({self.max_requests_in_flight}) must be below "
                f"max_connections ({self.max_connections})"
            )
        return self


class StorageSettings(_Section):
    dir: Path = Path("escalator-data")
    budget_store: Literal["memory", "sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    session_ttl_s: Annotated[int, Field(gt=0)] = 7 * 86_400
    log_segment_bytes: Annotated[int, Field(gt=0)] = 64 * MiB
    log_queue_size: Annotated[int, Field(gt=0)] = 10_000
    # Responses kept for `previous_response_id` and `GET /v1/responses/{id}`, in the budget
    # store's backend (memory, SQLite file `responses.db`, or Redis), each for response_ttl_s;
    # every backend keeps at most max_stored_responses per tenant (its oldest go first).
    response_ttl_s: Annotated[int, Field(gt=0)] = 86_400
    max_stored_responses: Annotated[int, Field(gt=0)] = 10_000


class UpstreamSettings(_Section):
    # Either a server somewhere (base_url) or a model of the embedded catalogue that
    # Escalator serves itself on loopback (server/local; needs the `local` extra).
    base_url: str | None = None
    local: str | None = None
    local_context: Annotated[int, Field(ge=512)] = 4096  # tokens of context a local model holds
    api_key_env: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_connections: Annotated[int, Field(gt=0)] = 512
    # Models this upstream serves that clients may name directly (pass-through, no decision).
    models: list[str] = []
    # How `/v1/responses` reaches it: "native" sends the Responses request to its own
    # /responses (vLLM, OpenAI); "translate" sends it as a chat completion and translates the
    # answer back (llama.cpp and any chat-only server).
    responses: Literal["translate", "native"] = "translate"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("local")
    @classmethod
    def _known_local_model(cls, value: str | None) -> str | None:
        from server.local.models import CATALOGUE

        if value is not None and value not in CATALOGUE:
            raise ValueError(
                f"unknown local model {value!r}; the catalogue has {', '.join(CATALOGUE)}"
            )
        return value

    @model_validator(mode="after")
    def _one_place(self) -> UpstreamSettings:
        if (self.base_url is None) == (self.local is None):
            raise ValueError("set exactly one of base_url (a server) or local (a local model)")
        return self

    @property
    def url(self) -> str:
        """The base URL requests go to (a local upstream has one once it is started)."""
        if self.base_url is None:
            raise RuntimeError(f"local upstream {self.local!r} was not started")
        return self.base_url

    def api_key(self) -> str | None:
        return os.environ[self.api_key_env] if self.api_key_env else None


class ModelRef(_Section):
    upstream: str
    model: str


class _InterventionBase(_Section):
    upstream: str
    model: str
    cost: Annotated[int, Field(ge=1)] = 1


class StrongIntervention(_InterventionBase):
    """The same request to a stronger model."""

    kind: Literal["strong"]


class ReasoningIntervention(_InterventionBase):
    """The same request with more thinking: `params` are merged into the request body
    (nested tables merge key by key), e.g. vLLM's `chat_template_kwargs.enable_thinking`
    or `reasoning_effort`."""

    kind: Literal["reasoning"]
    params: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": True}}


class BestOfNIntervention(_InterventionBase):
    """`n` samples, one chosen by a verifier. `sampling = "n"` asks the upstream for n
    choices in one request; `"parallel"` sends n requests (for servers without `n`)."""

    kind: Literal["best_of_n"]
    n: Annotated[int, Field(ge=2, le=16)] = 4
    sampling: Literal["n", "parallel"] = "n"
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8
    verifier: Literal["majority", "judge", "prm"] = "majority"
    judge: ModelRef | None = None
    prm: str | None = None  # a helper artifact directory whose model scores P(success)

    @model_validator(mode="after")
    def _verifier_named(self) -> BestOfNIntervention:
        if (self.verifier == "judge") != (self.judge is not None):
            raise ValueError("verifier = 'judge' needs a judge = { upstream, model }, and only it")
        if (self.verifier == "prm") != (self.prm is not None):
            raise ValueError("verifier = 'prm' needs prm = \"<helper directory>\", and only it")
        return self  # the PRM is read once, when the route's plan is built (server/route_plans.py)


InterventionSettings = Annotated[
    StrongIntervention | ReasoningIntervention | BestOfNIntervention,
    Field(discriminator="kind"),
]


class RouteSettings(_Section):
    base: ModelRef
    policy: dict[str, Any]
    # A candidate helper that decides on live traffic without acting; logged beside.
    shadow_policy: dict[str, Any] | None = None
    interventions: list[InterventionSettings] = []
    # "before": decide from the state alone. "after_draft": the base model answers first and
    # the helper also sees that draft (text, tool calls, token logprobs), as cascades do.
    decide: Literal["before", "after_draft"] = "before"
    # On an escalated step, also ask the base model (after the answer has gone out) and log
    # whether it would have answered the same: the trainer's clearest per-step signal of
    # where intervening changes anything (server/agreement.py). Costs one base call per
    # escalated step (none with decide = "after_draft": the draft is compared), and one
    # intervention call per base step the tenant's `base_step_checks` picks.
    agreement_checks: bool = True
    decision_timeout_ms: Annotated[float, Field(gt=0)] = 50.0
    # The most choices (`n`) a step may ask for: an escalated step buys them all for its cost.
    max_n: Annotated[int, Field(ge=1, le=128)] = 8

    @field_validator("interventions")
    @classmethod
    def _one_of_each_kind(cls, value: list[InterventionSettings]) -> list[InterventionSettings]:
        kinds = [iv.kind for iv in value]
        if len(kinds) != len(set(kinds)):
            raise ValueError(f"a route has at most one intervention of each kind, got {kinds}")
        return value

    @field_validator("policy", "shadow_policy")
    @classmethod
    def _known_policy(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            check_policy(value, PolicyContext(route="?", intervention="strong"))
        except PolicyConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _policy_interventions_exist(self) -> RouteSettings:
        kinds = [iv.kind for iv in self.interventions]
        for field, spec in (("policy", self.policy), ("shadow_policy", self.shadow_policy)):
            wanted = (spec or {}).get("intervention")
            if wanted is not None and wanted not in kinds:
                raise ValueError(
                    f"{field}.intervention {wanted!r} is not one of this route's "
                    f"interventions ({', '.join(kinds) or 'none'})"
                )
        return self


class TenantLimits(_Section):
    """What a tenant may spend and how it is served: set in the file or by the admin API."""

    interventions_per_session: Annotated[
        int, Field(ge=0, description="budget units a session may spend (C)")
    ] = 3
    interventions_per_day: (
        Annotated[int, Field(ge=0, description="budget units a UTC day may spend")] | None
    ) = None
    exploration: Annotated[
        float, Field(ge=0.0, le=1.0, description="share of steps whose action is flipped (ε)")
    ] = 0.0
    # Agreement checks on the base model's steps (server/agreement_checks.py): each costs an
    # intervention's call, asked in the background, and no budget. Unset: the exploration
    # rate, so a tenant that explores to collect training data also checks as it explores.
    base_step_checks: (
        Annotated[
            float,
            Field(
                ge=0.0,
                le=1.0,
                description="share of base-model steps also put to the intervention and "
                "compared, for training (default: the exploration rate)",
            ),
        ]
        | None
    ) = None
    # Met by moving the threshold of score-based policies online (see router/calibration.py).
    target_escalation_rate: (
        Annotated[float, Field(gt=0.0, lt=1.0, description="share of steps to escalate")] | None
    ) = None
    capture_content: Annotated[bool, Field(description="log steps' messages and answers")] = False

    @property
    def base_checks(self) -> float:
        """The share of base-model steps an agreement check puts to the intervention."""
        return self.exploration if self.base_step_checks is None else self.base_step_checks


class TenantSettings(TenantLimits):
    api_keys: list[str] = []

    @field_validator("api_keys")
    @classmethod
    def _hashed_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            digest = key.removeprefix(KEY_DIGEST_PREFIX)
            if not key.startswith(KEY_DIGEST_PREFIX) or len(digest) != 64 or not _is_hex(digest):
                raise ValueError(
                    "api_keys hold sha256 digests written 'sha256:<64 hex digits>' "
                    "(python -c \"import hashlib;print(hashlib.sha256(b'KEY').hexdigest())\"), "
                    "never the key itself"
                )
        return [key.lower() for key in keys]


class TelemetrySettings(_Section):
    """OpenTelemetry traces (server/otel.py, the `otel` extra): a span per step and a child
    span per upstream call, exported over OTLP/HTTP. Absent: off, and nothing of it loaded."""

    # The collector's OTLP/HTTP address, e.g. "http://127.0.0.1:4318"; spans go to its
    # /v1/traces (added unless the URL already ends with it).
    otlp_endpoint: str
    service_name: str = "escalator"
    # The share of new traces recorded; a step inside an agent's trace follows the agent's
    # sampling decision (its traceparent's flag).
    sample_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    export_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @field_validator("otlp_endpoint")
    @classmethod
    def _traces_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"otlp_endpoint must start with http:// or https://, got {value!r}")
        value = value.rstrip("/")
        return value if value.endswith("/v1/traces") else f"{value}/v1/traces"

    @model_validator(mode="after")
    def _extra_installed(self) -> TelemetrySettings:
        try:  # what server/otel.py needs; imported here so a broken install fails at start
            import opentelemetry.exporter.otlp.proto.http.trace_exporter
            import opentelemetry.sdk.trace  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "[telemetry] needs the OpenTelemetry packages of the `otel` extra: "
                f"pip install 'escalator[otel]' ({exc})"
            ) from None
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix="ESCALATOR_", env_nested_delimiter="__"
    )

    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    upstreams: dict[str, UpstreamSettings] = {}
    routes: dict[str, RouteSettings] = {}
    tenants: dict[str, TenantSettings] = {}
    telemetry: TelemetrySettings | None = None  # off unless configured

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # the environment overrides the file

    def passthrough_models(self) -> dict[str, str]:
        """Model name → upstream name, for models clients may call directly."""
        models: dict[str, str] = {}
        for name, upstream in self.upstreams.items():
            for model in upstream.models:
                models.setdefault(model, name)
        for route in self.routes.values():
            models.setdefault(route.base.model, route.base.upstream)
            for iv in route.interventions:
                models.setdefault(iv.model, iv.upstream)
        return models

    def config_hash(self) -> str:
        """A short digest of the effective configuration, stamped on every logged record."""
        blob = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()[:16]


def load_settings(path: str | Path, server_overrides: dict[str, Any] | None = None) -> Settings:
    """Read and validate a config file; raise ConfigError with a readable message.
    `server_overrides` (from the command line) replace keys of its [server] table."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if server_overrides:
        data["server"] = {**data.get("server", {}), **server_overrides}
    return validate_settings(data, source=str(path))


def validate_settings(data: dict[str, Any], source: str = "config") -> Settings:
    """The settings, or a ConfigError listing every problem at once: the schema's, and the
    names that do not resolve (read off the raw tables, so that a file with both kinds of
    mistake is not fixed in two rounds)."""
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = schema_problems(exc)
        problems += [p for p in reference_problems(data) if p not in problems]
        raise ConfigError(format_problems(problems, source)) from None
    problems = reference_problems(settings.model_dump())
    if problems:
        raise ConfigError(format_problems(problems, source))
    return settings


def schema_problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{where}: {message}" if where else message)
    return problems


def reference_problems(tables: Mapping[str, Any]) -> list[str]:
    """Names the configuration uses that it does not define: a route's upstreams, the
    anonymous tenant, a route named like an upstream's model, an API key's environment
    variable. Tolerates tables of the wrong shape (the schema reports those)."""
    upstreams = _table(tables.get("upstreams"))
    routes = _table(tables.get("routes"))
    defined = ", ".join(sorted(upstreams)) or "none"
    problems = []
    models = {m for u in upstreams.values() for m in _table(u).get("models") or () if _named(m)}
    for name, route in routes.items():
        route = _table(route)
        refs = [("base", _table(route.get("base")))]
        interventions = route.get("interventions")
        for i, iv in enumerate(interventions if isinstance(interventions, list) else []):
            iv = _table(iv)
            refs.append((f"interventions[{i}]", iv))
            refs.append((f"interventions[{i}].judge", _table(iv.get("judge"))))
        for where, ref in refs:
            upstream = ref.get("upstream")
            if _named(upstream) and upstream not in upstreams:
                problems.append(
                    f"routes.{name}.{where}: unknown upstream {upstream!r}; "
                    f"defined upstreams: {defined}"
                )
            if _named(ref.get("model")) and not where.endswith("judge"):
                models.add(ref["model"])  # a route's models may be called by name
    for name in routes:
        if name in models:
            problems.append(f"routes.{name}: a route has the name of an upstream model")
    server = _table(tables.get("server"))
    anonymous = server.get("anonymous_tenant")
    if _named(anonymous) and anonymous not in _table(tables.get("tenants")):
        problems.append(f"server.anonymous_tenant: {anonymous!r} is not a tenant")
    for name, upstream in upstreams.items():
        variable = _table(upstream).get("api_key_env")
        if _named(variable) and variable not in os.environ:
            problems.append(
                f"upstreams.{name}.api_key_env: environment variable {variable} is not set"
            )
    return problems


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _named(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def format_problems(problems: list[str], source: str) -> str:
    lines = [f"{source}: invalid configuration ({len(problems)} problem(s)):"]
    lines += [f"  {problem}" for problem in problems]
    return "\n".join(lines)


def hash_api_key(key: str) -> str:
    return KEY_DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
