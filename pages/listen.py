"""Listen: play clips, see their spectrogram, and what the original and one or two pruned models hear."""

from pathlib import Path

import pandas as pd
import streamlit as st

from prunekit.data import audio
from prunekit.errors import AudioError
from prunekit.evaluation import attention, changes, windows
from prunekit.models import anatomy
from prunekit.report import figures
from prunekit.ui import (
    bar,
    clip_attention_maps,
    current_variants,
    dataset_or_report,
    dense_evaluation,
    eval_split,
    load_or_report,
    model_source,
    with_model,
)

st.title("Listen")
st.caption(
    "Hear a clip, see its spectrogram, and compare the top-5 answers of the original and a pruned model."
)


def _pick_variants(source) -> list:
    """Up to two pruned variants to hear beside the original (newest first by default)."""
    done = current_variants(source)
    if not done:
        st.info(
            "No pruned variant yet: apply a plan on the Prune page to compare. Showing the original model only."
        )
        return []
    names = [f"{i}: {v.name}" for i, v in enumerate(done)]
    if any(n not in names for n in st.session_state.get("listen_variants", [])):
        del st.session_state["listen_variants"]  # a deleted variant, or another model's list
    chosen = st.multiselect(
        "Pruned variants (one or two, compared with the original)",
        names,
        default=names[:1],
        max_selections=2,
        key="listen_variants",
    )
    return [with_model(done[names.index(name)]) for name in chosen]


def _shown_names(variants) -> list[str]:
    """Panel and column names of the chosen variants; equal names get their place in the list."""
    names = [v.name for v in variants]
    return [f"{n} ({k + 1})" if names.count(n) > 1 else n for k, n in enumerate(names)]


def _answers(
    loaded, variants, wave, *, show_windows: bool = False, truth: str | None = None, tags: list | None = None
) -> None:
    """Spectrogram and the top-5 of each model for one 16 kHz waveform (``truth``: its label;
    ``tags``: its true tags, for a multi-label dataset, marked among the top 5)."""
    st.plotly_chart(
        figures.spectrogram(windows.log_mel(wave, loaded.feature_extractor)),
        key=f"listen_spec_{show_windows}",
    )
    models = {"Original": loaded.model} | {
        f"Pruned ({name})": v.model for name, v in zip(_shown_names(variants), variants)
    }
    long = len(wave) > windows.window_samples(loaded.feature_extractor)
    widget, progress = bar("Classifying windows:") if long else (None, None)
    results = {
        name: windows.classify(m, loaded.feature_extractor, loaded.labels, wave, progress=progress)
        for name, m in models.items()
    }
    if widget is not None:
        widget.empty()
    if tags is not None:  # multi-label: each tag has its own probability (sigmoid); several may be high
        said = "; ".join(
            f"{name} finds {sum(t in tags for t in r.top(len(tags))['label'])} of them in its top {len(tags)}"
            for name, r in results.items()
        )
        st.markdown(f"True tags: **{', '.join(tags)}** (marked \u2713 and green below). {said}.")
    elif truth is not None:
        said = "; ".join(f"{name} hears **{r.top(1)['label'].iloc[0]}**" for name, r in results.items())
        st.markdown(f"True label: **{truth}**. {said}.")
    if any(r.multilabel for r in results.values()):
        st.caption("Tag probabilities: one sigmoid per tag, so they need not add up to 100 %.")
    st.plotly_chart(
        figures.top_bars({name: r.top(5) for name, r in results.items()}, truth=tags),
        key=f"listen_top_{show_windows}",
    )
    if st.toggle(
        "Where each model listens (attention rollout)",
        key=f"listen_rollout_{show_windows}",
        help="attention followed through every layer from the summary token back to the input patches "
        "(Abnar & Zuidema, 2020); for a long recording, its first window",
    ):
        grid = anatomy.patch_grid(loaded.model)
        frames, mels = anatomy.input_shape(loaded.model)
        maps = {}
        for name, m in models.items():
            weights = clip_attention_maps(f"{model_source()}:{name}", m, loaded.feature_extractor, wave)
            if weights is not None:
                maps[name] = attention.paint(attention.rollout_map(weights, grid), grid, frames, mels)
        st.plotly_chart(
            figures.attention_maps(
                maps, title="Attention rollout: which parts of the input reach the decision"
            ),
            key=f"listen_rollout_map_{show_windows}",
        )
    if long and show_windows:
        st.caption(
            f"Longer than the model's {windows.window_samples(loaded.feature_extractor) / audio.TARGET_SR:.2f} s window: "
            "classified in half-overlapping windows; a class scores its best window."
        )
        st.dataframe(results["Original"].windows, hide_index=True, key="listen_windows")


