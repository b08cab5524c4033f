"""Overview: what the model is, how well it does, and what each page is for."""

import streamlit as st

from prunekit.ui import (
    dataset_or_report,
    dense_evaluation,
    dense_macs,
    eval_split,
    load_or_report,
    model_facts,
    model_source,
)

st.title("prunekit")
st.caption("See and cut the attention of audio transformers.")

GUIDE = """
| Page | What it is for |
|---|---|
| **Head importance** | How much each attention head and channel matters, by one of six scorers, with W_q, W_k, W_v and W_o apart. Click a head to see its channels. |
| **Compare scorers** | Two scorers side by side: where they agree, where they disagree, and what each would remove at a chosen sparsity. |
| **Prune** | Choose a pattern, a threshold and a sparsity, see the plan before anything happens, then **Apply**: the weights are physically removed from a copy and the result is evaluated against the original. |
| **Listen** | Play clips, see their spectrogram and what the original and the pruned model hear. Upload or record your own. |
| **Experiments** | Iterative pruning with LoRA recovery over scorers, patterns and thresholds, run in the background; accuracy-vs-sparsity curves and what each step removed. |
"""


def render() -> None:
    source = model_source()
    loaded = load_or_report(source)
    if loaded is None:
        return
    facts = model_facts(source)
    st.subheader(f"Model: {source}" + (" (pruned)" if facts["pruned"] else ""))
    cols = st.columns(5)
    cols[0].metric("Layers", facts["layers"])
    cols[1].metric("Heads per layer", max(facts["heads"]) if facts["heads"] else 0)
    cols[2].metric("Parameters", f"{facts['parameters'] / 1e6:.2f} M")
    cols[3].metric("Attention share", f"{facts['attention_share']:.0%}",
                   help="fraction of the parameters in W_q, W_k, W_v and W_o (the part prunekit cuts)")
    cols[4].metric("MACs per clip", f"{dense_macs(source) / 1e6:.0f} M")
    st.write(f"Input: {facts['input']}; {facts['classes']} classes; hidden size {facts['hidden_size']}; "
             f"head dim {facts['head_dim']}.")
    st.markdown(GUIDE)
    dataset = dataset_or_report()
    if dataset is None:
        return
    split = eval_split()
    result = dense_evaluation(source, dataset, split)
    if result is not None:
        st.metric(f"Accuracy on the {split} split of {dataset.name}", f"{result.accuracy:.1%}",
                  help=f"{len(result.predictions)} clips")


render()
