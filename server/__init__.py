"""The Escalator proxy process: Starlette app, per-step service, upstreams, metrics, step log."""
