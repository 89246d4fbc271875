"""Metrics, plots and the HTML report. The report reads only a run folder's files."""
