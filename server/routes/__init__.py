"""HTTP route modules ("router" is the decision package; these are the proxy's HTTP routes)."""
