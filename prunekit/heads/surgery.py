"""Execute a PruningPlan, and save the result.

``apply_plan(model, plan)`` copies the model, turns the plan into the rows to keep in each layer
and hands them to ``anatomy.shrink_attention``, the one place where weights are cut (the model
family builds the smaller block). It returns a NEW model whose attention projections are physically
smaller (rows of W_q, W_k, W_v and their biases, columns of W_o); the input model is untouched.
Its outputs equal the dense model's with the removed units masked, because the softmax keeps the
original ``1/sqrt(D)`` scale. ``save_pruned`` writes a ``save_pretrained`` folder that
``prunekit.models.load_model`` reloads from the config alone (no pickle, no remote code).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from prunekit.errors import ConfigurationError, ModelError, OutputExistsError, PlanError
from prunekit.heads.plan import PruningPlan
from prunekit.models import anatomy
from prunekit.models.anatomy import LayerStructure
from prunekit.store import atomic_write_text

__all__ = [
    "MARKER_FILE",
    "ORIGIN_FIELD",
    "PLAN_FILE",
    "apply_plan",
    "check_output",
    "kept_structure",
    "load_plan",
    "origin_of",
    "recorded_origin",
    "save_pruned",
]

PLAN_FILE = "plan.json"
# config.json field naming the model a pruned folder was made from (what `prunekit report` compares
# it with when not told otherwise): "demo", a hub id or an absolute local path.
ORIGIN_FIELD = "prunekit_origin"
# Written into every folder save_pruned makes. ``overwrite`` replaces a folder only when it holds
# this file: a folder prunekit did not write (a user's model, their home) is never deleted. A
# marker, not "has plan.json and a pruned config", because a user may copy those into a folder
# of their own.
MARKER_FILE = ".prunekit-output"


def kept_structure(plan: PruningPlan) -> list[LayerStructure]:
    """Per-layer (heads, qk_head_dim, v_head_dim) the plan produces.

    Raises PlanError when the kept heads of one layer keep different numbers of Q/K (or V/O)
    channels: the attention reshapes a layer's projections into equal-sized heads.
    """
    out = []
    for i, lp in enumerate(plan.layers):
        qk = {h: len(c) for h, c in zip(lp.heads, lp.qk)}
        vo = {h: len(c) for h, c in zip(lp.heads, lp.vo)}
        for kind, counts in (("Q/K", qk), ("V/O", vo)):
            if len(set(counts.values())) > 1:
                raise PlanError(
                    f"Layer {i}: kept heads keep different numbers of {kind} channels "
                    f"(head: count {counts}); every kept head of a layer must keep the same number "
                    "of Q/K channels and the same number of V/O channels (the 'per-head' and "
                    "'same-channel' patterns do)"
                )
        qk_dim = next(iter(qk.values()), 0)
        v_dim = next(iter(vo.values()), 0)
        out.append(LayerStructure(len(lp.heads), qk_dim, v_dim))
    return out


def _rows(heads: tuple[int, ...], channels: tuple[tuple[int, ...], ...], head_dim: int) -> torch.Tensor:
    """Projection rows of the kept (head, channel) pairs, grouped by head: row = h * D + c."""
    rows = [h * head_dim + c for h, chans in zip(heads, channels) for c in chans]
    return torch.tensor(rows, dtype=torch.long)  # (heads * kept channels,)


def apply_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """A pruned copy of ``model`` (an ASTForAudioClassification, dense or already pruned).

    Indices in ``plan`` are those of ``model`` (``plan.base`` must equal its shape), so a pruned
    model can be pruned again. Every attention layer of the result is a ``PrunedASTAttention``
    (an untouched layer keeps all its weights) and ``config.prunekit_structure`` records the shape.
    """
    anatomy.ensure_prunable(model)
    plan.validate_for(model)
    structure = kept_structure(plan)  # fails before the (possibly large) copy
    pruned = copy.deepcopy(model)
    for i, (lp, shape, layer_structure) in enumerate(zip(plan.layers, plan.base, structure)):
        qk_rows = _rows(lp.heads, lp.qk, shape.qk_dim)  # (h * dqk,)
        vo_rows = _rows(lp.heads, lp.vo, shape.v_dim)  # (h * dv,)
        anatomy.shrink_attention(pruned, i, layer_structure, qk_rows, vo_rows)
    return anatomy.make_pruned(pruned, structure)


def save_pruned(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    plan: PruningPlan | None = None,
    feature_extractor=None,
    labels: list[str] | None = None,
    origin: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a ``save_pretrained`` folder: config.json (with the pruned structure and
    ``architectures`` naming the prunekit class), model.safetensors, ``plan.json`` when ``plan``
    is given, preprocessor_config.json when ``feature_extractor`` is given, and ``labels`` as
    id2label/label2id, ``origin`` (the source the model was pruned from) as
    ``config.prunekit_origin``, and the ``MARKER_FILE``. The folder appears complete or not at all
    (written aside, then renamed). An existing non-empty folder is replaced only with
    ``overwrite=True`` and only when save_pruned wrote it (``check_output``).
    """
    directory = Path(directory).expanduser()
    stored = anatomy.config_structure(model.config)
    actual = anatomy.structure_of(model)
    if stored is not None and stored != actual:
        raise ModelError(f"config.{anatomy.STRUCTURE_FIELD} says {stored} but the modules are {actual}")
    if plan is not None and kept_structure(plan) != actual:
        raise PlanError(f"The plan produces {kept_structure(plan)} but the model has {actual}")
    if labels is not None and len(labels) != model.config.num_labels:
        raise ConfigurationError(
            f"{len(labels)} labels given for a model with {model.config.num_labels} outputs"
        )
    check_output(directory, overwrite=overwrite)

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        # transformers writes on rank 0 only once torch.distributed is up; a sweep's ranks each save
        # their own configurations, so this save is this process's whatever its rank.
        model.should_save_on_this_rank = lambda is_main_process: is_main_process
        try:
            model.save_pretrained(tmp)
        finally:
            del model.should_save_on_this_rank
        if labels is not None or origin is not None:
            config_file = tmp / "config.json"
            config = json.loads(config_file.read_text())
            if labels is not None:
                config["id2label"] = {str(i): str(name) for i, name in enumerate(labels)}
                config["label2id"] = {str(name): i for i, name in enumerate(labels)}
            if origin is not None:
                config[ORIGIN_FIELD] = origin_of(origin)
            atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
        if feature_extractor is not None:
            feature_extractor.save_pretrained(tmp)
        if plan is not None:
            atomic_write_text(tmp / PLAN_FILE, plan.to_json(indent=2) + "\n")
        atomic_write_text(
            tmp / MARKER_FILE,
            "Written by prunekit.heads.surgery.save_pruned; overwrite=True may replace this folder.\n",
        )
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def origin_of(source: str | os.PathLike) -> str:
    """How a pruned folder records its source: a local folder as an absolute path (so it still
    names the folder from elsewhere), anything else ("demo", a hub id) as given."""
    text = str(source).strip()
    path = Path(text).expanduser()
    return str(path.resolve()) if text != "demo" and path.is_dir() else text


