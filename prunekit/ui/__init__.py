"""The only Streamlit-aware part of prunekit: cached loaders, session state, shared widgets.

Pages import from here and from ``prunekit``; they never touch torch or transformers.

What is shared between browser sessions (``st.cache_resource``): loaded base models, datasets
and dense evaluations. They are read-only by contract: scoring works on a copy, surgery
returns a new model, evaluation restores the model's mode. What belongs to one session lives
in ``st.session_state``: score tables seen, applied variants (the history) and widget values.

The sidebar's device (``auto``: a GPU when there is one) is where the base model is loaded and
every page computes: pruned variants, scores and evaluations follow the model.

The history keeps at most ``max_variants()`` pruned models in memory (5, or
``$PRUNEKIT_MAX_VARIANTS``): a session that applies many plans would otherwise hold every model
it ever made. Older variants keep their evaluation and cost in memory, their model goes to
``cache/sessions/<session>/`` (``save_pruned``) and is read back when a page needs it
(``with_model``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from prunekit.data.audio import features
from prunekit.data.datasets import SPLITS, AudioDataset, demo_generated, open_dataset
from prunekit.data.manifest import PRESETS
from prunekit.devices import DEVICE_HELP, available_devices, describe_device, place, resolve_device
from prunekit.errors import ConfigurationError, PrunekitError
from prunekit.evaluation.attention import clip_attention
from prunekit.evaluation.cost import count_macs
from prunekit.evaluation.metrics import Evaluation, evaluate
from prunekit.evaluation.windows import window_samples
from prunekit.heads.pipeline import Variant
from prunekit.heads.planner import max_sparsity
from prunekit.heads.scoring import ScoreTable, needs_data, score_split
from prunekit.heads.surgery import save_pruned
from prunekit.models import anatomy
from prunekit.models.loading import LoadedModel, load_model
from prunekit.store import cache_dir

__all__ = [
    "ATTENTION_CACHE",
    "DATA_KINDS",
    "DEFAULT_CLIPS",
    "MANIFEST_PRESETS",
    "MODEL_KINDS",
    "REPORTED",
    "Applied",
    "bar",
    "bar_into",
    "cached_dataset",
    "cached_model",
    "clip_attention_maps",
    "current_variants",
    "data_source",
    "dataset_or_report",
    "dense_evaluation",
    "dense_macs",
    "device_choice",
    "eval_split",
    "forget",
    "history",
    "load_or_report",
    "max_variants",
    "model_facts",
    "model_source",
    "remember",
    "score_clips",
    "scores_or_report",
    "session_folder",
    "sidebar",
    "sparsity_slider",
    "with_model",
]

DEFAULT_CLIPS = 1000
MODEL_KINDS = {
    "Embedded demo": "",
    "Hugging Face hub id": "e.g. MIT/ast-finetuned-speech-commands-v2",
    "Local folder": "a folder saved by save_pretrained or by prunekit (dense or pruned)",
}
DATA_KINDS = {
    "Synthetic demo set": "",
    "Speech Commands v2 folder": "a folder with validation_list.txt, testing_list.txt and one folder per word",
    "Folder per class": "a folder with one sub-folder of audio files per class",
    "CSV manifest": "a CSV naming audio files (relative to it) and their labels, e.g. meta/esc50.csv",
}
MANIFEST_PRESETS = ("detect from header", *PRESETS)
REPORTED = PrunekitError  # what a page shows as a message; anything else is a bug and keeps its traceback


# --- sidebar choices -------------------------------------------------------------------------
def sidebar() -> None:
    """Model, dataset, scoring clips and evaluation split. Errors are shown by pages, never raised."""
    with st.sidebar:
        st.radio("Model", list(MODEL_KINDS), key="model_kind")
        if st.session_state.get("model_kind", "Embedded demo") != "Embedded demo":
            st.text_input(
                "Model id or folder", key="model_ref", placeholder=MODEL_KINDS[st.session_state["model_kind"]]
            )
        st.radio("Dataset", list(DATA_KINDS), key="data_kind")
        if st.session_state.get("data_kind", "Synthetic demo set") != "Synthetic demo set":
            st.text_input(
                "Dataset folder", key="data_ref", placeholder=DATA_KINDS[st.session_state["data_kind"]]
            )
        if st.session_state.get("data_kind") == "CSV manifest":
            st.selectbox(
                "Manifest layout",
                MANIFEST_PRESETS,
                key="data_preset",
                help="which columns name the files, labels and splits; see the README's "
                "'Datasets with a manifest'",
            )
        st.number_input(
            "Clips for gradient scorers",
            min_value=8,
            max_value=20000,
            value=DEFAULT_CLIPS,
            step=100,
            key="score_clips",
            help="validation clips Fisher, Taylor and the other gradient scorers read "
            "(the paper uses about 1000)",
        )
        st.selectbox(
            "Evaluation split",
            SPLITS,
            index=SPLITS.index("test"),
            key="eval_split",
            help="the clips Apply evaluates on and the Listen page browses",
        )
        st.selectbox(
            "Device", available_devices(), key="device", help=f"where every page computes: {DEVICE_HELP}"
        )
        st.caption(f"Computing on **{describe_device(resolve_device(device_choice()))}**")


def model_source() -> str | None:
    """'demo', a hub id or a folder; None while the user has not typed one."""
    if st.session_state.get("model_kind", "Embedded demo") == "Embedded demo":
        return "demo"
    return st.session_state.get("model_ref", "").strip() or None


def data_source() -> str | None:
    """'demo', 'speech-commands:<folder>', 'folders:<folder>', '<file>.csv' or '<preset>:<file>.csv'
    (``open_dataset``'s specs); None while no folder is typed."""
    kind = st.session_state.get("data_kind", "Synthetic demo set")
    if kind == "Synthetic demo set":
        return "demo"
    ref = st.session_state.get("data_ref", "").strip()
    if not ref:
        return None
    if kind == "CSV manifest":
        preset = st.session_state.get("data_preset", MANIFEST_PRESETS[0])
        return ref if preset == MANIFEST_PRESETS[0] else f"{preset}:{ref}"
    return ("speech-commands:" if kind == "Speech Commands v2 folder" else "folders:") + ref


def score_clips() -> int:
    return int(st.session_state.get("score_clips", DEFAULT_CLIPS))


def eval_split() -> str:
    return st.session_state.get("eval_split", "test")


def device_choice() -> str:
    """The sidebar's device: "auto", "cpu", "cuda:N" or "mps"."""
    return st.session_state.get("device", "auto")


# --- shared, cached resources ----------------------------------------------------------------
def cached_model(source: str) -> LoadedModel:
    """``source`` loaded on the sidebar's device. Shared across sessions: never modify it; copy
    before pruning or wrapping."""
    return _cached_model(source, device_choice())


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _cached_model(source: str, device: str) -> LoadedModel:
    loaded = load_model(source)
    place(loaded.model, device)
    return loaded


@st.cache_data(show_spinner=False, max_entries=16)
def model_facts(source: str) -> dict:
    return anatomy.describe(cached_model(source).model)


@st.cache_data(show_spinner="Counting MACs…", max_entries=16)
def dense_macs(source: str) -> int:
    return count_macs(cached_model(source).model)


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=4)
def cached_dataset(spec: str) -> AudioDataset:
    """Shared across sessions (an AudioDataset is frozen). ``spec`` as ``open_dataset`` reads it."""
    return open_dataset(spec)


