"""The measured-points table the margin tests price (bench.econ.margin and `maas-bench margin/plan --results`).

One table for both, so the CLI tests and the library tests check the same hand-worked numbers: two ok
points and a failed one; totals per point are 10 requests of 2000 input / 500 output tokens (the golden
mix of test_margin), on a GPU at $1.74/h.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# point_id, concurrency, output tok/s per GPU, TTFT p90 ms, TPOT p90 ms, status
POINTS = [
    ("p-low", 8, 500.0, 200.0, 20.0, "ok"),
    ("p-high", 64, 1000.0, 900.0, 60.0, "ok"),
    ("p-fail", 256, np.nan, np.nan, np.nan, "failed"),
]


def golden_points(**extra: Any) -> pd.DataFrame:
    """The points as a results table; `extra` adds columns with one value for every point."""
    base = {"model": "glm-4.5-air", "quantization": "fp8", "gpu_type": "h200", "gpu_count": 1, "request_rate": None,
            "completed": 10, "input_tokens": 20000, "output_tokens": 5000, "usd_per_gpu_hour": 1.74, **extra}
    return pd.DataFrame([
        {**base, "point_id": pid, "status": status, "concurrency": c, "output_tok_s_per_gpu": tok,
         "ttft_ms_p90": ttft, "tpot_ms_p90": tpot}
        for pid, c, tok, ttft, tpot, status in POINTS
    ])
