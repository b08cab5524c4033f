"""The only module that knows where things live inside an Audio Spectrogram Transformer.

Everything else asks this module for "the attention block of layer i" or "how many heads
layer i has"; nobody else spells a module path. transformers v5 renamed ``encoder.layer`` to
``layers`` once already: when it happens again, this is the file that changes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import ASTForAudioClassification
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTAttention,
    eager_attention_forward,
)

from prunekit.errors import ModelError

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
    """Per-layer head counts and head dims, read from the modules themselves (pruned or not)."""
    shapes = []
    for i, block in enumerate(layers(model)):
        attn = block.attention
        # `is None`, not `or`: a pruned layer may legitimately have 0 heads.
        heads = _first(getattr(attn, "num_heads", None), getattr(attn, "num_attention_heads", None))
        heads = _first(heads, model.config.num_attention_heads)
        qk_dim = _first(getattr(attn, "qk_head_dim", None), attn.head_dim)
        v_dim = _first(getattr(attn, "v_head_dim", None), attn.head_dim)
        shapes.append(AttentionShape(i, heads, qk_dim, v_dim, attn.o_proj.out_features))
    return shapes


def _first(value, default):
    return default if value is None else value


def attention_heads(attn: nn.Module) -> int:
    """Heads of one attention block (dense or pruned; 0 for an emptied layer)."""
    return _first(getattr(attn, "num_heads", None), attn.num_attention_heads)


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


def tokens(model: nn.Module) -> int:
    """Sequence length of an AST: its patch grid (transformers' own ``get_shape``) plus the CLS
    and distillation tokens."""
    f_dim, t_dim = backbone(model).embeddings.get_shape(model.config)
    return f_dim * t_dim + 2


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
        "head_dim": original_head_dim(model.config),
        "qk_head_dims": [s.qk_dim for s in shapes],
        "v_head_dims": [s.v_dim for s in shapes],
        "pruned": config_structure(model.config) is not None,
        "classes": model.config.num_labels,
        "input": f"{frames} frames x {mels} mel bins",
        "parameters": total,
        "attention_parameters": attn,
        "attention_share": attn / total if total else 0.0,
    }


# --- The pruned structure --------------------------------------------------------------------
# A pruned model stores its per-layer attention structure in one extra config field. ASTConfig
# saves and restores unknown fields, so a saved pruned model reloads from config.json and
# safetensors alone: no pickle, no remote code.

STRUCTURE_FIELD = "prunekit_structure"


@dataclass(frozen=True)
class LayerStructure:
    """Attention structure of one layer: kept heads and per-head Q/K and V/O channel counts."""

    heads: int
    qk_head_dim: int
    v_head_dim: int

    def __post_init__(self) -> None:
        if self.heads < 0 or self.qk_head_dim < 0 or self.v_head_dim < 0:
            raise ModelError(f"Negative attention structure: {self}")
        if self.heads > 0 and (self.qk_head_dim == 0 or self.v_head_dim == 0):
            raise ModelError(f"{self.heads} heads with no Q/K or no V/O channels: {self}")
        if self.heads == 0 and (self.qk_head_dim or self.v_head_dim):
            raise ModelError(f"A layer with 0 heads must have head dims 0, got {self}")

    def to_dict(self) -> dict[str, int]:
        return {"heads": self.heads, "qk_head_dim": self.qk_head_dim, "v_head_dim": self.v_head_dim}


def config_structure(config) -> list[LayerStructure] | None:
    """The pruned structure stored in ``config`` (None for a dense config)."""
    raw = getattr(config, STRUCTURE_FIELD, None)
    if raw is None:
        return None
    if not isinstance(raw, (list, tuple)) or len(raw) != config.num_hidden_layers:
        n = len(raw) if isinstance(raw, (list, tuple)) else type(raw).__name__
        raise ModelError(
            f"config.{STRUCTURE_FIELD} must list one entry per layer "
            f"({config.num_hidden_layers}), got {n}"
        )
    try:
        return [LayerStructure(int(s["heads"]), int(s["qk_head_dim"]), int(s["v_head_dim"])) for s in raw]
    except (KeyError, TypeError) as exc:
        raise ModelError(f"config.{STRUCTURE_FIELD} is malformed ({exc!r}): {raw}") from exc


def original_head_dim(config) -> int:
    """Head dim of the dense model: it fixes the softmax scale, which pruning keeps."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def model_class_for(config) -> type[ASTForAudioClassification]:
    """The class that rebuilds a model from ``config``: pruned when the config says so."""
    pruned = config_structure(config) is not None
    return PrunedASTForAudioClassification if pruned else ASTForAudioClassification


class PrunedASTAttention(ASTAttention):
    """``ASTAttention`` with its own head count and per-head Q/K and V/O dims.

    Q/K channels and V/O channels are cut independently, so ``qk_head_dim != v_head_dim`` is
    allowed (sdpa and eager both accept a value dim different from the query/key dim; flash
    attention kernels do not). The softmax scale stays ``1/sqrt(original head dim)``. A layer with
    0 heads adds only the ``o_proj`` bias.
    """

    def __init__(self, config, structure: LayerStructure):
        super().__init__(config)  # keeps scaling = original_head_dim ** -0.5, dropout, config
        self.head_dim = original_head_dim(config)  # the dense head dim, which set the scale
        self.num_heads = self.num_attention_heads = structure.heads
        self.qk_head_dim = structure.qk_head_dim
        self.v_head_dim = structure.v_head_dim
        hidden, bias = config.hidden_size, config.qkv_bias
        qk, v = structure.heads * structure.qk_head_dim, structure.heads * structure.v_head_dim
        with warnings.catch_warnings():  # a 0-head layer: "initializing zero-element tensors is a no-op"
            warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
            self.q_proj = nn.Linear(hidden, qk, bias=bias)  # (h*dqk, d)
            self.k_proj = nn.Linear(hidden, qk, bias=bias)  # (h*dqk, d)
            self.v_proj = nn.Linear(hidden, v, bias=bias)  # (h*dv, d)
            self.o_proj = nn.Linear(v, hidden, bias=True)  # (d, h*dv)

    @property
    def structure(self) -> LayerStructure:
        return LayerStructure(self.num_heads, self.qk_head_dim, self.v_head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, T, d)
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # (B, T)
        if self.num_heads == 0:
            # o_proj of an empty (B, T, 0) input is its bias; calling the module keeps hooks/LoRA working.
            empty = hidden_states.new_zeros(*input_shape, 0)
            weights = hidden_states.new_zeros(input_shape[0], 0, input_shape[1], input_shape[1])
            return self.o_proj(empty), weights  # (B, T, d), (B, 0, T, T)
        qk_shape = (*input_shape, self.num_heads, self.qk_head_dim)
        v_shape = (*input_shape, self.num_heads, self.v_head_dim)
        query = self.q_proj(hidden_states).view(qk_shape).transpose(1, 2)  # (B, h, T, dqk)
        key = self.k_proj(hidden_states).view(qk_shape).transpose(1, 2)  # (B, h, T, dqk)
        value = self.v_proj(hidden_states).view(v_shape).transpose(1, 2)  # (B, h, T, dv)

        implementation = self.config._attn_implementation
        width = max(self.qk_head_dim, self.v_head_dim)
        if implementation == "sdpa" and self.qk_head_dim != self.v_head_dim:
            # CPU sdpa takes its fast kernel only when q, k and v share a head dim; otherwise it
            # falls back to plain maths (3x slower at AST-base size, slower than dense). Zero
            # channels change no q.k product and add only zero outputs: pad the narrower side to
            # the wider one, then slice the padding off the output.
            query = nn.functional.pad(query, (0, width - self.qk_head_dim))  # (B, h, T, w)
            key = nn.functional.pad(key, (0, width - self.qk_head_dim))  # (B, h, T, w)
            value = nn.functional.pad(value, (0, width - self.v_head_dim))  # (B, h, T, w)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )  # out: (B, T, h, dv), or (B, T, h, w) when padded
        out = out[..., : self.v_head_dim].reshape(*input_shape, -1).contiguous()  # (B, T, h*dv)
        return self.o_proj(out), weights


class PrunedASTForAudioClassification(ASTForAudioClassification):
    """``ASTForAudioClassification`` whose attention layers follow ``config.prunekit_structure``.

    ``from_pretrained(folder)`` rebuilds the smaller layers from the config before loading the
    weights. The stock class refuses such a folder with a size-mismatch error.
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        structure = config_structure(config)
        if structure is None:
            raise ModelError(f"A pruned model needs config.{STRUCTURE_FIELD}; this config has none.")
        install_structure(self, structure)
        self.post_init()  # initialises only the new modules; the rest is flagged as done


def install_structure(model: nn.Module, structure: list[LayerStructure]) -> None:
    """Give every layer of a freshly built ``model`` a (randomly initialised) PrunedASTAttention
    of ``structure``, in place; ``from_pretrained`` then loads the weights into them."""
    for block, layer_structure in zip(layers(model), structure):
        block.attention = PrunedASTAttention(model.config, layer_structure)


def structure_of(model: nn.Module) -> list[LayerStructure]:
    """The structure the modules actually have (dense layers report their full shape)."""
    return [LayerStructure(s.heads, s.qk_dim, s.v_dim) for s in attention_shapes(model)]


def shrink_attention(
    model: nn.Module,
    layer: int,
    structure: LayerStructure,
    qk_rows: torch.Tensor,
    vo_rows: torch.Tensor,
) -> None:
    """Replace layer ``layer``'s attention, in place, by a smaller one keeping ``qk_rows`` of
    W_q/W_k (and biases), ``vo_rows`` of W_v (and bias) and the same columns of W_o.

    Rows must be grouped by kept head: ``qk_rows`` has ``heads * qk_head_dim`` entries.
    """
    old = attention(model, layer)
    if qk_rows.numel() != structure.heads * structure.qk_head_dim:
        raise ModelError(f"Layer {layer}: {qk_rows.numel()} Q/K rows do not fit {structure}")
    if vo_rows.numel() != structure.heads * structure.v_head_dim:
        raise ModelError(f"Layer {layer}: {vo_rows.numel()} V/O rows do not fit {structure}")
    ref = old.q_proj.weight
    with torch.device("meta"):  # no allocation or random init: every tensor is overwritten below
        new = PrunedASTAttention(model.config, structure)
    new = new.to_empty(device=ref.device).to(ref.dtype)
    with torch.no_grad():
        for name, rows in (("q_proj", qk_rows), ("k_proj", qk_rows), ("v_proj", vo_rows)):
            src, dst = getattr(old, name), getattr(new, name)
            dst.weight.copy_(src.weight.index_select(0, rows))  # (rows, d)
            if src.bias is not None:
                dst.bias.copy_(src.bias.index_select(0, rows))
        new.o_proj.weight.copy_(old.o_proj.weight.index_select(1, vo_rows))  # (d, rows)
        new.o_proj.bias.copy_(old.o_proj.bias)
    new.train(old.training)
    for p_new, p_old in zip(new.parameters(), old.parameters()):
        p_new.requires_grad_(p_old.requires_grad)
    layers(model)[layer].attention = new


def ensure_prunable(model: nn.Module) -> None:
    """Raise ModelError unless ``model`` is an ASTForAudioClassification (dense or pruned)."""
    if not isinstance(model, ASTForAudioClassification):
        raise ModelError(
            f"Pruning needs an ASTForAudioClassification (dense or pruned), got {type(model).__name__}; "
            "merge or unwrap adapters (peft: merge_and_unload) first"
        )


def make_pruned(model: nn.Module, structure: list[LayerStructure]) -> PrunedASTForAudioClassification:
    """Record ``structure`` in ``model.config`` and make ``model`` a PrunedASTForAudioClassification
    (in place; its attention modules must already have that structure)."""
    ensure_prunable(model)
    actual = structure_of(model)
    if actual != list(structure):
        raise ModelError(f"The modules have structure {actual}, not {list(structure)}")
    setattr(model.config, STRUCTURE_FIELD, [s.to_dict() for s in structure])
    if type(model) is ASTForAudioClassification:  # a token-pruned model's class rebuilds heads too
        model.__class__ = PrunedASTForAudioClassification  # adds no state: only __init__ differs
    return model
