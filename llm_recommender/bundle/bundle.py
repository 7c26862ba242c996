"""A loaded bundle: catalogue, fitted components and the fusion, ready to score and retrieve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InvalidRequestError
from ..prompts import builtin_template_dir
from ..protocol import Item
from ..scorers import FUSED, Scorer, scorer_class
from ..scorers.component import Component, as_requests
from ..scorers.fused import LLM_KIND, FusedScorer, Fusion
from ..scorers.item_space import ItemSpace
from .manifest import BundleManifest, read_manifest, sha256_text

# Templates whose text changes what a bundle's vectors or LLM scores mean.
REPRESENTATION_TEMPLATES = ("representation_item.j2", "_items.j2")


def template_hashes(names: Sequence[str], template_dir: Path | None = None) -> dict[str, str]:
    out = {}
    for name in names:
        for folder in ([Path(template_dir)] if template_dir else []) + [builtin_template_dir()]:
            path = folder / name
            if path.is_file():
                out[name] = sha256_text(path.read_text(encoding="utf-8"))
                break
    return out


class Bundle:
    def __init__(self, folder: Path, manifest: BundleManifest, space: ItemSpace,
                 components: dict[str, Component], fusion: Fusion) -> None:
        self.folder = folder
        self.manifest = manifest
        self.space = space
        self.components = components
        self.fusion = fusion
        reference = [space.items[r] for r in fusion.reference]
        self.fused = FusedScorer(dict(components), fusion, reference, rows=space.rows)
        # Two stages when the fusion runs the LLM: retrieval over the catalogue uses the fusion without
        # the LLM components' terms, and the whole fusion reranks what it retrieved (LlamaRec's pattern).
        llm = [c for c in fusion.components if components[c].kind == LLM_KIND]
        cheap = [c for c in fusion.components if c not in llm]
        self.retriever = (FusedScorer({c: components[c] for c in cheap}, fusion.without(llm), reference, rows=space.rows)
                          if llm and cheap else self.fused)

    @classmethod
    def load(cls, folder: str | Path, *, template_dir: Path | None = None, strict: bool | None = None,
             component_config: Mapping[str, Mapping[str, Any]] | None = None) -> Bundle:
        """Check (manifest digest, paths inside the folder, checksums) and load the bundle at ``folder``.

        ``strict`` (default: the ``LLM_REC_STRICT_BUNDLE`` environment variable) refuses files the
        manifest does not list and manifests without a digest; otherwise they are warnings.
        ``component_config``: per component, how it scores here (its ``serving_fields``, e.g. the trained
        ranker's ``backend`` and ``server``); what the fit learned cannot change."""
        folder = Path(folder)
        manifest = read_manifest(folder, strict=strict)
        now = template_hashes(list(manifest.templates), template_dir)
        changed = [t for t, h in manifest.templates.items() if now.get(t) != h]
        if changed:
            raise BundleError(
                f"the bundle was fitted with other prompt templates ({', '.join(changed)} changed since): "
                "its item representations would not match; fit it again or use the original templates",
                param="template_dir",
            )
        try:
            space = ItemSpace.load(folder)
            components = {}
            for rec in manifest.components:
                sub = folder / "components" / rec.name
                if sub.is_dir():
                    found = scorer_class(rec.name, param="bundle")
                    if not issubclass(found, Component):
                        raise BundleError(f"bundle.json lists {rec.name!r} as a component; it is not one")
                    components[rec.name] = found.load(sub, space)
            fusion = Fusion.load(folder)
        except BundleError:
            raise
        except Exception as exc:  # checksums passed, so this is a version/code mismatch
            raise BundleError(f"could not load bundle {folder}: {type(exc).__name__}: {exc}") from exc
        missing = [c for c in fusion.components if c not in components]
        if missing:
            raise BundleError(f"the fusion needs components not in the bundle: {', '.join(missing)}")
        for name, update in (component_config or {}).items():
            if name not in components:
                raise InvalidRequestError(f"component_config names {name!r}, which this bundle does not have "
                                          f"(it has: {', '.join(components)})", param=f"component_config.{name}")
            components[name].configure_serving(update)
        return cls(folder, manifest, space, components, fusion)

    @property
    def strategies(self) -> list[str]:
        return [FUSED, *self.components]

    def scorer(self, name: str) -> Scorer | None:
        if name == FUSED:
            return self.fused
        return self.components.get(name)

    # ---- retrieval --------------------------------------------------------------------
    def retrieve(self, history: Sequence[Item], k: int, *, exclude: Sequence[str] = (),
                 pool: Sequence[Item] | None = None, chunk: int = 4096) -> list[Item]:
        """The ``k`` items the first stage ranks highest for ``history``, from ``pool`` (default: the
        catalogue), history and ``exclude`` left out. The first stage is the fusion, less the terms of
        components that run the LLM (those rerank the ``k`` afterwards)."""
        banned = {h.id for h in history} | set(exclude)
        pool = [it for it in (self.space.items if pool is None else pool) if it.id not in banned]
        if not pool:
            return []
        scores = np.empty(len(pool))
        for start in range(0, len(pool), chunk):
            part = pool[start : start + chunk]
            scores[start : start + len(part)] = self.retriever.score_many([as_requests(history, part)])[0].scores
        top = np.argsort(-scores, kind="stable")[:k]
        return [pool[i] for i in top]

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "model": m.model,
            "components": [c.name for c in m.kept()],
            "left_out": {c.name: c.reason for c in m.components if not c.kept},
            "catalogue_items": len(self.space),
            "validation": m.validation,
        }
