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

Loading also checks, before it opens or hashes any file (docs/bundle-integrity.md):

- every path the manifest names resolves (symlinks followed) inside the bundle folder, and
  no symlink in the folder points out of it;
- ``bundle.json`` matches its own ``digest`` (SHA-256 of its canonical JSON without that
  field). A manifest without one (written before digests) loads with a one-time warning
  that it is unverified. The digest catches edits and corruption; it is no signature;
- files the manifest does not list are named in a warning, or refused with ``strict``
  (``LLM_REC_STRICT_BUNDLE=1``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
STRICT_ENV = "LLM_REC_STRICT_BUNDLE"

log = logging.getLogger(__name__)
_warned_unverified: set[str] = set()


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
    ray_train: dict[str, Any] | None = Field(default=None, description="set when it trained on Ray Train: workers, "
                                             "epochs, seconds, the epochs a restarted run resumed after")


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
    digest: str | None = Field(default=None, description="sha256 of this manifest's canonical JSON without this field")

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


def manifest_digest(data: dict[str, Any]) -> str:
    """``sha256:`` + hex of the canonical JSON (sorted keys, no spaces) of ``data`` without ``digest``."""
    body = {k: v for k, v in data.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + sha256_text(text)


def write_manifest(folder: Path, manifest: BundleManifest) -> None:
    """Checksum every file, then write ``bundle.json`` last (inside the temporary folder), with its digest."""
    manifest.files = file_table(folder)
    data = manifest.model_dump(mode="json", exclude={"digest"})
    manifest.digest = data["digest"] = manifest_digest(data)
    (folder / MANIFEST).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def strict_default() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _refuse_path(rel: str, param: str, why: str) -> BundleError:
    return BundleError(f"bundle.json names {rel!r} ({param}), {why}: refused, the file was not opened",
                       param=f"bundle.{param}")


def inside_bundle(root: Path, rel: str, param: str) -> Path:
    """``root / rel`` if it resolves (symlinks followed) inside ``root``; else a :class:`BundleError` naming ``param``.

    Only the path is looked at: nothing is opened."""
    if not rel or "\\" in rel or "\0" in rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        raise _refuse_path(rel, param, "which is not a relative path inside the bundle folder")
    if ".." in PurePosixPath(rel).parts:
        raise _refuse_path(rel, param, "which climbs out of the bundle folder ('..')")
    path = root / rel
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        raise _refuse_path(rel, param, f"which resolves to {target}, outside the bundle folder (a symlink out?)")
    return path


def _check_folder(folder: Path, manifest: BundleManifest, strict: bool) -> None:
    """Paths first (nothing opened): listed paths and component folders inside, no symlink out, no stray files."""
    root = folder.resolve()
    for rel in manifest.files:
        inside_bundle(folder, rel, f"files[{rel!r}]")
    for i, rec in enumerate(manifest.components):
        if rec.name in ("", ".", "..") or "/" in rec.name or "\\" in rec.name:
            raise _refuse_path(rec.name, f"components[{i}].name", "which is not a plain component name")
    unlisted = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                param = f"files[{rel!r}]" if rel in manifest.files else rel
                raise BundleError(f"bundle file {rel!r} is a symlink to {path.resolve()}, outside the bundle folder: "
                                  "refused, it was not opened", param=f"bundle.{param}")
        unlisted += [(Path(dirpath) / n).relative_to(folder).as_posix() for n in filenames]
    unlisted = sorted(r for r in unlisted if r != MANIFEST and r not in manifest.files)
    if unlisted:
        listing = ", ".join(unlisted[:10]) + (f" and {len(unlisted) - 10} more" if len(unlisted) > 10 else "")
        if strict:
            raise BundleError(f"bundle {str(folder)!r} holds files its manifest does not list: {listing} "
                              f"(refused: strict loading, {STRICT_ENV}=1)", param="bundle.files")
        log.warning("bundle %s holds files its manifest does not list (not loaded, not verified): %s", folder, listing)


def _check_digest(path: Path, raw: dict[str, Any], strict: bool) -> None:
    claimed = raw.get("digest")
    if claimed is None:
        if strict:
            raise BundleError(f"{path} has no digest (written before bundle digests): refused by strict loading "
                              f"({STRICT_ENV}=1); fit the bundle again", param="bundle.digest")
        key = str(path.resolve())
        if key not in _warned_unverified:
            _warned_unverified.add(key)
            log.warning("%s has no digest (written before bundle digests): its manifest is unverified; "
                        "fit the bundle again to add one", path)
        return
    if claimed != manifest_digest(raw):
        raise BundleError(f"{path} does not match its digest: bundle.json was edited or corrupted after the fit; "
                          "restore it or fit the bundle again", param="bundle.digest")


def read_manifest(folder: str | Path, *, verify: bool = True, strict: bool | None = None) -> BundleManifest:
    """The manifest of a complete bundle; every problem is a :class:`BundleError`.

    ``strict`` (default: ``LLM_REC_STRICT_BUNDLE``) refuses files the manifest does not list."""
    folder = Path(folder)
    strict = strict_default() if strict is None else strict
    if not folder.is_dir():
        raise BundleError(f"bundle folder {str(folder)!r} does not exist (create one with `llm-rec fit`)")
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{str(folder)!r} has no {MANIFEST}: not a bundle, or a fit that did not finish (run `llm-rec fit` again)"
        )
    if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
        raise BundleError(f"{path} is a symlink out of the bundle folder: refused", param="bundle")
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        _check_digest(path, raw, strict)
        manifest = BundleManifest.model_validate(raw)
    except (OSError, ValueError, ValidationError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]})") from None
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest.format_version}, this version reads format {FORMAT_VERSION}; "
            "fit the bundle again"
        )
    if verify:
        _check_folder(folder, manifest, strict)
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
