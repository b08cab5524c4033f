"""Learned key priors (FiAK, docs/methods.md section 3): add a prior over the keys of every head,
learn it on the task, and prune the keys it rates lowest, per layer (K and V shrink) or per head.

``priors``: add priors, read them as a tidy table, the untrained baselines' scores;
``learn``: gradient descent on the priors (base frozen, optionally LoRA); ``prune``: choose and
drop keys; ``cost``: attention MACs of a key-pruned model; ``cli``: ``python -m prunekit keys``.
"""
