"""Drawing the next token of every row, and the log-probability a trainer will recompute.

Log-probs: a sampled token's log-prob is ``log softmax(logits / temperature)[token]``: its
log-probability under the policy *at the sampling temperature*, before any top-k/top-p
truncation. That is what a trainer recomputes (``log_softmax(logits / T)``) for importance
ratios, so old and new log-probs are comparable. Greedy decoding reports temperature-1
log-probs.

Draws are by inverse CDF (a uniform number per row and a ``searchsorted``), not
``torch.multinomial``, which on CPU draws an exponential variate per vocabulary entry and
costs more than the rest of the step's sampling together (measurements:
benchmarks/RESULTS.md, "Rollout package: figures moved out of docstrings").
"""

from __future__ import annotations

import torch

from algorithms.rollout.sampling import Sampling


def sample(
    logits: torch.Tensor, params: Sampling, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of ``[rows, vocab]`` float logits.

    Returns ``(tokens, logprobs)`` where ``logprobs`` is the token's log-probability under
    ``softmax(logits / temperature)`` without top-k/top-p truncation (see module docstring).
    Only ``temperature``, ``top_p``, ``top_k`` and ``greedy`` of ``params`` matter here.
    """
    if params.greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, _gather(logits.log_softmax(dim=-1), tokens)
    scaled = logits / params.temperature if params.temperature != 1.0 else logits
    probs = scaled.softmax(dim=-1)
    if params.top_k > 0 or params.top_p < 1.0:
        # Work on the candidates sorted by probability: top-k is a prefix, top-p a shorter one.
        if 0 < params.top_k < scaled.shape[-1]:
            candidate_logits, candidates = scaled.topk(params.top_k, dim=-1)
        else:
            candidate_logits, candidates = scaled.sort(dim=-1, descending=True)
        candidate_probs = candidate_logits.softmax(dim=-1)
        if params.top_p < 1.0:
            # Drop a candidate once the ones before it already reach top_p (the first stays).
            mass_before = candidate_probs.cumsum(dim=-1) - candidate_probs
            candidate_probs = candidate_probs.masked_fill(mass_before >= params.top_p, 0.0)
        tokens = _gather(candidates, _inverse_cdf(candidate_probs, generator))
    else:
        tokens = _inverse_cdf(probs, generator)
    # log(softmax) rather than a separate log_softmax pass: one fewer sweep over the vocabulary
    # per step, and a sampled token's probability is never small enough to lose precision.
    return tokens, _gather(probs, tokens).log()


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.gather(-1, index[:, None]).squeeze(-1)


SAMPLING_BLOCK = 256


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from unnormalised non-negative ``probs``.

    Over a large vocabulary, two stages: pick a block of 256 entries by its mass, then an entry
    within it (a fresh uniform each, so the result is exactly ``p / sum(p)``). A full-length
    ``cumsum`` is a serial scan; this needs one vectorised block sum and two short scans.
    """
    rows, vocab = probs.shape
    if vocab <= 4 * SAMPLING_BLOCK:
        return _draw(probs, generator)
    blocks = -(-vocab // SAMPLING_BLOCK)
    padded = torch.nn.functional.pad(probs, (0, blocks * SAMPLING_BLOCK - vocab))
    padded = padded.view(rows, blocks, SAMPLING_BLOCK)
    block = _draw(padded.sum(dim=-1), generator)
    within = padded[torch.arange(rows, device=probs.device), block]
    return block * SAMPLING_BLOCK + _draw(within, generator)


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    cdf = weights.cumsum(dim=-1)
    u = torch.rand(weights.shape[0], 1, generator=generator, device=weights.device) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    # u can round up to the total (p ~ 1e-7); fall back to the heaviest entry then. Always
    # on the device: asking whether it happened would make the host wait for the draw.
    overflow = index >= weights.shape[-1]
    return torch.where(overflow, weights.argmax(dim=-1), index)
