"""The boundary between prunekit and a model family: what scoring, planning and surgery may ask.

A *family* (the Audio Spectrogram Transformer today; a Whisper encoder/decoder could be the next)
answers, for a model of its kind: which attention blocks can be pruned, their four projections
(W_q, W_k, W_v, W_o as ``nn.Linear``), their head counts and dims, how to build an empty pruned
block of a given structure, where to put it, and how the pruned structure is stored in and read
back from the model's config. Scoring hooks the projections it is given; the planner sees only
``AttentionShape``; surgery chooses rows and calls ``anatomy.shrink_attention``, the one place
where weights are cut. None of them spells a module path.

A new family implements ``ModelFamily`` and adds itself to ``anatomy.FAMILIES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from prunekit.errors import ModelError

__all__ = ["STRUCTURE_FIELD", "AttentionShape", "LayerStructure", "ModelFamily", "PatchGrid", "Projections",
           "config_structure"]

# A pruned model stores its per-layer attention structure in one extra config field. transformers'
# configs save and restore unknown fields, so a saved pruned model reloads from config.json and
# safetensors alone: no pickle, no remote code.
STRUCTURE_FIELD = "prunekit_structure"


class Projections(NamedTuple):
    """The four projections of one attention block. Row ``h * D + c`` of q, k and v is channel
    ``c`` of head ``h``; column ``h * D + c`` of o consumes value channel ``(h, c)``."""

    q: nn.Linear  # (H*Dqk, d)
    k: nn.Linear  # (H*Dqk, d)
    v: nn.Linear  # (H*Dv, d)
    o: nn.Linear  # (d, H*Dv)


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

    def to_dict(self) -> dict[str, int]:
        return {"layer": self.layer, "heads": self.heads, "qk_dim": self.qk_dim, "v_dim": self.v_dim,
                "hidden": self.hidden}


@dataclass(frozen=True)
class LayerStructure:
    """Attention structure of one pruned layer: kept heads and per-head Q/K and V/O channel counts."""

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


@dataclass(frozen=True)
class PatchGrid:
    """Where the tokens of a spectrogram transformer come from: ``extra`` leading tokens (CLS,
    distillation), then ``frequency x time`` patches in frequency-major order; patch (f, t) covers
    mel bins ``f * f_stride`` .. ``+ size`` and frames ``t * t_stride`` .. ``+ size``."""

    extra: int
    frequency: int
    time: int
    size: int
    f_stride: int
    t_stride: int

    @property
    def patches(self) -> int:
        return self.frequency * self.time


def config_structure(config) -> list[LayerStructure] | None:
    """The pruned structure stored in ``config`` (None for a dense config)."""
    raw = getattr(config, STRUCTURE_FIELD, None)
    if raw is None:
        return None
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(raw, (list, tuple)) or len(raw) != layers:
        n = len(raw) if isinstance(raw, (list, tuple)) else type(raw).__name__
        raise ModelError(f"config.{STRUCTURE_FIELD} must list one entry per layer ({layers}), got {n}")
    try:
        return [LayerStructure(int(s["heads"]), int(s["qk_head_dim"]), int(s["v_head_dim"])) for s in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"config.{STRUCTURE_FIELD} is malformed ({exc!r}): {raw}") from exc


class ModelFamily(ABC):
    """What prunekit needs to know about one kind of model. Methods take the whole model (or its
    config) and a block index: the family decides what "block i" is."""

    name: str  # for people: "Audio Spectrogram Transformer"
    model_types: tuple[str, ...]  # the ``config.model_type`` values the family reads

    # --- recognising models -------------------------------------------------------------------
    @abstractmethod
    def handles(self, model: nn.Module) -> bool:
        """Whether ``model`` is of this family (dense or pruned) and can be scored and pruned."""

    # --- attention blocks ---------------------------------------------------------------------
    @abstractmethod
    def attention_blocks(self, model: nn.Module) -> list[nn.Module]:
        """Every prunable self-attention block, in order (the index is the plan's layer)."""

    @abstractmethod
    def projections(self, block: nn.Module) -> Projections:
        """The block's W_q, W_k, W_v, W_o."""

    @abstractmethod
    def heads(self, model: nn.Module, block: nn.Module) -> tuple[int, int, int]:
        """(heads, Q/K head dim, V/O head dim) of ``block`` as its modules have them."""

    @abstractmethod
    def replace_block(self, model: nn.Module, index: int, block: nn.Module) -> None:
        """Put ``block`` in place of attention block ``index`` (in place)."""

    # --- the pruned structure -----------------------------------------------------------------
    @abstractmethod
    def empty_pruned_block(self, config, structure: LayerStructure) -> nn.Module:
        """A pruned attention block of ``structure`` on the meta device (weights are copied in
        by ``anatomy.shrink_attention``), keeping the dense softmax scale."""

    @abstractmethod
    def pruned_class(self, config) -> type[nn.Module]:
        """The model class that rebuilds a pruned structure from ``config`` in ``__init__``, so
        ``from_pretrained(folder)`` reloads a pruned model with no pickle."""

    @abstractmethod
    def dense_class(self, config) -> type[nn.Module]:
        """The stock class of a dense model."""

    def mark_pruned(self, model: nn.Module) -> None:
        """Make ``model`` an instance of its pruned class (in place; the class adds no state)."""
        model.__class__ = self.pruned_class(model.config)

    # --- inputs and outputs -------------------------------------------------------------------
    @abstractmethod
    def input_shape(self, model: nn.Module) -> tuple[int, ...]:
        """Shape of one input example, without the batch axis."""

    def dummy_input(self, model: nn.Module, batch: int = 1) -> torch.Tensor:
        """A seeded random input batch of the model's shape."""
        return torch.randn(batch, *self.input_shape(model), generator=torch.Generator().manual_seed(0))

    @abstractmethod
    def tokens(self, model: nn.Module) -> int:
        """Sequence length the attention blocks see."""

    @abstractmethod
    def patch_grid(self, model: nn.Module) -> PatchGrid:
        """How the tokens map onto the input spectrogram."""

    @abstractmethod
    def classifier(self, model: nn.Module) -> nn.Linear:
        """The final Linear that produces the logits."""

    @abstractmethod
    def original_head_dim(self, config) -> int:
        """Head dim of the dense model: it fixes the softmax scale, which pruning keeps."""
