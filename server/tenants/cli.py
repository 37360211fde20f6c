"""`escalator tenants ...`: the admin API's tenant endpoints from the command line.

A client of a running proxy over HTTP (standard library only), with the admin key from the
environment variable `--admin-key-env` names. Each answer is printed as JSON; an error
envelope's message goes to stderr with exit status 1. The limit options are generated from
the settings' `TenantLimits`, so the command, the API and the file never disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from server.settings import TenantLimits

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("ESCALATOR_URL", DEFAULT_URL),
        help="the proxy's base URL (or ESCALATOR_URL)",
    )
    parser.add_argument(
        "--admin-key-env",
        default="ESCALATOR_ADMIN_KEY",
        help="the environment variable holding the admin key",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every tenant")
    for action, help_text in (
        ("show", "a tenant, its limits and its keys"),
        ("delete", "delete a tenant and its keys"),
        ("keys", "a tenant's keys (ids and prefixes, never the keys)"),
        ("issue-key", "issue a key for a tenant: printed once, never shown again"),
    ):
        actions.add_parser(action, help=help_text).add_argument("name")
    create = actions.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--issue-key", action="store_true", help="also issue it a key")
    _limit_options(create, clearable=False)
    update = actions.add_parser("update", help="change a tenant's limits")
    update.add_argument("name")
    _limit_options(update, clearable=True)
    revoke = actions.add_parser("revoke-key", help="revoke a key (by its id, see `keys`)")
    revoke.add_argument("name")
    revoke.add_argument("key_id")
    usage = actions.add_parser("usage", help="a tenant's steps, escalations and interventions")
    usage.add_argument("name")
    usage.add_argument("--day", help="a UTC day, YYYY-MM-DD (default: today)")


def _limit_options(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    """An option per limit; `--no-<limit>` clears one that may be unset (update only)."""
    for name, field in TenantLimits.model_fields.items():
        option = "--" + name.replace("_", "-")
        kind, nullable, described = _scalar(field.annotation)
        text = field.description or described or name
        if kind is bool:
            parser.add_argument(
                option, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
            continue
        group = parser.add_mutually_exclusive_group()
        group.add_argument(option, dest=name, type=kind, default=None, help=text)
        if clearable and nullable:
            group.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_const",
                const=_CLEAR,
                help=f"remove {name}",
            )


_CLEAR = object()


def _scalar(annotation: Any) -> tuple[type, bool, str | None]:
    """The scalar type of a limit, whether it may be None, and the description its
    `Annotated` carries inside an optional."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        kind, _, description = _scalar(args[0])
        return kind, True, description
    description = None
    if get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        description = next((m.description for m in metadata if isinstance(m, FieldInfo)), None)
    assert isinstance(annotation, type)
    return annotation, False, description


def run(args: argparse.Namespace) -> int:
    key = os.environ.get(args.admin_key_env)
    if not key:
        print(f"escalator tenants: set {args.admin_key_env} to the admin key", file=sys.stderr)
        return 2
    client = _Client(args.url, key)
    name = getattr(args, "name", None)
    path = f"/admin/tenants/{urllib.parse.quote(name, safe='')}" if name else "/admin/tenants"
    try:
        answer = _call(client, args, path)
    except AdminError as exc:
        print(f"escalator tenants: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def _call(client: _Client, args: argparse.Namespace, path: str) -> Any:
    action = args.action
    if action == "list":
        return client.request("GET", path)
    if action == "show":
        return client.request("GET", path)
    if action == "delete":
        return client.request("DELETE", path)
    if action == "keys":
        return client.request("GET", f"{path}/keys")
    if action == "issue-key":
        return client.request("POST", f"{path}/keys")
    if action == "revoke-key":
        return client.request("DELETE", f"{path}/keys/{urllib.parse.quote(args.key_id, safe='')}")
    if action == "usage":
        query = f"?day={urllib.parse.quote(args.day)}" if args.day else ""
        return client.request("GET", f"{path}/usage{query}")
    limits = {
        name: None if getattr(args, name) is _CLEAR else getattr(args, name)
        for name in TenantLimits.model_fields
        if getattr(args, name) is not None
    }
    if action == "create":
        tenant = client.request("POST", "/admin/tenants", {"name": args.name, **limits})
        if args.issue_key:
            tenant["issued_key"] = client.request("POST", f"{path}/keys")
        return tenant
    assert action == "update"
    return client.request("PATCH", path, limits)


class AdminError(Exception):
    """The proxy refused the call, or could not be reached."""


class _Client:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "authorization": f"Bearer {self.key}",
                **({"content-type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{exc.code}: {_message(exc.read())}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(f"cannot reach the proxy at {self.url}: {reason}") from None


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:500]
