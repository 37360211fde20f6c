"""The Escalator proxy process: FastAPI app, per-step service, upstreams, metrics, step log."""
