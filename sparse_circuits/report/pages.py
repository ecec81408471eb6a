"""The report's Jinja environment: templates, inlined static files and number formatting, shared by
the report site (`site.py`) and the sweep's frontier page (`frontier.py`)."""

from __future__ import annotations

from importlib import resources

import jinja2


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("sparse_circuits.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.globals["static"] = lambda name: resources.files("sparse_circuits.report").joinpath(
        "static", name).read_text(encoding="utf-8")
    env.filters["num"] = _num
    return env


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "–"
    return f"{value:.{digits}f}"
