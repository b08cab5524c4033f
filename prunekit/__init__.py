"""prunekit: see and cut the attention of audio transformers.

Importing the package does no work and needs no Streamlit; import the submodules you use, e.g.
``prunekit.models`` (``load_model``), ``prunekit.data.datasets`` (``open_dataset``),
``prunekit.heads.scoring``, ``prunekit.heads.planner``, ``prunekit.heads.surgery`` and
``prunekit.evaluation.metrics`` (the README's "Scoring and pruning (library)" shows them together).
"""

__version__ = "0.1.0"
