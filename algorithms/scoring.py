"""Forward passes over a collated :class:`~algorithms.buffer.Batch`: per-token log-probs,
entropy and values of the *response* tokens, for training and for the no-grad passes
(pi_old, the reference policy, the critic's old values).

Two things keep these passes cheap:

* The language-model head runs only on the ``R`` columns that predict response tokens
  (hidden states at ``P - 1 .. P + R - 2``), never on the prompt. With a 49k vocabulary the
  head is a large share of a small model's compute, and the prompt is often most of the
  sequence.
* Padding is trimmed per micro-batch (:func:`trim_padding`): a micro-batch is only as wide
  as its own longest prompt and response, not the whole rollout's.
* Rows with the same prompt (a GRPO group) run the prompt once and share its KV cache;
  rows whose prompts share a template prefix run that prefix once
  (:func:`response_hidden_states`), in the gradient passes too.

Log-probs and entropy are float32 whatever the model's dtype (see ``losses.token_logprobs``:
bf16 log-softmax over a large vocabulary is too coarse for importance ratios).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from algorithms.buffer import Batch
from algorithms.model_modes import eval_mode
from algorithms.objectives.ops import entropy_from_logits, token_logprobs
from algorithms.precision import autocast_precision


@dataclass
class TokenScores:
    """What a forward pass says about each response token, all ``(B, R)``.

    ``logprobs[b, t]`` is ``log pi(response token t | everything before it)`` at the
    sampling temperature; ``entropy`` the entropy of that next-token distribution;
    ``values`` the critic's value of the state in which token t is generated.
    """

    logprobs: Tensor
    entropy: Tensor | None = None
    values: Tensor | None = None


def trim_padding(batch: Batch) -> Batch:
    """The same rows without columns that are padding in every row.

    Prompts are left-padded, so leading prompt columns where no row has a token go; responses
    are right-padded, so trailing response columns where no row has a token go. Position ids
    travel with their columns, so the scores are unchanged.
    """
    real = batch.attention_mask.bool()
    p = batch.prompt_len
    prompt_real = real[:, :p].any(dim=0)
    first = int(prompt_real.float().argmax()) if bool(prompt_real.any()) else p
    # Keep at least one prompt column: logits at column P-1 predict response token 0.
    first = min(first, p - 1)
    response_real = real[:, p:].any(dim=0)
    last = int(response_real.nonzero().max()) + 1 if bool(response_real.any()) else 1
    cols = slice(first, p + last)
    return Batch(
        input_ids=batch.input_ids[:, cols],
        attention_mask=batch.attention_mask[:, cols],
        position_ids=batch.position_ids[:, cols],
        loss_mask=batch.loss_mask[:, :last],
        sample_logprobs=batch.sample_logprobs[:, :last],
        rewards=batch.rewards,
        group_ids=batch.group_ids,
        prompt_len=p - first,
        step_rewards=None if batch.step_rewards is None else batch.step_rewards[:, :last],
    )


def response_hidden_states(model: Any, batch: Batch, share_prompts: bool = True) -> Tensor:
    """Final hidden states ``(B, R, hidden)`` at the columns that predict response tokens.

    With ``share_prompts``, work that several rows have in common runs once, by whichever
    plan costs fewest tokens: the plain pass (``B x (prompt + response)``) or one of these:

    * identical prompts (the G samples of a GRPO group): each distinct prompt runs once, its
      KV cache is repeated per sample, and the responses attend to it;
    * a common prefix (a prompt template's instructions and worked example, shared by rows
      asking different questions): the prefix runs once, then each row runs the rest of its
      prompt and its response on that cache.

    Gradients flow back through the repeated cache into the shared pass, so the result is
    the plain pass's (same values, same parameter gradients) on fewer tokens.
    """
    decoder = model.get_decoder()
    p, r = batch.prompt_len, batch.response_len
    ids, mask, positions = batch.input_ids, batch.attention_mask, batch.position_ids
    n = ids.shape[0]
    if share_prompts and n > 1 and not (model.training and _checkpointing(decoder)):
        # Prompt identity includes the padding mask: a pad id may also occur inside a prompt.
        key = torch.cat([ids[:, :p], mask[:, :p]], dim=1)
        unique, inverse = torch.unique(key, dim=0, return_inverse=True)
        lengths = mask[:, :p].sum(dim=1)
        prefix = _common_prefix_len(ids[:, :p], lengths)
        rest = int((lengths - prefix).max())
        cost = {
            "plain": n * (p + r),
            "identical": len(unique) * p + n * r,
            # Without a common token the "prefix" plan is the plain pass minus left padding.
            "prefix": prefix + n * (rest + r) if prefix > 0 else float("inf"),
        }
        plan = min(cost, key=cost.__getitem__)
        if plan == "identical":
            first = torch.full((len(unique),), n, device=ids.device)
            first = first.scatter_reduce(0, inverse, torch.arange(n, device=ids.device), "amin")
            shared = decoder(
                input_ids=ids[first, :p],
                attention_mask=mask[first, :p],
                position_ids=positions[first, :p],
                use_cache=True,
            )
            last_prompt = shared.last_hidden_state[inverse, -1:]
            if r == 1:
                return last_prompt
            cache = shared.past_key_values
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[inverse], layer.values[inverse]
            response = decoder(
                input_ids=ids[:, p : p + r - 1],
                attention_mask=mask[:, : p + r - 1],
                position_ids=positions[:, p : p + r - 1],
                past_key_values=cache,
                use_cache=True,
            )
            return torch.cat([last_prompt, response.last_hidden_state], dim=1)
        if plan == "prefix":
            # Prompts are left-padded, so row b's prompt ends at column p and its last
            # ``lengths[b] - prefix`` tokens follow the shared prefix. Columns p-rest..p-1
            # hold every row's remainder; those before a row's remainder are masked out.
            start = p - int(lengths[0])
            shared = decoder(
                input_ids=ids[:1, start : start + prefix],
                position_ids=positions[:1, start : start + prefix],
                use_cache=True,
            )
            cache = shared.past_key_values
            rows = torch.zeros(n, dtype=torch.long, device=ids.device)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[rows], layer.values[rows]
            cols = torch.arange(rest, device=ids.device)
            remainder = (cols[None, :] >= (rest - (lengths - prefix))[:, None]).to(mask.dtype)
            own = decoder(
                input_ids=ids[:, p - rest : p + r - 1],
                attention_mask=torch.cat(
                    [mask.new_ones(n, prefix), remainder, mask[:, p : p + r - 1]], dim=1
                ),
                position_ids=positions[:, p - rest : p + r - 1],
                past_key_values=cache,
                use_cache=True,
            )
            return own.last_hidden_state[:, rest - 1 : rest - 1 + r]
    hidden = decoder(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
    ).last_hidden_state
    return hidden[:, p - 1 : p - 1 + r]


def _common_prefix_len(prompts: Tensor, lengths: Tensor) -> int:
    """Tokens at the start of every row's (left-padded) prompt that all rows share, leaving
    each row at least one token of its own (its last prompt token predicts the response)."""
    p = prompts.shape[1]
    shortest = int(lengths.min())
    if shortest < 2:
        return 0
    # Each row's first ``shortest - 1`` real tokens, aligned at column 0.
    offsets = (p - lengths)[:, None] + torch.arange(shortest - 1, device=prompts.device)
    heads = prompts.gather(1, offsets)
    differs = (heads != heads[:1]).any(dim=0)
    return int(differs.nonzero()[0]) if bool(differs.any()) else shortest - 1


def _checkpointing(decoder: Any) -> bool:
    """Gradient checkpointing drops KV caches in training mode, so no prompt sharing then."""
    layers: Any = getattr(decoder, "layers", None)
    if not layers:
        return False
    return bool(getattr(layers[0], "gradient_checkpointing", False))


def score_tokens(
    model: Any,
    batch: Batch,
    *,
    temperature: float = 1.0,
    value_head: Any = None,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_size: int | None = None,
    share_prompts: bool = True,
) -> TokenScores:
    """One forward pass: log-probs (and optionally entropy, values) of the response tokens.

    Gradients flow into ``logprobs`` and ``values`` when called under autograd. Entropy is
    computed from detached logits unless ``entropy_grad`` (an entropy bonus needs it; for
    logging only, a detached copy saves keeping another ``(B, R, vocab)`` graph).
    """
    hidden = response_hidden_states(model, batch, share_prompts)
    p = batch.prompt_len
    response_ids = batch.input_ids[:, p : p + batch.response_len]
    want_entropy = with_entropy or entropy_grad
    if chunk_size:
        recompute = torch.is_grad_enabled() and hidden.requires_grad
        logprobs, entropy = _head_in_chunks(
            model, hidden, response_ids, temperature, chunk_size, want_entropy, entropy_grad,
            recompute=recompute,
        )  # fmt: skip
    else:
        logprobs, entropy = _head_scores(
            model, hidden, response_ids, temperature, chunk_size, want_entropy, entropy_grad
        )
    values = value_head(hidden) if value_head is not None else None
    return TokenScores(logprobs=logprobs, entropy=entropy, values=values)


def _head_scores(
    model: Any,
    hidden: Tensor,
    token_ids: Tensor,
    temperature: float,
    chunk_size: int | None,
    with_entropy: bool,
    entropy_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``token_ids`` (and entropy) from the LM head over ``hidden``."""
    logits = lm_head(model, hidden)
    logprobs = token_logprobs(logits, token_ids, temperature, chunk_size)
    entropy = None
    if with_entropy:
        source = logits if entropy_grad else logits.detach()
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(source, temperature, chunk_size)
    return logprobs, entropy


