"""``reasons="evidence"``: a sentence per item rendered from its evidence with ``prompts/reason_evidence.j2``.

Deterministic, fast (no LLM) and grounded: it cites only history items from the evidence and
only attribute values the item itself has (``shared_attributes``), and says which component
carried the score. An item the bundle has never seen says so.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from ..data.movielens import natural_title
from ..prompts import builtin_template_dir
from ..protocol import Evidence, EvidenceItem, Item

TEMPLATE = "reason_evidence.j2"


@lru_cache(maxsize=8)
def _env(template_dir: str | None) -> SandboxedEnvironment:
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(template_dir)] if template_dir else []
    loaders.append(jinja2.FileSystemLoader(str(builtin_template_dir())))
    return SandboxedEnvironment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                                autoescape=False, trim_blocks=True, lstrip_blocks=True)


def citations(evidence: list[Evidence]) -> list[tuple[EvidenceItem | None, bool]]:
    """Per item of a response, the history item its reason cites (where it can, one no earlier reason
    cited, so reasons differ) and whether an earlier reason already cited it."""
    used: set[str] = set()
    out: list[tuple[EvidenceItem | None, bool]] = []
    for ev in evidence:
        fresh = [e for e in ev.history_items if e.id not in used]
        cited = (fresh or ev.history_items or [None])[0]
        out.append((cited, cited is not None and cited.id in used))
        if cited is not None:
            used.add(cited.id)
    return out


def evidence_reasons(items: list[Item], evidence: list[Evidence], template_dir: Path | None = None) -> list[str]:
    """One reason per item; a history item cited again is said with the recommended item's name, so they differ."""
    return [evidence_reason(item, ev, template_dir, cited=cited, name_item=repeat)
            for item, ev, (cited, repeat) in zip(items, evidence, citations(evidence))]


def evidence_reason(item: Item, evidence: Evidence, template_dir: Path | None = None, cited: Any = None,
                    name_item: bool = False) -> str:
    top = max(evidence.contributions, key=lambda c: evidence.contributions[c], default="")
    cited = cited if cited is not None else (evidence.history_items[0] if evidence.history_items else None)
    if cited is not None:  # "The Godfather (1972)", not the file's "Godfather, The (1972)"
        cited = cited.model_copy(update={"title": natural_title(cited.title)})
    genres = (cited.shared if cited is not None else sorted({v for vs in evidence.shared_attributes.values() for v in vs}))[:3]
    text = _env(str(template_dir) if template_dir else None).get_template(TEMPLATE).render(
        item=item, evidence=evidence, top=top, cited=cited, genres=[g.lower() for g in genres],
        this=natural_title(item.title) if name_item else "this")
    return " ".join(text.split())

