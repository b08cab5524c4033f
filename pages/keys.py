"""Key priors: learn which keys each head needs (FiAK, reconstructed), see the priors on the
spectrogram, and prune the keys with the smallest prior."""

import re

import streamlit as st

from prunekit.keys.prune import PRUNE_GRANULARITIES, THRESHOLDS
from prunekit.report import figures
from prunekit.ui import (
    REPORTED,
    data_source,
    dataset_or_report,
    dense_evaluation,
    device_choice,
    eval_split,
    load_or_report,
    model_source,
    served,
)
from prunekit.ui import keys as glue

st.title("Key priors")
st.caption(
    "Attention read as a mixture over the keys (the spectrogram's patches), with a prior over keys "
    "learned from data instead of the uniform one plain attention implies (FiAK, Nguyen et al. 2023; "
    "our reconstruction, see docs/methods.md). Keys with a small prior are pruned."
)
GRANULARITY_HELP = (
    "layer: drop the same keys for every head of a layer; K and V are computed only for the kept "
    "keys, a real saving. head: each head drops its own keys; a mask, so the attention still "
    "computes every score (no saving on this CPU, only what a sparse kernel could save)."
)


def _start_form() -> None:
    with st.form("keys_start"):
        name = st.text_input("Name", value="priors", key="keys_name", help="letters, digits, - and _")
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs", 1, 50, 1, key="keys_epochs")
        clips = c2.number_input("Training clips", 32, 100_000, 2048, step=256, key="keys_clips")
        penalty = c3.number_input(
            "Entropy penalty",
            0.0,
            10.0,
            0.0,
            0.05,
            key="keys_penalty",
            help="0: a plain learned prior; larger pushes each head's prior onto fewer keys (ours)",
        )
        submitted = st.form_submit_button("Learn the priors", type="primary")
    if not submitted:
        return
    if not re.fullmatch(r"[\w-]{1,64}", name):
        st.error("The name may hold only letters, digits, - and _ (at most 64).")
        return
    args = [
        "--model",
        served.model_location(model_source() or "demo"),
        "--data",
        served.dataset_location(data_source() or "demo"),
        "--epochs",
        str(epochs),
        "--train-clips",
        str(clips),
        "--penalty",
        str(penalty),
        "--device",
        device_choice(),
    ]
    with st.spinner("Starting: a new process loads the model and the dataset (about 15 s)..."):
        try:
            glue.start(name, args)
        except REPORTED as exc:
            st.error(f"Could not start learning: {exc}")
            return
    st.session_state["keys_run"] = name
    st.success(f"Started. It writes to cache/keys/{name}; leave the page and come back, it keeps going.")


@st.fragment(run_every=2)
def _live(name: str) -> None:
    status = glue.status_of(glue.runs_root() / name)
    if status["state"] != "running":
        st.rerun()
    st.progress(
        status["fraction"],
        text=f"Learning {name}: {status['stage']}, step {status['steps_done']} of {status['steps_total'] or '?'}",
    )
    if st.button("Stop (keeps the best priors so far)", key=f"keys_stop_{name}"):
        glue.stop(name)


def _runs() -> None:
    runs = glue.all_runs()
    if not runs:
        st.info("No priors learned yet: start a run above.")
        return
    for name, status in runs.items():
        if status["state"] == "running":
            _live(name)
        elif status["state"] in ("stopped", "failed"):
            detail = f" ({status['error']})" if status.get("error") else ""
            st.warning(
                f"{name}: {status['state']} after {status.get('epochs_done', 0)} of {status.get('epochs')} "
                f"epoch(s){detail}. Start it again with the same name and settings to continue."
            )


def _priors(source, loaded) -> None:
    runs = glue.finished_runs()
    if not runs:
        return
    st.subheader("The learned priors")
    names = list(runs)
    if st.session_state.get("keys_run") not in names:
        st.session_state["keys_run"] = names[0]
    run = runs[st.selectbox("Run", names, key="keys_run")]
    try:
        learned = glue.run_model(run)
    except REPORTED as exc:
        st.error(f"Could not read the run's priors: {exc}")
        return
    if learned.labels != loaded.labels:
        st.warning("This run was learned on another model (its labels differ from the sidebar's model).")
        return
    table = glue.prior_frame(str(run), glue.status_of(run).get("updated", ""))
    layers = sorted(table["layer"].unique())
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key="keys_layer")
    heads = ["all heads", *sorted(table.loc[table["layer"] == layer, "head"].unique().tolist())]
    if st.session_state.get("keys_head") not in heads:
        st.session_state["keys_head"] = "all heads"
    head = c2.selectbox("Head", heads, key="keys_head")
    head = None if head == "all heads" else int(head)
    st.caption(
        "Each key's prior relative to uniform, on the spectrogram's patch grid (time across, mel bins "
        "up): 1 is what plain attention gives every key, 2 twice that."
    )
    c1, c2, c3 = st.columns(3)
    sparsity = c1.slider("Key sparsity", 0.0, 0.9, 0.5, 0.05, format="percent", key="keys_sparsity")
    granularity = c2.selectbox(
        "Granularity", PRUNE_GRANULARITIES, key="keys_granularity", help=GRANULARITY_HELP
    )
    threshold = c3.selectbox(
        "Threshold",
        THRESHOLDS,
        key="keys_threshold",
        help="global: one ranking over layers; local: per layer",
    )
    try:
        choice = glue.key_choice(run, learned, sparsity, granularity, threshold)
    except REPORTED as exc:
        st.error(str(exc))
        return
    what = f"layer {layer}" + (f" head {head}" if head is not None else ", summed over heads")
    figure = figures.key_prior_maps(
        glue.prior_image(learned, table, layer, head),
        glue.kept_image(learned, choice, layer, head),
        sparsity=sparsity,
        title=f"Key priors of {what}",
    )
    st.plotly_chart(figure, key="keys_maps")
    dataset = dataset_or_report()
    if dataset is None or dataset.multilabel:
        if dataset is not None:
            st.info("Key priors are learned and evaluated on single-label data.")
        return
    split = eval_split()
    if st.button("Evaluate original, learned priors and key-pruned", key="keys_evaluate"):
        dense = dense_evaluation(source, dataset, split)
        if dense is None:
            return
        try:
            glue.key_result(source, run, dataset, split, dense, sparsity, granularity, threshold)
        except REPORTED as exc:
            st.error(f"Could not evaluate: {exc}")
            return
    result = glue.stored_result(source, run, split, sparsity, granularity, threshold)
    if result is not None:
        st.dataframe(result.table, hide_index=True, key="keys_table")
        st.markdown(f"- {result.priors_comparison.describe()}\n- {result.comparison.describe()}")


def render() -> None:
    source = model_source()
    loaded = load_or_report(source)
    if loaded is None:
        return
    with st.expander("Learn priors (runs in the background)", expanded=not glue.finished_runs()):
        st.caption(
            "Gradient descent on the task loss over the training split, the model's own weights "
            "frozen; only the priors learn. The best checkpoint on the validation split is kept."
        )
        _start_form()
    _runs()
    _priors(source, loaded)


render()
