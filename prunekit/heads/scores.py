"""The score table: importance of every head and channel of every attention block, in long form.

Columns ``layer, group, matrix, head, channel, scorer, score`` (higher = more important). Per
layer and head there are

* channel rows (``channel`` = c): group ``qk`` with matrix ``q`` (row r of W_q), ``k`` (row r of
  W_k) and ``pair`` (the QK unit); group ``vo`` with ``v`` (row r of W_v), ``o`` (column r of
  W_o) and ``pair`` (the VO unit), where r = h * D + c;
* head rows (``channel`` = <NA>): the same six, for the head's whole slice, and group ``head``,
  matrix ``pair``: the whole head.

A ``ScoreTable`` is that frame together with the attention shape of the model it scores, which
the planner needs. ``ScoringData`` is what the gradient scorers read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from prunekit.errors import ConfigurationError, ScoresError
from prunekit.models.anatomy import AttentionShape

__all__ = [
    "COLUMNS",
    "ScoreTable",
    "ScoringData",
    "channel_rows",
    "concat_rows",
    "expected_rows",
    "head_rows",
    "tidy_scores",
]

COLUMNS = ("layer", "group", "matrix", "head", "channel", "scorer", "score")
_MATRICES = ("q", "k", "v", "o")


@dataclass(frozen=True, eq=False)
class ScoreTable:
    """One scorer's scores of one model: the long ``frame`` (``COLUMNS``) and the attention shape
    ``base`` of the model it scores (one ``AttentionShape`` per layer)."""

    frame: pd.DataFrame
    base: tuple[AttentionShape, ...]
    scorer: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", tuple(self.base))
        lacking = [c for c in COLUMNS if c not in self.frame.columns]
        if lacking:
            raise ScoresError(f"The score table lacks columns {lacking}; a scorer's has {list(COLUMNS)}")

    def __len__(self) -> int:
        return len(self.frame)

    def with_frame(self, frame: pd.DataFrame) -> ScoreTable:
        """The same model shape and scorer with other values (e.g. percentile ranks)."""
        return ScoreTable(frame, self.base, self.scorer)


def expected_rows(shapes) -> int:
    """Rows a scorer writes for a model of these shapes (0-head layers have none): per head, six
    (group, matrix) channel blocks, six head rows and the whole head."""
    return sum(3 * s.heads * (s.qk_dim + s.v_dim) + 7 * s.heads for s in shapes)


@dataclass(frozen=True, eq=False)
class ScoringData:
    """Features and targets of the clips a gradient scorer sees.

    features: (N, frames, mels); targets: (N,) class indices, or (N, C) in {0, 1} for
    multi-label data (the loss is then binary cross-entropy).
    """

    features: torch.Tensor
    targets: torch.Tensor
    name: str = ""

    def __post_init__(self) -> None:
        if self.features.ndim != 3:
            raise ConfigurationError(
                f"features must be (N, frames, mels), got shape {tuple(self.features.shape)}"
            )
        if len(self.features) != len(self.targets):
            raise ConfigurationError(f"{len(self.features)} feature rows but {len(self.targets)} targets")
        if len(self.features) == 0:
            raise ConfigurationError("No clips to score with: the data is empty")

    @property
    def multilabel(self) -> bool:
        return self.targets.ndim == 2

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in (self.features, self.targets):
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.detach().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()[:20]


# --- from unit rows to the tidy frame ------------------------------------------------------------
def tidy_scores(shapes, scorer: str, rows: list[dict[str, np.ndarray]], combine: str) -> pd.DataFrame:
    """Turn per-row statistics into channel, pair and head scores.

    combine "sum" (Fisher): pair = q + k, head = sum of slices. "mean" (L1 magnitude): row
    norms, pair and head = means of the matrices' norms (docs/methods.md). "l2": rows hold squared
    norms; a slice's norm is the root of their sum. "abs-sum" (Taylor): rows hold signed sums;
    every unit's score is the absolute value of its total.
    """
    parts = []
    for s, stat in zip(shapes, rows):
        if s.heads == 0:
            continue
        per = {m: stat[m].reshape(s.heads, -1) for m in _MATRICES}  # (h, D) each
        slices = {m: per[m].sum(1) for m in _MATRICES}  # (h,)
        if combine == "l2":
            per = {m: np.sqrt(v) for m, v in per.items()}
            slices = {m: np.sqrt(v) for m, v in slices.items()}
        if combine == "abs-sum":
            chan = {m: np.abs(per[m]) for m in _MATRICES}
            chan["qk"], chan["vo"] = np.abs(per["q"] + per["k"]), np.abs(per["v"] + per["o"])
            head = {m: np.abs(slices[m]) for m in _MATRICES}
            head["qk"], head["vo"] = np.abs(slices["q"] + slices["k"]), np.abs(slices["v"] + slices["o"])
            head["all"] = np.abs(sum(slices.values()))
        else:
            pair = (lambda a, b: a + b) if combine == "sum" else (lambda a, b: (a + b) / 2)
            chan = dict(per, qk=pair(per["q"], per["k"]), vo=pair(per["v"], per["o"]))
            head = dict(slices, qk=pair(slices["q"], slices["k"]), vo=pair(slices["v"], slices["o"]))
            total = sum(slices.values())
            head["all"] = total if combine == "sum" else total / 4
        for group, a, b in (("qk", "q", "k"), ("vo", "v", "o")):
            for m in (a, b, group):
                name = "pair" if m == group else m
                parts.append(channel_rows(s.layer, group, name, chan[m], scorer))
                parts.append(head_rows(s.layer, group, name, head[m], scorer))
        parts.append(head_rows(s.layer, "head", "pair", head["all"], scorer))
    return concat_rows(parts)


def channel_rows(layer: int, group: str, matrix: str, values: np.ndarray, scorer: str) -> pd.DataFrame:
    """Rows for every channel of one (group, matrix): ``values`` is (heads, dim)."""
    heads, dim = values.shape  # (h, D)
    return pd.DataFrame(
        {
            "layer": layer,
            "group": group,
            "matrix": matrix,
            "head": np.repeat(np.arange(heads), dim),
            "channel": np.tile(np.arange(dim), heads),
            "scorer": scorer,
            "score": values.reshape(-1).astype(np.float64),
        }
    )


def head_rows(layer: int, group: str, matrix: str, values: np.ndarray, scorer: str) -> pd.DataFrame:
    """Rows for every head of one (group, matrix): ``values`` is (heads,); channel is <NA>."""
    return pd.DataFrame(
        {
            "layer": layer,
            "group": group,
            "matrix": matrix,
            "head": np.arange(len(values)),
            "channel": pd.NA,
            "scorer": scorer,
            "score": np.asarray(values, dtype=np.float64),
        }
    )


def concat_rows(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame with ``COLUMNS`` and their dtypes (channel nullable) from row blocks."""
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(COLUMNS))
    frame["channel"] = frame["channel"].astype("Int64")
    frame["layer"] = frame["layer"].astype(np.int64)
    frame["head"] = frame["head"].astype(np.int64)
    return frame[list(COLUMNS)]
