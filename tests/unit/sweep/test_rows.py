"""The declared points schema (bench.sweep.rows): validation, the docs column table, old run dirs.

The producer test builds each source of row columns the way a sweep does and checks that together
they write exactly the declared columns: a column written but not declared, or declared but never
written (as `expert_parallel` once was), fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config.sweep import Sweep
from bench.econ.row_cost import cost_columns
from bench.measure.loadgen import LoadResult
from bench.measure.metrics import offline_summary, summarize
from bench.measure.nvml import unavailable
from bench.sweep import rows
from bench.sweep.rows import COLUMNS, SCHEMA, RowSchemaError, validate_row
from bench.sweep.session import ServerProbe, base_row, telemetry_columns
from bench.sweep.store import RunStore, load_results

SCHEMA_PAGE = Path(__file__).resolve().parents[3] / "docs" / "results-schema.md"


def _sweep() -> Sweep:
    return Sweep(name="rows", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                 hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
                 server={"model": "glm-4.5-tiny", "expert_parallel": True}, load={"concurrency": [2]})


def test_every_producer_writes_only_declared_columns_and_together_all_of_them():
    sweep = _sweep()
    point = sweep.points()[0]
    base = base_row(sweep, point, 0, "run", 0.1, on_gpu=False)
    online = {**base, "started_at": "t", "finished_at": "t", **summarize([], gpu_count=1),
              **LoadResult().columns(), **telemetry_columns(unavailable("x"), base), **ServerProbe().columns(),
              **ServerProbe().phase_columns(), "point_wall_s": 1.0, **cost_columns(base)}
    offline = {**base, **offline_summary(1.0, 2, 2, 10, 20)}
    from bench.config.sweep import HardwareRef
    from bench.sweep.imports import read
    from bench.sweep.imports.write import ImportPlan, build_rows
    from bench.sweep.pricing import UNPRICED

    vllm_result = Path(__file__).resolve().parents[2] / "fixtures" / "imports" / "vllm" / "vllm-bench-serve.json"
    imported = build_rows([read(vllm_result)], ImportPlan(HardwareRef(gpu="h200"), 2.0), "run", UNPRICED)[0]
    produced = set(online) | set(offline) | set(imported)
    assert produced - set(SCHEMA) == set(), "written but not declared"
    assert set(SCHEMA) - produced == set(), "declared but never written"
    assert base["expert_parallel"] is True  # calibration reads it


def test_validate_fills_missing_columns_with_null_in_schema_order():
    out = validate_row({"point_id": "p", "concurrency": 4})
    assert list(out) == [c.name for c in COLUMNS]
    assert out["point_id"] == "p" and out["concurrency"] == 4
    assert out["expert_parallel"] is None and out["ttft_ms_p99"] is None


@pytest.mark.parametrize("row, message", [
    ({"point_id": "p", "made_up_col": 1}, "undeclared row column(s) ['made_up_col']"),
    ({"point_id": "p", "concurrency": "4"}, "concurrency='4' (expected int)"),
    ({"point_id": "p", "concurrency": 4.0}, "concurrency=4.0 (expected int)"),
    ({"point_id": "p", "output_tok_s": True}, "output_tok_s=True (expected float)"),
    ({"point_id": "p", "client_kept_up": 1}, "client_kept_up=1 (expected bool)"),
    ({"point_id": "p", "model": 3}, "model=3 (expected str)"),
])
def test_validate_rejects_unknown_columns_and_wrong_types(row, message):
    with pytest.raises(RowSchemaError) as e:
        validate_row(row)
    assert message in str(e.value)


def test_validate_accepts_ints_as_floats_numpy_scalars_and_nan_as_null():
    out = validate_row({"point_id": "p", "output_tok_s": 12, "ttft_ms_p50": np.float64(1.5),
                        "completed": np.int64(3), "client_kept_up": np.bool_(True), "tpot_ms_p50": float("nan")})
    assert out["output_tok_s"] == 12 and out["completed"] == 3


def test_write_point_refuses_a_bad_row_and_writes_nothing(tmp_path):
    store = RunStore(tmp_path / "run")
    store.init({"name": "x"}, {})
    with pytest.raises(RowSchemaError):
        store.write_point({"point_id": "p1", "typo_column": 1})
    assert store.finished_point_ids() == set()


def test_write_point_writes_every_declared_column(tmp_path):
    store = RunStore(tmp_path / "run")
    store.init({"name": "x"}, {})
    store.write_point({"point_id": "p1", "status": "ok", "concurrency": 2})
    written = json.loads((tmp_path / "run" / "rows" / "p1.json").read_text())
    assert set(written) == set(SCHEMA)
    assert written["concurrency"] == 2 and written["energy_j"] is None


def test_docs_column_table_is_the_rendered_schema():
    """docs/results-schema.md shows exactly the declared schema: a column added, dropped, retyped or
    reworded in bench/sweep/rows.py fails this until the page is regenerated."""
    assert rows.SCHEMA_PAGE == SCHEMA_PAGE
    block = rows.table_block(SCHEMA_PAGE.read_text())
    assert block is not None, "docs/results-schema.md lost its <!-- columns:start --> / <!-- columns:end --> markers"
    assert block == rows.render_markdown(), "docs/results-schema.md is stale: run python -m bench.sweep.rows"


def test_a_stale_page_is_caught(tmp_path):
    """The check above compares the whole block: one changed cell or one missing row makes it differ."""
    table = rows.render_markdown()
    for stale in (table.replace("| `energy_j` | float | J |", "| `energy_j` | float | kJ |"),
                  "".join(line for line in table.splitlines(keepends=True) if "`usd_per_m_total`" not in line)):
        assert stale != table
        assert rows.table_block(f"{rows.START}\n{stale}{rows.END}\n") != table


def test_render_markdown_by_hand():
    lines = rows.render_markdown().splitlines()
    assert lines[0] == "| column | type | unit | meaning |"
    assert "| `ttft_ms_p90` | float | ms | 90th percentile of time to first token: first content-bearing chunk " \
           "minus request send |" in lines
    assert "| `expert_parallel` | bool | - | experts sharded across the tensor-parallel GPUs (MoE) |" in lines
    assert len(lines) == 2 + len(COLUMNS)


def test_column_table_rows_comments_and_continued_meanings():
    """The text table COLUMNS is declared in: `name | dtype | unit | meaning`, an empty unit, a `#` comment
    skipped, a line without `|` continuing the meaning above."""
    got = rows._table("""
    # a section
    a_ms | float | ms | first half
        second half
    b | str | | a label
    """)
    assert got == [rows.Column("a_ms", "float", "ms", "first half second half"), rows.Column("b", "str", "", "a label")]
    # a wrapped meaning in the real table reads back as one line (checked against a column's own words)
    assert SCHEMA["decode_tokens_per_chunk"].doc == ("(output tokens - 1) / (content chunks - 1) over completed "
                                                     "requests: tokens per streamed decode step")


def test_rewrite_table_replaces_only_the_block(tmp_path):
    f = tmp_path / "results-schema.md"
    f.write_text(f"# t\nbefore\n{rows.START}\nold table\n{rows.END}\nafter\n")
    assert rows.rewrite_table(f) is True
    assert f.read_text() == f"# t\nbefore\n{rows.START}\n{rows.render_markdown()}{rows.END}\nafter\n"
    assert rows.rewrite_table(f) is False


def test_rewrite_table_needs_the_markers(tmp_path):
    f = tmp_path / "results-schema.md"
    f.write_text("# no markers here\n")
    with pytest.raises(RuntimeError, match="markers"):
        rows.rewrite_table(f)


# A row as the code before the declared schema wrote it: no `expert_parallel`, and only the columns
# a failed point had (old failed rows were sparse). Written by hand, not by today's code.
OLD_ROWS = [
    {"run_id": "old-run", "point_id": "aaa", "point_index": 0, "server_hash": "h", "status": "ok", "error": None,
     "model": "glm-4.5-tiny", "engine": "vllm", "dtype": "bfloat16", "quantization": "none",
     "kv_cache_dtype": "auto", "max_model_len": 2048, "max_num_seqs": 32, "max_num_batched_tokens": None,
     "enable_prefix_caching": False, "tensor_parallel_size": 1, "device": "cpu", "gpu_type": "cpu-2core",
     "gpu_count": 1, "hardware_tier": "override", "workload": "w", "workload_kind": "fixed",
     "endpoint": "completions", "input_len": 16, "output_len": 8, "concurrency": 1, "request_rate": None,
     "num_requests": 4, "warmup_requests": 0, "slo_ttft_ms": None, "slo_tpot_ms": None, "slo_e2el_ms": None,
     "usd_per_gpu_hour": 0.1, "completed": 4, "failed": 0, "output_tok_s_per_gpu": 50.0,
     "usd_per_m_output": 0.5555555555555556},
    {"run_id": "old-run", "point_id": "bbb", "point_index": 1, "status": "failed",
     "error": "engine failed to start: x", "model": "glm-4.5-tiny", "concurrency": 2, "completed": 0},
]


def _old_run(root: Path, with_table: bool) -> Path:
    d = root / "old-run"
    (d / "rows").mkdir(parents=True)
    (d / "sweep.yaml").write_text("name: old\n")
    for r in OLD_ROWS:
        (d / "rows" / f"{r['point_id']}.json").write_text(json.dumps(r))
    if with_table:
        pd.DataFrame(OLD_ROWS).to_parquet(d / "points.parquet", index=False)
    return d


@pytest.mark.parametrize("with_table", [True, False])
def test_a_run_written_before_the_schema_still_loads(tmp_path, with_table):
    d = _old_run(tmp_path, with_table)
    df = load_results(d)
    assert list(df["point_id"]) == ["aaa", "bbb"]
    assert set(SCHEMA) <= set(df.columns)  # reads like a new run: every declared column
    assert df["expert_parallel"].isna().all()
    assert df.loc[0, "usd_per_m_output"] == pytest.approx(0.1 / (50.0 * 3600 / 1e6))
    assert df.loc[1, "error"] == "engine failed to start: x"
    direct = load_results(d / "points.parquet") if with_table else None
    if direct is not None:
        assert df["expert_parallel"].isna().all() and set(SCHEMA) <= set(direct.columns)


def test_an_old_run_resumes_new_points_next_to_old_rows(tmp_path):
    d = _old_run(tmp_path, with_table=True)
    store = RunStore(d)
    assert store.finished_point_ids() == {"aaa", "bbb"}  # resume skips them
    store.write_point({"run_id": "old-run", "point_id": "ccc", "point_index": 2, "status": "ok",
                       "concurrency": 4, "expert_parallel": False})
    df = load_results(d)
    assert list(df["point_id"]) == ["aaa", "bbb", "ccc"]
    assert df["expert_parallel"].tolist()[2] is False or df["expert_parallel"].tolist()[2] == False  # noqa: E712
    assert pd.isna(df["expert_parallel"].tolist()[0])
    # the old rows themselves are not rewritten
    assert "expert_parallel" not in json.loads((d / "rows" / "aaa.json").read_text())
