"""The LLM ranker's prompt and scoring: the verbalizer's objective with collaborative hints.

One prompt shows the history (titles; no ratings: the training sequences carry none, and the
prompt must read the same in training and at serving) and up to ``max_per_pass`` candidates,
each labelled with a single-token letter and followed by its hints; the next-token
log-probabilities of the labels, renormalised over the labels in use, are the candidates'
scores. Requests with more candidates run in chunks of ``max_per_pass`` (one pass each).
Training renders its examples through :meth:`RankerPrompter.render` too, so the model is
trained on exactly the prompts it scores.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..protocol import Item, RankRequest
from ..scorers.base import ScoreResult, softmax_logprobs
from ..scorers.item_space import ItemSpace
from ..scorers.llm.verbalizer import label_tokens
from .hints import CollaborativeHints

SLOT = "\x00"  # the item-token mark (see soft_tokens: a control character item text never carries)
# readout "slot": a candidate's score is log p(" yes") - log p(" no") right after its soft token (the logit
# difference: a word shown after every candidate instead would be copied in context and its log-prob saturate)
READOUT_WORDS = (" yes", " no")

TEMPLATE = "llm_ranker.j2"
SoftPrompt = tuple  # (token ids, slot positions, catalogue rows of the slots[, CF score, label index of each slot])


class RankerPrompter:
    """``item_tokens``: an :class:`~.soft_tokens.ItemTokens` module (one soft token per item, beside the
    title or, with ``titles=False``, instead of it), or None for text prompts."""

    def __init__(self, backend: Any, space: ItemSpace, hints: CollaborativeHints, *, history: int,
                 max_per_pass: int, show_hints: bool, retrieval_history: int, item_tokens: Any = None,
                 titles: bool = True, item_scores: Any = None, slot_labels: bool = False,
                 readout: str = "label", cold_dropout: float = 0.0) -> None:
        from ..prompts import PromptConfig, PromptRenderer

        self.backend, self.space, self.hints = backend, space, hints
        self.show_hints, self.retrieval_history = show_hints, retrieval_history
        self.item_tokens, self.titles = item_tokens, titles
        # (history items, candidate items) -> item-model logits per candidate: the slots' CF scores (or None)
        self.item_scores = item_scores
        self.slot_labels = slot_labels  # candidate slots also carry their label's vector (ItemTokens.labels)
        # label: the candidates' label tokens at the last position (the verbalizer); slot: the mark's
        # log-probability right after each candidate's soft token (one score per candidate, same pass)
        self.readout = readout
        self.cold_dropout = cold_dropout  # training: share of candidates shown as items the bundle never saw
        self.readout_ids = readout_token_ids(backend.tokenizer) if readout == "slot" else []
        self.renderer = PromptRenderer(backend, PromptConfig(max_history=history))
        labels, ids = label_tokens(backend)
        n = min(max_per_pass, len(labels))
        self.labels, self.label_ids = labels[:n], ids[:n]

    @property
    def per_pass(self) -> int:
        return len(self.labels)

    def render(self, history: Sequence[Item], candidates: Sequence[Item], hints: Sequence[str]) -> tuple[str, int]:
        """The chat prompt and how many history items it shows (the oldest are dropped to fit the budget)."""
        if len(candidates) > self.per_pass:
            raise InvalidRequestError(f"{len(candidates)} candidates in one pass; at most {self.per_pass}",
                                      param="candidates")
        r = self.renderer
        keep = r.config.max_history
        views = [dataclasses.replace(r.item_view(h), rating=None) for h in (list(history)[-keep:] if keep else [])]
        cands = [r.item_view(c, label=self.labels[k]) for k, c in enumerate(candidates)]
        shown = list(hints) if self.show_hints else [""] * len(candidates)
        slot = SLOT if self.item_tokens is not None else ""
        out = r.fit(TEMPLATE, views, candidates=cands, labels=self.labels[: len(candidates)], hints=shown,
                    slot=slot, titles=self.titles, slot_last=self.readout == "slot")
        return out.text, out.history_used

    @property
    def soft(self) -> bool:
        return self.item_tokens is not None

    def soft_prompt(self, history: Sequence[Item], candidates: Sequence[Item],
                    hints: Sequence[str], cf_history: Sequence[Item] | None = None) -> tuple[SoftPrompt, int]:
        """``(token ids, slot positions, catalogue rows of the slots)`` and how many history items it shows;
        -1 rows (items the bundle has never seen) get the unknown-item vector."""
        from .soft_tokens import encode

        text, used = self.render(history, candidates, hints)
        keep = self.renderer.config.max_history
        shown = list(history)[-keep:] if keep else []
        rows = self.space.rows(shown[len(shown) - used :] if used else []).tolist()
        cand_rows = self.space.rows(list(candidates))
        n_hist = len(rows)
        rows += cand_rows.tolist()
        tok = self.backend.tokenizer
        placeholder = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # replaced anyway
        ids, slots = encode(tok, text, rows, placeholder)
        if self.item_scores is None and not self.slot_labels:
            return (ids, slots, rows), used
        scores = [0.0] * len(rows)
        if self.item_scores is not None:
            past = list(cf_history if cf_history is not None else history)[-self.retrieval_history :]
            scores = [0.0] * n_hist + cf_zscores(self.item_scores, past, candidates)
        labels = [-1] * n_hist + (list(range(len(cand_rows))) if self.slot_labels else [-1] * len(cand_rows))
        return (ids, slots, rows, scores, labels), used

    def prompt(self, ex: dict[str, Any]) -> tuple[Any, list[int]]:
        """A training example (catalogue rows) -> (prompt, label token ids): what the training loop trains on
        (the prompt text, or a :data:`SoftPrompt` with item tokens)."""
        items = self.space.items
        args = ([items[r] for r in ex["history"]], [items[r] for r in ex["candidates"]], ex["hints"])
        label_ids = self.label_ids[: len(ex["candidates"])]
        if self.soft:
            past = [items[r] for r in ex.get("cf_history", ex["history"])]
            prompt = self.soft_prompt(*args, cf_history=past)[0]
            return (_cold_dropped(prompt, len(ex["candidates"]), self.cold_dropout, ex) if self.cold_dropout
                    else prompt), label_ids
        return self.render(*args)[0], label_ids


class RankerScorer:
    """Scores requests with a (tuned) model through the backend: one pass per chunk of candidates."""

    def __init__(self, prompter: RankerPrompter) -> None:
        self.prompter = prompter

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        p = self.prompter
        backend = p.backend
        out = []
        for request in requests:
            history = p.renderer.chronological(request.history)
            ranks = p.hints.catalogue_ranks(history[-p.retrieval_history :]) if p.show_hints else None
            rows = p.space.rows(request.candidates)
            words = p.hints.words(rows, ranks) if ranks is not None else [""] * len(rows)
            n = len(request.candidates)
            chunks = [range(a, min(n, a + p.per_pass)) for a in range(0, n, p.per_pass)]
            prompts: list[Any] = []
            used = len(history)
            for chunk in chunks:
                cands, hints = [request.candidates[i] for i in chunk], [words[i] for i in chunk]
                prompt, shown = p.soft_prompt(history, cands, hints) if p.soft else p.render(history, cands, hints)
                prompts.append(prompt)
                used = min(used, shown)
            scores = np.zeros(n)
            if prompts:
                lp = self._soft_logprobs(prompts, [len(c) for c in chunks]) if p.soft else backend.next_token_logprobs(prompts, p.label_ids)
                for row, chunk in enumerate(chunks):
                    scores[list(chunk)] = np.log(np.clip(softmax_logprobs(lp[row, : len(chunk)]), 1e-12, None))
            notes = [f"ranked in {len(chunks)} passes of at most {p.per_pass} candidates"] if len(chunks) > 1 else []
            out.append(ScoreResult(scores=scores, probabilities=np.exp(scores), history_used=used, notes=notes,
                                   details={"passes": len(chunks)}))
        return out

    def _soft_logprobs(self, prompts: list[SoftPrompt], counts: list[int]) -> np.ndarray:
        """Label log-probabilities of soft-token prompts (``counts``: candidates in each): the projected item
        vectors go to the backend as input embeddings at the slots (transformers: ``inputs_embeds``; vLLM: its
        prompt-embeddings input). Slot readout: each candidate's yes-minus-no log-probability, -inf past
        ``counts``."""
        import torch

        from ..backends.base import EmbedsPrompt

        p = self.prompter
        p.backend.require("prompt_embeds")
        tokens = p.item_tokens
        device = next(tokens.parameters()).device
        with torch.inference_mode():
            embeds = [EmbedsPrompt(pr[0], pr[1], tokens(torch.tensor(pr[2], dtype=torch.long, device=device),
                                                        _slot_field(pr, 3, torch.float32, device),
                                                        _slot_field(pr, 4, torch.long, device)).float())
                      for pr in prompts]
        if p.readout == "label":
            return p.backend.embeds_next_token_logprobs(embeds, p.label_ids)
        # slot readout: the candidates' slots are the prompt's last ones (one per candidate of the pass)
        out = np.full((len(prompts), p.per_pass), -np.inf)
        at = [pr[1][len(pr[1]) - n:] for pr, n in zip(prompts, counts)]
        for r, lp in enumerate(p.backend.embeds_logprobs_at(embeds, at, p.readout_ids)):
            out[r, : len(lp)] = lp[:, 0] - lp[:, 1]
        return out


def _cold_dropped(prompt: SoftPrompt, n_cand: int, share: float, ex: dict[str, Any]) -> SoftPrompt:
    """``prompt`` with a seeded ``share`` of its candidate slots shown as items with no vector (row -1), their
    CF scores kept: how a cold item is served. The draw depends on the example alone, so a resumed run
    trains on the same prompts."""
    seed = zlib.crc32(np.asarray([ex["target"], *ex["candidates"], *ex["history"]], dtype=np.int64).tobytes())
    drop = np.random.default_rng(seed).random(n_cand) < share
    rows = list(prompt[2])
    first = len(rows) - n_cand
    for k in np.flatnonzero(drop):
        rows[first + int(k)] = -1
    return (prompt[0], prompt[1], rows, *prompt[3:])


def readout_token_ids(tokenizer: Any) -> list[int]:
    """The single-token ids of :data:`READOUT_WORDS` (the slot readout's yes and no)."""
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in READOUT_WORDS]
    if any(len(i) != 1 for i in ids):
        raise InvalidRequestError(f"the tokenizer splits {READOUT_WORDS} into several tokens: the slot readout "
                                  "needs single tokens; use readout label", param="readout")
    return [i[0] for i in ids]


def _slot_field(prompt: SoftPrompt, index: int, dtype: Any, device: Any) -> Any:
    """Field ``index`` of a soft prompt as a tensor (3: the slots' CF scores, 4: their label indices, -1 for
    history slots), or None when the prompt has no such field (the option is off)."""
    import torch

    return torch.tensor(prompt[index], dtype=dtype, device=device) if len(prompt) > index else None


def cf_zscores(item_scores: Any, history: Sequence[Item], candidates: Sequence[Item]) -> list[float]:
    """The item model's scores of the candidates after this history, z-scored over them (0 where they are all
    equal). Items it has not seen are scored as that model scores them: through their text vectors when it
    has a text path (cold items), lowest when it is ID-only."""
    raw = np.asarray(item_scores(list(history), list(candidates)), dtype=float)
    sd = raw.std()
    return ((raw - raw.mean()) / sd).tolist() if sd > 1e-9 else [0.0] * len(raw)
