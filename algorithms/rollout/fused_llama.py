"""A lean forward pass for Llama-family rollout copies (Llama, SmolLM2, Qwen2, Mistral).

At rollout batch sizes a decode step of a small model is dominated by per-op overhead, not by
arithmetic: transformers' modules run about sixty tensor ops and a dozen Python calls per
layer, seven separate weight matrices per layer are multiplied one by one, and grouped-query
attention with one query per row goes through a slow path. This module runs the same math with

- the q/k/v projections fused into one matrix and gate/up into another (4 matrix products per
  layer instead of 7), pre-packed for oneDNN on CPU;
- rotary embeddings applied to queries and keys together, once;
- the residual stream kept in fp32 and the RMSNorm scales folded into the next weights: one
  cast per normalization, and outputs closer to the fp32 training policy than the
  transformers forward in bf16;
- grouped-query attention folded: the query heads that share a key/value head become extra
  query rows of that head, so one attention call reads each key/value head once;
- nothing else: no hooks, no output tuples, logits for the last column only.

It writes keys and values through the same cache interface as the transformers model, so it is
a drop-in for :class:`algorithms.rollout.DecodeState`; the cached keys are identical to the
original model's (standard rotary layout). :func:`fuse` builds one from an inference copy and
returns ``None`` for an architecture it does not cover (then the copy decodes through its own
forward). Measured effect: benchmarks/RESULTS.md, "Decoding" and "Rollout package: figures
moved out of docstrings".
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.rollout.inference_copy import PackedLinear

# Covered model types; a model must also pass every check of unsupported_reason.
FAMILIES = ("llama", "qwen2", "mistral")


def unsupported_reason(model: Any) -> str | None:
    """Why :class:`FusedLlama` cannot run ``model``, or ``None`` when it can."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in FAMILIES:
        return f"model_type {getattr(config, 'model_type', None)!r} is not one of {FAMILIES}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} (only silu)"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "not a transformers *ForCausalLM with .model.layers and .model.rotary_emb"
    if not isinstance(getattr(model, "lm_head", None), nn.Linear):
        return "lm_head is not a plain nn.Linear"
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        parts: tuple[Any, ...] = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
        parts += (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(p) is not nn.Linear for p in parts):
            return "a projection is not a plain nn.Linear (quantized or adapted model?)"
    return None


def fuse(model: Any, *, pack: bool = True, batch_hint: int = 16) -> FusedLlama | None:
    """A :class:`FusedLlama` over ``model``'s weights (cast and frozen as they are), or
    ``None`` when :func:`unsupported_reason` names a reason."""
    if unsupported_reason(model) is not None:
        return None
    return FusedLlama(model, pack=pack, batch_hint=batch_hint)


def _linear(weights: list[torch.Tensor], biases: list[torch.Tensor | None], pack: bool, hint: int):
    """One inference linear computing the given linears side by side (outputs concatenated)."""
    weight = torch.cat([w.detach() for w in weights])
    linear = nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=any(b is not None for b in biases),
        device=weight.device,
        dtype=weight.dtype,
    ).requires_grad_(False)
    linear.weight.data = weight
    if linear.bias is not None:
        filled = [
            torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if b is None else b.detach()
            for w, b in zip(weights, biases, strict=True)
        ]
        linear.bias.data = torch.cat(filled)
    if pack and weight.device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            return PackedLinear(linear, hint)
        except RuntimeError:  # a dtype or platform oneDNN does not pack
            pass
    return linear


