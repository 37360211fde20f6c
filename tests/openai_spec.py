"""Validate bodies against a schema of OpenAI's own OpenAPI specification (the copy in
tests/data), e.g. `conforms("Response", body)`: the list of what does not conform."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent / "data" / "openai-openapi" / "openapi.json.gz"


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    spec = json.loads(gzip.decompress(SPEC.read_bytes()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("spec", resource)
    ref = {"$ref": f"spec#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(ref, registry=registry)


def nonconforming(name: str, body: Any) -> list[str]:
    """Where `body` breaks the spec's schema `name` (empty when it conforms)."""
    errors = _validator(name).iter_errors(body)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors]
