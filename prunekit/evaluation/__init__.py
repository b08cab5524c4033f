"""Measuring a model: quality on a dataset split (``metrics``), what it costs (``cost``) and how
it hears one recording of any length (``windows``)."""
