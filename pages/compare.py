"""Compare scorers: rank-normalised maps side by side, what each would remove, and agreement."""

import streamlit as st

from prunekit.heads import agreement, planner, scoring
from prunekit.report import figures
from prunekit.ui import load_or_report, model_source, scores_or_report, sparsity_slider

st.title("Compare scorers")
st.caption("Two scorers on the same model: where they agree, and what each would prune.")


def _pickers():
    left, right, view_col = st.columns(3)
    names = scoring.scorer_names()
    a = left.selectbox("Scorer A", names, index=names.index("magnitude"), key="cmp_a")
    b = right.selectbox("Scorer B", names, index=names.index("fisher"), key="cmp_b")
    view = view_col.selectbox("Matrix", list(figures.VIEWS), key="cmp_view")
    return a, b, view


def _removal(a_scores, b_scores, labels) -> None:
    st.subheader("What each would remove")
    c1, c2, c3, c4 = st.columns(4)
    pattern = c1.selectbox("Pattern", planner.PATTERNS, index=planner.PATTERNS.index("per-head"), key="cmp_pattern")
    threshold = c2.selectbox("Threshold", planner.THRESHOLDS, key="cmp_threshold")
    budget = c3.selectbox("Q/K and V/O budgets", planner.BUDGETS, key="cmp_budget",
                          disabled=not planner.budget_applies(pattern, threshold),
                          help="global per-head and same-channel only: separate (the paper's) or one joint budget")
    sparsity = sparsity_slider(a_scores, pattern, threshold, key="cmp_sparsity", container=c4, budget=budget)
    if sparsity is None:
        return
    plans = {name: planner.make_plan(scores, pattern, threshold, sparsity, budget=budget)
             for name, scores in zip(labels, (a_scores, b_scores))}
    st.plotly_chart(figures.removal_maps(plans), key="cmp_removal")
    first, second = plans.values()
    st.write(f"Both reach {first.attention_sparsity():.1%} attention sparsity. Of the channels either removes, "
             f"**{agreement.plan_overlap(first, second):.0%}** are removed by both.")


def render() -> None:
    source = model_source()
    if load_or_report(source) is None:
        return
    a, b, view = _pickers()
    a_scores = scores_or_report(source, a)
    b_scores = scores_or_report(source, b)
    if a_scores is None or b_scores is None:
        return
    labels = (f"A: {a}", f"B: {b}") if a == b else (a, b)
    st.caption("Colours are percentile ranks within each kind of unit (1 = most important), so the two "
               "scorers share one scale.")
    cols = st.columns(2)
    for col, name, scores in zip(cols, labels, (a_scores, b_scores)):
        col.plotly_chart(figures.head_map(agreement.rank_normalise(scores), view, zrange=(0, 1),
                                      title=f"{view}: {name} (rank)"), key=f"cmp_map_{name}")
    group, matrix = figures.VIEWS[view]
    st.subheader("Rank agreement per layer")
    per_layer = agreement.rank_agreement(a_scores, b_scores, group, matrix)
    overall = per_layer.iloc[-1]
    st.write(f"Over all heads: Spearman **{overall['spearman']:.2f}**, Kendall **{overall['kendall']:.2f}** "
             "(1: same order, 0: unrelated, -1: reversed).")
    st.caption("The overall figure ranks every head of every layer together, so it also compares the "
               "layers: one scorer may find all of layer 0 important and the other layer 5. It can be near "
               "zero or negative while most layers, each ranked on its own, agree.")
    st.plotly_chart(figures.agreement_bars(per_layer.iloc[:-1]), key="cmp_agreement")
    st.subheader("Heads they disagree on most")
    gaps = agreement.disagreements(a_scores, b_scores, group, matrix, top=8)
    st.dataframe(gaps.rename(columns={"rank_a": f"rank by {labels[0]}", "rank_b": f"rank by {labels[1]}",
                                      "gap": "gap (A - B)"}), hide_index=True, key="cmp_gaps")
    _removal(a_scores, b_scores, labels)


render()
