"""The bundle's on-disk contract: ``bundle.json``, file checksums, atomic writes and checked loads.

A bundle is one folder written by ``llm-rec fit``::

    BUNDLE/
      bundle.json                  this manifest (written last)
      catalogue.jsonl              the item catalogue (id, title, description, attributes)
      item_vectors.safetensors     cached item representations (LLM, MiniLM), rows = catalogue order
      components/<name>/...        each learned component's weights (safetensors / npz) and config
      fusion.json                  the fusion + calibration model over the components' scores

It holds no per-user data: no user ids, no user embeddings. A user vector is always
computed from the request's history. The fit writes everything into a temporary sibling
folder and renames it into place only when complete, so an interrupted fit never leaves
a loadable half bundle; loading verifies every file's size and SHA-256 against the
manifest, so a truncated or edited file is a typed error, never a silent wrong score.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ClientError

FORMAT_VERSION = 1
MANIFEST = "bundle.json"


class BundleError(ClientError):
    """A bundle is missing, incomplete, corrupt, or does not match the model/templates in use."""

    code = "invalid_bundle"

    def __init__(self, message: str, *, param: str = "bundle", **extra: Any) -> None:
        super().__init__(message, param=param, **extra)


class ComponentRecord(BaseModel):
    """One component of the fusion: what it is, how it was configured, and whether it was kept."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)
    kept: bool = True
    reason: str = ""
    fit_seconds: float | None = None
    marginal_gain: float | None = Field(default=None, description="validation NDCG@10 lost when this component is removed")
    validation: dict[str, float] = Field(default_factory=dict, description="the component alone on validation")


class BundleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    model: str = Field(description="the LLM whose representations the bundle holds (alias, folder or hub id)")
    model_fingerprint: str | None = Field(default=None, description="hash of the LLM's config and a sample of its weights")
    templates: dict[str, str] = Field(default_factory=dict, description="template name -> sha256 of its source")
    representation: dict[str, Any] = Field(default_factory=dict, description="layer, pooling, dim of h_i")
    dataset: dict[str, Any] = Field(default_factory=dict, description="name, fingerprint, sizes")
    components: list[ComponentRecord] = Field(default_factory=list)
    fusion: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    fit: dict[str, Any] = Field(default_factory=dict, description="command, config, git commit, wall seconds")
    files: dict[str, dict[str, Any]] = Field(default_factory=dict, description="relative path -> size, sha256")
    item_words: dict[str, str] = Field(
        default_factory=dict, description="what the dataset's items are called in reasons (noun, plural, verb, people); "
        "empty (a bundle fitted before they were recorded): the neutral item / interacted with")

    def kept(self) -> list[ComponentRecord]:
        return [c for c in self.components if c.kept]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``folder`` except the manifest itself."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        out[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return out


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target`` in one rename.

    On an exception (or a kill) the temporary folder is removed or left under a
    ``.tmp-`` name that :func:`read_manifest` never accepts as a bundle.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(folder: Path, manifest: BundleManifest) -> None:
    """Checksum every file, then write ``bundle.json`` last (inside the temporary folder)."""
    manifest.files = file_table(folder)
    (folder / MANIFEST).write_text(manifest.model_dump_json(indent=1) + "\n")


def read_manifest(folder: str | Path, *, verify: bool = True) -> BundleManifest:
    """The manifest of a complete bundle; every problem is a :class:`BundleError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"bundle folder {str(folder)!r} does not exist (create one with `llm-rec fit`)")
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{str(folder)!r} has no {MANIFEST}: not a bundle, or a fit that did not finish (run `llm-rec fit` again)"
        )
    try:
        manifest = BundleManifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]})") from None
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest.format_version}, this version reads format {FORMAT_VERSION}; "
            "fit the bundle again"
        )
    if verify:
        for rel, meta in manifest.files.items():
            f = folder / rel
            if not f.is_file():
                raise BundleError(f"bundle file {rel!r} is missing: the bundle is incomplete", param=f"bundle.{rel}")
            if f.stat().st_size != meta["size"] or sha256_file(f) != meta["sha256"]:
                raise BundleError(
                    f"bundle file {rel!r} does not match its checksum (truncated or modified): fit the bundle again",
                    param=f"bundle.{rel}",
                )
    return manifest
