"""Prune: choose how, preview the plan, apply it to a copy and compare with the original."""

import html

import pandas as pd
import streamlit as st

from prunekit.errors import PrunekitError
from prunekit.evaluation import changes
from prunekit.evaluation.cost import batches_to_time, ratio_from, timed_batches
from prunekit.heads import pipeline, planner, scoring
from prunekit.heads.cost import plan_cost
from prunekit.report import figures, handover
from prunekit.ui import (
    REPORTED,
    bar,
    current_variants,
    dataset_or_report,
    dense_evaluation,
    dense_macs,
    eval_split,
    forget,
    history,
    load_or_report,
    max_variants,
    model_facts,
    model_source,
    remember,
    scores_or_report,
    served,
    sparsity_slider,
    with_model,
)

st.title("Prune")
st.caption(
    "Pick a pattern, a threshold and a sparsity; nothing changes until you press Apply, "
    "and the original model is never touched."
)

PATTERN_HELP = (
    "entire-head removes whole heads; per-head removes channels inside each head (QK and VO "
    "separately); same-channel removes the same channel index from every head of a layer"
)
THRESHOLD_HELP = "global ranks all layers together; local removes the same share from every layer"
BUDGET_HELP = (
    "global per-head and same-channel only: separate gives the Q/K and the V/O channels each the "
    "target share of their own weights (the paper's method); joint ranks both in one budget"
)


def _forced() -> tuple[set, set]:
    keep = st.session_state.setdefault("prune_keep", set())
    remove = st.session_state.setdefault("prune_remove", set())
    return keep, remove


def _controls(model):
    c1, c2, c3, c4 = st.columns(4)
    names = scoring.scorer_names()
    scorer = c1.selectbox("Scorer", names, index=names.index("fisher"), key="prune_scorer")
    pattern = c2.selectbox(
        "Pattern",
        planner.PATTERNS,
        index=planner.PATTERNS.index("per-head"),
        key="prune_pattern",
        help=PATTERN_HELP,
    )
    threshold = c3.selectbox("Threshold", planner.THRESHOLDS, key="prune_threshold", help=THRESHOLD_HELP)
    budget = c4.selectbox(
        "Q/K and V/O budgets",
        planner.BUDGETS,
        key="prune_budget",
        help=BUDGET_HELP,
        disabled=not planner.budget_applies(pattern, threshold),
    )
    keep, remove = _forced()
    sparsity = sparsity_slider(
        model,
        pattern,
        threshold,
        key="prune_sparsity",
        budget=budget,
        force_keep=keep if pattern == "entire-head" else (),
        force_remove=remove,
    )
    return scorer, pattern, threshold, budget, sparsity


def _apply_click(event, pattern: str) -> None:
    """A click on the plan map forces that head kept or removed (or clears it), once per click."""
    picked = figures.picked_head(event)
    if picked is None or picked == st.session_state.get("prune_last_pick"):
        return
    st.session_state["prune_last_pick"] = picked
    keep, remove = _forced()
    action = st.session_state.get("prune_click", "remove")
    keep.discard(picked)
    remove.discard(picked)
    if action == "keep" and pattern != "entire-head":
        # Shown after the rerun: under a channel pattern every head of a layer loses the same
        # number of channels, so no single head can be kept whole.
        st.session_state["prune_notice"] = (
            f"Layer {picked[0]} head {picked[1]} was not pinned: 'keep' works with the entire-head pattern "
            f"only; under {pattern} every head of a layer loses the same number of channels."
        )
    elif action == "keep":
        keep.add(picked)
    elif action == "remove":
        remove.add(picked)
    st.rerun()


def _plan_or_explain(scores, pattern, threshold, budget, sparsity):
    """The plan, or None after saying why it cannot be made (the slider never passes the
    reachable maximum, so what is left is a conflict among the forced heads)."""
    keep, remove = _forced()
    keep_now = keep if pattern == "entire-head" else set()
    try:
        return planner.make_plan(
            scores, pattern, threshold, sparsity, force_keep=keep_now, force_remove=remove, budget=budget
        )
    except PrunekitError as exc:
        st.warning(f"This plan cannot be made: {exc}. Change the pattern, the threshold or the forced heads.")
        return None


