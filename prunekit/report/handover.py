"""A report to hand over: one self-contained HTML file that tells someone who is not an ML
engineer what pruning did to a model.

It holds the result in plain words, the accuracy (or mAP) of the original and the pruned model
with the paired interval of their difference, size, MACs and latency (timed interleaved, with
their intervals), a per-layer map of what was removed, the per-class changes, and a few clips
with their audio embedded, each with both models' answers: some where the two agree, some where
they differ. No network, no script: figures are small inline SVG, audio is WAV in ``data:`` URLs,
and every text that came from a file or a user (labels, names, paths) is escaped.

``build_report`` computes whatever it is not given (evaluations, cost) and returns the HTML;
``write_report`` writes it atomically. The app passes what its Prune page already measured.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch import nn

from prunekit.data.audio import TARGET_SR, load_waveform
from prunekit.data.clips import AudioDataset
from prunekit.data.features import clip_features
from prunekit.errors import ConfigurationError, DatasetError, OutputExistsError
from prunekit.evaluation import changes
from prunekit.evaluation.cost import compare_cost, ratio_from, timed_batches
from prunekit.evaluation.metrics import Evaluation, MultilabelEvaluation, evaluate, predict_logits
from prunekit.evaluation.paired import compare
from prunekit.models import anatomy
from prunekit.models.loading import LoadedModel
from prunekit.progress import Progress
from prunekit.store import atomic_write_text

__all__ = [
    "CLIPS",
    "CLIP_SECONDS",
    "ReportClip",
    "build_report",
    "choose_clips",
    "plain_words",
    "render_html",
    "structure_rows",
    "write_report",
]

CLIPS = 6  # clips the report plays
CLIP_SECONDS = 10.0  # each clip's audio is cut to this (a report stays small)
TOP = 3  # answers shown per model and clip


@dataclass(frozen=True)
class ReportClip:
    """One clip as the report shows it: its audio (WAV bytes), its true label(s), and each
    model's top answers as (label, probability) pairs."""

    name: str
    truth: tuple[str, ...]
    wav: bytes
    original: tuple[tuple[str, float], ...]
    pruned: tuple[tuple[str, float], ...]

    @property
    def agree(self) -> bool:
        return self.original[0][0] == self.pruned[0][0]


# --- what goes in ----------------------------------------------------------------------------------
def plain_words(
    dense: Evaluation | MultilabelEvaluation, pruned: Evaluation | MultilabelEvaluation, cost: pd.DataFrame
) -> str:
    """The result in one paragraph for people: size, speed (batch 32, or batch 1 when only that
    was timed, with its interval) and how
    often the two models answer alike. ``cost``: a ``compare_cost`` frame with rows "dense" and
    "pruned"."""
    smaller = 1 - cost.loc["pruned", "parameters"] / cost.loc["dense", "parameters"]
    batch = max(timed_batches(cost))  # 32, or 1 for a large model on a CPU (timed at batch 1 only)
    speed = ratio_from(cost.loc["pruned"], batch).describe()  # a 95 % interval, not one noisy reading
    timed = "on a batch of 32 clips" if batch == 32 else "one clip at a time"
    if dense.multilabel:
        agree = 1 - changes.tag_changes(dense, pruned)["differ"].mean()
        return (
            f"In plain words: the pruned model is {smaller:.0%} smaller and, {timed}, "
            f"{speed}. Its mAP is {pruned.headline:.3f}, where the original's is {dense.headline:.3f} "
            f"(1 = every tag ranked perfectly); the two put the same tag first on {agree:.0%} of the clips."
        )
    agree = 1 - changes.prediction_changes(dense, pruned)["differ"].mean()
    return (
        f"In plain words: the pruned model is {smaller:.0%} smaller and, {timed}, {speed}. "
        f"Out of 100 clips it gets {100 * pruned.accuracy:.0f} right, where the original gets "
        f"{100 * dense.accuracy:.0f}; the two give the same answer on {agree:.0%} of the clips."
    )


def structure_rows(original: nn.Module, pruned: nn.Module) -> pd.DataFrame:
    """Per layer: heads, Q/K channels and V/O channels of the original and how many the pruned
    model keeps (``heads``, ``heads_kept``, ``qk``, ``qk_kept``, ``vo``, ``vo_kept``)."""
    before, after = anatomy.attention_shapes(original), anatomy.attention_shapes(pruned)
    if len(before) != len(after):
        raise ConfigurationError(
            f"The pruned model has {len(after)} attention layers and the original {len(before)}: "
            "is it pruned from this original?"
        )
    return pd.DataFrame(
        [
            {
                "layer": a.layer,
                "heads": a.heads,
                "heads_kept": b.heads,
                "qk": a.heads * a.qk_dim,
                "qk_kept": b.heads * b.qk_dim,
                "vo": a.heads * a.v_dim,
                "vo_kept": b.heads * b.v_dim,
            }
            for a, b in zip(before, after)
        ]
    )


