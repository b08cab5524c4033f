"""prunekit: see and cut the attention of audio transformers.

Importing the package does no work and needs no Streamlit; import the submodules you use
(``prunekit.audio``, ``prunekit.datasets``, ``prunekit.models``, ``prunekit.evaluate``).
"""

__version__ = "0.1.0"
