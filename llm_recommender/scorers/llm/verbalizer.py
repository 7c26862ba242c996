"""Verbalizer (LlamaRec-style): candidates get single-token labels; one forward pass.

The next-token log-probabilities of the label tokens, renormalised over the labels in
use, are a distribution over candidates. With ``permutations > 1`` the candidates are
also shown in seeded shuffled orders (one pass each, batched) and the per-candidate
probabilities averaged, which reduces the model's position bias. ``permutation_mode="cyclic"``
uses evenly spaced cyclic shifts instead: with as many passes as candidates, every
candidate is shown once at every position, so a pure position preference cancels exactly.
``order_invariant`` starts those orders from one fixed by the candidate ids (a seeded hash)
instead of the request's, so the answer does not depend on how the request lists the
candidates: with full cyclic shifts, what position bias leaves (which item stands next to
which) is then the same for every order a caller sends.

With ``label_prior`` (contextual calibration, Zhao et al. 2021) the label distribution is
divided by the model's prior over the labels, measured on a content-free prompt (no
history, every candidate "N/A") once per model, template and candidate count, and
renormalised, before positions are mapped back to candidates.
"""

from __future__ import annotations

import hashlib
import string
from typing import Literal

import numpy as np
from pydantic import Field

from ...backends.base import Backend
from ...configurable import ComponentConfig
from ...errors import CapabilityError, TooManyCandidatesError
from ...protocol import Item, RankRequest
from ..base import LLMScorer, ScoreResult, softmax_logprobs

LABEL_ALPHABET = string.ascii_uppercase


def label_tokens(backend: Backend) -> tuple[list[str], list[int]]:
    """The leading labels of ``A..Z`` that are single, distinct tokens for this backend."""
    labels, ids = [], []
    for label in LABEL_ALPHABET:
        tid = backend.single_token_id(label)
        if tid is None or tid in ids:
            break
        labels.append(label)
        ids.append(tid)
    if len(labels) < 2:
        raise CapabilityError(f"model {backend.model_name!r} has no single-token labels A, B, ...", param="model")
    return labels, ids


