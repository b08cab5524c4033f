"""Experiments: start an iterative-pruning sweep in the background and read its results."""

import re
from pathlib import Path

import streamlit as st

from prunekit.heads import planner, scoring
from prunekit.recovery import iterative, sweep
from prunekit.report import figures
from prunekit.store import cache_dir
from prunekit.ui import REPORTED, data_source, device_choice, model_source, served

st.title("Experiments")
st.caption(
    "Iterative pruning with LoRA recovery over scorers x patterns x thresholds. A sweep runs in its "
    "own process: leave this page, come back, and it is still going."
)

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "docs" / "sweep-demo"  # the demo grid whose results the README quotes
# The tagging demo's grid: five sweeps merged into one results.csv (its sweeps.json holds their settings).
COMMITTED_TAGGING = REPO / "docs" / "tagging-grid"
GEOMETRIC = "10 % of what remains per step"
TO_TARGET = "Equal steps to a final sparsity"


def _folders() -> dict[str, Path]:
    """The committed grids first (each has a results.csv), then the sweeps under cache/sweeps."""
    committed = {
        "docs/sweep-demo (committed demo grid)": COMMITTED,
        "docs/tagging-grid (committed tagging-demo grid, mAP)": COMMITTED_TAGGING,
    }
    return {
        **{name: p for name, p in committed.items() if (p / sweep.RESULTS_FILE).is_file()},
        **{p.name: p for p in sweep.find_sweeps(cache_dir() / "sweeps")},
    }


def _progress(folder: Path) -> None:
    status = sweep.sweep_status(folder)
    state = status["state"]
    if state == "running":
        _live(folder)
    elif state == "finished":
        st.success(f"Finished: {status['configs_total']} configurations, {status['steps_total']} steps.")
    elif state != "absent":
        st.warning(
            f"The sweep {state} after {status['steps_done']} of {status['steps_total']} steps"
            + (
                f" ({served.redact(status['error']) if served.serving() else status['error']})"
                if status.get("error")
                else ""
            )
            + ". Start it again with the same settings to continue from its last finished step."
        )


@st.fragment(run_every=3)
def _live(folder: Path) -> None:
    """A running sweep's progress, polled every 3 s without rerunning the rest of the page."""
    status = sweep.sweep_status(folder)
    if status["state"] != "running":
        st.rerun()  # finished or stopped: redraw the whole page once, with its results
    stage = status["stage"]
    if status["stage_total"]:
        stage += f" {status['stage_done']} / {status['stage_total']}"
    eta = status.get("eta_seconds")
    left = f"; about {_duration(eta)} left" if eta is not None else "; estimating the time left"
    where = f"{status['current']} step {status['step']}: {stage}" if status["current"] else stage
    st.progress(
        status["fraction"],
        text=f"Running: {status['steps_done']} of {status['steps_total']} steps{left}. Now: {where}",
    )
    if st.button("Stop the sweep", key=f"exp_stop_{folder.name}"):
        sweep.stop_sweep(folder)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute"
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _results(folder: Path) -> None:
    results, structure = sweep.read_results(folder)
    if results.empty:
        st.info("No finished step yet.")
        return
    st.plotly_chart(figures.sweep_curves(results), key="exp_curves")
    multilabel = iterative.quality_column(results).startswith("map")  # a sweep on tagging data: mAP
    st.markdown(
        f"**{'mAP' if multilabel else 'Accuracy (%)'} after recovery at each attention sparsity** "
        '(linear interpolation between steps; mean over seeds, and "sd" its standard deviation '
        "where there are several)"
    )
    table = sweep.interpolated_table(results, spread=True).round(4 if multilabel else 2)
    spreads = [c for c in table.columns if c.endswith(" sd")]  # over seeds; NaN with one seed
    # the dense model is one model (no spread); a one-seed sweep has none anywhere
    table = table.drop(columns=[c for c in spreads if c == "dense sd" or table[c].isna().all()])
    points = [c for c in table.columns if c.endswith("%")]  # a sparsity no step reached is NaN
    table[points] = table[points].astype(object).where(table[points].notna(), "not reached")
    table.insert(
        0,
        "configuration",
        [figures.config_name(*r) for r in table[["scorer", "pattern", "threshold"]].values],
    )
    table = table.drop(columns=["scorer", "pattern", "threshold"]).rename(columns={"dense": "original"})
    st.dataframe(table, hide_index=True, key="exp_table")
    if not structure.empty:
        st.markdown("**What each scorer removed, layer by layer**")
        c1, c2, c3 = st.columns(3)
        pattern = c1.selectbox("Pattern", list(structure["pattern"].unique()), key="exp_pattern")
        threshold = c2.selectbox("Threshold", list(structure["threshold"].unique()), key="exp_threshold")
        chosen = structure[(structure["pattern"] == pattern) & (structure["threshold"] == threshold)]
        steps = [int(k) for k in sorted(chosen["step"].unique())]
        if st.session_state.get("exp_step") not in steps:
            st.session_state["exp_step"] = steps[-1]
        step = c3.select_slider("Step", steps, key="exp_step")
        st.plotly_chart(figures.sweep_structure_maps(chosen, step), key="exp_structure")
    with st.expander("Every step"):
        st.dataframe(results, hide_index=True)
    st.download_button(
        "Download results.csv",
        lambda: results.to_csv(index=False).encode(),
        file_name="results.csv",
        mime="text/csv",
        key="exp_download",
    )


