"""Token pruning: drop the spectrogram patches an AST attends to least, as they pass through it.

``rules`` (settings, token scores, Top-K selection) -> ``topk`` (a token-pruned copy of a model,
the trace of which patches survive) -> ``finetune`` (the shrinking keep-rate schedule);
``patches`` is the patch-importance analysis and ``cli`` the command-line commands. The pruned
forward itself lives with the model internals, in ``prunekit.models.token_pruned``.
"""
