"""A pruning plan is data: which heads and channels of every attention layer survive.

``PruningPlan`` is frozen and JSON-serialisable, so the UI can preview, diff and save it before
``surgery.apply_plan`` executes it (on a copy; ``anatomy.shrink_attention`` cuts the weights).
Indices are those of the model the plan applies to (its ``base`` shape): original indices for a
dense model, current indices for an already-pruned one.

Per layer the plan keeps heads ``heads`` (sorted) and, for the i-th kept head, Q/K channels
``qk[i]`` (rows of W_q and W_k) and V/O channels ``vo[i]`` (rows of W_v, columns of W_o). Row
``h * D + c`` of W_q is channel ``c`` of head ``h`` (docs/methods.md, section 1).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from prunekit.errors import PlanError
from prunekit.models import anatomy
from prunekit.models.anatomy import AttentionShape

__all__ = ["PLAN_FORMAT", "PLAN_VERSION", "LayerPlan", "PruningPlan"]

PLAN_FORMAT = "prunekit.PruningPlan"
PLAN_VERSION = 1


def _index(value, what: str) -> int:
    """``value`` as an int when it is one (Python or numpy integer); PlanError otherwise.

    No coercion: ``int(2.7)`` is 2 and ``int("1")`` is 1, so a hand-edited plan would prune other
    heads than it says; ``True`` is an int to Python but never a head index."""
    if isinstance(value, (bool, np.bool_)):
        raise PlanError(f"{what}: {value!r} is not an index (a whole number)")
    try:
        return operator.index(value)
    except TypeError:
        raise PlanError(f"{what}: {value!r} is not an index (a whole number)") from None


def _ints(values, what: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise PlanError(f"{what} must be a list of indices, got {values!r}")
    return tuple(_index(v, what) for v in values)


@dataclass(frozen=True)
class LayerPlan:
    """What one attention layer keeps. ``qk[i]`` and ``vo[i]`` belong to head ``heads[i]``."""

    heads: tuple[int, ...] = ()
    qk: tuple[tuple[int, ...], ...] = ()
    vo: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists (from JSON or user code); store tuples so the plan is hashable and frozen.
        object.__setattr__(self, "heads", _ints(self.heads, "kept heads"))
        for field in ("qk", "vo"):
            lists = getattr(self, field)
            if isinstance(lists, (str, bytes, dict)) or not isinstance(lists, Iterable):
                raise PlanError(f"{field} must be a list of channel lists (one per kept head), got {lists!r}")
            object.__setattr__(self, field, tuple(_ints(c, f"{field} channels") for c in lists))

    @classmethod
    def full(cls, heads: int, qk_dim: int, v_dim: int) -> LayerPlan:
        """Keep every head and channel of a layer with this shape."""
        return cls(
            tuple(range(heads)),
            tuple(tuple(range(qk_dim)) for _ in range(heads)),
            tuple(tuple(range(v_dim)) for _ in range(heads)),
        )

    @property
    def qk_channels(self) -> int:
        """Kept Q/K channels summed over kept heads."""
        return sum(len(c) for c in self.qk)

    @property
    def vo_channels(self) -> int:
        """Kept V/O channels summed over kept heads."""
        return sum(len(c) for c in self.vo)

    def weights(self, hidden: int) -> int:
        """Attention weights kept (W_q, W_k rows + W_v rows + W_o columns, each ``hidden`` long)."""
        return hidden * (2 * self.qk_channels + 2 * self.vo_channels)

    def to_dict(self) -> dict:
        return {"heads": list(self.heads), "qk": [list(c) for c in self.qk], "vo": [list(c) for c in self.vo]}


@dataclass(frozen=True)
class PruningPlan:
    """Kept heads and channels for every layer of one model shape, plus how they were chosen.

    ``base`` is the attention shape the plan applies to (one ``AttentionShape`` per layer:
    hidden size, heads, Q/K and V/O head dims). ``scorer``/``pattern``/``threshold``/
    ``target_sparsity``/``budget`` are metadata for people and for the record; surgery ignores
    them. ``budget`` is "separate" or "joint" where it applied (``planner.make_plan``: a global
    threshold over channels), else None. ``force_keep``/``force_remove`` are the (layer, head)
    pairs the user pinned: part of the plan's identity, so a saved plan says how to remake it.
    """

    layers: tuple[LayerPlan, ...]
    base: tuple[AttentionShape, ...]
    scorer: str | None = None
    pattern: str | None = None
    threshold: str | None = None
    target_sparsity: float | None = None
    budget: str | None = None
    force_keep: tuple[tuple[int, int], ...] = ()
    force_remove: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "base", tuple(self.base))
        for name in ("force_keep", "force_remove"):
            try:
                pairs = tuple(sorted((int(layer), int(head)) for layer, head in getattr(self, name)))
            except (TypeError, ValueError) as exc:
                raise PlanError(f"{name} must list (layer, head) pairs, got {getattr(self, name)!r}") from exc
            object.__setattr__(self, name, pairs)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def dense(cls, model: nn.Module, **metadata) -> PruningPlan:
        """The plan that keeps everything of ``model`` (dense or already pruned)."""
        base = tuple(anatomy.attention_shapes(model))
        return cls(tuple(LayerPlan.full(s.heads, s.qk_dim, s.v_dim) for s in base), base, **metadata)

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "scorer": self.scorer,
            "pattern": self.pattern,
            "threshold": self.threshold,
            "target_sparsity": self.target_sparsity,
            "budget": self.budget,
            "force_keep": [list(pair) for pair in self.force_keep],
            "force_remove": [list(pair) for pair in self.force_remove],
            "base": [{"heads": s.heads, "qk_dim": s.qk_dim, "v_dim": s.v_dim, "hidden": s.hidden}
                     for s in self.base],
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> PruningPlan:
        if not isinstance(data, dict):
            raise PlanError(f"A pruning plan is a JSON object with format, base and layers; got {data!r}")
        if data.get("format") != PLAN_FORMAT or data.get("version") != PLAN_VERSION:
            raise PlanError(
                f"Not a {PLAN_FORMAT} version {PLAN_VERSION}: "
                f"format={data.get('format')!r}, version={data.get('version')!r}"
            )
        try:
            base = tuple(
                AttentionShape(i, *(_index(s[k], f"base layer {i} {k}") for k in ("heads", "qk_dim", "v_dim", "hidden")))
                for i, s in enumerate(_listed(data, "base"))
            )
            layers = tuple(_layer(i, lp) for i, lp in enumerate(_listed(data, "layers")))
        except PlanError as exc:
            raise PlanError(f"Malformed pruning plan: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise PlanError(f"Malformed pruning plan ({exc!r})") from exc
        sparsity = data.get("target_sparsity")
        pattern, threshold = data.get("pattern"), data.get("threshold")
        if "budget" in data:
            budget = data["budget"]
        else:  # written before budgets had a name: global channel plans then shared one budget
            budget = "joint" if pattern in ("per-head", "same-channel") and threshold == "global" else None
        return cls(
            layers,
            base,
            scorer=data.get("scorer"),
            pattern=pattern,
            threshold=threshold,
            target_sparsity=None if sparsity is None else float(sparsity),
            budget=budget,
            force_keep=data.get("force_keep") or (),
            force_remove=data.get("force_remove") or (),
        )

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"A pruning plan must be JSON: {exc}") from exc
        return cls.from_dict(data)

    # --- checks ----------------------------------------------------------------------------
    def validate(self) -> PruningPlan:
        """Check the plan against its own ``base`` shape; raise PlanError naming the problem."""
        if len(self.layers) != len(self.base):
            raise PlanError(
                f"The plan has {len(self.layers)} layers but its base shape has {len(self.base)}"
            )
        for i, (lp, shape) in enumerate(zip(self.layers, self.base)):
            _check_indices(f"Layer {i}: kept heads", lp.heads, shape.heads)
            if len(lp.qk) != len(lp.heads) or len(lp.vo) != len(lp.heads):
                raise PlanError(
                    f"Layer {i}: {len(lp.heads)} kept heads {list(lp.heads)} but {len(lp.qk)} Q/K "
                    f"and {len(lp.vo)} V/O channel lists (need one per kept head)"
                )
            for h, qk, vo in zip(lp.heads, lp.qk, lp.vo):
                if not qk or not vo:
                    raise PlanError(
                        f"Layer {i} head {h} is kept with {len(qk)} Q/K and {len(vo)} V/O channels: "
                        "a kept head needs at least one of each (drop the head instead)"
                    )
                _check_indices(f"Layer {i} head {h}: Q/K channels", qk, shape.qk_dim)
                _check_indices(f"Layer {i} head {h}: V/O channels", vo, shape.v_dim)
        return self

    def validate_for(self, model: nn.Module) -> PruningPlan:
        """``validate()``, and check that ``model`` has the plan's base shape."""
        actual = anatomy.attention_shapes(model)
        if len(actual) != len(self.base) or len(self.layers) != len(actual):
            raise PlanError(
                f"The plan covers {len(self.layers)} layers (base {len(self.base)}) "
                f"but the model has {len(actual)}"
            )
        for mine, theirs in zip(self.base, actual):
            if mine != theirs:
                raise PlanError(
                    f"Layer {mine.layer}: the plan was made for heads={mine.heads}, qk_dim={mine.qk_dim}, "
                    f"v_dim={mine.v_dim}, hidden={mine.hidden} but the model has heads={theirs.heads}, "
                    f"qk_dim={theirs.qk_dim}, v_dim={theirs.v_dim}, hidden={theirs.hidden}"
                )
        return self.validate()

    # --- numbers ---------------------------------------------------------------------------
    def dense_weights(self) -> int:
        """Attention weights (W_q, W_k, W_v, W_o; biases excluded) of the base model."""
        return sum(s.weights for s in self.base)

    def kept_weights(self) -> int:
        """Attention weights the plan keeps."""
        return sum(lp.weights(s.hidden) for lp, s in zip(self.layers, self.base))

    def attention_sparsity(self) -> float:
        """Fraction of the base model's attention weights (biases excluded) the plan removes."""
        dense = self.dense_weights()
        return 1.0 - self.kept_weights() / dense if dense else 0.0

    def summary(self) -> pd.DataFrame:
        """One row per layer: heads, Q/K channels and V/O channels left, and weights removed."""
        rows = []
        for i, (lp, s) in enumerate(zip(self.layers, self.base)):
            dense, kept = s.weights, lp.weights(s.hidden)
            rows.append(
                {
                    "layer": i,
                    "heads_left": len(lp.heads),
                    "heads": s.heads,
                    "qk_channels_left": lp.qk_channels,
                    "qk_channels": s.heads * s.qk_dim,
                    "vo_channels_left": lp.vo_channels,
                    "vo_channels": s.heads * s.v_dim,
                    "weights_left": kept,
                    "weights_removed": 1.0 - kept / dense if dense else 0.0,
                }
            )
        return pd.DataFrame(rows)


def _layer(i: int, data: dict) -> LayerPlan:
    try:
        return LayerPlan(data["heads"], data["qk"], data["vo"])
    except PlanError as exc:
        raise PlanError(f"layer {i}: {exc}") from exc


def _listed(data: dict, key: str) -> list:
    value = data[key]
    if not isinstance(value, list):
        raise PlanError(f"'{key}' must be a list, got {value!r}")
    return value


def _check_indices(what: str, indices: Sequence[int], size: int) -> None:
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        valid = f"valid are 0..{size - 1}" if size else "there are none"
        raise PlanError(f"{what} {bad} out of range: {valid}")
    seen: set[int] = set()
    dupes = sorted({i for i in indices if i in seen or seen.add(i)})
    if dupes:
        raise PlanError(f"{what} repeat {dupes}: {list(indices)}")
    if list(indices) != sorted(indices):
        raise PlanError(f"{what} must be sorted ascending, got {list(indices)}")
