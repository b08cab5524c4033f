"""The only module that knows where things live inside an Audio Spectrogram Transformer.

Everything else asks this module for "the attention block of layer i" or "how many heads
layer i has"; nobody else spells a module path. transformers v5 renamed ``encoder.layer`` to
``layers`` once already: when it happens again, this is the file that changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ATTENTION_MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj")


def backbone(model: nn.Module) -> nn.Module:
    """The ``ASTModel`` inside an ``ASTForAudioClassification`` (or the model itself)."""
    return getattr(model, "audio_spectrogram_transformer", model)


def layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks, in order."""
    return backbone(model).layers


def attention(model: nn.Module, layer: int) -> nn.Module:
    """The self-attention block of ``layer`` (has q_proj, k_proj, v_proj, o_proj)."""
    return layers(model)[layer].attention


def classifier(model: nn.Module) -> nn.Linear:
    """The final Linear that produces the logits."""
    return model.classifier.dense


@dataclass(frozen=True)
class AttentionShape:
    """Structure of one attention block. ``qk_dim``/``v_dim`` are per-head channel counts."""

    layer: int
    heads: int
    qk_dim: int
    v_dim: int
    hidden: int

    @property
    def weights(self) -> int:
        """Number of attention weights (W_q, W_k, W_v, W_o; biases excluded)."""
        return self.hidden * self.heads * (2 * self.qk_dim + 2 * self.v_dim)


def attention_shapes(model: nn.Module) -> list[AttentionShape]:
    """Per-layer head counts and head dims, read from the modules themselves."""
    shapes = []
    for i, block in enumerate(layers(model)):
        attn = block.attention
        heads = getattr(attn, "num_heads", None) or model.config.num_attention_heads
        qk_dim = getattr(attn, "qk_head_dim", None) or attn.head_dim
        v_dim = getattr(attn, "v_head_dim", None) or attn.head_dim
        shapes.append(AttentionShape(i, heads, qk_dim, v_dim, attn.o_proj.out_features))
    return shapes


def attention_parameters(model: nn.Module) -> int:
    """Parameters (weights and biases) of every q/k/v/o projection."""
    total = 0
    for block in layers(model):
        for name in ATTENTION_MATRICES:
            total += sum(p.numel() for p in getattr(block.attention, name).parameters())
    return total


def input_shape(model: nn.Module) -> tuple[int, int]:
    """(frames, mel bins) of the spectrogram the model expects."""
    return model.config.max_length, model.config.num_mel_bins


def dummy_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A random spectrogram batch of the model's input shape: (B, frames, mels)."""
    frames, mels = input_shape(model)
    return torch.randn(batch, frames, mels, generator=torch.Generator().manual_seed(0))


def describe(model: nn.Module) -> dict:
    """Plain facts for a person: layers, heads per layer, sizes and parameter counts."""
    shapes = attention_shapes(model)
    total = sum(p.numel() for p in model.parameters())
    attn = attention_parameters(model)
    frames, mels = input_shape(model)
    return {
        "layers": len(shapes),
        "heads": [s.heads for s in shapes],
        "hidden_size": model.config.hidden_size,
        "head_dim": shapes[0].qk_dim if shapes else 0,
        "classes": model.config.num_labels,
        "input": f"{frames} frames x {mels} mel bins",
        "parameters": total,
        "attention_parameters": attn,
        "attention_share": attn / total if total else 0.0,
    }