def _browse(loaded, variants, dataset, split) -> None:
    dense = dense_evaluation(model_source(), dataset, split)
    if dense is None:
        return
    compared = [v for v in variants if v.split == split]  # evaluated on these clips: in the table
    if compared:
        clips = _changes(dense, compared)
    elif dense.multilabel:  # "label" holds a clip's true tags joined by " | ", "original" its top tag
        clips = dense.predictions.rename(columns={"labels": "label", "top": "original"})[
            ["path", "label", "original"]
        ]
    else:
        clips = dense.predictions.rename(columns={"predicted": "original"})[["path", "label", "original"]]
    c1, c2 = st.columns(2)
    # A clip's name is its label and its index within the label ("yes #3"): stable under the filters.
    clips = clips.assign(clip=clips["label"] + " #" + (clips.groupby("label").cumcount() + 1).astype(str))
    tags = clips["label"].str.split(" | ", regex=False) if dense.multilabel else None
    classes = sorted({t for ts in tags for t in ts}) if dense.multilabel else sorted(clips["label"].unique())
    label = c1.selectbox("Tag" if dense.multilabel else "Class", ["all", *classes], key="listen_class")
    only_diff = c2.checkbox(
        "Only clips where the original and a pruned model disagree",
        key="listen_diff",
        disabled="differ" not in clips,
    )
    if label == "all":
        shown = clips
    elif dense.multilabel:  # every clip that carries the tag
        shown = clips[[label in ts for ts in tags]]
    else:
        shown = clips[clips["label"] == label]
    if only_diff and "differ" in shown:
        shown = shown[shown["differ"]]
    st.caption(f"{len(shown)} of {len(clips)} clips of the {split} split")
    if shown.empty:
        st.info("No clips match.")
        return
    table = shown.assign(file=shown["path"].map(lambda p: Path(p).name)).drop(columns=["path"])
    table = table[["clip", *[c for c in table.columns if c != "clip"]]]
    st.dataframe(table, hide_index=True, key="listen_table", height=220)
    names = list(table["clip"])
    pick = st.selectbox("Clip", names, key="listen_clip")
    row = shown.iloc[names.index(pick)]
    st.audio(str(row["path"]))
    wave = audio.load_waveform(row["path"])
    if dense.multilabel:
        _answers(loaded, variants, wave, tags=row["label"].split(" | "))
    else:
        _answers(loaded, variants, wave, truth=row["label"])


def _changes(dense, variants) -> pd.DataFrame:
    """Per clip: label, the original's answer and each variant's, whether each is right, and
    whether any variant's answer differs from the original's (tags: each model's top tag)."""
    compare = changes.tag_changes if dense.multilabel else changes.prediction_changes
    names = _shown_names(variants) if len(variants) > 1 else ["pruned"]
    table = None
    for name, variant in zip(names, variants):
        one = compare(dense, variant.evaluation).rename(
            columns={
                "dense": "original",
                "dense_correct": "original right",
                "pruned": name,
                "pruned_correct": f"{name} right",
                "differ": f"{name} differs",
            }
        )
        table = one if table is None else table.join(one[[name, f"{name} right", f"{name} differs"]])
    table["differ"] = table[[f"{n} differs" for n in names]].any(axis=1)
    return table.drop(columns=[f"{n} differs" for n in names])


def _upload(loaded, variants) -> None:
    uploaded = st.file_uploader(
        "Upload a WAV, FLAC or OGG file", type=["wav", "flac", "ogg"], key="listen_upload"
    )
    recorded = st.audio_input("Or record one", key="listen_record")
    clip = uploaded or recorded
    if clip is None:
        return
    data = clip.getvalue()
    try:
        recording = windows.read_recording(data, name=getattr(clip, "name", None) or "the recording")
    except AudioError as exc:
        st.error(f"That file cannot be used: {exc}")
        return
    if recording.cut:
        st.warning(
            f"The recording is {recording.seconds:.0f} s long; classifying its first {windows.MAX_SECONDS} s."
        )
    st.audio(data)
    _answers(loaded, variants, recording.wave, show_windows=True)


def render() -> None:
    source = model_source()
    loaded = load_or_report(source)
    if loaded is None:
        return
    variants = _pick_variants(source)
    dataset = dataset_or_report()
    browse, upload = st.tabs(["Clips of the dataset", "Your own audio"])
    with browse:
        if dataset is not None:
            _browse(loaded, variants, dataset, variants[0].split if variants else eval_split())
    with upload:
        _upload(loaded, variants)


render()