def _head_in_chunks(
    model: Any,
    hidden: Tensor,
    token_ids: Tensor,
    temperature: float,
    chunk_size: int,
    with_entropy: bool,
    entropy_grad: bool,
    *,
    recompute: bool,
) -> tuple[Tensor, Tensor | None]:
    """:func:`_head_scores` in chunks of ``chunk_size`` positions: only one chunk's float32
    ``(positions, vocab)`` logits exist at a time, never the micro-batch's (the no-grad
    passes too: with a 150k vocabulary, 4 rows x 8k positions of logits are 20 GB).

    With ``recompute`` (under autograd) each chunk is checkpointed: the plain path keeps
    the logits and their log-softmax for backward (with a 49k vocabulary ~0.2 GB per 1,000
    positions, each, the largest tensors of an update with a frozen trunk); a checkpointed
    chunk keeps only its hidden states, and backward runs its head again (one extra head
    matmul per position). Same values and gradients as the plain path.
    """
    from torch.utils.checkpoint import checkpoint

    def scores(h: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        lp, ent = _head_scores(model, h, ids, temperature, None, with_entropy, entropy_grad)
        return lp, ent if ent is not None else lp.new_zeros(())

    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_ids = token_ids.reshape(-1)
    logprobs, entropies = [], []
    for h, ids in zip(flat_hidden.split(chunk_size), flat_ids.split(chunk_size), strict=True):
        if recompute:  # no randomness in the head: no RNG state to save per chunk
            lp, ent = checkpoint(scores, h, ids, use_reentrant=False, preserve_rng_state=False)
        else:
            lp, ent = scores(h, ids)
        logprobs.append(lp)
        entropies.append(ent)
    entropy = torch.cat(entropies).reshape(token_ids.shape) if with_entropy else None
    return torch.cat(logprobs).reshape(token_ids.shape), entropy


def lm_head(model: Any, hidden: Tensor) -> Tensor:
    """The output projection. Under autocast (``trainer.autocast_dtype``) it runs outside
    it, in the head's own dtype: the trunk's matmuls may be bf16, but log-probs over a 49k
    vocabulary need full-precision logits."""
    head = model.get_output_embeddings()
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            return head(hidden.to(head.weight.dtype))
    return head(hidden)


def autocast(model: Any, dtype: str | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the trunk's matmuls (``"bfloat16"``), or nothing (``"float32"``,
    ``"auto"`` on a CPU without native bf16, ``None`` on a CPU; see
    :func:`algorithms.precision.autocast_precision`).

    Under FSDP (sharded parameters) autocast's cache of bf16 weight casts is off: FSDP
    gathers a block's weights anew for each pass, and a later micro-batch reusing an
    earlier pass's cast would deliver its weight gradients after FSDP had reduced them.
    """
    from torch.distributed.tensor import DTensor

    param = next(model.parameters())
    dtype = autocast_precision(dtype, param.device.type, param.dtype)
    if dtype is None:
        return contextlib.nullcontext()
    sharded = isinstance(param, DTensor)
    return torch.autocast(param.device.type, dtype=getattr(torch, dtype), cache_enabled=not sharded)


def score_values(model: Any, value_head: Any, batch: Batch, share_prompts: bool = True) -> Tensor:
    """Values ``(B, R)`` from a critic (a trunk plus a value head), without the LM head."""
    return value_head(response_hidden_states(model, batch, share_prompts))


def micro_batches(batch: Batch, size: int) -> Iterator[tuple[slice, Batch]]:
    """Consecutive row slices of at most ``size`` rows, each with its padding trimmed."""
    n = batch.rewards.shape[0]
    for start in range(0, n, max(1, size)):
        rows = slice(start, min(n, start + size))
        yield rows, trim_padding(batch.select(range(rows.start, rows.stop)))


def _pad_to(x: Tensor, width: int) -> Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


@torch.no_grad()
def score_batch(
    model: Any,
    batch: Batch,
    *,
    temperature: float = 1.0,
    value_head: Any = None,
    with_entropy: bool = False,
    micro_batch_size: int = 8,
    chunk_size: int | None = 1024,
    share_prompts: bool = True,
) -> TokenScores:
    """No-grad :func:`score_tokens` over a whole batch in micro-batches, padded back to
    ``(B, R)`` so the results line up with the batch's other tensors."""
    r = batch.response_len
    parts: list[TokenScores] = []
    with eval_mode(model):
        for _, micro in micro_batches(batch, micro_batch_size):
            parts.append(
                score_tokens(
                    model,
                    micro,
                    temperature=temperature,
                    value_head=value_head,
                    with_entropy=with_entropy,
                    chunk_size=chunk_size,
                    share_prompts=share_prompts,
                )
            )

    def cat(name: str) -> Tensor | None:
        pieces = [getattr(s, name) for s in parts]
        return None if pieces[0] is None else torch.cat([_pad_to(x, r) for x in pieces])

    logprobs = cat("logprobs")
    assert logprobs is not None
    return TokenScores(logprobs=logprobs, entropy=cat("entropy"), values=cat("values"))


@torch.no_grad()
def critic_values(
    model: Any,
    value_head: Any,
    batch: Batch,
    micro_batch_size: int = 8,
    share_prompts: bool = True,
) -> Tensor:
    """No-grad values ``(B, R)`` from a separate critic, in micro-batches."""
    r = batch.response_len
    with eval_mode(model):
        pieces = [
            _pad_to(score_values(model, value_head, micro, share_prompts), r)
            for _, micro in micro_batches(batch, micro_batch_size)
        ]
    return torch.cat(pieces)


@torch.no_grad()
def reference_logprobs(
    policy_model: Any,
    batch: Batch,
    *,
    reference_model: Any = None,
    temperature: float = 1.0,
    micro_batch_size: int = 8,
    chunk_size: int | None = 1024,
    share_prompts: bool = True,
) -> Tensor:
    """Log-probs ``(B, R)`` under the frozen reference policy.

    With a separate ``reference_model`` (full fine-tuning) it is scored directly. Without one
    the policy must be a PEFT model: the reference is its base with the adapters switched
    off, so LoRA training never holds a second copy of the weights.
    """
    scoring: dict[str, Any] = dict(
        temperature=temperature,
        micro_batch_size=micro_batch_size,
        chunk_size=chunk_size,
        share_prompts=share_prompts,
    )
    if reference_model is not None:
        return score_batch(reference_model, batch, **scoring).logprobs
    if not hasattr(policy_model, "disable_adapter"):
        raise ValueError("a reference model is needed unless the policy is LoRA-wrapped")
    with policy_model.disable_adapter():
        return score_batch(policy_model, batch, **scoring).logprobs
