"""Evidence for the top-k items of a fused ranking, from the components that produced it.

* ``contributions``: the fusion's terms theta_k * x_k (standardised), summed per component,
  so the largest one is, by construction, what moved the item's logit most;
* ``history_items``: the history items behind the co-occurrence and text-similarity
  components (users who consumed both; the most similar texts), strongest first;
* ``shared_attributes``: attribute values (genres, brand, ...) the item shares with them.

Only the components the fusion kept are consulted: one it dropped (``kept: false`` in
``bundle.json``) did not rank the item, so it is neither cited nor named.

The history items come from what scoring kept where a component keeps it: its ``ScoreResult.details``
holds ``"history_links"`` (below), passed on by the fusion under ``details["parts"][name]``. A component
that keeps nothing is asked again (``explain(request, i)``, which recomputes its part of the score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..protocol import Evidence, EvidenceItem, HistoryEntry, Item, RankRequest
from ..scorers.base import ScoreResult

MAX_HISTORY_ITEMS = 3
LIKED = 4.0  # ratings at or above count as liked (MovieLens 1-5 stars)
CO_OCCURRENCE = ("cooccurrence", "itemknn")
# A component's ``details["history_links"]``: {"key": "cooccurring" | "similar_text", "history": [ids, one per row],
# "strength": array (history, candidates): each history item's part of each candidate's score}; read with
# key -> (how many, only positive ones, rounding), the lists the components' ``explain`` gives.
LINK_RULES: dict[str, tuple[int, bool, int | None]] = {"cooccurring": (6, True, None), "similar_text": (3, False, 3)}
# A history item is cited for text similarity ("described in much the same words") only from this cosine on:
# below it (MiniLM: Star Wars (1977) vs The Shawshank Redemption (1994) is 0.46) the claim would not be true.
TEXT_CITATION_MIN = 0.6


def attribute_values(item: Item) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key, val in (item.attributes or {}).items():
        vals = val if isinstance(val, list) else [val]
        out[key] = {str(v) for v in vals if str(v)}
    return out


def history_links(result: ScoreResult, component: str) -> dict[str, Any] | None:
    """What scoring kept of ``component``'s per-history-item terms (``None``: it kept nothing)."""
    return result.details.get("parts", {}).get(component, {}).get("history_links")


def _links(links: dict[str, Any], index: int, position: dict[str, int]) -> dict[str, list[tuple[str, float]]]:
    """The history items behind candidate ``index``, strongest first (ties: the request's order, as
    ``explain`` breaks them); ``position``: each history id's first place in the request."""
    top, positive, digits = LINK_RULES[links["key"]]
    strength = np.asarray(links["strength"], dtype=float)[:, index]
    ids = links["history"]
    order = sorted(range(len(ids)), key=lambda k: (-strength[k], position.get(ids[k], len(position))))
    found = [(ids[k], float(strength[k])) for k in order[:top] if not positive or strength[k] > 0]
    return {links["key"]: [(hid, round(s, digits)) if digits is not None else (hid, s) for hid, s in found]}


def gather_evidence(bundle: Any, request: RankRequest, result: ScoreResult, indices: list[int]) -> list[Evidence]:
    contrib = result.details.get("contributions", {})
    by_id: dict[str, HistoryEntry] = {h.id: h for h in request.history}
    position = {h.id: k for k, h in reversed(list(enumerate(request.history)))}
    kept = [c for c in bundle.fusion.components if c in bundle.components]
    kept_links = {c: history_links(result, c) for c in kept}
    out = []
    for i in indices:
        terms = {c: float(v[i]) for c, v in contrib.items()}
        total = sum(abs(v) for v in terms.values()) or 1.0
        cand = request.candidates[i]
        cited: list[EvidenceItem] = []
        # citations come from every component the fusion kept that can name history items (co-occurrence
        # counts, text similarity), also when the fusion weights another one higher: they are facts about this item
        for name in kept:
            links = kept_links[name]
            found = _links(links, i, position) if links is not None else bundle.components[name].explain(request, i)
            for key in ("cooccurring", "similar_text"):
                for hid, strength in found.get(key, [])[:5]:
                    h = by_id.get(hid)
                    if key == "similar_text" and strength < TEXT_CITATION_MIN:
                        continue
                    if h is not None and all(e.id != hid for e in cited):
                        cited.append(EvidenceItem(id=hid, title=h.title, component=name, strength=float(strength),
                                                  rating=h.rating, stated=h.stated))
        # what the user liked explains a recommendation better than what they rated low
        # and a history item behind the component that carried the score (its largest term) explains it best
        top = max(terms, key=lambda c: terms[c], default="")
        cited.sort(key=lambda e: (e.component != top, e.rating is not None and e.rating < LIKED,
                                  -e.strength if e.component in CO_OCCURRENCE else 0))
        cited = cited[:MAX_HISTORY_ITEMS]
        mine = attribute_values(cand)
        shared: dict[str, list[str]] = {}
        for e in cited:
            for key, vals in attribute_values(by_id[e.id]).items():
                common = sorted(mine.get(key, set()) & vals)
                if common:
                    shared[key] = sorted(set(shared.get(key, [])) | set(common))
                    e.shared = sorted({*e.shared, *common})
        out.append(Evidence(contributions={k: round(v, 4) for k, v in terms.items()},
                            shares={k: round(abs(v) / total, 4) for k, v in terms.items()},
                            history_items=cited, shared_attributes=shared,
                            known_item=cand.id in bundle.space.index))
    return out
