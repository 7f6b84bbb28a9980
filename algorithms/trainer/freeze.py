"""Train only the top of the model (``trainer.train_layers``): less backward work per token.

An RL update's backward costs about twice its forward, and on a CPU the update already
runs near the matmul peak, so the way to a cheaper update is less work. Freezing every
weight below the top N transformer blocks does that twice over: those weights get no
gradient, and, because nothing below them needs one, autograd stops at the lowest trained
block instead of carrying activation gradients down to the embeddings.

What trains: the top N blocks, the final norm, and the LM head when it has its own
weights. A head *tied* to the input embeddings (SmolLM2, Qwen2.5-0.5B, Llama 3.2) stays
frozen: training it would train the embedding table too, and the gradient of an
embedding lookup is what would pull backward through every frozen block.

Frozen weights are still the model's weights: checkpoints and exports save them, and a
resumed run freezes the same ones again before its optimizer is rebuilt, so the
optimizer's saved state matches its parameters.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def decoder_blocks(model: Any) -> tuple[nn.ModuleList, nn.Module | None]:
    """The transformer blocks (bottom to top) and the final norm of a Hugging Face
    causal LM (Llama, Qwen2, Mistral, Gemma and other ``model.layers`` families)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(
            f"trainer.train_layers needs a decoder with a list of blocks (model.layers), "
            f"which {type(model).__name__} does not have; set trainer.train_layers to null"
        )
    return blocks, getattr(decoder, "norm", None)


def train_top_layers(model: Any, n: int) -> int:
    """Freeze every weight of ``model`` except the top ``n`` blocks, the final norm and an
    untied LM head; return the number of weights left trainable.

    Raises ``ValueError`` when ``n`` is not between 1 and the model's block count, or when
    the model is LoRA-wrapped (its adapters already choose what trains).
    """
    if hasattr(model, "peft_config"):
        raise ValueError(
            "trainer.train_layers with a LoRA model: the adapters already choose what "
            "trains; set trainer.train_layers or model.lora to null"
        )
    blocks, norm = decoder_blocks(model)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(blocks):
        raise ValueError(
            f"trainer.train_layers must be an integer from 1 to {len(blocks)} (this model's "
            f"transformer blocks), got {n!r}; null trains every layer"
        )
    model.requires_grad_(False)
    trained: list[nn.Module] = list(blocks[len(blocks) - n :])
    if norm is not None:
        trained.append(norm)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and (embeddings is None or head.weight is not embeddings.weight):
        trained.append(head)
    for module in trained:
        module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
