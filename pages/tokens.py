"""Tokens: Top-K token pruning. Drop the patches the model attends to least, see what it costs
and what survives of a clip, and how attention relates to the patches' loudness."""

from pathlib import Path

import streamlit as st

from prunekit.data import audio
from prunekit.errors import AudioError
from prunekit.models.token_rules import RULES
from prunekit.report import figures
from prunekit.report import tokens as token_figures
from prunekit.tokens.patches import PAPER_AST_SPEECH_COMMANDS
from prunekit.ui import (
    dataset_or_report,
    dense_evaluation,
    dense_macs,
    eval_split,
    load_or_report,
    model_source,
)
from prunekit.ui import tokens as glue

st.title("Tokens")
st.caption(
    "Top-K token pruning (Lee & Lee 2025): inside chosen blocks, after the attention, keep only the "
    "highest-scored spectrogram patches; later blocks run on fewer tokens. CLS and distillation "
    "tokens are always kept."
)
RULE_HELP = (
    "cls: the CLS token's attention (the paper's rule for AST); received: attention each patch "
    "receives; intensity / variation: mean / spread of the patch's log-mel values; random: the floor"
)


def _settings(loaded, depth):
    c1, c2, c3 = st.columns(3)
    keep = c1.slider(
        "Keep rate",
        0.05,
        1.0,
        0.7,
        0.05,
        key="tok_keep",
        help="share of the patch tokens each drop block keeps (ceil)",
    )
    blocks = c2.multiselect(
        "Drop blocks",
        list(range(depth)),
        default=glue.default_drop_blocks(depth),
        key="tok_blocks",
        help="default: the blocks at 1/4, 1/2 and 3/4 of the depth",
    )
    rule = c3.selectbox("Rule", RULES, key="tok_rule", help=RULE_HELP)
    settings = glue.settings_or_report(keep, blocks, rule, depth)
    if settings is not None:
        st.caption(f"Patch tokens per block: {glue.patch_counts(settings, loaded)}")
    return settings


def _cost(source, dataset, split, settings):
    if dataset.multilabel:
        st.info(
            f"{dataset.name} is multi-label: token pruning is measured by accuracy here, so this part "
            "of the page needs single-label data (the Prune page shows mAP)."
        )
        return
    if st.button(f"Evaluate on the {split} split", key="tok_eval"):
        glue.evaluate_settings(source, dataset, split, settings)
    if st.button("Evaluate keep rates 0.9 to 0.5 (this rule and these blocks)", key="tok_sweep"):
        for keep in (0.9, 0.8, 0.7, 0.6, 0.5):
            glue.evaluate_settings(source, dataset, split, glue.at_keep(settings, keep))
    dense = dense_evaluation(source, dataset, split)
    result = glue.evaluated(source, split, settings)
    if dense is not None and result is not None:
        cols = st.columns(4)
        cols[0].metric("Accuracy, original", f"{dense.accuracy:.1%}")
        cols[1].metric(
            "Accuracy, token-pruned",
            f"{result['accuracy']:.1%}",
            delta=f"{100 * (result['accuracy'] - dense.accuracy):+.1f} points",
        )
        cols[2].metric("MACs per clip, original", f"{dense_macs(source) / 1e6:.3g} M")
        cols[3].metric(
            "MACs per clip, token-pruned",
            f"{result['macs'] / 1e6:.3g} M",
            delta=f"{result['macs'] / dense_macs(source) - 1:+.1%}",
            delta_color="inverse",
        )
    frame = glue.points(source, dataset, split)
    if len(frame) > 1:
        st.plotly_chart(token_figures.accuracy_macs(frame), key="tok_points")
        st.caption("Head-pruned variants applied on the Prune page appear here too, on the same axes.")


def _wave(dataset, split):
    """A 16 kHz waveform from the split or from the user (None while there is none), played."""
    if (
        st.radio("Clip from", ["the dataset", "your own audio"], horizontal=True, key="tok_source")
        == "the dataset"
    ):
        clips = dataset.split(split)
        label = st.selectbox("Class", sorted({c.label for c in clips}), key="tok_class")
        names = [c.path.name for c in clips if c.label == label]
        pick = st.selectbox("Clip", names, key="tok_clip")
        path = next(c.path for c in clips if c.label == label and c.path.name == pick)
        st.audio(str(path))
        return audio.load_waveform(Path(path))
    clip = st.file_uploader(
        "Upload a WAV, FLAC or OGG file", type=["wav", "flac", "ogg"], key="tok_upload"
    ) or st.audio_input("Or record one", key="tok_record")
    if clip is None:
        return None
    try:
        wave = audio.load_waveform(clip.getvalue(), name=getattr(clip, "name", None) or "the recording")
    except AudioError as exc:
        st.error(f"That file cannot be used: {exc}")
        return None
    st.audio(clip.getvalue())
    st.caption("The model reads the first window of the recording (padded when shorter).")
    return wave


def _clip(loaded, dataset, split, settings):
    wave = _wave(dataset, split)
    if wave is None:
        return
    trace = glue.trace_clip(loaded, settings, wave)
    st.plotly_chart(token_figures.survivor_maps(trace.features, trace.grid, trace.kept), key="tok_survivors")
    st.caption(
        "The model's input (normalised log-mel, frames across); each cell is where a 16 x 16 patch "
        "starts (patches overlap when the stride is smaller). Dimmed: dropped by that block."
    )
    st.plotly_chart(figures.top_bars(trace.top), key="tok_top")


def _patches(source, dataset):
    clips = st.number_input("Validation clips to analyse", 16, 5000, 300, 50, key="tok_patch_clips")
    if not st.button("Analyse the patches", key="tok_analyse"):
        return
    report = glue.patch_report(source, dataset, int(clips))
    if report is None:
        return
    c1, c2 = st.columns(2)
    for col, name in zip((c1, c2), ("intensity", "variation")):
        col.plotly_chart(
            token_figures.cluster_histogram(report.values[name], report.clusters[name], name),
            key=f"tok_hist_{name}",
        )
    st.plotly_chart(
        token_figures.correlation_lines(report.correlations, PAPER_AST_SPEECH_COMMANDS), key="tok_corr"
    )
    st.caption(
        "The authors count a pair whose score or rank ties as concordant, which inflates their "
        "Kendall; tau-b handles ties. Paper: AST-base on Speech Commands v2, 12 blocks."
    )
    st.dataframe(report.correlations, hide_index=True, key="tok_corr_table")


def render() -> None:
    source = model_source()
    loaded = load_or_report(source)
    if loaded is None:
        return
    settings = _settings(loaded, loaded.model.config.num_hidden_layers)
    if settings is None:
        return
    dataset = dataset_or_report()
    if dataset is None:
        return
    split = eval_split()
    cost, clip, analysis = st.tabs(["Accuracy and MACs", "A clip", "Patch importance"])
    with cost:
        _cost(source, dataset, split, settings)
    with clip:
        _clip(loaded, dataset, split, settings)
    with analysis:
        _patches(source, dataset)


render()
