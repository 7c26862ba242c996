"""The in-process transformers backend (CPU, or GPUs placed by ``accelerate``).

* ``next_token_logprobs`` batches prompts with left padding and explicit position ids on
  GPUs; on a CPU it runs them one by one, except that prompts sharing a long start compute
  it once and continue it packed (``shares_prompt_starts``).
* ``prefix_next_token_logprobs`` runs the shared prefix once, keeps its KV cache, and
  scores the suffixes packed into one row on top of it, each masked from the others
  (prefix reuse for the pointwise strategy: no cache copies and no padding).
* ``generate`` is greedy; a JSON schema is enforced with xgrammar's logits processor
  when xgrammar is installed (otherwise output is parsed and validated afterwards).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from ..model_store import resolve_model
from . import cpu_attention
from ._tokenizer import TokenizerMixin
from .base import Backend, EmbedsPrompt, Generation
from .configs import TransformersConfig
from .constrained import PermutationState, hf_spec
from .key_tree import KeyTree, keep_rows
from .kit import auto_dtype, mask_positions, padded_batch

log = logging.getLogger(__name__)

# Suffix tokens packed into one pass over the cached prefix (pointwise: about 40 per candidate).
SUFFIX_PACK_TOKENS = 2048
# Prompts of one call sharing at least this many leading tokens compute them once (CPU).
MIN_SHARED_PREFIX = 64


class TransformersBackend(TokenizerMixin, Backend):
    name = "transformers"
    config_class = TransformersConfig
    supports_logprobs = True
    supports_json_schema = True
    supports_permutation_decoding = True
    supports_hidden_states = True
    supports_prompt_embeds = True

    def __init__(self, config: TransformersConfig | dict[str, Any] | None = None, *, model: Any = None,
                 tokenizer: Any = None, **kwargs: Any) -> None:
        """``config`` (or keyword arguments) as for every component; ``model`` / ``tokenizer``:
        an already loaded model and tokenizer to wrap instead of loading ``config.model``."""
        super().__init__()
        import torch

        self.config: TransformersConfig = self.validate_config(config, kwargs)  # type: ignore[assignment]
        self._torch = torch
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        if model is None:
            model, tokenizer = self._load(self.config)
        self.model = model.eval()
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = next(self.model.parameters()).device
        self._xgr_compiler: Any = None
        self._grammars: dict[str, Any] = {}

    # ---- loading ----------------------------------------------------------------
    def _dtype(self, config: TransformersConfig, cuda: bool) -> Any:
        return getattr(self._torch, config.dtype if config.dtype != "auto" else auto_dtype(cuda))

    def _load(self, config: TransformersConfig) -> tuple[Any, Any]:
        path = resolve_model(config.model)  # a missing folder or an unreachable hub fails here, in seconds
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = self._torch
        cuda = torch.cuda.is_available() and config.device in ("auto", "cuda")
        kwargs: dict[str, Any] = {"dtype": self._dtype(config, cuda)}
        if not cuda and config.device in ("auto", "cpu"):
            kwargs["attn_implementation"], why = cpu_attention.choose(config.cpu_attention)
            log.info("CPU attention: %s (%s)", kwargs["attn_implementation"], why)
        if cuda:
            kwargs["device_map"] = "auto"  # accelerate places layers over the GPUs
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load model {config.model!r} ({path}): {exc}. Use a local folder, "
                "the default alias, or a Hugging Face id on a machine that reaches the hub.",
                param="model",
            ) from exc
        if not cuda and config.device not in ("auto", "cpu"):
            model = model.to(config.device)  # pyright: ignore[reportArgumentType]  (transformers' stub types .to oddly)
        return model, tokenizer

    # ---- description --------------------------------------------------------------
    @property
    def context_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", 2048)
        return int(min(n, 1_000_000))

    @property
    def attention_implementation(self) -> str | None:
        """The attention the model runs (on CPU: ``sdpa`` or this package's blocked kernel, see cpu_attention.choose)."""
        return getattr(self.model.config, "_attn_implementation", None)

    @property
    def dtype_name(self) -> str:
        return str(next(self.model.parameters()).dtype).replace("torch.", "")

    # ---- scoring ------------------------------------------------------------------
    def _last_logprobs(self, logits: Any, token_ids: Sequence[int]) -> np.ndarray:
        torch = self._torch
        lp = torch.log_softmax(logits.float(), dim=-1)
        return lp[:, list(token_ids)].cpu().numpy().astype(np.float64)

    @property
    def shares_prompt_starts(self) -> bool:
        return self.device.type == "cpu" and not self.config.pad_batches_on_cpu

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        encoded = [self.encode(p) for p in prompts]
        if not self.shares_prompt_starts:  # GPUs (or the padded path forced on CPU): padded batches
            return np.concatenate([self._padded_pass(encoded[i : i + self.config.batch_size], token_ids)
                                   for i in range(0, len(encoded), self.config.batch_size)], axis=0)
        # On a CPU a prefill pass is compute-bound: batching prompts of different lengths only
        # adds padding (measured: 4 padded prompts cost 2.75 s each vs 1.7 s one by one). Prompts
        # that share a long start (the permutations of one request share its whole history)
        # compute it once and continue it packed.
        out = []
        for shared, group in _shared_prefix_groups(encoded, MIN_SHARED_PREFIX):
            if len(group) == 1:
                out.append(self._padded_pass(group, token_ids))
            else:
                out.append(self._after_prefix(group[0][:shared], [g[shared:] for g in group], token_ids))
        return np.concatenate(out, axis=0)

    def _padded_pass(self, chunk: list[list[int]], token_ids: Sequence[int]) -> np.ndarray:
        """One forward pass over ``chunk`` (left-padded when it has several rows): last-token log-probs."""
        torch = self._torch
        ids, mask = padded_batch(chunk, self.tokenizer.pad_token_id)  # left: the last column is every row's last token
        padded = bool((mask == 0).any())
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids.to(self.device),
                # no mask and no positions for unpadded rows: the pure causal pass (fast kernels)
                attention_mask=mask.to(self.device) if padded else None,
                position_ids=mask_positions(mask).to(self.device) if padded else None,
                use_cache=False,
                logits_to_keep=1,
            ).logits[:, -1, :]
        self.stats.add(prompt_tokens=sum(len(c) for c in chunk), forward_passes=1)
        return self._last_logprobs(logits, token_ids)

    def embeds_next_token_logprobs(self, prompts: Sequence[EmbedsPrompt], token_ids: Sequence[int]) -> np.ndarray:
        """One unpadded pass per prompt on ``inputs_embeds``: the tokens' embeddings, the given rows at ``positions``."""
        torch = self._torch
        embed = self.model.get_input_embeddings()
        out = []
        with torch.inference_mode():
            for p in prompts:
                x = self._embeds_input(embed, p)
                logits = self.model(inputs_embeds=x, use_cache=False, logits_to_keep=1).logits[:, -1, :]
                self.stats.add(prompt_tokens=len(p.ids), forward_passes=1)
                out.append(self._last_logprobs(logits, token_ids))
        return np.concatenate(out, axis=0) if out else np.zeros((0, len(token_ids)))

    def embeds_logprobs_at(self, prompts: Sequence[EmbedsPrompt], at: Sequence[Sequence[int]],
                           token_ids: Sequence[int]) -> list[np.ndarray]:
        """One unpadded pass per prompt; the log-softmax of the LM head at the positions ``at`` only."""
        torch = self._torch
        embed = self.model.get_input_embeddings()
        out = []
        with torch.inference_mode():
            for p, ks in zip(prompts, at):
                x = self._embeds_input(embed, p)
                hidden = self.model.get_decoder()(inputs_embeds=x, use_cache=False).last_hidden_state[0]
                logits = self.model.get_output_embeddings()(hidden[list(ks)]).float()
                lp = torch.log_softmax(logits, dim=-1)[:, list(token_ids)]
                self.stats.add(prompt_tokens=len(p.ids), forward_passes=1)
                out.append(lp.cpu().numpy().astype(np.float64))
        return out

    def _embeds_input(self, embed: Any, p: EmbedsPrompt) -> Any:
        """``(1, len(p.ids), hidden)`` input embeddings of ``p``: its tokens', with ``p.vectors`` at ``p.positions``."""
        x = embed(self._torch.tensor([p.ids], dtype=self._torch.long, device=self.device)).clone()
        if p.positions:
            x[0, list(p.positions)] = p.vectors.to(device=self.device, dtype=x.dtype)
        return x

    def prefix_next_token_logprobs(self, prefix: str, suffixes: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        prefix_ids = self.encode(prefix)
        if not prefix_ids:
            return self.next_token_logprobs(list(suffixes), token_ids)
        return self._after_prefix(prefix_ids, [self.encode(s) for s in suffixes], token_ids)

    def _after_prefix(self, prefix_ids: list[int], suffixes: list[list[int]], token_ids: Sequence[int]) -> np.ndarray:
        """Run ``prefix_ids`` once, then every suffix on its KV cache: last-token log-probs per suffix."""
        torch = self._torch
        with torch.inference_mode():
            prefix_out = self.model(input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True, logits_to_keep=1)
        self.stats.add(prompt_tokens=len(prefix_ids), forward_passes=1)
        cache = prefix_out.past_key_values
        p = len(prefix_ids)
        out = []
        for chunk in _packs(suffixes, SUFFIX_PACK_TOKENS):
            # All suffixes of the chunk in one row after the cached prefix (no cache copies, no
            # padding): each attends to the prefix and causally to itself, never to the others.
            ends = np.cumsum([len(c) for c in chunk])
            logits = self._packed_suffix_logits(cache, p, chunk, keep=ends - 1)
            out.append(self._last_logprobs(logits, token_ids))
        return np.concatenate(out, axis=0)

    def _packed_suffix_logits(self, cache: Any, visible: int, suffixes: list[list[int]], keep: Any = None) -> Any:
        """One pass of ``suffixes`` packed in a row on ``cache``: each sees the first ``visible`` cached
        positions and causally itself, never the other suffixes nor cached positions past ``visible``.
        Returns the logits at the ``keep`` rows (all by default) and leaves the cache as it was."""
        torch = self._torch
        lens = [len(s) for s in suffixes]
        sees = torch.block_diag(*(torch.ones(n, n, dtype=torch.bool).tril() for n in lens))
        depths = torch.cat([torch.arange(n) for n in lens])
        logits = self._pass_on_cache(cache, visible, sum(suffixes, []), sees, depths, keep, lengths=lens)
        cache.crop(-len(sees))  # drop the suffixes' keys and values
        return logits

    def _pass_on_cache(self, cache: Any, visible: int, tokens: list[int], sees: Any, depths: Any, keep: Any = None,
                       lengths: Sequence[int] | None = None) -> Any:
        """One forward pass of ``tokens`` appended to ``cache``: token i sees the first ``visible`` cached
        positions and the appended tokens j with ``sees[i, j]``, at position ``visible + depths[i]``.
        Returns the logits at the ``keep`` rows (all by default); the tokens' entries stay in the cache.
        ``lengths``: the tokens are packed causal suffixes of these lengths. The layout is declared to
        this package's attention (``cpu_attention.on_cache``), which runs it faster than the mask."""
        torch = self._torch
        n, cached = len(tokens), cache.get_seq_length()
        mask = torch.zeros((1, 1, n, cached + n), dtype=torch.bool)
        mask[..., :visible] = True
        mask[0, 0, :, cached:] = sees
        positions = visible + torch.as_tensor(depths, dtype=torch.long)
        with torch.inference_mode(), cpu_attention.on_cache(visible, sees, lengths):
            logits = self.model(
                input_ids=torch.tensor([tokens], device=self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.unsqueeze(0).to(self.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=0 if keep is None else torch.as_tensor(keep, device=self.device),
            ).logits[0]
        self.stats.add(prompt_tokens=n, forward_passes=1)
        return logits

    def _score_keys(self, cache: Any, root: Any, items: Sequence[Sequence[int]], tail: Sequence[int], *,
                    visible: int | None = None, keep: bool = False) -> tuple[list[float], Any]:
        """Each key's log-prob of being written whole after the cache's first ``visible`` positions
        (default all): its tokens, then ``tail[0]``, the token that closes it (so a key that starts
        another is not credited with the longer key's mass); ``root`` is the log-softmax there.
        One tree pass (``key_tree.py``).

        Without ``keep`` the cache is left as it was. With it the pass's entries stay, and
        ``keep(j)`` leaves key ``j`` and its whole ``tail`` right after the ``visible`` positions,
        drops everything else after them, and returns the log-softmax after the tail."""
        torch = self._torch
        tree = KeyTree.build(items, tail)
        cached = cache.get_seq_length()
        seen = cached if visible is None else visible
        n = len(tree.tokens)
        # rows read: each key's tokens (the next token's log-prob), and its tail's end if kept
        rows = sorted({*(r for item, path in zip(items, tree.paths) for r in path[: len(item)]),
                       *((path[-1] for path in tree.paths) if keep else ())})
        logits = self._pass_on_cache(cache, seen, tree.tokens, tree.ancestry(), tree.depths(), rows).float()
        lp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        at = {r: j for j, r in enumerate(rows)}
        scores = []
        for item, path in zip(items, tree.paths):  # path[t]: the row of the key's token t, then its tail's
            total = float(root[item[0]]) + float(lp[at[path[len(item) - 1]], tail[0]])
            scores.append(total + sum(float(lp[at[path[t - 1]], tok]) for t, tok in enumerate(item) if t))
        if not keep:
            cache.crop(-n)
            return scores, None

        def keep_key(j: int) -> Any:
            keep_rows(cache, seen, [cached - seen + r for r in tree.paths[j]])
            return lp[at[tree.paths[j][-1]]]

        return scores, keep_key

    # ---- generation ---------------------------------------------------------------
    def _compiled_grammar(self, json_schema: dict[str, Any]) -> Any | None:
        """xgrammar grammar for ``json_schema`` (compiled once per distinct schema), or None."""
        try:
            import xgrammar as xgr
        except ImportError:
            return None
        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._grammars:
            if self._xgr_compiler is None:
                vocab_size = self.model.get_output_embeddings().weight.shape[0]
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab_size)
                self._xgr_compiler = xgr.GrammarCompiler(info)
            if len(self._grammars) > 256:
                self._grammars.clear()
            self._grammars[key] = self._xgr_compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def hidden_states(self, texts: Sequence[str], *, layers: Sequence[int], pooling: str = "mean") -> list[Any]:
        from .pooling import pooled_hidden_states

        return pooled_hidden_states(self.model, self.tokenizer, list(texts), layers=layers, pooling=pooling)  # type: ignore[arg-type]

    def hidden_state_identity(self) -> dict[str, Any]:
        from .pooling import model_identity

        return model_identity(self.model)

    def generate_batch(
        self, prompts: Sequence[str], *, max_tokens: int, json_schemas: Sequence[dict[str, Any] | None]
    ) -> list[Generation]:
        """Greedy generation, batched; each row constrained by its own grammar (xgrammar)."""
        results: list[Generation | None] = [None] * len(prompts)
        grammars = [self._compiled_grammar(s) if s is not None else None for s in json_schemas]
        # Rows with and without a grammar go in separate batches (a processor constrains every row).
        for constrained in (True, False):
            rows = [i for i, g in enumerate(grammars) if (g is not None) == constrained]
            bs = self.config.batch_size
            for start in range(0, len(rows), bs):
                chunk = rows[start : start + bs]
                gens = self._generate_rows([prompts[i] for i in chunk], max_tokens,
                                           [grammars[i] for i in chunk] if constrained else None)
                for i, gen in zip(chunk, gens):
                    results[i] = gen
        return results  # type: ignore[return-value]

    def generate_permutations(self, prompts: Sequence[str], keys: Sequence[Sequence[str]],
                              ks: Sequence[int], *, key_logprobs: bool = False) -> list[Generation]:
        return [self._permutation(self.encode(prompt), hf_spec(self.tokenizer, kk, k), key_logprobs)
                for prompt, kk, k in zip(prompts, keys, ks)]

    def _permutation(self, prompt_ids: list[int], spec: Any, key_logprobs: bool) -> Generation:
        if self.config.listwise_key_choice == "whole" and any(len(item) > 1 for item in spec.items):
            return self._permutation_by_keys(prompt_ids, spec, key_logprobs)
        return self._permutation_by_tokens(prompt_ids, spec, key_logprobs)

    def _permutation_by_keys(self, prompt_ids: list[int], spec: Any, key_logprobs: bool) -> Generation:
        """Greedy constrained decoding over whole keys, for keys of several tokens.

        Token-by-token greedy commits to a key by its first token (``1`` wins the slot, then an
        unlikely ``16`` is written although ``595`` is far likelier whole). Here, at each slot, the
        open keys are scored in a tree pass on the cache (:meth:`_score_keys`): a key's first
        token's log-prob plus those of its other tokens and of the token that closes it. The best
        key is kept with its separator: their entries stay in the cache (nothing is recomputed)
        and the separator's last row is the next slot's distribution. The first slot's log-probs
        are ``key_logprobs``, so the top key is the one with the highest reported probability.

        Pruning, exact: a key's log-prob is at most its first token's, which the slot's
        distribution gives before the pass. So the pass takes the keys whose first token is within
        ``_PRUNE_LOG`` of the likeliest first token; any other key whose first token alone beats
        the best score found goes into a second pass (rare), until none is left. The choice is
        the one scoring every key gives (up to float rounding between pass shapes: in bf16 a near
        tie can fall the other way), with about 40% fewer tree tokens for 20 ids and about one
        extra pass in five slots (``_PRUNE_LOG``).
        """
        torch = self._torch
        generated, chosen, first = list(spec.open), [], None
        with torch.inference_mode():  # (the cache is edited in place: its tensors are inference tensors)
            out = self.model(input_ids=torch.tensor([list(prompt_ids) + generated], device=self.device),
                             use_cache=True, logits_to_keep=1)
            cache, root = out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            for slot in range(spec.k):
                last = slot == spec.k - 1
                tail = [spec.close[0]] if last else list(spec.sep)
                open_keys = [i for i in range(len(spec.items)) if i not in chosen]
                if len(open_keys) == 1:  # the last slot of a full ranking
                    chosen.append(open_keys[0])
                    generated += [*spec.items[open_keys[0]], *spec.close]
                    break
                scores, keeps = self._best_keys(cache, root, [spec.items[i] for i in open_keys], tail,
                                                every=slot == 0 and key_logprobs, keep=not last)
                best = int(np.argmax(scores))  # ties: the first presented
                if slot == 0 and key_logprobs:
                    first = [float(x) for x in scores]  # every key is open at the first slot, in spec order
                chosen.append(open_keys[best])
                generated += [*spec.items[open_keys[best]], *(spec.close if last else spec.sep)]
                if not last:
                    root = keeps[best]()  # the cache now ends with the key and the separator
        state = PermutationState(spec)
        for token in [*generated, spec.eos]:  # a check: the output is in the spec
            state.advance(token)
        self.stats.add(prompt_tokens=len(prompt_ids), completion_tokens=len(generated), forward_passes=1)
        return Generation(text=self.tokenizer.decode(generated, skip_special_tokens=True),
                          finish_reason="stop" if state.done and not state.broken else "length",
                          prompt_tokens=len(prompt_ids), completion_tokens=len(generated), key_logprobs=first,
                          key_choice="whole")

    def _best_keys(self, cache: Any, root: Any, items: list[Sequence[int]], tail: list[int], *, every: bool,
                   keep: bool) -> tuple[np.ndarray, dict[int, Any]]:
        """Whole-key log-probs of ``items`` after the cache, -inf for keys pruned (exactly: their first
        token alone is below the best score); ``every``: score all. Returns them and, with ``keep``,
        each scored key's function that keeps it in the cache (see :meth:`_score_keys`)."""
        visible = cache.get_seq_length()
        bound = np.array([float(root[item[0]]) for item in items])  # a key's log-prob is at most its first token's
        scores = np.full(len(items), -np.inf)
        keeps: dict[int, Any] = {}
        todo = list(range(len(items))) if every else [j for j in range(len(items)) if bound[j] >= bound.max() + _PRUNE_LOG]
        while todo:
            got, keep_key = self._score_keys(cache, root, [items[j] for j in todo], tail, visible=visible, keep=keep)
            for pos, (j, score) in enumerate(zip(todo, got)):
                scores[j] = score
                if keep_key is not None:
                    keeps[j] = functools.partial(keep_key, pos)
            todo = [j for j in range(len(items)) if scores[j] == -np.inf and bound[j] >= scores.max()]
        return scores, keeps

    def _permutation_by_tokens(self, prompt_ids: list[int], spec: Any, key_logprobs: bool) -> Generation:
        """Greedy constrained decoding, with jump-forward and draft-and-verify.

        * Jump-forward: tokens the spec forces (the JSON skeleton, the rest of a key once it is
          the only one left) go into the next pass with the chosen token, so there is at most one
          forward pass per choice, not per token; the prompt's pass makes the first.
        * Draft-and-verify (``draft_rankings``): each pass also carries a guess of the whole rest
          of the output (the open keys in the presented order, which small models mostly echo).
          The pass gives the logits after every drafted token; the masked greedy choice is taken at
          each of them while it agrees with the draft, the first disagreement replaces the draft
          there, and the cache is cut back to what was kept. So the ranking is the one
          token-by-token decoding gives (up to float rounding between pass shapes), in one pass
          when the guess is right and one more per disagreement. The first draft is the whole
          rest; after a miss the next carries twice what was kept (at least ``_MIN_DRAFT``), after
          a hit twice as much as before.
        """
        torch = self._torch
        state = PermutationState(spec)
        pending, generated, cache, first = list(prompt_ids), [], None, None  # pending: chosen, not in the cache
        context = len(prompt_ids) + len(spec.open)
        passes, cap = 0, spec.max_tokens()  # cap: the most draft tokens a pass carries
        with torch.inference_mode():
            while True:
                _jump_forward(state, pending, generated)
                if state.done or len(generated) >= spec.max_tokens():
                    break
                draft = state.draft(state.echo_order())[:cap] if self.config.draft_rankings else []
                out = self.model(input_ids=torch.tensor([pending + draft], device=self.device), past_key_values=cache,
                                 use_cache=True, logits_to_keep=len(draft) + 1)
                passes += 1
                cache = out.past_key_values
                kept, token, slot = self._verify_draft(state, out.logits[0], draft, generated, key_logprobs and first is None)
                if slot is not None:  # the first key's slot: the model's own first choice
                    first = [float(slot[item[0]]) for item in spec.items]
                if kept < len(draft):
                    cache.crop(kept - len(draft))  # a negative count: drop the rejected draft's entries
                if slot is not None and any(len(item) > 1 for item in spec.items):
                    # multi-token keys: the first key's distribution needs each key's later tokens (one packed pass)
                    closing = spec.sep[0] if spec.k > 1 else spec.close[0]
                    first = self._score_keys(cache, slot, spec.items, [closing], visible=context)[0]
                # Each drafted token costs a little of the pass: draft less after a miss, more after a hit.
                cap = cap * 2 if kept == len(draft) else max(_MIN_DRAFT, 2 * kept)
                pending = [token] if token is not None and token != spec.eos else []
        self.stats.add(prompt_tokens=len(prompt_ids), completion_tokens=len(generated), forward_passes=passes)
        return Generation(text=self.tokenizer.decode(generated, skip_special_tokens=True),
                          finish_reason="stop" if state.done else "length", prompt_tokens=len(prompt_ids),
                          completion_tokens=len(generated), key_logprobs=first)

    def _verify_draft(self, state: PermutationState, rows: Any, draft: list[int], generated: list[int],
                      want_first: bool) -> tuple[int, int | None, Any]:
        """Walk one pass's logits (row i: after the pending tokens and ``draft[:i]``): the masked greedy token
        at each row, while it agrees with the draft. Returns how many draft tokens were kept, the last token
        chosen (not in the cache yet) and, with ``want_first``, the log-softmax at the first real choice."""
        kept, token, slot = 0, None, None
        for i in range(len(draft) + 1):
            allowed = state.allowed()
            if len(allowed) == 1:
                token = allowed[0]
            else:
                if want_first and slot is None:
                    slot = self._torch.log_softmax(rows[i].float(), dim=-1)
                token = int(self._torch.argmax(state.mask(rows[i])))
            state.advance(token)
            if token != state.spec.eos:
                generated.append(token)
            if i < len(draft) and token == draft[i]:
                kept += 1
                continue
            break  # a disagreement, the token after a whole draft, or eos
        return kept, token, slot

    def _generate_rows(self, prompts: list[str], max_tokens: int, grammars: list[Any] | None) -> list[Generation]:
        torch = self._torch
        from transformers import LogitsProcessorList

        encoded = [self.encode(p) for p in prompts]
        width = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id
        ids, mask = padded_batch(encoded, pad)  # left padding, so every row continues at the last column
        processors = LogitsProcessorList()
        if grammars:
            import xgrammar as xgr

            processors.append(xgr.contrib.hf.LogitsProcessor(list(grammars)))
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=processors,
                pad_token_id=pad,
            )
        eos = self.tokenizer.eos_token_id
        results = []
        self.stats.add(forward_passes=out.shape[1] - width)
        for r, e in enumerate(encoded):
            new = out[r, width:].tolist()
            stopped = eos in new
            if stopped:
                new = new[: new.index(eos)]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            self.stats.add(prompt_tokens=len(e), completion_tokens=len(new))
            results.append(Generation(text=text, finish_reason="stop" if stopped or len(new) < max_tokens else "length",
                                      prompt_tokens=len(e), completion_tokens=len(new)))
        return results


# Whole-key choice scores first the keys whose first token is within this log-ratio of the
# likeliest first token (e^-1.2 ~ 0.3); the rest only if their first token could still win.
# Measured on 5 users x 20 ids (2 threads, bf16): 4.8 s a request at -1.2, 1.8 extra passes;
# 5.5 s scoring every key (-inf); -2.3 pruned little (5.6 s); 0.0 took 7.8 extra passes (5.1 s).
_PRUNE_LOG = -1.2
_MIN_DRAFT = 16  # draft tokens a pass carries at least (about 8 label keys, 2-3 numeric ids)


def _packs(seqs: list[list[int]], budget: int) -> list[list[list[int]]]:
    """Consecutive groups of ``seqs`` of at most ``budget`` tokens each (a longer one alone)."""
    packs: list[list[list[int]]] = []
    size = budget
    for seq in seqs:
        if size + len(seq) > budget:
            packs.append([])
            size = 0
        packs[-1].append(seq)
        size += len(seq)
    return packs


def _shared_prefix_groups(seqs: list[list[int]], min_shared: int) -> list[tuple[int, list[list[int]]]]:
    """Consecutive groups of ``seqs`` whose common start has at least ``min_shared`` tokens, with
    that length (kept one token short of the shortest, so every row has a suffix)."""
    groups: list[tuple[int, list[list[int]]]] = []
    for seq in seqs:
        if groups:
            shared, group = groups[-1]
            first = group[0]
            n = min(shared if len(group) > 1 else len(first), len(seq) - 1, len(first) - 1)
            common = next((i for i in range(n) if first[i] != seq[i]), n)
            if common >= min_shared:
                groups[-1] = (common, [*group, seq])
                continue
        groups.append((len(seq), [seq]))
    return groups


def _jump_forward(state: PermutationState, pending: list[int], generated: list[int]) -> None:
    """Take every token the spec forces (the JSON skeleton, the rest of the only key left): no pass for them."""
    while not state.done and len(allowed := state.allowed()) == 1:
        state.advance(allowed[0])
        if allowed[0] != state.spec.eos:
            pending.append(allowed[0])
            generated.append(allowed[0])
