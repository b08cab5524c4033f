"""Overview: what the model is, and what prunekit will let you do with it."""

import streamlit as st

from prunekit.ui import load_or_report, model_facts, model_source

st.title("prunekit")
st.caption("See and cut the attention of audio transformers.")


def render() -> None:
    source = model_source()
    if load_or_report(source) is None:
        return
    facts = model_facts(source)
    st.subheader(f"Model: {source}")
    cols = st.columns(4)
    cols[0].metric("Layers", facts["layers"])
    cols[1].metric("Heads per layer", max(facts["heads"]) if facts["heads"] else 0)
    cols[2].metric("Parameters", f"{facts['parameters'] / 1e6:.2f} M")
    cols[3].metric("Attention share", f"{facts['attention_share']:.0%}")
    st.write(f"Input: {facts['input']}; {facts['classes']} classes; hidden size {facts['hidden_size']}.")
    st.markdown(
        "**Head importance** shows how much each head and channel matters, by one of six scorers "
        "(magnitude, Fisher and its per-clip and gate variants, Taylor, random), with W_q, W_k, W_v "
        "and W_o apart; click a head to see its channels."
    )
    st.info("Scorer comparison, interactive pruning and listening pages are on their way; "
            "`python -m prunekit prune` already prunes from the command line.")


render()