def permutation_orders(request: RankRequest, k: int, seed: int) -> list[list[int]]:
    """Identity first, then ``k-1`` shuffles seeded by ``seed`` and the candidate ids."""
    n = len(request.candidates)
    digest = hashlib.sha256("\x1f".join(c.id for c in request.candidates).encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    orders = [list(range(n))]
    for _ in range(k - 1):
        orders.append([int(i) for i in rng.permutation(n)])
    return orders


def canonical_order(request: RankRequest, seed: int) -> list[int]:
    """The candidates' indices sorted by a seeded hash of their ids: the same list for any request order."""
    def key(i: int) -> bytes:
        return hashlib.sha256(f"{seed}\x1f{request.candidates[i].id}".encode()).digest()
    return sorted(range(len(request.candidates)), key=key)


def cyclic_orders(n: int, k: int) -> list[list[int]]:
    """``k`` evenly spaced cyclic shifts of ``range(n)``, identity first (``k >= n``: all ``n`` shifts)."""
    m = min(k, n)
    shifts = sorted({round(j * n / m) % n for j in range(m)})
    return [[(pos + s) % n for pos in range(n)] for s in shifts]


CONTENT_FREE_TITLE = "N/A"
_PRIORS: dict[tuple[str, str, int], np.ndarray] = {}  # (model, template source, n) -> label prior


class VerbalizerConfig(ComponentConfig):
    """The verbalizer's knobs: ``settings.verbalizer`` (flat names: the same)."""

    permutations: int = Field(default=1, ge=1, le=100, description="orders averaged to reduce position bias (one "
                              "prompt each; with permutation_mode='cyclic', the number of candidates moves every "
                              "candidate through every position)")
    permutation_seed: int = 0
    permutation_mode: Literal["random", "cyclic"] = "random"
    label_prior: bool = Field(default=False, description="divide out the model's label prior (contextual calibration)")
    order_invariant: bool = Field(default=False, description="start the orders from one fixed by the candidate ids, not "
                                  "the request's, so the scores do not depend on how the request lists the candidates")


class VerbalizerScorer(LLMScorer):
    name = "verbalizer"
    config_class = VerbalizerConfig
    config: VerbalizerConfig

    def label_prior(self, n: int) -> np.ndarray:
        """The model's distribution over the first ``n`` labels on a content-free list (cached)."""
        labels, ids = self._labels(n)
        views = [self.renderer.item_view(Item(id=str(i), title=CONTENT_FREE_TITLE), label=labels[i]) for i in range(n)]
        text = self.renderer.fit("verbalizer.j2", [], candidates=views, labels=labels).text
        key = (self.backend.model_name, text, n)  # the rendered prompt stands for the template
        if key not in _PRIORS:
            _PRIORS[key] = softmax_logprobs(self.backend.next_token_logprobs([text], ids)[0])
        return _PRIORS[key]

    def _orders(self, request: RankRequest) -> list[list[int]]:
        """Presentation orders (``order[position]`` = candidate index), identity first unless order_invariant."""
        base = canonical_order(request, self.config.permutation_seed) if self.config.order_invariant else None
        if self.config.permutation_mode == "cyclic":
            orders = cyclic_orders(len(request.candidates), self.config.permutations)
        else:  # shuffles seeded by the ids in the base order, so they too are the same for any request order
            seen = request if base is None else request.model_copy(update={"candidates": [request.candidates[i] for i in base]})
            orders = permutation_orders(seen, self.config.permutations, self.config.permutation_seed)
        return orders if base is None else [[base[j] for j in order] for order in orders]

    def _labels(self, n: int) -> tuple[list[str], list[int]]:
        labels, ids = label_tokens(self.backend)
        if n > len(labels):
            raise TooManyCandidatesError(
                f"{n} candidates but the verbalizer has only {len(labels)} single-token labels "
                f"({labels[0]}..{labels[-1]}); send at most {len(labels)} candidates",
                param="candidates",
            )
        return labels[:n], ids[:n]

    def score_many(self, requests: list[RankRequest], orders: list[list[list[int]]] | None = None) -> list[ScoreResult]:
        """``orders`` overrides the presentation orders (used by the position-bias sweep)."""
        self.backend.require("logprobs")
        prompts: list[str] = []
        plan: list[tuple[list[list[int]], list[int], int, list[str], tuple[int, int, int]]] = []
        for r_idx, request in enumerate(requests):
            n = len(request.candidates)
            labels, ids = self._labels(n)
            req_orders = orders[r_idx] if orders is not None else self._orders(request)
            history = self.renderer.history_views(request.history)
            used, notes = len(history), []
            for order in req_orders:
                views = [self.renderer.item_view(request.candidates[c], label=labels[pos]) for pos, c in enumerate(order)]
                rendered = self.renderer.fit("verbalizer.j2", history, candidates=views, labels=labels)
                prompts.append(rendered.text)
                used = min(used, rendered.history_used)
                notes = notes or rendered.notes
            mine = prompts[len(prompts) - len(req_orders):]
            own = (sum(self.backend.count_tokens(p) for p in mine), 0, len(mine))  # this request's own usage
            plan.append((req_orders, ids, used, notes, own))

        all_ids = sorted({t for _, ids, _, _, _ in plan for t in ids})
        column = {t: j for j, t in enumerate(all_ids)}
        if self.backend.shares_prompt_starts:  # per request: its answer must not depend on its batch
            sizes = np.cumsum([0] + [len(req_orders) for req_orders, *_ in plan])
            logprobs = np.concatenate([self.backend.next_token_logprobs(prompts[a:b], all_ids)
                                       for a, b in zip(sizes[:-1], sizes[1:])], axis=0)
        else:
            logprobs = self.backend.next_token_logprobs(prompts, all_ids)

        results, row = [], 0
        for (req_orders, ids, used, notes, own), request in zip(plan, requests):
            n = len(request.candidates)
            cols = [column[t] for t in ids]
            prior = self.label_prior(n) if self.config.label_prior else None
            probs = np.zeros(n)
            label_mass = []
            for order in req_orders:
                lp = logprobs[row, cols]
                row += 1
                label_mass.append(float(np.exp(lp).sum()))
                p = softmax_logprobs(lp)
                if prior is not None:
                    p = p / prior
                    p = p / p.sum()
                for pos, cand in enumerate(order):
                    probs[cand] += p[pos]
            probs /= len(req_orders)
            results.append(
                ScoreResult(
                    scores=np.log(np.clip(probs, 1e-12, None)),
                    probabilities=probs,
                    history_used=used,
                    notes=list(notes),
                    details={"label_mass": float(np.mean(label_mass)), "permutations": len(req_orders),
                             "label_prior": None if prior is None else prior.tolist()},
                    usage=own,
                )
            )
        return results
