"""vLLM V1 custom logits processor for permutation-constrained listwise decoding.

Registered on the engine (``vllm.LLM(logits_processors=[PermutationLogitsProcessor])``)
and on the OpenAI server (``--logits-processors
llm_recommender.backends.constrained_vllm:PermutationLogitsProcessor``). A request opts in by
carrying a :class:`~llm_recommender.backends.constrained.PermutationSpec` under
``SamplingParams.extra_args["llm_rec_permutation"]`` (over HTTP:
``extra_body={"vllm_xargs": spec.to_xargs()}``); every other request is untouched.

vLLM's ``AdapterLogitsProcessor`` keeps one per-request callable per batch row and
follows the batch's adds, removals and moves; it hands the callable a reference to
the request's growing output token list, which is all the state machine needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from .constrained import PermutationSpec, PermutationState


class PermutationLogitsProcessor(AdapterLogitsProcessor):
    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        # A malformed spec is the client's error (HTTP 400), not an engine crash later.
        try:
            PermutationSpec.from_xargs(sampling_params.extra_args)
        except ValueError as exc:
            raise ValueError(f"invalid llm_rec_permutation: {exc}") from None

    def is_argmax_invariant(self) -> bool:
        return False  # it changes the greedy choice: that is the point

    def new_req_logits_processor(self, params: SamplingParams) -> Callable[[list[int], Any], Any] | None:
        spec = PermutationSpec.from_xargs(params.extra_args)
        if spec is None:
            return None
        state = PermutationState(spec)

        def constrain(output_ids: list[int], logits: Any) -> Any:
            state.consume(output_ids)
            return state.mask(logits)

        return constrain