def _scaled(weight: torch.Tensor, norm_weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with an RMSNorm's elementwise scale folded in: W (g * n) = (W diag(g)) n,
    computed in fp32 and rounded once."""
    return (weight.detach().float() * norm_weight.detach().float()[None, :]).to(weight.dtype)


class _Layer(nn.Module):
    def __init__(self, layer: Any, pack: bool, hint: int):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        norm_in, norm_mid = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        self.qkv = _linear(
            [_scaled(p.weight, norm_in) for p in projections],
            [p.bias for p in projections],
            pack,
            hint,
        )
        self.o = _linear([attn.o_proj.weight], [attn.o_proj.bias], pack, hint)
        gate, up = mlp.gate_proj, mlp.up_proj
        self.gate_up = _linear(
            [_scaled(gate.weight, norm_mid), _scaled(up.weight, norm_mid)],
            [gate.bias, up.bias],
            pack,
            hint,
        )
        self.down = _linear([mlp.down_proj.weight], [mlp.down_proj.bias], pack, hint)
        self.q_width = attn.q_proj.out_features
        self.kv_width = attn.k_proj.out_features
        self.intermediate = gate.out_features


class FusedLlama(nn.Module):
    """The decode-time forward of a Llama-family causal LM, over fused weights.

    Call it like the transformers model as :class:`DecodeState` does: ``input_ids`` and
    ``position_ids`` ``[rows, width]``, a 4-D additive float ``attention_mask`` ``[rows, 1,
    width, keys]``, ``past_key_values`` a transformers ``Cache``. Returns an object whose
    ``logits`` are ``[rows, 1, vocab]``, for the last column only.
    """

    def __init__(self, model: Any, *, pack: bool = True, batch_hint: int = 16):
        super().__init__()
        config = model.config
        self.config = config
        self.generation_config = getattr(model, "generation_config", None)
        inner = model.model
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.blocks = [_Layer(layer, pack, batch_hint) for layer in inner.layers]
        self.layers = nn.ModuleList(self.blocks)  # registered, for .modules() and friends
        self.eps = float(config.rms_norm_eps)
        head = _scaled(model.lm_head.weight, inner.norm.weight)
        self.head = _linear([head], [model.lm_head.bias], pack, batch_hint)
        self.dtype = model.lm_head.weight.dtype
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.requires_grad_(False).eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Any,
        use_cache: bool = True,
        logits_to_keep: int = 1,
    ) -> SimpleNamespace:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
            raise ValueError("FusedLlama needs a 4-D additive attention mask")
        if logits_to_keep != 1:
            raise ValueError("FusedLlama computes logits for the last column only")
        rows, width = input_ids.shape
        # The residual stream stays fp32 (transformers keeps it in the model dtype): one cast
        # per normalization instead of two, and closer to the fp32 training policy.
        embedded = self.embed(input_ids)  # [rows, width, hidden]
        cos, sin = self.rotary(embedded, position_ids)  # [rows, width, head_dim] each
        x = embedded.float()
        cos, sin = cos[:, :, None], sin[:, :, None]
        groups = self.heads // self.kv_heads
        half = self.head_dim // 2
        # Folded grouped-query attention: query head h = k * groups + g of kv head k becomes
        # query row g * width + w of kv head k, so the mask row for it is w.
        mask = attention_mask if width == 1 else attention_mask.repeat(1, 1, groups, 1)
        for index, layer in enumerate(self.blocks):
            qkv = layer.qkv(self._normalized(x))
            qk_width = layer.q_width + layer.kv_width
            qk = qkv[..., :qk_width].unflatten(-1, (-1, self.head_dim))  # [rows, width, q+k, d]
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            q, k = qk[:, :, : self.heads], qk[:, :, self.heads :]
            v = qkv[..., qk_width:].unflatten(-1, (self.kv_heads, self.head_dim))
            keys, values = past_key_values.update(k.transpose(1, 2), v.transpose(1, 2), index)
            if width == 1:
                q = q.reshape(rows, self.kv_heads, groups, self.head_dim)
            else:
                q = q.transpose(1, 2).reshape(rows, self.kv_heads, groups * width, self.head_dim)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            out = out.reshape(rows, self.heads, width, self.head_dim).transpose(1, 2)
            x = x + layer.o(out.reshape(rows, width, -1))
            gate_up = layer.gate_up(self._normalized(x))
            gated = F.silu(gate_up[..., : layer.intermediate]) * gate_up[..., layer.intermediate :]
            x = x + layer.down(gated)
        return SimpleNamespace(logits=self.head(self._normalized(x[:, -1:])))

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        """RMS normalization without the scale (folded into the next weights), in fp32,
        returned in the weights' dtype."""
        return (x * torch.rsqrt(x.square().mean(-1, keepdim=True).add_(self.eps))).to(self.dtype)