@st.cache_resource
def _dense_evaluations() -> dict:
    """(model, dataset, split) -> Evaluation of the unpruned model, shared by sessions."""
    return {}


def bar(text: str):
    """A new ``st.progress`` bar and a ``progress(done, total)`` callback driving it."""
    return bar_into(st.progress(0.0, text=text), text)


def bar_into(widget, text: str):
    """``widget`` (an ``st.progress``) and a ``progress(done, total)`` callback that fills it."""

    def progress(done: int, total: int) -> None:
        widget.progress(min(done / max(total, 1), 1.0), text=f"{text} {done} / {total}")

    return widget, progress


def sparsity_slider(
    base,
    pattern: str,
    threshold: str,
    *,
    key: str,
    container=st,
    force_keep=(),
    force_remove=(),
    budget: str = "separate",
    help: str | None = None,
) -> float | None:
    """An attention-sparsity slider whose maximum is what ``pattern``/``threshold`` can reach on
    ``base`` (a model or a ScoreTable) with the forced heads, so every position is a plan that can
    be made. None, after saying why, when nothing can be removed at all."""
    ceiling = max_sparsity(
        base, pattern, threshold, force_keep=force_keep, force_remove=force_remove, budget=budget
    )
    top = math.floor(ceiling * 100 + 1e-9) / 100  # a slider step is 1 %: never past the ceiling
    if top <= 0:
        container.info(f"{pattern} / {threshold} cannot remove anything from this model.")
        return None
    # Streamlit resets a slider whose range changed to its ``value``: make that the user's last
    # choice, clamped to the new ceiling, rather than the default.
    wanted = min(st.session_state.get(f"{key}_last", 0.5), top)
    chosen = container.slider(
        "Attention sparsity",
        0.0,
        top,
        wanted,
        0.01,
        key=key,
        format="%.2f",
        help=(help or "share of the attention weights (W_q, W_k, W_v, W_o) to remove")
        + f"; {pattern} / {threshold} can reach at most {ceiling:.1%} on this model",
    )
    st.session_state[f"{key}_last"] = chosen
    return chosen


