"""Markdown and HTML rendering of the report context through the Jinja templates, and the atomic write."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

NUMERIC_CELL = re.compile(r"^-?\$?-?[\d.,]+(e[+-]?\d+)?%?$")


# What Markdown must not read as markup when it comes from data: raw HTML (`<script>` in a sweep description or an
# endpoint's error text) and link brackets; written as HTML entities, which Markdown renders as the characters.
_MD_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;"})


def render_template(template: str, ctx: dict[str, Any], autoescape: bool) -> str:
    """Render a template. HTML (`autoescape`) escapes every value the usual way; Markdown escapes every value
    with `md_escape` (the `finalize` hook), except what the template marks verbatim (the fenced sweep YAML)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=autoescape, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, finalize=None if autoescape else _md_finalize,
    )
    env.filters["md"] = _md_cell
    env.filters["fenced"] = fenced
    env.tests["numeric"] = _is_numeric_cell
    return env.get_template(template).render(**ctx)


def md_escape(text: str) -> str:
    """`text` safe to put in Markdown prose or a table: HTML-significant characters and brackets as entities."""
    return text.translate(_MD_ENTITIES)


def _md_finalize(v: Any) -> Any:
    import markupsafe

    return v if isinstance(v, markupsafe.Markup) else md_escape(str(v))


def fenced(text: str, lang: str = "") -> Any:
    """`text` as a fenced code block whose fence is longer than any backtick run in it (CommonMark), so a
    description holding a line of backticks cannot close the block and put the rest in the page as markup."""
    import markupsafe

    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return markupsafe.Markup(f"{fence}{lang}\n{text}\n{fence}")


def _is_numeric_cell(v: Any) -> bool:
    """Right-align numbers, money and percentages in HTML tables; text stays left."""
    return bool(NUMERIC_CELL.match(str(v)))


def _md_cell(v: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_atomic(path: Path, text: str) -> None:
    from bench.atomic import atomic_write_text

    atomic_write_text(path, text)

