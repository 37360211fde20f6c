"""FastAPI route modules ("router" is the decision package; these are HTTP routes)."""
