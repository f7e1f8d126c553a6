"""Markdown and HTML rendering of the report context through the Jinja templates, and the atomic write."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

NUMERIC_CELL = re.compile(r"^-?\$?-?[\d.,]+(e[+-]?\d+)?%?$")


def render_template(template: str, ctx: dict[str, Any], autoescape: bool) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=autoescape, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _md_cell
    env.tests["numeric"] = _is_numeric_cell
    return env.get_template(template).render(**ctx)


def _is_numeric_cell(v: Any) -> bool:
    """Right-align numbers, money and percentages in HTML tables; text stays left."""
    return bool(NUMERIC_CELL.match(str(v)))


def _md_cell(v: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_atomic(path: Path, text: str) -> None:
    from bench.atomic import atomic_write_text

    atomic_write_text(path, text)

