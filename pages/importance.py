"""Head importance: a layers x heads map for one scorer and matrix; click a head for its channels."""

import streamlit as st

from prunekit.data import audio
from prunekit.evaluation import attention, windows
from prunekit.heads import scoring
from prunekit.models import anatomy
from prunekit.report import figures
from prunekit.ui import (
    clip_attention_maps,
    current_variants,
    dataset_or_report,
    load_or_report,
    model_source,
    scores_or_report,
    with_model,
)

st.title("Head importance")
st.caption("How much each attention head, and each of its channels, matters to the model.")


def _attends_to(source, loaded, layer: int, head: int) -> None:
    """The chosen head's CLS attention on one validation clip, original and (if any) pruned."""
    st.subheader(f"What layer {layer} head {head} attends to")
    st.caption("On one clip: the attention this head's summary token (CLS) pays to each patch of the "
               "spectrogram, brighter = more. It shows what the head gathers for the classifier, and why "
               "a scorer may rate it high or low.")
    dataset = dataset_or_report()
    if dataset is None:
        return
    clips = dataset.split("validation")[:300]
    names = [f"{c.label} #{i + 1}" for i, c in enumerate(clips)]
    pick = st.selectbox("Clip (validation split)", names, key="imp_attention_clip")
    clip = clips[names.index(pick)]
    wave = audio.load_waveform(clip.path)
    st.audio(str(clip.path))
    grid = anatomy.patch_grid(loaded.model)
    frames, mels = anatomy.input_shape(loaded.model)
    maps = {}
    weights = clip_attention_maps(f"{source}:original", loaded.model, loaded.feature_extractor, wave)
    if weights is None:
        return
    maps["original"] = attention.paint(attention.cls_map(weights, grid, layer, head), grid, frames, mels)
    variant = next(iter(current_variants(source)), None)
    variant = with_model(variant) if variant is not None else None  # an older one's model may be on disk
    if variant is not None:
        kept = variant.plan.layers[layer].heads
        if head in kept:
            pruned = clip_attention_maps(f"{source}:{variant.name}", variant.model, loaded.feature_extractor, wave)
            if pruned is not None:
                values = attention.cls_map(pruned, grid, layer, kept.index(head))  # the head's index after pruning
                maps[f"pruned ({variant.name})"] = attention.paint(values, grid, frames, mels)
        else:
            st.caption(f"The latest pruned variant ({variant.name}) removed this head.")
    st.plotly_chart(figures.spectrogram(windows.log_mel(wave, loaded.feature_extractor)), key="imp_attention_spec")
    st.plotly_chart(figures.attention_maps(maps, title=f"CLS attention of layer {layer} head {head}"),
                    key="imp_attention_map")


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
    if st.toggle("Show what this head attends to on a clip", key="imp_attention"):
        _attends_to(source, load_or_report(source), layer, head)
    # A callable: the CSV is written when the button is pressed, not on every rerun.
    st.download_button("Download the score table (CSV)", lambda: table.frame.to_csv(index=False).encode(),
                       file_name=f"{scorer}-scores.csv", mime="text/csv", key="imp_download")


render()
