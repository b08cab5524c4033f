"""Presenting results to people: plotly figures built from the library's tidy frames."""
