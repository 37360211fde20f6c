"""Putting a trained helper where running proxies read it, and asking them to reload.

`install` copies an artifact directory into `<target>.d/<digest>` and points the symlink
`<target>` at it with one atomic rename, so a proxy reloading at any moment reads either the
old helper or the new one, never half of each. `reload` asks each proxy to re-read its
helpers (POST /admin/helpers/reload with the admin key); a proxy that refuses the helper
keeps its running one and says why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx


class RolloutError(RuntimeError):
    pass


def install(artifact: Path, target: Path) -> Path:
    """Install `artifact` at `target` (a symlink); return the versioned directory."""
    digest = hashlib.sha256(
        (artifact / "helper.json").read_bytes() + (artifact / "weights.json").read_bytes()
    ).hexdigest()[:12]
    versions = target.parent / f"{target.name}.d"
    version = versions / digest
    if not version.exists():
        staging = versions / f".{digest}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(artifact, staging)
        os.replace(staging, version)
    if target.exists() and not target.is_symlink():
        raise RolloutError(f"{target} exists and is not a symlink: move it away first")
    link = target.parent / f".{target.name}.{digest}.link"
    link.unlink(missing_ok=True)
    link.symlink_to(version.relative_to(target.parent))
    os.replace(link, target)
    return version


def reload(urls: list[str], admin_key: str | None, timeout_s: float = 30.0) -> list[str]:
    """POST /admin/helpers/reload to each proxy; one line per proxy saying what happened."""
    if urls and not admin_key:
        raise RolloutError("reloading proxies needs the admin key in ESCALATOR_ADMIN_KEY")
    lines = []
    for url in urls:
        try:
            answer = httpx.post(
                f"{url.rstrip('/')}/admin/helpers/reload",
                headers={"authorization": f"Bearer {admin_key}"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            lines.append(f"{url}: unreachable ({exc})")
            continue
        if answer.status_code == 200:
            lines.append(f"{url}: reloaded {', '.join(answer.json().get('reloaded', []))}")
        else:
            message = answer.json().get("error", {}).get("message", answer.text[:200])
            lines.append(f"{url}: refused ({answer.status_code}): {message}")
    return lines
