"""Pareto frontier of (throughput, interactivity)-like pairs where more is better on both axes.

Why its own module: the frontier decides which configurations a report calls "worth running", so it
is tested on its own (against a brute-force check) and reused by the report for any pair of metrics.

Definitions (both axes maximized): point j dominates point i when x_j >= x_i and y_j >= y_i and the
two points differ. The frontier is every point no other point dominates; identical points do not
dominate each other, so duplicates on the frontier are all kept. Points with a NaN or infinite
coordinate take no part (they are neither on the frontier nor dominate anything). To minimize an
axis, negate it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices (ascending) of the non-dominated points, maximizing both x and y. O(n log n).

    Sweep in order of decreasing x (ties: decreasing y). Every earlier point has x_j >= x_i, so i is
    dominated exactly when some earlier point has a larger y, or the same y at a strictly larger x.
    The first point reaching the running maximum of y has the largest x among those reaching it.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length (got {len(xs)} and {len(ys)})")
    idx = [i for i in range(len(xs)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    idx.sort(key=lambda i: (-xs[i], -ys[i]))
    front: list[int] = []
    best_y = -math.inf
    x_at_best = math.inf
    for i in idx:
        x, y = xs[i], ys[i]
        if y < best_y or (y == best_y and x_at_best > x):
            continue
        front.append(i)
        if y > best_y:
            best_y, x_at_best = y, x
    return sorted(front)