def _start_form() -> None:
    with st.form("exp_start"):
        name = st.text_input(
            "Name",
            value="my-sweep",
            key="exp_name",
            help="letters, digits, - and _; results go to cache/sweeps/NAME",
        )
        c1, c2, c3 = st.columns(3)
        scorers = c1.multiselect(
            "Scorers", scoring.scorer_names(), default=["fisher", "magnitude"], key="exp_scorers"
        )
        patterns = c2.multiselect(
            "Patterns", planner.PATTERNS, default=["per-head", "entire-head"], key="exp_patterns"
        )
        thresholds = c3.multiselect(
            "Thresholds", planner.THRESHOLDS, default=["global", "local"], key="exp_thresholds"
        )
        c1, c2 = st.columns(2)
        schedule = c1.radio(
            "Schedule",
            [GEOMETRIC, TO_TARGET],
            key="exp_schedule",
            help="The paper's schedule removes 10 % of what remains at each step (10, 19, 27, 34, ... % "
            "after 1, 2, 3, 4 steps); the other takes equal steps up to the final sparsity you choose.",
        )
        target = c2.slider(
            "Final attention sparsity (for equal steps)",
            0.05,
            0.95,
            0.5,
            0.05,
            format="percent",
            key="exp_target",
            help="Used only with equal steps: the sparsity the last step prunes to.",
        )
        c1, c2, c3 = st.columns(3)
        steps = c1.number_input("Steps", 1, 30, 10, key="exp_steps")
        clips = c2.number_input("Training clips per recovery", 32, 100_000, 3000, step=500, key="exp_clips")
        epochs = c3.number_input("Recovery epochs per step", 1, 20, 1, key="exp_epochs")
        submitted = st.form_submit_button("Start the sweep", type="primary")
    if not submitted:
        return
    if not re.fullmatch(r"[\w-]{1,64}", name):
        st.error("The name may hold only letters, digits, - and _ (at most 64).")
        return
    if not (scorers and patterns and thresholds):
        st.error("Pick at least one scorer, one pattern and one threshold.")
        return
    try:  # served, the sweep reads only what the model and dataset folders hold
        model, data = (
            served.model_location(model_source() or "demo"),
            served.dataset_location(data_source() or "demo"),
        )
    except REPORTED as exc:
        st.error(f"Could not start the sweep: {exc}")
        return
    args = [
        "--model",
        model,
        "--data",
        data,
        "--scorers",
        *scorers,
        "--patterns",
        *patterns,
        "--thresholds",
        *thresholds,
        "--steps",
        str(steps),
        "--train-clips",
        str(clips),
        "--epochs",
        str(epochs),
        *(["--target", str(target)] if schedule == TO_TARGET else []),
        "--device",
        device_choice(),
    ]
    configs = len(scorers) * len(patterns) * len(thresholds)
    with st.spinner(
        f"Starting {configs} configuration(s) x {steps + 1} steps: a new process loads the model "
        "and the dataset (about 15 s on 2 cores)..."
    ):
        try:
            sweep.start_sweep(cache_dir() / "sweeps" / name, args)
        except REPORTED as exc:
            st.error(f"Could not start the sweep: {exc}")
            return
    st.session_state["exp_folder"] = name
    st.success(
        f"Started. It writes to cache/sweeps/{name}; its log is cache/sweeps/{name}.log. The "
        "Results tab shows its progress and, after its first steps, the time left."
    )


def render() -> None:
    results_tab, start_tab = st.tabs(["Results", "Start a sweep"])
    with start_tab:
        st.caption(
            "Uses the model and the dataset chosen in the sidebar. Running the same name "
            "again with the same settings continues a stopped sweep."
        )
        _start_form()
    with results_tab:
        folders = _folders()
        if not folders:
            st.info(
                "No sweep yet: start one in the next tab, or run `python -m prunekit sweep --out cache/sweeps/NAME`."
            )
            return
        names = list(folders)
        current = st.session_state.get("exp_folder")
        if current not in names:
            st.session_state["exp_folder"] = names[0]
        folder = folders[st.selectbox("Sweep", names, key="exp_folder")]
        _progress(folder)
        _results(folder)


render()
