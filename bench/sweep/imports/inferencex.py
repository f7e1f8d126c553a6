"""InferenceX aggregated result JSON (`agg_<name>.json`), as written by SemiAnalysisAI/InferenceX
utils/process_result.py (read at commit 77f3e680728b4026bb0b9e05dca7ba6cb5502362, 2026-12) from a
utils/bench_serving result. One object = one point; a list of them (a collection) is read point by point.

What the processing does, and how it is undone here:
- every `<stat>_<metric>_ms` of the bench result becomes `<stat>_<metric>` in SECONDS (x 1e3 back to ms);
- `<stat>_intvty` = 1000 / (TPOT in ms + 1e-8): a derived figure, not imported (interactivity is
  recomputed from the median TPOT as for every row);
- throughputs are per GPU: single node `tput_per_gpu` = total tok/s / tp, `output_tput_per_gpu` = output
  tok/s / tp; multi-node (disaggregated) `tput_per_gpu` = total / (prefill + decode GPUs),
  `output_tput_per_gpu` = output / decode GPUs, `input_tput_per_gpu` = input / prefill GPUs. The server
  totals are rebuilt with those divisors, and the per-GPU columns are ours: total / all GPUs.
The file has no request or token counts (only throughputs) and no tool version: those stay empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import quant
from bench.sweep.imports.base import (
    Parsed,
    check_version,
    drop_none,
    fail,
    first_object,
    integer,
    number,
    read_points,
    require_output_tokens,
    text,
)
from bench.units import s_to_ms

TOOL = "inferencex"
KNOWN_VERSIONS = ("process_result@77f3e68",)  # the file states none; named for the note only
_METRICS = ("ttft", "tpot", "itl", "e2el")
_STATS = {"mean": "mean", "median": "p50", "p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99"}


def matches(doc: Any) -> bool:
    first = first_object(doc)
    return isinstance(first, dict) and "tput_per_gpu" in first and "conc" in first and "hw" in first


def _flag(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return None


def _point(doc: Any, path: Path, where: str, notes: list[str]) -> dict[str, Any]:
    if not isinstance(doc, dict) or "tput_per_gpu" not in doc:
        raise fail(path, f"{where}: not an InferenceX aggregated result (no tput_per_gpu)")
    multinode = _flag(doc.get("is_multinode")) is True
    if multinode:
        prefill, decode = integer(doc, "num_prefill_gpu"), integer(doc, "num_decode_gpu")
        if not prefill or not decode:
            raise fail(path, f"{where}: multi-node result without num_prefill_gpu/num_decode_gpu")
        gpus, out_div, in_div, tp = prefill + decode, decode, prefill, integer(doc, "decode_tp")
        ep = integer(doc, "decode_ep")
    else:
        tp = integer(doc, "tp")
        if not tp:
            raise fail(path, f"{where}: single-node result without tp (the per-GPU divisor)")
        gpus = out_div = in_div = tp
        ep = integer(doc, "ep")
    total_pg, out_pg, in_pg = number(doc, "tput_per_gpu"), number(doc, "output_tput_per_gpu"), \
        number(doc, "input_tput_per_gpu")
    precision = text(doc, "precision")
    q = quant.lookup(precision) if precision else None
    if precision and q is None:
        notes.append(f"inferencex: precision {precision!r} is not in the quantization registry; left empty "
                     "(give --quantization)")
    spec = text(doc, "spec_decoding")
    point: dict[str, Any] = {
        "model": text(doc, "model"), "engine": text(doc, "framework"),
        "quantization": q.name if q else None,
        "tensor_parallel_size": tp, "expert_parallel": (ep > 1) if ep else None,
        "gpu_count": gpus, "input_len": integer(doc, "isl"), "output_len": integer(doc, "osl"),
        "concurrency": integer(doc, "conc"), "load_mode": "concurrency",
        "spec_method": spec if spec and spec.lower() not in ("none", "off", "false", "") else None,
        "output_tok_s": out_pg * out_div if out_pg is not None else None,
        "total_tok_s": total_pg * gpus if total_pg is not None else None,
        "input_tok_s": in_pg * in_div if in_pg is not None else None,
    }
    for m in _METRICS:
        for theirs, ours in _STATS.items():
            v = number(doc, f"{theirs}_{m}")
            if v is not None and point.get(f"{m}_ms_{ours}") is None:
                point[f"{m}_ms_{ours}"] = s_to_ms(v)
    point = drop_none(point)
    require_output_tokens(path, point, where)
    return point


def parse(doc: Any, path: Path) -> Parsed:
    points, notes = read_points(doc, path, "InferenceX", "result", _point)
    note = check_version(path, TOOL, None, KNOWN_VERSIONS)  # the file states no version: always a note
    return Parsed(TOOL, None, points, None, [n for n in (note, *notes) if n])