def choose_clips(per_clip: pd.DataFrame, count: int = CLIPS, *, seed: int = 0) -> list[int]:
    """Row numbers of ``per_clip`` (``changes.prediction_changes`` / ``tag_changes`` columns) to
    play: up to a third where the pruned model lost a clip the original got right, one where it
    won one, then clips both get right, then any other; seeded, in that order."""
    rng = np.random.default_rng(seed)
    differ, dense_ok, pruned_ok = (
        per_clip[c].to_numpy(bool) for c in ("differ", "dense_correct", "pruned_correct")
    )
    groups = [
        (differ & dense_ok & ~pruned_ok, max(1, count // 3)),
        (differ & pruned_ok & ~dense_ok, 1),
        (~differ & dense_ok, count),
        (np.ones(len(per_clip), bool), count),
    ]
    chosen: list[int] = []
    for mask, most in groups:
        rows = [int(r) for r in rng.permutation(np.flatnonzero(mask)) if int(r) not in chosen]
        chosen += rows[: min(most, count - len(chosen))]
    return chosen


def _wav(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, TARGET_SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _answers(logits: torch.Tensor, labels: Sequence[str], multilabel: bool) -> tuple[tuple[str, float], ...]:
    probabilities = logits.float().sigmoid() if multilabel else logits.float().softmax(-1)  # (C,)
    top = probabilities.topk(min(TOP, len(labels)))
    return tuple((str(labels[int(i)]), float(p)) for p, i in zip(top.values, top.indices))


def report_clips(
    original: LoadedModel,
    pruned: nn.Module,
    clips: Sequence,
    *,
    multilabel: bool,
    device: str | torch.device | None = None,
) -> list[ReportClip]:
    """Audio and both models' top answers for ``clips`` (dataset ``Clip``s)."""
    feats = clip_features(list(clips), original.feature_extractor)  # (n, frames, mels)
    dense_logits = predict_logits(original.model, feats, device=device)
    pruned_logits = predict_logits(pruned, feats, device=device)
    out = []
    for k, clip in enumerate(clips):
        wave = load_waveform(clip.path, max_seconds=CLIP_SECONDS)
        out.append(
            ReportClip(
                name=Path(clip.path).name,
                truth=tuple(clip.labels),
                wav=_wav(wave),
                original=_answers(dense_logits[k], original.labels, multilabel),
                pruned=_answers(pruned_logits[k], original.labels, multilabel),
            )
        )
    return out


def build_report(
    original: LoadedModel,
    pruned: nn.Module,
    dataset: AudioDataset,
    split: str = "test",
    *,
    original_name: str,
    pruned_name: str,
    data_name: str,
    dense: Evaluation | MultilabelEvaluation | None = None,
    evaluation: Evaluation | MultilabelEvaluation | None = None,
    cost: pd.DataFrame | None = None,
    clips: int = CLIPS,
    seed: int = 0,
    repeats: int = 20,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
) -> str:
    """The report's HTML for ``pruned`` against ``original`` on ``split`` of ``dataset``.

    ``dense`` / ``evaluation`` (the two models on that split) and ``cost`` (``compare_cost`` with
    rows "dense" and "pruned") are computed when not given. ``progress(done, total)`` counts the
    four stages: the two evaluations, the timing and the clips."""
    stages = 4

    def step(done: int) -> None:
        if progress is not None:
            progress(done, stages)

    if original.model is pruned:
        raise ConfigurationError("The report compares two models; the pruned model is the original itself")
    split_clips = dataset.split(split)
    if not split_clips:
        raise DatasetError(f"The {split} split of {data_name} is empty: nothing to report on")
    step(0)
    if dense is None:
        dense = evaluate(*original, dataset, split, cache=True, device=device)
    step(1)
    if evaluation is None:
        evaluation = evaluate(
            pruned, original.feature_extractor, original.labels, dataset, split, device=device
        )
    step(2)
    if cost is None:
        cost = compare_cost({"dense": original.model, "pruned": pruned}, repeats=repeats)
    step(3)
    per_clip = (changes.tag_changes if dense.multilabel else changes.prediction_changes)(dense, evaluation)
    picked = choose_clips(per_clip, clips, seed=seed)
    played = report_clips(
        original, pruned, [split_clips[i] for i in picked], multilabel=dense.multilabel, device=device
    )
    step(4)
    return render_html(
        original_name=original_name,
        pruned_name=pruned_name,
        data_name=f"{data_name}, {split} split",
        dense=dense,
        evaluation=evaluation,
        cost=cost,
        structure=structure_rows(original.model, pruned),
        clips=played,
    )


def write_report(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write the HTML to ``path`` (atomically); an existing file is replaced only with ``overwrite``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; name the report file, e.g. {path / 'report.html'}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)  # a file to hand over: readable as any new file is, not owner-only
    return path


# --- how it looks ----------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:880px;margin:2em auto;
padding:0 1em;color:#1f2937;line-height:1.5}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #e5e7eb}
.sub{color:#6b7280;margin-top:0}.summary{background:#ecfdf5;border-left:4px solid #10b981;padding:.8em 1em}
table{border-collapse:collapse;width:100%}td,th{padding:.35em .6em;border-bottom:1px solid #e5e7eb;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#6b7280;font-size:.9em}
.clips{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:1em}
.clip{border:1px solid #e5e7eb;border-radius:8px;padding:.8em}.clip audio{width:100%}
.same{color:#047857;font-weight:600}.differ{color:#b45309;font-weight:600}
.ok{color:#047857}.wrong{color:#b91c1c}ol{margin:.2em 0 .4em 1.2em;padding:0}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _bar_svg(rows: list[tuple[str, float, float]], *, title: str, width: int = 640) -> str:
    """Horizontal bars, one per (label, kept, total): the kept share dark over a light total."""
    row_h, label_w, pad = 22, 120, 4
    bar_w = width - label_w - 70
    height = row_h * len(rows) + 2 * pad
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" aria-label="{_e(title)}">'
    ]
    for k, (label, kept, total) in enumerate(rows):
        y = pad + k * row_h
        share = kept / total if total else 0.0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{_e(label)}</text>'
        )
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}" fill="#e5e7eb"/>')
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * share:.1f}" height="{row_h - 6}" fill="#2563eb"/>'
        )
        parts.append(
            f'<text x="{label_w + bar_w + 6}" y="{y + 15}" font-size="12">{kept:g} / {total:g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _structure_svg(structure: pd.DataFrame) -> str:
    rows = []
    for r in structure.itertuples(index=False):
        rows += [
            (f"layer {r.layer} heads", r.heads_kept, r.heads),
            (f"layer {r.layer} Q/K", r.qk_kept, r.qk),
            (f"layer {r.layer} V/O", r.vo_kept, r.vo),
        ]
    return _bar_svg(rows, title="What each attention layer keeps")


def _change_svg(frame: pd.DataFrame, unit: str, scale: float, width: int = 640) -> str:
    """Bars of ``frame['change']`` (pruned - original) per class, centred on zero."""
    row_h, label_w = 18, 140
    half = (width - label_w - 60) / 2
    largest = max(float(frame["change"].abs().max()) if len(frame) else 0.0, 1e-9)
    height = row_h * len(frame) + 8
    mid = label_w + half
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" aria-label="change per class">'
    ]
    parts.append(f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height}" stroke="#9ca3af"/>')
    for k, r in enumerate(frame.itertuples(index=False)):
        y = 4 + k * row_h
        length = half * abs(r.change) / largest
        x = mid - length if r.change < 0 else mid
        colour = "#dc2626" if r.change < 0 else "#059669"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="11">{_e(r.label)}</text>'
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 2}" width="{max(length, 0.5):.1f}" height="{row_h - 4}" fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{width - 54}" y="{y + 13}" font-size="11">{scale * r.change:+.1f}{unit}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _answers_html(answers: tuple[tuple[str, float], ...], truth: tuple[str, ...]) -> str:
    items = []
    for label, p in answers:
        mark = "ok" if label in truth else "wrong"
        items.append(f'<li class="{mark}">{_e(label)} <span class="note">({p:.0%})</span></li>')
    return f"<ol>{''.join(items)}</ol>"


def _clip_html(clip: ReportClip) -> str:
    audio = base64.b64encode(clip.wav).decode("ascii")
    verdict = (
        '<span class="same">same answer</span>'
        if clip.agree
        else '<span class="differ">different answers</span>'
    )
    return (
        f'<div class="clip"><div><b>{_e(", ".join(clip.truth))}</b> '
        f'<span class="note">{_e(clip.name)}</span></div>'
        f'<audio controls preload="none" src="data:audio/wav;base64,{audio}"></audio>'
        f"<div>{verdict}</div>"
        f"<div>Original hears:{_answers_html(clip.original, clip.truth)}</div>"
        f"<div>Pruned hears:{_answers_html(clip.pruned, clip.truth)}</div></div>"
    )


def _latency_cell(cost: pd.DataFrame, batch: int) -> tuple[str, str, str]:
    ms = cost.loc["pruned", f"latency_b{batch}_ms"]
    dense_ms = cost.loc["dense", f"latency_b{batch}_ms"]
    return f"{dense_ms:.1f} ms", f"{ms:.1f} ms", ratio_from(cost.loc["pruned"], batch).describe()


def render_html(
    *,
    original_name: str,
    pruned_name: str,
    data_name: str,
    dense: Evaluation | MultilabelEvaluation,
    evaluation: Evaluation | MultilabelEvaluation,
    cost: pd.DataFrame,
    structure: pd.DataFrame,
    clips: Sequence[ReportClip],
    made: _dt.datetime | None = None,
) -> str:
    """The report's HTML from what ``build_report`` gathered."""
    made = made or _dt.datetime.now(_dt.UTC)
    comparison = compare(dense, evaluation, names=("original", "pruned"))
    metric = dense.metric
    fmt = (lambda v: f"{v:.3f}") if dense.multilabel else (lambda v: f"{100 * v:.1f} %")
    params = cost.loc[["dense", "pruned"], "parameters"].to_numpy(float)
    macs = cost.loc[["dense", "pruned"], "macs_per_clip"].to_numpy(float)
    rows = [
        (metric, fmt(dense.headline), fmt(evaluation.headline), comparison.describe()),
        (
            "size (parameters)",
            f"{params[0] / 1e6:.2f} M ({4 * params[0] / 2**20:.1f} MB)",
            f"{params[1] / 1e6:.2f} M ({4 * params[1] / 2**20:.1f} MB)",
            f"{1 - params[1] / params[0]:.0%} smaller",
        ),
        (
            "work per clip (MACs)",
            f"{macs[0] / 1e6:.1f} M",
            f"{macs[1] / 1e6:.1f} M",
            f"{1 - macs[1] / macs[0]:.0%} less",
        ),
    ]
    for batch in timed_batches(cost):
        rows.append((f"time for a batch of {batch}", *_latency_cell(cost, batch)))
    table = "".join(
        f"<tr><th>{_e(a)}</th><td class='n'>{_e(b)}</td><td class='n'>{_e(c)}</td><td>{_e(d)}</td></tr>"
        for a, b, c, d in rows
    )
    if dense.multilabel:
        per_class, unit, scale, what = (
            changes.class_ap_changes(dense, evaluation),
            "",
            1.0,
            "average precision",
        )
    else:
        per_class, unit, scale, what = changes.class_changes(dense, evaluation), " pts", 100.0, "accuracy"
    kept_heads = int(structure["heads_kept"].sum())
    all_heads = int(structure["heads"].sum())
    worst = per_class.iloc[0] if len(per_class) else None
    worst_text = (
        f" The class that lost most is <b>{_e(worst['label'])}</b> ({scale * worst['change']:+.1f}{unit} {what})."
        if worst is not None and worst["change"] < 0
        else ""
    )
    differ = sum(not c.agree for c in clips)
    try:
        version = metadata.version("prunekit")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(f"Pruning report: {pruned_name}")}</title><style>{_STYLE}</style></head><body>
<h1>What pruning did to {_e(original_name)}</h1>
<p class="sub">Pruned model: <b>{_e(pruned_name)}</b>. Measured on {_e(data_name)} ({len(dense.predictions)} clips).
Made {made:%Y-%m-%d %H:%M} UTC by prunekit {_e(version)}.</p>
<p class="summary">{_e(plain_words(dense, evaluation, cost))}</p>
<h2>The numbers</h2>
<table><tr><th></th><th>original</th><th>pruned</th><th>in words</th></tr>{table}</table>
<p class="note">Both models answered the same clips, so they are compared clip by clip: the interval is
where the true difference lies with 95 % confidence; an interval that includes 0 means this test set
cannot tell the two apart. Times are medians of the two models run in turn, round after round, on this
machine ({"one CPU process" if torch.cuda.device_count() == 0 else "with a GPU present"}); the interval
says how sure the speed-up is.</p>
<h2>What was removed</h2>
<p>The pruned model keeps {kept_heads} of {all_heads} attention heads. Each attention layer is shown
by three bars: its heads, its query/key channels (which decide <i>where</i> the model looks) and its
value/output channels (<i>what</i> it takes from there); blue is what is left.</p>
{_structure_svg(structure)}
<h2>Which classes changed</h2>
<p>The change in {what} per class, pruned minus original, worst first.{worst_text}</p>
{_change_svg(per_class, unit, scale)}
<h2>Listen</h2>
<p>{len(clips)} clips of the test set, {differ} of them where the two models disagree. Press play; the
answers are each model's three most likely {"tags" if dense.multilabel else "words"}, green when right.</p>
<div class="clips">{"".join(_clip_html(c) for c in clips)}</div>
<p class="note">This file is self-contained: it needs no network and runs no script.</p>
</body></html>
"""