def _preview(plan, source, loaded) -> None:
    dense = {"parameters": model_facts(source)["parameters"], "macs_per_clip": dense_macs(source)}
    cost = plan_cost(plan, loaded.model, dense["macs_per_clip"])
    summary = plan.summary()
    cols = st.columns(4)
    cols[0].metric(
        "Attention sparsity reached",
        f"{cost['attention_sparsity']:.1%}",
        help="the closest the pattern's granularity allows to the slider",
    )
    cols[1].metric("Heads left", f"{int(summary['heads_left'].sum())} / {int(summary['heads'].sum())}")
    cols[2].metric(
        "Parameters",
        f"{cost['parameters'] / 1e6:.2f} M",
        f"{cost['parameters'] / dense['parameters'] - 1:+.1%}",
        delta_color="inverse",
    )
    cols[3].metric(
        "MACs per clip",
        f"{cost['macs_per_clip'] / 1e6:.0f} M",
        f"{cost['macs_per_clip'] / dense['macs_per_clip'] - 1:+.1%}",
        delta_color="inverse",
    )
    with st.expander("Per-layer plan"):
        st.dataframe(summary, hide_index=True)


def _results(variant, dense) -> None:
    st.subheader(f"Result: {variant.name}")
    st.success(handover.plain_words(dense, variant.evaluation, variant.cost))
    if variant.comparison is not None:
        st.write(f"Clip by clip against the original: {variant.comparison.describe()}.")
    cost = variant.cost
    cols = st.columns(4)
    if dense.multilabel:
        cols[0].metric("Pruned mAP", f"{variant.headline:.3f}", f"{variant.headline - dense.headline:+.3f}")
        cols[1].metric("Original mAP", f"{dense.headline:.3f}")
    else:
        cols[0].metric(
            "Pruned accuracy",
            f"{variant.accuracy:.1%}",
            f"{100 * (variant.accuracy - dense.accuracy):+.1f} points",
        )
        cols[1].metric("Original accuracy", f"{dense.accuracy:.1%}")
    cols[2].metric(
        "Parameters",
        f"{cost.loc['pruned', 'parameters'] / 1e6:.2f} M",
        f"{cost.loc['pruned', 'parameters'] / cost.loc['dense', 'parameters'] - 1:+.1%}",
        delta_color="inverse",
    )
    cols[3].metric(
        "MACs per clip",
        f"{cost.loc['pruned', 'macs_per_clip'] / 1e6:.0f} M",
        f"{cost.loc['pruned', 'macs_per_clip'] / cost.loc['dense', 'macs_per_clip'] - 1:+.1%}",
        delta_color="inverse",
    )
    cols = st.columns(4)
    timed = timed_batches(cost)
    if timed == [1]:
        st.caption(
            "Latency at batch 1 only: a batch of 32 takes seconds per pass for a model this size on "
            "a CPU. `python -m prunekit prune ... --repeats N` times both."
        )
    for col, b in zip(cols, timed):
        col.metric(
            f"Latency, batch {b}",
            f"{cost.loc['pruned', f'latency_b{b}_ms']:.1f} ms",
            f"{cost.loc['pruned', f'latency_b{b}_ms'] / cost.loc['dense', f'latency_b{b}_ms'] - 1:+.1%}",
            delta_color="inverse",
            help=f"original: {cost.loc['dense', f'latency_b{b}_ms']:.1f} ms (medians, "
            "timed interleaved with the pruned model); " + ratio_from(cost.loc["pruned"], b).describe(),
        )
    if dense.multilabel:  # no confusion matrix for tags: the change of each class's AP instead
        st.markdown("**Average precision change per class** (pruned minus original)")
        st.plotly_chart(
            figures.class_change_bars(changes.class_ap_changes(dense, variant.evaluation), "AP"),
            key="prune_classes",
        )
        return
    st.markdown("**Accuracy change per class** (pruned minus original)")
    st.plotly_chart(
        figures.class_change_bars(changes.class_changes(dense, variant.evaluation)), key="prune_classes"
    )
    with st.expander("Confusion matrices"):
        left, right = st.columns(2)
        left.plotly_chart(figures.confusion_map(dense.confusion, "Original"), key="prune_conf_dense")
        right.plotly_chart(
            figures.confusion_map(variant.evaluation.confusion, "Pruned"), key="prune_conf_pruned"
        )


