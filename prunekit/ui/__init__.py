"""The only Streamlit-aware part of prunekit: cached loaders, session state, shared widgets.

Pages import from here and from ``prunekit``; they never touch torch or transformers.

What is shared between browser sessions (``st.cache_resource``): loaded base models, datasets
and dense evaluations. They are read-only by contract: scoring works on a copy, surgery
returns a new model, evaluation restores the model's mode. What belongs to one session lives
in ``st.session_state``: score tables seen, applied variants (the history) and widget values.

Memory is bounded per session and per process. A session keeps at most ``max_variants()``
pruned models in memory (3, or ``$PRUNEKIT_MAX_VARIANTS``), the ones used last: every variant
keeps its evaluation and cost in the history, and a model pushed out goes to the session's
folder under ``cache/sessions/`` (``save_pruned``, safetensors) and is read back, exactly, when a
page asks for it (``with_model``). The folder goes when the session ends. Score tables (12) and
attention maps (8) per session and the shared loaders and dense evaluations have limits too.

The sidebar's device (``auto``: a GPU when there is one) is where the base model is loaded and
every page computes: pruned variants, scores and evaluations follow the model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import threading
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from prunekit.data.audio import features
from prunekit.data.datasets import SPLITS, AudioDataset, demo_generated, open_dataset, tagging_generated
from prunekit.data.manifest import PRESETS
from prunekit.devices import DEVICE_HELP, available_devices, describe_device, place, resolve_device
from prunekit.errors import ConfigurationError, PrunekitError
from prunekit.evaluation.attention import clip_attention
from prunekit.evaluation.cost import count_macs
from prunekit.evaluation.metrics import Evaluation, MultilabelEvaluation, evaluate
from prunekit.evaluation.windows import window_samples
from prunekit.heads.pipeline import Variant
from prunekit.heads.planner import max_sparsity
from prunekit.heads.scoring import ScoreTable, needs_data, score_split
from prunekit.heads.surgery import save_pruned
from prunekit.models import anatomy
from prunekit.models.loading import LoadedModel, embedded_dir, load_model
from prunekit.store import cache_dir, process_alive
from prunekit.ui import served

__all__ = [
    "ATTENTION_CACHE",
    "DATA_KINDS",
    "DEFAULT_CLIPS",
    "DENSE_EVALUATIONS",
    "MANIFEST_PRESETS",
    "MODEL_KINDS",
    "REPORTED",
    "SCORE_TABLES",
    "Applied",
    "bar",
    "bar_into",
    "cached_dataset",
    "cached_model",
    "clip_attention_maps",
    "current_variants",
    "data_key",
    "data_source",
    "dataset_or_report",
    "dense_evaluation",
    "dense_macs",
    "device_choice",
    "eval_clips",
    "eval_split",
    "forget",
    "history",
    "keep_bounded",
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
    "sweep_sessions",
    "with_model",
]

DEFAULT_CLIPS = 1000
MODEL_KINDS = {
    "Embedded demo": "",
    "Embedded tagging demo": "",  # offered once `demo-train --task tagging` wrote its folder
    "Hugging Face hub id": "e.g. MIT/ast-finetuned-speech-commands-v2",
    "Local folder": "a folder saved by save_pretrained or by prunekit (dense or pruned)",
}
DATA_KINDS = {
    "Synthetic demo set": "",
    "Synthetic tagging set": "",  # multi-label: 1-3 words and a background per clip (demo-tagging)
    "Speech Commands v2 folder": "a folder with validation_list.txt, testing_list.txt and one folder per word",
    "Folder per class": "a folder with one sub-folder of audio files per class",
    "CSV manifest": "a CSV naming audio files (relative to it) and their labels, e.g. meta/esc50.csv",
}
_GENERATED = {"Synthetic demo set": "demo", "Synthetic tagging set": "demo-tagging"}  # no folder to type
_EMBEDDED = {"Embedded demo": "demo", "Embedded tagging demo": "demo-tagging"}  # likewise, models
MANIFEST_PRESETS = ("detect from header", *PRESETS)
REPORTED = PrunekitError  # what a page shows as a message; anything else is a bug and keeps its traceback


# --- sidebar choices -------------------------------------------------------------------------
def sidebar() -> None:
    """Model, dataset, scoring clips and evaluation split. Errors are shown by pages, never raised."""
    with st.sidebar:
        kinds = _model_kinds()
        if st.session_state.get("model_kind") not in (None, *kinds):
            del st.session_state["model_kind"]  # its folder is gone: back to the first choice
        st.radio("Model", kinds, key="model_kind")
        if st.session_state.get("model_kind", "Embedded demo") not in _EMBEDDED:
            st.text_input(
                "Model id or folder", key="model_ref", placeholder=MODEL_KINDS[st.session_state["model_kind"]]
            )
        st.radio("Dataset", list(DATA_KINDS), key="data_kind")
        if st.session_state.get("data_kind", "Synthetic demo set") not in _GENERATED:
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
        st.number_input(
            "Clips to evaluate (0: all)",
            min_value=0,
            max_value=1_000_000,
            value=0,
            step=100,
            key="eval_clips",
            help="a seeded sample of the evaluation split, the same clips for the original and every "
            "variant; for a large model on a CPU (AST-base: about 0.15 s a clip), e.g. 200",
        )
        st.selectbox(
            "Device", available_devices(), key="device", help=f"where every page computes: {DEVICE_HELP}"
        )
        st.caption(f"Computing on **{describe_device(resolve_device(device_choice()))}**")


def _model_kinds() -> list[str]:
    """MODEL_KINDS the sidebar offers: an embedded model only when its folder holds one (the
    tagging demo is not committed; ``demo-train --task tagging`` writes it)."""
    return [
        kind
        for kind in MODEL_KINDS
        if kind not in _EMBEDDED or (embedded_dir(_EMBEDDED[kind]) / "config.json").is_file()
    ]


def model_source() -> str | None:
    """'demo', 'demo-tagging', a hub id or a folder; None while the user has not typed one."""
    kind = st.session_state.get("model_kind", "Embedded demo")
    if kind in _EMBEDDED:
        return _EMBEDDED[kind]
    return st.session_state.get("model_ref", "").strip() or None


def data_source() -> str | None:
    """'demo', 'demo-tagging', 'speech-commands:<folder>', 'folders:<folder>', '<file>.csv' or
    '<preset>:<file>.csv' (``open_dataset``'s specs); None while no folder is typed."""
    kind = st.session_state.get("data_kind", "Synthetic demo set")
    if kind in _GENERATED:
        return _GENERATED[kind]
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


def eval_clips() -> int:
    """The sidebar's clips to evaluate: 0 for the whole split."""
    return int(st.session_state.get("eval_clips", 0))


def data_key() -> str | None:
    """What evaluations are made on: ``data_source()``, and the sample size when the sidebar
    evaluates a sample of the split (results on different samples are never mixed)."""
    spec, clips = data_source(), eval_clips()
    return f"{spec} [{clips} {eval_split()} clips]" if spec is not None and clips else spec


def device_choice() -> str:
    """The sidebar's device: "auto", "cpu", "cuda:N" or "mps"."""
    return st.session_state.get("device", "auto")


# --- shared, cached resources ----------------------------------------------------------------
def cached_model(source: str) -> LoadedModel:
    """``source`` loaded on the sidebar's device. Shared across sessions: never modify it; copy
    before pruning or wrapping. Served, ``source`` must lie in the model folders
    (``served.model_location``)."""
    return _cached_model(source, device_choice())


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _cached_model(source: str, device: str) -> LoadedModel:
    loaded = load_model(served.model_location(source))
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
    """Shared across sessions (an AudioDataset is frozen). ``spec`` as ``open_dataset`` reads it;
    served, its folder must lie in the dataset folders (``served.dataset_location``)."""
    return open_dataset(served.dataset_location(spec))


# (model, dataset, split) evaluations the process keeps (each holds every clip's answer)
DENSE_EVALUATIONS = 16


class _Bounded:
    """A dict of at most ``limit`` entries, least recently used out first; safe across sessions'
    threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict = {}

    def computing(self, key) -> threading.Lock:
        """A lock per key: sessions asking for the same entry at once compute it once."""
        with self._lock:
            return self._computing.setdefault(key, threading.Lock())

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@st.cache_resource(max_entries=1)
def _dense_evaluations() -> _Bounded:
    """(model, dataset, split) -> Evaluation of the unpruned model, shared by sessions (at most
    ``DENSE_EVALUATIONS``; one dropped is read back from the disk cache when asked again)."""
    return _Bounded(DENSE_EVALUATIONS)


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


def dataset_or_report(*, sample: bool = True) -> AudioDataset | None:
    """The chosen dataset, or None after showing why not. With ``sample`` its evaluation split is
    cut to the sidebar's clips to evaluate (the scorers ask for the whole dataset). The demo set
    is generated (about 20 s, with a progress bar) the first time it is needed."""
    spec = data_source()
    if spec is None:
        st.info("Type a dataset folder in the sidebar.")
        return None
    try:
        if spec == "demo" and not demo_generated():
            widget, progress = bar("Generating the synthetic speech commands (first run only):")
            open_dataset("demo", progress=progress)
            widget.empty()
        if spec == "demo-tagging" and not tagging_generated():
            widget, progress = bar("Generating the synthetic tagging set (first run only):")
            open_dataset("demo-tagging", progress=progress)
            widget.empty()
        if sample and eval_clips():
            return _sampled_dataset(spec, eval_split(), eval_clips())
        return cached_dataset(spec)
    except REPORTED as exc:
        st.error(f"Could not read the dataset: {exc}")
        return None


@st.cache_resource(show_spinner=False, max_entries=4)
def _sampled_dataset(spec: str, split: str, clips: int) -> AudioDataset:
    """``spec``'s dataset with ``split`` cut to a seeded sample (one object per sample, shared)."""
    return cached_dataset(spec).sample(split, clips)


def dense_evaluation(
    source: str, dataset: AudioDataset, split: str
) -> Evaluation | MultilabelEvaluation | None:
    """The unpruned model's evaluation on ``split`` (computed once per process, with a bar): an
    ``Evaluation`` (accuracy), or a ``MultilabelEvaluation`` (mAP) for a multi-label dataset."""
    key = (source, data_key(), split)
    shared = _dense_evaluations()
    result = shared.get(key)
    if result is not None:
        return result
    with shared.computing(key):  # another session may be computing it: wait for its result
        result = shared.get(key)
        if result is None:
            model, extractor, labels = cached_model(source)
            widget, progress = bar(f"Evaluating the unpruned model on the {split} split:")
            try:  # an empty split, unknown labels or unreadable files are DatasetErrors: reported
                result = evaluate(model, extractor, labels, dataset, split, progress=progress, cache=True)
            except REPORTED as exc:
                st.error(f"Could not evaluate the model on this dataset: {exc}")
                return None
            finally:
                widget.empty()
            shared.put(key, result)
    return result


SCORE_TABLES = 12  # score tables a session keeps in memory (a few MB each for AST-base)


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
    dataset = dataset_or_report(sample=False) if uses_data else None
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
    return keep_bounded(seen, key, table, SCORE_TABLES)  # oldest out first; the disk cache has them


def keep_bounded(store: dict, key, value, limit: int):
    """Put ``value`` in a session's ``store`` under ``key`` and drop the oldest entries past
    ``limit`` (what a session keeps of its computations stays bounded). Returns ``value``."""
    store[key] = value
    while len(store) > limit:
        store.pop(next(iter(store)))
    return value


# --- attention of one clip ------------------------------------------------------------------
ATTENTION_CACHE = 8  # clips x models whose attention a session keeps (each a few MB for AST-base)


def clip_attention_maps(name: str, model, extractor, wave) -> list | None:
    """Every layer's attention weights for the first model window of ``wave`` (16 kHz mono),
    computed once per (model name, clip) and kept in the session (at most ``ATTENTION_CACHE``);
    None after showing why it failed."""
    store = st.session_state.setdefault("_prunekit_attention", {})
    key = (name, id(model), hash(wave.tobytes()))  # two variants may share a name, never a live object
    # ... but a freed model's id can be reused by a model read back later: the entry remembers
    # its model weakly (keeping it alive would defeat the memory bound) and must still find it.
    if key not in store or store[key][0]() is not model:
        try:
            with st.spinner("Computing attention for this clip…"):
                weights = clip_attention(model, features([wave[: window_samples(extractor)]], extractor)[0])
        except REPORTED as exc:
            st.error(f"Could not compute the attention: {exc}")
            return None
        store.pop(key, None)
        store[key] = (weakref.ref(model), weights)
        while len(store) > ATTENTION_CACHE:
            store.pop(next(iter(store)))
    return store[key][1]


# --- the session's applied variants ----------------------------------------------------------
DEFAULT_MAX_VARIANTS = 3


def max_variants() -> int:
    """How many applied variants' models a session keeps in memory: ``$PRUNEKIT_MAX_VARIANTS`` or 3."""
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
    """A variant (its model left out: ``with_model`` gives it), the model and dataset it was made
    from (the history outlives a switch), and its number in the session, which names its folder
    under the session folder once its model has been written there."""

    variant: Variant
    source: str
    data: str
    number: int


class _SessionFolder:
    """``cache/sessions/<pid>-<random>/``: where a session's parked models go. Removed when the
    session's state is freed (Streamlit drops a session some time after its browser tab closed:
    ``server.disconnectedSessionTTL``), when the process exits, or, after a crash, by the next
    process that opens a session (``sweep_sessions``)."""

    def __init__(self) -> None:
        self.path = cache_dir() / "sessions" / f"{os.getpid()}-{uuid.uuid4().hex}"
        # A finalizer holds no reference to self: it runs when the session state lets go of us.
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


_swept = False


def sweep_sessions() -> list[Path]:
    """Remove the session folders whose process is gone (a crash or a kill skips the finalizers);
    run once per process, by its first page that reads a history. Returns what was removed."""
    global _swept
    _swept = True
    removed = []
    root = cache_dir() / "sessions"
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        pid = folder.name.split("-")[0]
        if folder.is_dir() and not (pid.isdigit() and process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def history() -> list[Applied]:
    """This session's applied variants, oldest first. The first call in a process also removes
    the session folders that crashed processes left behind."""
    if not _swept:
        sweep_sessions()
    return st.session_state.setdefault("_prunekit_history", [])


def session_folder() -> Path:
    """This session's folder under ``cache/sessions/`` (created when a model is first parked)."""
    holder = st.session_state.get("_prunekit_session")
    if not isinstance(holder, _SessionFolder):
        holder = st.session_state["_prunekit_session"] = _SessionFolder()
    return holder.path


def _models() -> OrderedDict:
    """Entry number -> model, least recently used first: the session's models in memory."""
    return st.session_state.setdefault("_prunekit_models", OrderedDict())


def _keep(number: int, model) -> None:
    """Put ``model`` in memory as the most recently used; write the least recently used ones past
    ``max_variants()`` to the session folder (once: a model read back is already there)."""
    models = _models()
    models[number] = model
    models.move_to_end(number)
    while len(models) > max_variants():
        oldest, parked = models.popitem(last=False)
        folder = session_folder() / f"variant-{oldest}"
        if not folder.is_dir():
            entry = next(a for a in history() if a.number == oldest)
            save_pruned(parked, folder, plan=entry.variant.plan)


def remember(variant: Variant, source: str) -> None:
    """Add ``variant`` to the history (the newest model in memory; older ones may go to disk)."""
    entries = history()
    number = st.session_state.get("_prunekit_applied", 0)
    st.session_state["_prunekit_applied"] = number + 1
    entries.append(Applied(dataclasses.replace(variant, model=None), source, data_key() or "", number))
    _keep(number, variant.model)


def forget(variants: list[Variant]) -> None:
    """Drop these variants (the very objects ``current_variants`` gave) from the session: history,
    memory and their folder on disk."""
    gone = {id(v) for v in variants}
    kept = []
    for entry in history():
        if id(entry.variant) in gone:
            _models().pop(entry.number, None)
            holder = st.session_state.get("_prunekit_session")
            if isinstance(holder, _SessionFolder):
                shutil.rmtree(holder.path / f"variant-{entry.number}", ignore_errors=True)
        else:
            kept.append(entry)
    st.session_state["_prunekit_history"] = kept


def current_variants(source: str) -> list[Variant]:
    """Variants of ``source`` on the current dataset, newest first. Their ``.model`` is None:
    ``with_model`` gives the variant with its model (in memory, or read back from disk)."""
    return [a.variant for a in reversed(history()) if a.source == source and a.data == data_key()]


def with_model(variant: Variant) -> Variant:
    """``variant`` (from ``current_variants``) with its model: the one in memory, or, when it was
    written to the session folder, read back (exactly: safetensors) and kept as the most recently
    used, which may move another one to disk."""
    if variant.model is not None:  # not from the history: a variant the caller holds itself
        return variant
    entry = next(a for a in history() if a.variant is variant)
    models = _models()
    if entry.number in models:
        models.move_to_end(entry.number)
        model = models[entry.number]
    else:
        model = load_model(session_folder() / f"variant-{entry.number}").model
        _keep(entry.number, model)
    return dataclasses.replace(variant, model=model)
