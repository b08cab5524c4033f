"""The one door to a model's internals: every other module asks here, never spells a module path.

Each function finds the model's family (``family.ModelFamily``; the Audio Spectrogram
Transformer today) and asks it. ``shrink_attention`` is the one place in prunekit where weights
are cut: it copies the kept rows and columns of W_q, W_k, W_v and W_o into a smaller block.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from prunekit.errors import ModelError
from prunekit.models.ast import ASTFamily
from prunekit.models.family import (
    STRUCTURE_FIELD,
    AttentionShape,
    LayerStructure,
    ModelFamily,
    PatchGrid,
    Projections,
    config_structure,
)

__all__ = [
    "FAMILIES",
    "STRUCTURE_FIELD",
    "AttentionShape",
    "LayerStructure",
    "Projections",
    "attention",
    "attention_parameters",
    "attention_shapes",
    "classifier",
    "config_structure",
    "describe",
    "dummy_input",
    "ensure_prunable",
    "family_of",
    "fingerprint",
    "input_shape",
    "is_multilabel",
    "make_pruned",
    "model_class_for",
    "original_head_dim",
    "patch_grid",
    "projections",
    "shrink_attention",
    "structure_of",
    "tokens",
]

FAMILIES: tuple[ModelFamily, ...] = (ASTFamily(),)


def fingerprint(model: nn.Module) -> str:
    """A hash of every parameter and buffer (names, shapes, bytes) and the attention structure:
    the key of everything cached about a model's weights (scores, evaluations)."""
    digest = hashlib.sha256(repr(structure_of(model)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def family_of(model: nn.Module) -> ModelFamily:
    """The family that knows ``model`` (looking through a peft LoRA wrapper, whose forward is the
    model's); ModelError when none does. Pruning needs the model itself: see ``ensure_prunable``."""
    for candidate in (model, getattr(model, "model", None)):
        for family in FAMILIES:
            if candidate is not None and family.handles(candidate):
                return family
    names = ", ".join(f.name for f in FAMILIES)
    raise ModelError(
        f"prunekit works on {names} models (dense or pruned), got {type(model).__name__}; "
        "merge or unwrap adapters (peft: merge_and_unload) first"
    )


def _family_for_config(config) -> ModelFamily:
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise ModelError(f"prunekit reads models of type {known}; this config is a {model_type!r} model")


def ensure_prunable(model: nn.Module) -> ModelFamily:
    """The family of ``model`` when prunekit can score and prune it as it is (not wrapped)."""
    for family in FAMILIES:
        if family.handles(model):
            return family
    names = ", ".join(f.name for f in FAMILIES)
    raise ModelError(
        f"Pruning needs a {names} model (dense or pruned), got {type(model).__name__}; "
        "merge or unwrap adapters (peft: merge_and_unload) first"
    )


# --- attention blocks ----------------------------------------------------------------------------
def attention(model: nn.Module, layer: int) -> nn.Module:
    """Attention block ``layer`` (the plan's layer index)."""
    return family_of(model).attention_blocks(model)[layer]


def projections(model: nn.Module, layer: int) -> Projections:
    """W_q, W_k, W_v, W_o of attention block ``layer``, as ``nn.Linear`` modules."""
    family = family_of(model)
    return family.projections(family.attention_blocks(model)[layer])


def attention_shapes(model: nn.Module) -> list[AttentionShape]:
    """Per-layer head counts and head dims, read from the modules themselves (pruned or not)."""
    family = family_of(model)
    shapes = []
    for i, block in enumerate(family.attention_blocks(model)):
        heads, qk_dim, v_dim = family.heads(model, block)
        shapes.append(AttentionShape(i, heads, qk_dim, v_dim, family.projections(block).o.out_features))
    return shapes


def attention_parameters(model: nn.Module) -> int:
    """Parameters (weights and biases) of every q/k/v/o projection."""
    family = family_of(model)
    return sum(
        p.numel()
        for block in family.attention_blocks(model)
        for linear in family.projections(block)
        for p in linear.parameters()
    )


def classifier(model: nn.Module) -> nn.Linear:
    """The final Linear that produces the logits."""
    return family_of(model).classifier(model)


# --- inputs ----------------------------------------------------------------------------------------
def input_shape(model: nn.Module) -> tuple[int, ...]:
    """Shape of one input example: (frames, mel bins) for an AST."""
    return family_of(model).input_shape(model)


def patch_grid(model: nn.Module) -> PatchGrid:
    """How the model's tokens map onto its input spectrogram (extra tokens, then patches)."""
    return family_of(model).patch_grid(model)


def tokens(model: nn.Module) -> int:
    """Sequence length the attention blocks see (an AST: patches + CLS + distillation token)."""
    return family_of(model).tokens(model)


def dummy_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A seeded random input batch of the model's shape: (B, frames, mels) for an AST."""
    return family_of(model).dummy_input(model, batch)


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


def is_multilabel(model: nn.Module) -> bool:
    """Whether the model tags (one sigmoid per class, several classes per clip) rather than
    classifies: its config says ``problem_type="multi_label_classification"``."""
    return getattr(model.config, "problem_type", None) == "multi_label_classification"


# --- the pruned structure ----------------------------------------------------------------------------
def original_head_dim(config) -> int:
    """Head dim of the dense model: it fixes the softmax scale, which pruning keeps."""
    return _family_for_config(config).original_head_dim(config)


def model_class_for(config) -> type[nn.Module]:
    """The class that rebuilds a model from ``config``: pruned when the config says so."""
    family = _family_for_config(config)
    return family.pruned_class(config) if config_structure(config) is not None else family.dense_class(config)


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
    """Replace attention block ``layer``, in place, by a smaller one keeping ``qk_rows`` of
    W_q/W_k (and biases), ``vo_rows`` of W_v (and bias) and the same columns of W_o.

    The one place where prunekit cuts weights. Rows must be grouped by kept head: ``qk_rows``
    has ``heads * qk_head_dim`` entries, ``vo_rows`` ``heads * v_head_dim``.
    """
    family = family_of(model)
    old = family.attention_blocks(model)[layer]
    if qk_rows.numel() != structure.heads * structure.qk_head_dim:
        raise ModelError(f"Layer {layer}: {qk_rows.numel()} Q/K rows do not fit {structure}")
    if vo_rows.numel() != structure.heads * structure.v_head_dim:
        raise ModelError(f"Layer {layer}: {vo_rows.numel()} V/O rows do not fit {structure}")
    src = family.projections(old)
    new = family.empty_pruned_block(model.config, structure)
    new = new.to_empty(device=src.q.weight.device).to(src.q.weight.dtype)
    dst = family.projections(new)
    with torch.no_grad():
        for a, b, rows in ((src.q, dst.q, qk_rows), (src.k, dst.k, qk_rows), (src.v, dst.v, vo_rows)):
            b.weight.copy_(a.weight.index_select(0, rows))  # (rows, d)
            if a.bias is not None:
                b.bias.copy_(a.bias.index_select(0, rows))
        dst.o.weight.copy_(src.o.weight.index_select(1, vo_rows))  # (d, rows)
        dst.o.bias.copy_(src.o.bias)
    new.train(old.training)
    for p_new, p_old in zip(new.parameters(), old.parameters()):
        p_new.requires_grad_(p_old.requires_grad)
    family.replace_block(model, layer, new)


def make_pruned(model: nn.Module, structure: list[LayerStructure]) -> nn.Module:
    """Record ``structure`` in ``model.config`` and make ``model`` its family's pruned class (in
    place; its attention modules must already have that structure)."""
    family = family_of(model)
    actual = structure_of(model)
    if actual != list(structure):
        raise ModelError(f"The modules have structure {actual}, not {list(structure)}")
    setattr(model.config, STRUCTURE_FIELD, [s.to_dict() for s in structure])
    family.mark_pruned(model)
    return model