# --- loaders that report instead of raising --------------------------------------------------
def load_or_report(source: str | None) -> LoadedModel | None:
    """The model, or None after showing why it could not be loaded."""
    if source is None:
        st.info("Type a hub id or a folder in the sidebar to load a model.")
        return None
    try:
        return cached_model(source)
    except REPORTED as exc:
        st.error(f"Could not load the model '{source}': {exc}")
        return None


def dataset_or_report() -> AudioDataset | None:
    """The chosen dataset, or None after showing why not. The demo set is generated (about 20 s,
    with a progress bar) the first time it is needed."""
    spec = data_source()
    if spec is None:
        st.info("Type a dataset folder in the sidebar.")
        return None
    try:
        if spec == "demo" and not demo_generated():
            widget, progress = bar("Generating the synthetic speech commands (first run only):")
            open_dataset("demo", progress=progress)
            widget.empty()
        return cached_dataset(spec)
    except REPORTED as exc:
        st.error(f"Could not read the dataset: {exc}")
        return None


def dense_evaluation(source: str, dataset: AudioDataset, split: str) -> Evaluation | None:
    """The unpruned model's evaluation on ``split`` (computed once per process, with a bar)."""
    if dataset.multilabel:  # the pages show accuracy; mAP on them is issue 16's next step
        st.error(
            f"{dataset.name} is multi-label: the app's pages do not show mAP yet; evaluate it with "
            f"`python -m prunekit evaluate --data ...` instead."
        )
        return None
    key = (source, data_source(), split)
    shared = _dense_evaluations()
    if key not in shared:
        model, extractor, labels = cached_model(source)
        widget, progress = bar(f"Evaluating the unpruned model on the {split} split:")
        try:  # an empty split, unknown labels or unreadable files are DatasetErrors: reported
            shared[key] = evaluate(model, extractor, labels, dataset, split, progress=progress, cache=True)
        except REPORTED as exc:
            st.error(f"Could not evaluate the model on this dataset: {exc}")
            return None
        finally:
            widget.empty()
    return shared[key]


def scores_or_report(source: str, scorer: str) -> ScoreTable | None:
    """One scorer's table for the chosen model, or None after showing why not.

    Gradient scorers read the sidebar's number of validation clips, with a progress bar. The
    disk cache under ``score`` survives restarts of the app; the session keeps the frames it
    has seen, so reruns (a slider, a click) do not even hash the weights again.
    """
    uses_data = needs_data(scorer)
    key = (source, scorer, *((data_source(), score_clips()) if uses_data else ()))
    seen = st.session_state.setdefault("_prunekit_scores", {})
    if key in seen:
        return seen[key]
    dataset = dataset_or_report() if uses_data else None
    if uses_data and dataset is None:
        return None
    widget, progress = bar(f"{scorer} scores:")
    _, features = bar_into(widget, "Features of the validation clips:")
    try:
        table = score_split(
            *cached_model(source),
            scorer,
            dataset,
            clips=score_clips(),
            features_progress=features,
            progress=progress,
        )
    except REPORTED as exc:
        st.error(f"Could not score with {scorer}: {exc}")
        return None
    finally:
        widget.empty()
    seen[key] = table
    return table


