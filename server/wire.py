"""Another API riding a chat step: the seam `/v1/responses` uses to reach upstreams that serve
it natively while the step itself (decision, budget, log) stays a chat step.

A step carries its transcript as chat messages, which is what the helper reads and the step
log keeps. For a target the wire speaks to natively, the upstream call sends the wire's own
request to the wire's own path instead, and the answer is read in that API's shape.
"""

from __future__ import annotations

from typing import Any, Protocol

from server.route_plans import Target
from server.streaming import StreamTranscript


class StepWire(Protocol):
    path: str  # the upstream path of the wire's requests, e.g. "responses"

    def speaks(self, target: Target) -> bool:
        """Whether this target is sent the wire's own request (else the chat step's)."""
        ...

    def payload(self, target: Target) -> bytes:
        """The wire's request for the target's model."""
        ...

    def read(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A native answer as the step record keeps it ({"content", "tool_calls"}) and its
        usage in chat's words ({"prompt_tokens", "completion_tokens"})."""
        ...

    def transcript(self, started: float) -> StreamTranscript:
        """A reader of the native stream, counting what a chat stream's would."""
        ...
