"""Offline training: from the proxy's step logs to a new helper (DESIGN.md, "The training
method"). Imported only by `escalator train` and `escalator demo`, never by the proxy."""
