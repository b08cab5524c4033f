"""The Audio Spectrogram Transformer family: where things live inside an AST, and its pruned block.

The only module that spells AST module paths (transformers v5: ``audio_spectrogram_transformer.
layers[i].attention`` with ``q_proj, k_proj, v_proj, o_proj``). When transformers renames them
again, this is the file that changes.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import ASTForAudioClassification
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTAttention,
    eager_attention_forward,
)

from prunekit.errors import ModelError
from prunekit.models.family import (
    STRUCTURE_FIELD,
    LayerStructure,
    ModelFamily,
    PatchGrid,
    Projections,
    config_structure,
)

__all__ = [
    "ASTFamily",
    "PrunedASTAttention",
    "PrunedASTForAudioClassification",
    "attend_to_keys",
    "backbone",
    "heads_of",
    "install_structure",
]


def backbone(model: nn.Module) -> nn.Module:
    """The ``ASTModel`` inside an ``ASTForAudioClassification`` (or the model itself)."""
    return getattr(model, "audio_spectrogram_transformer", model)


def heads_of(attention: nn.Module) -> int:
    """Heads of one AST attention block, dense or pruned (0 for an emptied layer)."""
    heads = getattr(attention, "num_heads", None)
    return attention.num_attention_heads if heads is None else heads


def install_structure(model: nn.Module, structure: list[LayerStructure]) -> None:
    """Give every layer of a freshly built ``model`` a (randomly initialised) pruned attention of
    ``structure``, in place; ``from_pretrained`` then loads the weights into them."""
    for block, layer_structure in zip(backbone(model).layers, structure):
        block.attention = PrunedASTAttention(model.config, layer_structure)


def _original_head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class PrunedASTAttention(ASTAttention):
    """``ASTAttention`` with its own head count and per-head Q/K and V/O dims.

    Q/K channels and V/O channels are cut independently, so ``qk_head_dim != v_head_dim`` is
    allowed (sdpa and eager both accept a value dim different from the query/key dim; flash
    attention kernels do not). The softmax scale stays ``1/sqrt(original head dim)``. A layer with
    0 heads adds only the ``o_proj`` bias.
    """

    def __init__(self, config, structure: LayerStructure):
        super().__init__(config)  # keeps scaling = original_head_dim ** -0.5, dropout, config
        self.head_dim = _original_head_dim(config)  # the dense head dim, which set the scale
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


def attend_to_keys(
    block: nn.Module,
    hidden_states: torch.Tensor,  # (B, T, d)
    heads: int,
    qk_head_dim: int,
    v_head_dim: int,
    key_index: torch.Tensor,  # (k,) token positions whose K and V are computed
    attention_mask: torch.Tensor | None,  # (1 or B, h, T, k), additive
) -> torch.Tensor:
    """Attention block ``block`` (dense or pruned, LoRA-wrapped projections included) with every
    token as a query but K and V computed only for the tokens ``key_index``: the K/V projections,
    Q.K^T and A.V all shrink with k. Returns the block's output (B, T, d).

    The same maths as the block's own forward (``PrunedASTAttention.forward``), keys restricted.
    """
    batch, length = hidden_states.shape[:2]
    if heads == 0:
        return block.o_proj(hidden_states.new_zeros(batch, length, 0))  # (B, T, d): the bias
    keys_in = hidden_states.index_select(1, key_index)  # (B, k, d)
    kept = keys_in.shape[1]
    query = (
        block.q_proj(hidden_states).view(batch, length, heads, qk_head_dim).transpose(1, 2)
    )  # (B, h, T, dqk)
    key = block.k_proj(keys_in).view(batch, kept, heads, qk_head_dim).transpose(1, 2)  # (B, h, k, dqk)
    value = block.v_proj(keys_in).view(batch, kept, heads, v_head_dim).transpose(1, 2)  # (B, h, k, dv)
    implementation = block.config._attn_implementation
    if implementation == "sdpa" and qk_head_dim != v_head_dim:  # see PrunedASTAttention.forward
        width = max(qk_head_dim, v_head_dim)
        query = nn.functional.pad(query, (0, width - qk_head_dim))
        key = nn.functional.pad(key, (0, width - qk_head_dim))
        value = nn.functional.pad(value, (0, width - v_head_dim))
    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    out, _ = attention_interface(
        block,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0 if not block.training else block.attention_dropout,
        scaling=block.scaling,
    )  # (B, T, h, dv) or (B, T, h, w) when padded
    out = out[..., :v_head_dim].reshape(batch, length, -1).contiguous()  # (B, T, h*dv)
    return block.o_proj(out)


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


class ASTFamily(ModelFamily):
    """``ASTForAudioClassification`` from transformers, dense or pruned by prunekit."""

    name = "Audio Spectrogram Transformer"
    model_types = ("audio-spectrogram-transformer",)

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, ASTForAudioClassification)

    def attention_blocks(self, model: nn.Module) -> list[nn.Module]:
        return [layer.attention for layer in backbone(model).layers]

    def projections(self, block: nn.Module) -> Projections:
        return Projections(block.q_proj, block.k_proj, block.v_proj, block.o_proj)

    def heads(self, model: nn.Module, block: nn.Module) -> tuple[int, int, int]:
        # `is None`, not `or`: a pruned layer may legitimately have 0 heads.
        heads = getattr(block, "num_heads", None)
        heads = model.config.num_attention_heads if heads is None else heads
        qk_dim = getattr(block, "qk_head_dim", None)
        v_dim = getattr(block, "v_head_dim", None)
        return heads, block.head_dim if qk_dim is None else qk_dim, block.head_dim if v_dim is None else v_dim

    def replace_block(self, model: nn.Module, index: int, block: nn.Module) -> None:
        backbone(model).layers[index].attention = block

    def empty_pruned_block(self, config, structure: LayerStructure) -> nn.Module:
        with torch.device("meta"):  # no allocation or random init: every tensor is overwritten
            return PrunedASTAttention(config, structure)

    def pruned_class(self, config) -> type[nn.Module]:
        return PrunedASTForAudioClassification

    def mark_pruned(self, model: nn.Module) -> None:
        """A plain AST becomes the pruned class; a subclass that rebuilds the structure itself
        (the token-pruned AST) keeps its class."""
        if type(model) is ASTForAudioClassification:
            model.__class__ = PrunedASTForAudioClassification

    def dense_class(self, config) -> type[nn.Module]:
        return ASTForAudioClassification

    def input_shape(self, model: nn.Module) -> tuple[int, int]:
        """(frames, mel bins) of the spectrogram the model expects."""
        return model.config.max_length, model.config.num_mel_bins

    def tokens(self, model: nn.Module) -> int:
        """The patch grid plus the CLS and distillation tokens."""
        grid = self.patch_grid(model)
        return grid.extra + grid.patches

    def patch_grid(self, model: nn.Module) -> PatchGrid:
        """CLS and distillation first, then the patches of transformers' own ``get_shape``, in the
        order the patch convolution's (mels, frames) output is flattened: frequency-major."""
        config = model.config
        f_dim, t_dim = backbone(model).embeddings.get_shape(config)
        return PatchGrid(2, f_dim, t_dim, config.patch_size, config.frequency_stride, config.time_stride)

    def classifier(self, model: nn.Module) -> nn.Linear:
        return model.classifier.dense

    def original_head_dim(self, config) -> int:
        return _original_head_dim(config)