def recorded_origin(directory: str | os.PathLike) -> str | None:
    """The source a ``save_pruned`` folder says it was pruned from (None when it does not say)."""
    config = Path(directory) / "config.json"
    try:
        value = json.loads(config.read_text()).get(ORIGIN_FIELD)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value.strip() else None


def check_output(directory: str | os.PathLike, *, overwrite: bool) -> None:
    """Raise OutputExistsError unless ``save_pruned`` may write ``directory``: it is missing or
    empty, or ``overwrite`` is set and the folder is one save_pruned wrote (it holds
    ``MARKER_FILE``). Callers with a long job before the save (``prune``) call it first."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory} exists and is not a folder")
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(f"{directory} is not empty; pass overwrite=True (--overwrite) to replace it")
    if not (directory / MARKER_FILE).is_file():
        raise OutputExistsError(
            f"{directory} is not empty and was not written by prunekit (it has no {MARKER_FILE}), so "
            "overwrite will not delete it; choose a new or empty folder"
        )


def load_plan(directory: str | os.PathLike) -> PruningPlan | None:
    """The plan saved next to a pruned model by ``save_pruned`` (None when there is none)."""
    path = Path(directory) / PLAN_FILE
    return PruningPlan.from_json(path.read_text()) if path.is_file() else None


def _swap_in(tmp: Path, directory: Path) -> None:
    """Rename the finished ``tmp`` folder to ``directory``, replacing what was there."""
    if not directory.exists() or not any(directory.iterdir()):
        os.replace(tmp, directory)  # rename over a missing or empty folder
        return
    old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".old"))
    os.replace(directory, old / "previous")
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
