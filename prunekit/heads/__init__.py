"""Head and channel pruning of the attention (decoupled Q/K and V/O structural pruning).

``scoring`` (importance of every unit, one tidy table) -> ``planner`` (a ``plan.PruningPlan``
for a pattern, threshold and sparsity) -> ``surgery`` (a new, physically smaller model).
``cost`` prices a plan without surgery, ``pipeline`` runs plan -> surgery -> evaluation, and
``agreement`` compares two scorers.
"""
