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
| **Tokens** | Top-K token pruning: drop the spectrogram patches the model attends to least as they pass through; accuracy and compute against the original, and which patches of a clip survive. |
| **Experiments** | Iterative pruning with LoRA recovery over scorers, patterns and thresholds, run in the background; accuracy-vs-sparsity curves and what each step removed. |
"""


GLOSSARY = """
- **Attention head**: one of the parallel "lookups" in a transformer layer; each decides which parts of
  the spectrogram to combine. This model has several heads per layer.
- **W_q, W_k, W_v, W_o**: a head's four weight matrices (query, key, value, output).
- **QK pair / VO pair**: the units prunekit cuts. A QK unit is one row of W_q and the same row of W_k
  (removed together); a VO unit is one row of W_v and the column of W_o it feeds. QK and VO are cut
  independently.
- **Entire-head / per-head / same-channel**: remove whole heads; remove the same number of channels from
  every head of a layer, each head its own weakest; remove the same channel positions from every head.
- **Global / local threshold**: rank all layers together (layers may lose different amounts) or remove
  the same share from every layer.
- **Separate / joint budget**: with a global threshold, the QK and the VO channels each give up the target
  share (the paper's), or one budget is shared by both.
- **Attention sparsity**: the share of the attention weights removed.
- **MACs**: multiply-accumulate operations for one clip, the usual measure of compute.
- **Magnitude / Fisher**: scorers; magnitude looks at the size of the weights, Fisher at how much the loss
  reacts to them on real clips (the paper's method).
- **Percentile rank**: a score's position among the units of its kind, 1 = most important.
- **Spearman / Kendall**: how much two rankings agree: 1 the same order, 0 unrelated, -1 reversed.
- **Original**: the unpruned model; it is never changed.
- **mAP / AP / mAUC** (multi-label data, where a clip carries several tags): a class's average precision
  says how well the model ranks the clips that carry the tag above those that do not (1 = perfectly);
  mAP is its mean over the classes, the headline for tagging; mAUC the mean ROC AUC.
- **95 % CI**: the range the true value lies in with 95 % confidence, from resampling the clips (accuracy)
  or the timing rounds (speed).
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
    cols[3].metric(
        "Attention share",
        f"{facts['attention_share']:.0%}",
        help="fraction of the parameters in W_q, W_k, W_v and W_o (the part prunekit cuts)",
    )
    cols[4].metric("MACs per clip", f"{dense_macs(source) / 1e6:.0f} M")
    st.write(
        f"Input: {facts['input']}; {facts['classes']} classes; hidden size {facts['hidden_size']}; "
        f"head dim {facts['head_dim']}."
    )
    st.markdown(GUIDE)
    with st.expander("Words used in this app"):
        st.markdown(GLOSSARY)
    dataset = dataset_or_report()
    if dataset is None:
        return
    split = eval_split()
    result = dense_evaluation(source, dataset, split)
    if result is not None and result.multilabel:  # tagging: mAP is the headline (the paper's AudioSet table)
        cols = st.columns(2)
        cols[0].metric(
            f"mAP on the {split} split of {dataset.name}",
            f"{result.headline:.3f}",
            help=f"mean over classes of the average precision; {len(result.predictions)} clips, "
            f"{int(result.per_class['ap'].notna().sum())} classes with a positive clip",
        )
        cols[1].metric(
            "mAUC", f"{result.summary['mAUC'].iloc[0]:.3f}", help="mean over classes of the ROC AUC"
        )
        with st.expander("Average precision per class"):
            st.dataframe(result.per_class.sort_values("ap"), hide_index=True, key="overview_ap")
    elif result is not None:
        st.metric(
            f"Accuracy on the {split} split of {dataset.name}",
            f"{result.accuracy:.1%}",
            help=f"{len(result.predictions)} clips",
        )


render()
