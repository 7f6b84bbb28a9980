"""Tensor operations every objective shares: masked statistics, group statistics, and
log-probs / entropy from logits.

Conventions (shared by ``advantages.py``, ``losses.py`` and ``objective.py``):

* Token tensors are ``(batch, seq_len)`` over the *response* tokens only.
* ``mask`` has the same shape (bool or 0/1 float). It is 1 on tokens the policy generated
  and 0 on observation tokens (the retrieved ``<result>...</result>`` text the env inserted)
  and on padding. A multi-turn response therefore looks like ``1 1 1 0 0 0 1 1 0 0``:
  generated, observation, generated, padding. Values at mask-0 positions are never read,
  so they may hold garbage (even inf/NaN): every function here selects with
  ``torch.where`` before it computes, so no NaN leaks through a masked position.
* Every tensor a function creates lives on its inputs' device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def zero_where_masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` where ``mask`` is 1, exactly 0 elsewhere (also where ``x`` is inf/NaN)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


# --------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (all positions, or along ``dim``).

    An all-zero mask gives 0, not NaN: an empty selection contributes nothing.
    """
    keep = mask.bool()
    x = zero_where_masked(x, keep)
    count = keep.sum() if dim is None else keep.sum(dim)
    total = x.sum() if dim is None else x.sum(dim)
    return total / count.clamp_min(1).to(total.dtype)


def masked_var(x: Tensor, mask: Tensor, dim: int | None = None, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over mask-1 positions.

    ``unbiased=True`` divides by ``n - 1`` (Bessel), matching ``torch.var``'s default and the
    whitening in verl/TRL; a single selected element has variance 0.
    """
    keep = mask.bool()
    mean = masked_mean(x, keep, dim)
    if dim is not None:
        mean = mean.unsqueeze(dim)
    squared = zero_where_masked((x - mean) ** 2, keep)
    count = keep.sum() if dim is None else keep.sum(dim)
    total = squared.sum() if dim is None else squared.sum(dim)
    denominator = count - 1 if unbiased else count
    return total / denominator.clamp_min(1).to(total.dtype)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize ``x`` to zero mean and unit variance over all mask-1 positions of the batch.

    Used for PPO advantage whitening and REINFORCE++'s global normalization. With
    ``shift_mean=False`` only the scale changes, which keeps the sign of every advantage.
    Mask-0 positions are returned as 0.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean if shift_mean else x) * torch.rsqrt(var + eps)
    return zero_where_masked(whitened, mask)


def broadcast_to_tokens(sequence_values: Tensor, mask: Tensor) -> Tensor:
    """Copy one value per sequence onto each of its generated tokens (0 elsewhere)."""
    tokens = sequence_values.unsqueeze(-1).expand(mask.shape)
    return zero_where_masked(tokens, mask)


def last_generated_index(mask: Tensor) -> Tensor:
    """Index of the last mask-1 token of each row (0 for a row with no generated token)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand(mask.shape)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).amax(dim=-1)


# --------------------------------------------------------------------------------------
# Groups (the samples of one question)
# --------------------------------------------------------------------------------------


def contiguous_group_ids(batch_size: int, group_size: int, device=None) -> Tensor:
    """Group ids for the common layout where each question's samples are adjacent rows."""
    if batch_size % group_size != 0:
        raise ValueError(f"batch_size {batch_size} is not a multiple of group_size {group_size}")
    return torch.arange(batch_size, device=device) // group_size


def group_stats(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row ``(group sum, group size, group unbiased std, group range)`` of a 1-D tensor.

    Rows of a group need not be adjacent: equal ``group_ids`` mean "the same question".
    The range (max - min) is exact, so "all rewards equal" is tested without the rounding
    of a float mean.
    """
    if group_ids.shape != values.shape:
        raise ValueError(f"group_ids shape {tuple(group_ids.shape)} != {tuple(values.shape)}")
    _, row_to_group, sizes = torch.unique(group_ids, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(sizes), dtype=values.dtype, device=values.device)
    sums.index_add_(0, row_to_group, values)
    means = sums / sizes
    squared = (values - means[row_to_group]) ** 2
    sum_sq = torch.zeros_like(sums).index_add_(0, row_to_group, squared)
    stds = (sum_sq / (sizes - 1).clamp_min(1)).sqrt()
    highs = torch.full_like(sums, -torch.inf).scatter_reduce(0, row_to_group, values, "amax")
    lows = torch.full_like(sums, torch.inf).scatter_reduce(0, row_to_group, values, "amin")
    ranges = highs - lows
    return (
        sums[row_to_group],
        sizes[row_to_group].to(values.dtype),
        stds[row_to_group],
        ranges[row_to_group],
    )


# --------------------------------------------------------------------------------------
# Log-probs and entropy from logits
# --------------------------------------------------------------------------------------


def _row_chunks(logits: Tensor, chunk_size: int | None):
    """Flatten (..., vocab) logits into row chunks, so float32 copies are made per chunk."""
    flat = logits.reshape(-1, logits.shape[-1])
    return flat.split(chunk_size) if chunk_size else (flat,)


def token_logprobs(
    logits: Tensor, token_ids: Tensor, temperature: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """``log softmax(logits / temperature)[token_ids]``, gathered then normalized.

    Computed as ``logit[token] - logsumexp(logits)`` in float32 (bf16 logsumexp over a 150k
    vocabulary loses too much precision for importance ratios). ``logits`` must already be
    aligned with ``token_ids``: the logits at position t-1 predict token t, so a caller
    holding full-sequence logits passes ``logits[:, :-1]`` and ``input_ids[:, 1:]``.
    ``temperature`` must match the sampling temperature, or the ratios are off.
    ``chunk_size`` (rows of batch*seq_len, e.g. 1024) bounds the float32 copy's memory; it
    pays in the no-grad passes (under autograd each chunk's copy is kept for backward, so
    ``scoring.score_tokens`` checkpoints the head per chunk instead). Memory figures are in
    benchmarks/RESULTS.md ("Demo memory"; ``python -m benchmarks.head_memory``).
    """
    ids = token_ids.reshape(-1, 1)
    pieces = []
    start = 0
    for chunk in _row_chunks(logits, chunk_size):
        chunk = chunk.float() / temperature if temperature != 1.0 else chunk.float()
        chosen = chunk.gather(-1, ids[start : start + len(chunk)]).squeeze(-1)
        pieces.append(chosen - torch.logsumexp(chunk, dim=-1))
        start += len(chunk)
    return torch.cat(pieces).reshape(token_ids.shape)


def entropy_from_logits(
    logits: Tensor, temperature: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """Per-token entropy ``H = logsumexp(z) - sum(softmax(z) * z)`` of ``z = logits / T``.

    This identity needs one softmax and no log-softmax tensor. Returns ``(batch, seq_len)``.
    """
    pieces = []
    for chunk in _row_chunks(logits, chunk_size):
        chunk = chunk.float() / temperature if temperature != 1.0 else chunk.float()
        probs = torch.softmax(chunk, dim=-1)
        pieces.append(torch.logsumexp(chunk, dim=-1) - (probs * chunk).sum(-1))
    return torch.cat(pieces).reshape(logits.shape[:-1])
