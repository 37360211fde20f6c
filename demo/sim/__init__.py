"""The SIMULATED data agent (world.py) and its simulated model upstreams (upstream.py): the
learning loop with no model at all, for tests, CI and `escalator demo --world sim`."""