# --- attention of one clip ------------------------------------------------------------------
ATTENTION_CACHE = 8  # clips x models whose attention a session keeps (each a few MB for AST-base)


def clip_attention_maps(name: str, model, extractor, wave) -> list | None:
    """Every layer's attention weights for the first model window of ``wave`` (16 kHz mono),
    computed once per (model name, clip) and kept in the session (at most ``ATTENTION_CACHE``);
    None after showing why it failed."""
    store = st.session_state.setdefault("_prunekit_attention", {})
    key = (name, id(model), hash(wave.tobytes()))  # two variants may share a name, never a live object
    if key not in store:
        try:
            with st.spinner("Computing attention for this clip…"):
                store[key] = clip_attention(
                    model, features([wave[: window_samples(extractor)]], extractor)[0]
                )
        except REPORTED as exc:
            st.error(f"Could not compute the attention: {exc}")
            return None
        while len(store) > ATTENTION_CACHE:
            store.pop(next(iter(store)))
    return store[key]


# --- the session's applied variants ----------------------------------------------------------
DEFAULT_MAX_VARIANTS = 5


def max_variants() -> int:
    """How many applied variants a session keeps in memory: ``$PRUNEKIT_MAX_VARIANTS`` or 5."""
    text = os.environ.get("PRUNEKIT_MAX_VARIANTS", "").strip()
    if not text:
        return DEFAULT_MAX_VARIANTS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"PRUNEKIT_MAX_VARIANTS must be a whole number >= 1, got {text!r}")
    return value


@dataclass(frozen=True)
class Applied:
    """A variant and the model and dataset it was made from (the history outlives a switch).
    ``folder`` is set when the variant's model was moved to disk (``variant.model`` is None)."""

    variant: Variant
    source: str
    data: str
    folder: Path | None = None


def history() -> list[Applied]:
    """This session's applied variants, oldest first."""
    return st.session_state.setdefault("_prunekit_history", [])


def session_folder() -> Path:
    """This session's folder under ``cache/sessions/`` (named by a random id kept in its state)."""
    session = st.session_state.setdefault("_prunekit_session", uuid.uuid4().hex)
    return cache_dir() / "sessions" / session


def remember(variant: Variant, source: str) -> None:
    """Add ``variant`` to the history; move the oldest in-memory models to disk past the limit."""
    entries = history()
    entries.append(Applied(variant, source, data_source() or ""))
    in_memory = [i for i, a in enumerate(entries) if a.folder is None]
    for i in in_memory[: max(len(in_memory) - max_variants(), 0)]:
        folder = save_pruned(
            entries[i].variant.model, session_folder() / f"variant-{i}", plan=entries[i].variant.plan
        )
        entries[i] = dataclasses.replace(
            entries[i], variant=dataclasses.replace(entries[i].variant, model=None), folder=folder
        )


def forget(variants: list[Variant]) -> None:
    """Drop these variants (the very objects) from the session's history."""
    gone = {id(v) for v in variants}
    st.session_state["_prunekit_history"] = [a for a in history() if id(a.variant) not in gone]


def current_variants(source: str) -> list[Variant]:
    """Variants of ``source`` on the current dataset, newest first (``with_model`` before using
    ``.model``: an older one's model is on disk)."""
    return [a.variant for a in reversed(history()) if a.source == source and a.data == data_source()]


def with_model(variant: Variant) -> Variant:
    """``variant`` with its model in memory: read back from the session folder when it was moved
    there. The last one read back is kept, so reruns of a page showing it do not read it again."""
    if variant.model is not None:
        return variant
    folder = next(a.folder for a in history() if a.variant is variant)
    cached = st.session_state.get("_prunekit_reloaded")
    if cached is None or cached[0] != folder:
        cached = (folder, load_model(folder).model)
        st.session_state["_prunekit_reloaded"] = cached
    return dataclasses.replace(variant, model=cached[1])
