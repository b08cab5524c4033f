"""Model families and how to load them.

``anatomy`` is the one place that knows a model's internals (the attention blocks, their
projections, head counts and dims, the pruned block and how its structure is stored in the
config); ``loading`` reads "demo", "demo-tagging", a hub id or a local folder.
"""

from prunekit.models.loading import DEMO_DIR, DEMO_TAGGING_DIR, LoadedModel, load_model

__all__ = ["DEMO_DIR", "DEMO_TAGGING_DIR", "LoadedModel", "load_model"]
