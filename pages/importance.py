"""Head importance: a layers x heads map for one scorer and matrix; click a head for its channels."""

import streamlit as st

from prunekit.heads import scoring
from prunekit.report import figures
from prunekit.ui import load_or_report, model_source, scores_or_report

st.title("Head importance")
st.caption("How much each attention head, and each of its channels, matters to the model.")


def render() -> None:
    source = model_source()
    if load_or_report(source) is None:
        return
    left, right = st.columns(2)
    names = scoring.scorer_names()
    scorer = left.selectbox("Scorer", names, index=names.index("magnitude"), key="imp_scorer",
                            help="magnitude needs no data; fisher is the paper's method (reads validation clips)")
    view = right.selectbox("Matrix", list(figures.VIEWS), key="imp_view",
                           help="W_q, W_k, W_v, W_o: the query, key, value and output weights of a head, "
                                "scored apart. QK pair: a row of W_q with the same row of W_k (they are cut "
                                "together, since q.k sums over them). VO pair: a row of W_v with the column of "
                                "W_o it feeds. Whole head: all four.")
    table = scores_or_report(source, scorer)
    if table is None:
        return
    scale = st.radio("Colour scale", list(figures.SCALES), horizontal=True, key="imp_scale",
                     help="; ".join(f"{name}: {what}" for name, what in figures.SCALES.items()))
    event = st.plotly_chart(figures.head_map(table, view, scale=scale), on_select="rerun", selection_mode="points",
                            key="imp_map")
    grid = figures.head_grid(table, "head", "pair")
    layers = list(grid.index)
    picked = figures.picked_head(event)
    # A selection stays in the chart's state on later reruns: apply it once, when it changes,
    # so the layer and head boxes below still work after a click.
    if picked is not None and picked != st.session_state.get("imp_last_pick"):
        st.session_state["imp_last_pick"] = picked
        st.session_state["imp_layer"], st.session_state["imp_head"] = picked
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key="imp_layer")
    heads = [int(h) for h in grid.loc[layer].dropna().index]
    if st.session_state.get("imp_head") not in heads:
        st.session_state["imp_head"] = heads[0]
    head = c2.selectbox("Head", heads, key="imp_head")
    st.plotly_chart(figures.channel_bars(table, layer, head), key="imp_channels")
    # A callable: the CSV is written when the button is pressed, not on every rerun.
    st.download_button("Download the score table (CSV)", lambda: table.frame.to_csv(index=False).encode(),
                       file_name=f"{scorer}-scores.csv", mime="text/csv", key="imp_download")


render()
