"""Every error the proxy returns, each mapped to one HTTP status and OpenAI's envelope:
`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`."""

from __future__ import annotations

from typing import Any

import orjson


class EscalatorError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class InvalidRequest(EscalatorError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(EscalatorError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(EscalatorError):
    status = 404
    type = "invalid_request_error"


class Conflict(EscalatorError):
    status = 409
    type = "invalid_request_error"


class RequestTimeout(EscalatorError):
    """The client did not send its request body in time."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(EscalatorError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(EscalatorError):
    """The upstream could not be reached or answered with a server error."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamTimeout(EscalatorError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamRejected(EscalatorError):
    """The upstream answered 4xx: its status and message reach the client as they were."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        if status == 429:
            self.type = "rate_limit_error"


class ServiceUnavailable(EscalatorError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
