"""Module size budget: no module under bench/ is longer than MAX_LINES lines.

Why: one home for each thing only helps while a home can be read in one sitting; a module past the
budget is split along a seam (as workloads.py was into measure/kinds/), not trimmed of its comments.
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MAX_LINES = 500


def test_every_module_fits_the_size_budget() -> None:
    sizes = {str(p.relative_to(BENCH.parent)): len(p.read_text().splitlines()) for p in sorted(BENCH.rglob("*.py"))}
    over = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them along a seam): {over}"
