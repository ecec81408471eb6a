"""The report: a static site about runs and their circuits (site.py), its figures (plots.py), what
it computes about each node (analysis.py), and a local server for it (serve.py)."""

from .site import build_report

__all__ = ["build_report"]