def _history_table(source, dataset, done) -> pd.DataFrame:
    """One row per variant, the original first: what the chart plots and the CSV holds."""
    cost = done[0].cost.loc["dense"]
    original = dense_evaluation(source, dataset, done[0].split)
    # Accuracy in % and its change in points, or (multi-label data) mAP and its change
    name, scale, change_name = (
        ("mAP", 1, "Change vs original (mAP)")
        if original.multilabel
        else ("Accuracy (%)", 100, "Change vs original (points)")
    )
    rows = [
        {
            "Variant": "original",
            "Split": done[0].split,
            "Attention removed (%)": 0.0,
            name: scale * original.headline,
            change_name: 0.0,
            "Parameters (M)": cost["parameters"] / 1e6,
            "MACs per clip (M)": cost["macs_per_clip"] / 1e6,
            "Latency b1 (ms)": cost["latency_b1_ms"],
            "Speed (batch 32)": "-",
        }
    ]
    for v in done:
        pruned = v.cost.loc["pruned"]
        change = scale * (v.headline - dense_evaluation(source, dataset, v.split).headline)
        rows.append(
            {
                "Variant": v.name,
                "Split": v.split,
                "Attention removed (%)": 100 * v.plan.attention_sparsity(),
                name: scale * v.headline,
                change_name: change,
                "Parameters (M)": pruned["parameters"] / 1e6,
                "MACs per clip (M)": pruned["macs_per_clip"] / 1e6,
                "Latency b1 (ms)": pruned["latency_b1_ms"],
                "Speed (batch 32)": ratio_from(pruned, 32).describe()
                if 32 in timed_batches(pruned)
                else "not timed",
            }
        )
    return pd.DataFrame(rows)


def _history(source, dataset, loaded) -> None:
    done = current_variants(source)
    if not done:
        return
    st.subheader("This session's variants")
    table = _history_table(source, dataset, done)
    axis = st.radio(
        ("mAP" if "mAP" in table else "Accuracy") + " against",
        ["MACs per clip (M)", "Latency b1 (ms)"],
        horizontal=True,
        key="prune_history_axis",
        help="MACs: compute per clip; latency: median time for one clip",
    )
    st.plotly_chart(figures.variants_chart(table, axis), key="prune_history_chart")
    event = st.dataframe(
        table,
        hide_index=True,
        key="prune_history",
        on_select="rerun",
        selection_mode="multi-row",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f" if "mAP" in c else "%.1f")
            for c in table.columns
            if "(%)" in c or "points" in c or "mAP" in c
        },
    )
    chosen_rows = [r for r in event.selection.rows if r > 0]  # row 0 is the original: never deleted
    c1, c2 = st.columns(2)
    if c1.button(f"Delete the {len(chosen_rows)} selected", key="prune_delete", disabled=not chosen_rows):
        forget([done[r - 1] for r in chosen_rows])
        st.rerun()
    c2.download_button(
        "Download this table (CSV)",
        table.to_csv(index=False).encode(),
        file_name="variants.csv",
        mime="text/csv",
        key="prune_history_csv",
    )
    if len(history()) > max_variants():
        st.caption(
            f"The {max_variants()} variants of this session used last are kept in memory; the others "
            "are on disk under cache/sessions/ until the session ends, and are read back when you "
            "download, inspect or listen to them."
        )
    names = [f"{i}: {v.name}" for i, v in enumerate(done)]
    pick = st.selectbox("Download a variant", names, key="prune_download_pick")
    chosen = done[names.index(pick)]
    stem = chosen.name.replace(" ", "-").replace("%", "")
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download as a zip (save_pretrained folder + plan.json)",
        lambda: pipeline.variant_zip(
            with_model(chosen),
            loaded.feature_extractor,
            loaded.labels,
            origin=None if served.serving() else source,  # a server's paths stay on the server
        ),
        file_name=f"{stem}.zip",
        mime="application/zip",
        key="prune_download",
    )
    # Built in the script run (a download callback runs outside it, without the session), then
    # offered for download; the session keeps the last one only.
    if c2.button(
        "Make a report to hand over (HTML)",
        key="prune_report_make",
        help="One page for people who are not ML engineers: the result in words, accuracy with its "
        "interval, size, speed, what was removed, per-class changes and six clips to play. It "
        "opens offline in any browser.",
    ):
        with st.spinner("Making the report (six clips through both models)…"):
            st.session_state["_prunekit_report"] = (chosen.name, _report(source, dataset, loaded, chosen))
    made = st.session_state.get("_prunekit_report")
    if made is not None and made[0] == chosen.name:
        c2.download_button(
            "Download the report (HTML)",
            made[1],
            file_name=f"{stem}-report.html",
            mime="text/html",
            key="prune_report",
        )


