"""What the in-process model code shares: padded token batches and the dtype policy.

The transformers backend, generative tuning and the item encoder all run a Hugging Face
model on batches of token id lists; they build the batch here, so padding and the
attention mask are the same everywhere. The transformers backend, the vLLM backends and
tuning pick the compute dtype here, so they compute alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

DtypeName = Literal["float32", "bfloat16", "float16"]


def padded_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, *, side: Literal["left", "right"] = "left", prefix: int = 0
) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` as long tensors for token id lists of different lengths.

    ``side="left"``: every row ends at the last column (next-token scoring, generation);
    ``"right"``: every row starts at column 0. ``prefix`` adds that many leading mask columns
    set to 1, for a batch that continues a cached prefix of that length.
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), prefix + width), dtype=torch.long)
    mask[:, :prefix] = 1
    for r, s in enumerate(seqs):
        start = width - len(s) if side == "left" else 0
        ids[r, start : start + len(s)] = torch.tensor(s)
        mask[r, prefix + start : prefix + start + len(s)] = 1
    return ids, mask


def mask_positions(mask: Any) -> Any:
    """Position ids of a left-padded batch: 0 at each row's first real token (pads get 0 too)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_supports_bf16_fast() -> bool:
    """AMX or AVX512-BF16 make bf16 matmuls much faster than fp32 on CPU."""
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_has_amx() -> bool:
    """Intel AMX (bf16 tiles): torch's own attention kernels use them."""
    return "amx_bf16" in _cpu_flags()


def auto_dtype(cuda: bool) -> DtypeName:
    """The dtype policy for ``dtype="auto"``: bf16 where it is fast (GPUs that have it, else fp16;
    CPUs with AMX/AVX512-BF16), fp32 on other CPUs."""
    if cuda:
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_supports_bf16_fast() else "float32"
