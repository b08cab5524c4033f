"""The only Streamlit-aware part of prunekit: cached loaders, session state, shared widgets.

Pages import from here and from ``prunekit``; they never touch torch or transformers.
"""

from __future__ import annotations

import streamlit as st

from .. import anatomy
from ..errors import PrunekitError
from ..models import LoadedModel, load_model

DEFAULT_MODEL = "demo"


@st.cache_resource(show_spinner="Loading model…")
def cached_model(source: str) -> LoadedModel:
    """Shared across sessions: never modify it; copy before pruning or wrapping."""
    return load_model(source)


@st.cache_data(show_spinner=False)
def model_facts(source: str) -> dict:
    return anatomy.describe(cached_model(source).model)


def model_source() -> str:
    return st.session_state.get("model_source", DEFAULT_MODEL)


def sidebar() -> None:
    """Model picker (the demo by default). Errors are shown, never raised."""
    with st.sidebar:
        st.text_input(
            "Model",
            value=DEFAULT_MODEL,
            key="model_source",
            help="'demo' (embedded, offline), a Hugging Face hub id, or a local folder",
        )


def load_or_report(source: str) -> LoadedModel | None:
    """The model, or None after showing why it could not be loaded."""
    try:
        return cached_model(source)
    except PrunekitError as exc:
        st.error(str(exc))
        return None
