"""The only Streamlit-aware part of prunekit: cached loaders, session state, shared widgets.

Pages import from here and from ``prunekit``; they never touch torch or transformers.
"""

from __future__ import annotations

import streamlit as st

import pandas as pd

from .. import anatomy
from ..datasets import AudioDataset, open_dataset
from ..errors import PrunekitError
from ..models import LoadedModel, load_model
from ..scoring import GRADIENT_SCORERS, score, scoring_data

DEFAULT_MODEL = "demo"
DEFAULT_DATA = "demo"
DEFAULT_CLIPS = 1000


@st.cache_resource(show_spinner="Loading model…")
def cached_model(source: str) -> LoadedModel:
    """Shared across sessions: never modify it; copy before pruning or wrapping."""
    return load_model(source)


@st.cache_data(show_spinner=False)
def model_facts(source: str) -> dict:
    return anatomy.describe(cached_model(source).model)


@st.cache_resource(show_spinner="Reading the dataset…")
def cached_dataset(spec: str) -> AudioDataset:
    """Shared across sessions (an AudioDataset is frozen). The demo set is generated on first use."""
    return open_dataset(spec)


def model_source() -> str:
    return st.session_state.get("model_source", DEFAULT_MODEL)


def data_source() -> str:
    return st.session_state.get("data_source", DEFAULT_DATA)


def score_clips() -> int:
    return int(st.session_state.get("score_clips", DEFAULT_CLIPS))


def scores_or_report(source: str, scorer: str) -> pd.DataFrame | None:
    """One scorer's table for the chosen model, or None after showing why not.

    Gradient scorers read the sidebar's number of validation clips, with a progress bar. The
    disk cache under ``score`` survives restarts of the app; the session keeps the frames it
    has seen, so reruns (a slider, a click) do not even hash the weights again.
    """
    uses_data = scorer in GRADIENT_SCORERS
    key = (source, scorer, *((data_source(), score_clips()) if uses_data else ()))
    seen = st.session_state.setdefault("_prunekit_scores", {})
    if key in seen:
        return seen[key]
    bar = st.empty()

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{scorer} scores: {done} / {total} clips")

    try:
        model, extractor, labels = cached_model(source)
        data = None
        if uses_data:
            bar.progress(0.0, text=f"Reading {data_source()} and computing features…")
            data = scoring_data(cached_dataset(data_source()), extractor, labels, "validation",
                                clips=score_clips())
        frame = score(model, scorer, data, progress=progress)
    except (PrunekitError, ValueError, OSError) as exc:
        st.error(f"Could not score with {scorer}: {exc}")
        return None
    finally:
        bar.empty()
    seen[key] = frame
    return frame


def sidebar() -> None:
    """Model picker (the demo by default). Errors are shown, never raised."""
    with st.sidebar:
        st.text_input(
            "Model",
            value=DEFAULT_MODEL,
            key="model_source",
            help="'demo' (embedded, offline), a Hugging Face hub id, or a local folder",
        )
        st.text_input(
            "Dataset",
            value=DEFAULT_DATA,
            key="data_source",
            help="'demo' (synthetic speech commands), a Speech Commands v2 folder, or a folder per class",
        )
        st.number_input(
            "Clips for gradient scorers",
            min_value=8,
            max_value=20000,
            value=DEFAULT_CLIPS,
            step=100,
            key="score_clips",
            help="validation clips Fisher, Taylor and the other gradient scorers read (the paper uses about 1000)",
        )


def load_or_report(source: str) -> LoadedModel | None:
    """The model, or None after showing why it could not be loaded."""
    try:
        return cached_model(source)
    except PrunekitError as exc:
        st.error(str(exc))
        return None
