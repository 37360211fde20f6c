"""Tenants managed at runtime: records, their store, the directory every replica serves
from, usage counts, and the `escalator tenants` command."""