def _report(source, dataset, loaded, chosen) -> bytes:
    """The hand-over report of ``chosen`` (built when the button is pressed). A failure becomes
    a page that says so: a download callback has no page to show a message on."""
    show = served.redact if served.serving() else str
    try:
        text = handover.build_report(
            loaded,
            with_model(chosen).model,
            dataset,
            chosen.split,
            original_name=show(source),
            pruned_name=chosen.name,
            data_name=show(dataset.name),
            dense=dense_evaluation(source, dataset, chosen.split),
            evaluation=chosen.evaluation,
            cost=chosen.cost,
        )
    except REPORTED as exc:
        message = html.escape(show(str(exc)))
        text = f"<!doctype html><meta charset='utf-8'><p>Could not make the report: {message}</p>"
    return text.encode()


def render() -> None:
    source = model_source()
    loaded = load_or_report(source)
    if loaded is None:
        return
    scorer, pattern, threshold, budget, sparsity = _controls(loaded.model)
    scores = scores_or_report(source, scorer)
    if scores is None or sparsity is None:
        return
    st.radio(
        "Clicking a head on the map",
        ["remove", "keep", "clear"],
        horizontal=True,
        key="prune_click",
        help="force a head out of (or into) the plan; keep works with the entire-head pattern",
    )
    notice = st.session_state.pop("prune_notice", None)
    if notice:
        st.info(notice)
    keep, remove = _forced()
    if keep or remove:
        st.caption(f"Forced: keep {sorted(keep) or '-'}, remove {sorted(remove) or '-'}")
        if st.button("Clear forced heads", key="prune_clear"):
            keep.clear()
            remove.clear()
            st.rerun()
    plan = _plan_or_explain(scores, pattern, threshold, budget, sparsity)
    if plan is None:
        return
    marks = dict.fromkeys(keep, "K") | dict.fromkeys(remove, "R")
    event = st.plotly_chart(
        figures.plan_map(plan, marks), on_select="rerun", selection_mode="points", key="prune_map"
    )
    _apply_click(event, pattern)
    _preview(plan, source, loaded)
    dataset = dataset_or_report()
    if dataset is None:
        return
    split = eval_split()
    dense = dense_evaluation(source, dataset, split)
    if dense is None:
        return
    if st.button(
        "Apply",
        type="primary",
        key="prune_apply",
        help=f"physically prune a copy of the model and evaluate it on the {split} split",
    ):
        widget, progress = bar(f"Pruning and evaluating on the {split} split:")
        try:
            remember(
                pipeline.prune_and_evaluate(
                    loaded.model,
                    loaded.feature_extractor,
                    loaded.labels,
                    plan,
                    dataset,
                    split,
                    dense=dense,
                    batches=batches_to_time(dense_macs(source), next(loaded.model.parameters()).device),
                    progress=progress,
                ),
                source,
            )
        except REPORTED as exc:
            st.error(f"Could not apply the plan: {exc}")
        finally:
            widget.empty()
    done = current_variants(source)
    if done:
        _results(done[0], dense_evaluation(source, dataset, done[0].split))
    _history(source, dataset, loaded)


render()
