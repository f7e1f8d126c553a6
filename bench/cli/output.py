"""Terminal output for every command: tables, JSON, plain lines.

Why one module: text that came from data (model names, file paths, error messages) must never be read
as rich markup - a `[red]` or a stray `[/]` in a config value would restyle or crash the output. So
tables get `Text` cells and lines go through `say`, which prints `Text` (no markup parsing at all).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Tables are wide; when output is piped (CI logs, `| less`) rich would otherwise wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, highlight=False)


def say(text: str, style: str | None = None, *, err: bool = False, prefix: str = "", prefix_style: str = "") -> None:
    """Print one line of plain text (never parsed as markup), optionally after a styled prefix."""
    line = Text(prefix, style=prefix_style) + Text(text, style=style or "")
    (err_console if err else console).print(line, soft_wrap=True)


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN / +-inf float replaced by None: JSON has no NaN or Infinity, and a parser
    that meets `NaN` (Python's default output) rejects the whole document."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():  # numpy scalar
        return json_safe(obj.item())
    return obj


def print_json(obj: Any) -> None:
    """Machine output: plain, strictly valid JSON on stdout (NaN/inf -> null), no rich markup."""
    sys.stdout.write(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Render a list of dicts as a rich table; floats get 4 significant digits."""
    if not rows:
        say(f"{title}: (no rows)")
        return
    cols = columns or list(rows[0].keys())
    table = Table(title=Text(title), show_lines=False)
    for c in cols:
        table.add_column(Text(c), overflow="fold")
    for r in rows:
        table.add_row(*[Text(fmt(r.get(c))) for c in cols])
    console.print(table)


def fmt(v: Any) -> str:
    """A table cell: '-' for missing/NaN, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    return str(v)
