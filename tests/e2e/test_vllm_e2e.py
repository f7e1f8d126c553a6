"""End-to-end on the real vLLM engine: a sweep against the session's tiny-GLM server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.config.sweep import Sweep
from bench.econ.row_cost import ROW_PRICING
from bench.engines.vllm_server import SERVED_MODEL_NAME
from bench.sweep.run import run_sweep
from bench.sweep.store import load_requests, load_results

pytestmark = pytest.mark.e2e

OUTPUT_LEN = 16
N = 8


@pytest.fixture(scope="module")
def e2e_run(vllm_server, tmp_path_factory):
    sweep = Sweep(
        name="e2e",
        engine={"kind": "openai", "base_url": vllm_server.base_url, "served_model_name": SERVED_MODEL_NAME,
                "ignore_eos": True},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.10},
        server={"model": "glm-4.5-tiny"},
        load={"concurrency": [1, 4], "num_requests": N, "warmup_requests": 2},
        workloads=[{"name": "w", "input_len": 32, "output_len": OUTPUT_LEN},
                   {"name": "chat", "input_len": 24, "output_len": OUTPUT_LEN, "endpoint": "chat"}],
        slo={"ttft_ms": 60000},
    )
    summary = run_sweep(sweep, out_root=tmp_path_factory.mktemp("results"), pricing=ROW_PRICING)
    return summary, load_results(summary.run_dir)


def test_server_group_had_engine_core_children(vllm_server):
    assert vllm_server.healthy()
    assert len(vllm_server.members_while_running) >= 2  # API server + engine core at least


def test_all_requests_complete_with_pinned_lengths(e2e_run):
    summary, df = e2e_run
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert (df["completed"] == N).all()
    assert (df["output_tokens"] == N * OUTPUT_LEN).all()
    assert (df.loc[df.workload == "w", "input_tokens"] == N * 32).all()
    # for chat the requested input length includes the template tokens, so the server count equals it
    assert (df.loc[df.workload == "chat", "input_tokens"] == N * 24).all()


def test_throughput_latency_and_cost_are_consistent(e2e_run):
    _, df = e2e_run
    assert (df["output_tok_s"] > 0).all()
    # vLLM streams one token per chunk, but on a loaded box (2 cores shared with the server; CI saw it even at
    # concurrency 1) its API server can fall behind and hand a whole answer over in one read (it merges
    # undelivered deltas): then the first token arrives with the last. Strict TTFT < E2EL and TPOT > 0 are
    # asserted for the points whose streams were not merged. There may be none: at load average 18 two of the
    # four points had most answers in one read, so the run-level "some answer came in more than one read" is
    # test_per_request_rows_and_warmup_excluded's, per request.
    assert (df["ttft_ms_p50"] <= df["e2el_ms_p50"]).all() and (df["tpot_ms_mean"] >= 0).all()
    streamed = df[[not _merged(e2e_run[0].run_dir, pid) for pid in df["point_id"]]]
    assert (streamed["ttft_ms_p50"] < streamed["e2el_ms_p50"]).all() and (streamed["tpot_ms_mean"] > 0).all()
    # $/M output = rate / (tok/s/GPU * 3600 / 1e6), recomputed independently here
    expected = 0.10 / (df["output_tok_s_per_gpu"] * 3600 / 1e6)
    assert (abs(df["usd_per_m_output"] - expected) < 1e-9 * expected).all()
    # output tok/s = tokens streamed inside the measured window (any request) / window, recomputed here
    # from the per-request chunk timestamps: a finished request's usage tokens spread over its chunks (one token
    # per chunk unless a loaded server merged several), a cut-off cool-down request one token per chunk
    # (the client counts its chunks' tokens only for finished requests)
    def tokens_inside(r, start, end):
        c = np.asarray(r["chunk_ns"])
        inside = (start <= c) & (c <= end)
        if r["ok"] and r["output_tokens"] == r["output_tokens"]:  # not NaN
            return inside.sum() * r["output_tokens"] / len(c)
        k = np.asarray(r["chunk_tokens"])
        return float(k[inside].sum()) if len(k) == len(c) else float(inside.sum())  # uncounted: one per chunk

    for _, row in df.iterrows():
        req = load_requests(e2e_run[0].run_dir, row["point_id"])
        meas = req[~req["warmup"] & ~req["cooldown"]]
        start, end = meas["send_ns"].min(), meas["done_ns"].max()
        in_window = sum(tokens_inside(r, start, end) for _, r in req.iterrows() if len(r["chunk_ns"]))
        assert row["duration_s"] == pytest.approx((end - start) / 1e9)
        assert row["output_tok_s"] == pytest.approx(in_window / row["duration_s"], rel=1e-9)
        assert in_window >= N * OUTPUT_LEN - 1e-6  # the measured requests' own tokens are all inside the window


def _merged(run_dir, point_id) -> bool:
    """Most measured requests of the point came in one read (the whole answer). Reads, not chunks: the client
    keeps each SSE event of a merged read as a chunk, all with the read's (kernel) timestamp, so a merged answer
    still counts its 15-16 events (here: TTFT p50 = E2EL p50 = 116.2 ms, every answer one read)."""
    req = load_requests(run_dir, point_id)
    meas = req[~req["warmup"] & ~req["cooldown"]]
    return bool((meas["chunk_ns"].map(lambda c: len(set(c))) == 1).mean() > 0.5)


def test_server_and_client_token_counts_agree(e2e_run):
    _, df = e2e_run
    assert (df["token_count_mismatches"] == 0).all()
    assert (df["usage_missing"] == 0).all()
    assert (df["client_output_tokens"] == df["output_tokens"]).all()


def test_per_request_rows_and_warmup_excluded(e2e_run):
    summary, df = e2e_run
    req = load_requests(summary.run_dir, df.iloc[0]["point_id"])
    assert isinstance(req, pd.DataFrame)
    measured = req[~req["warmup"] & ~req["cooldown"]]
    assert len(measured) == N and int(req["warmup"].sum()) == 2
    # closed loop: warm-up is at least one full wave (2 asked for, concurrency 4 -> 4)
    for _, row in df.iterrows():
        w = load_requests(summary.run_dir, row["point_id"])["warmup"].sum()
        assert int(w) == max(2, int(row["concurrency"])) == row["warmup_sent"]
    # vLLM streams one token per SSE event here, but on a loaded box its API server falls behind and hands
    # several events (or one event of merged deltas) over in one read: the events of a read share its
    # timestamp. At load average 18 on the 2 cores the measured requests of this run came in 1-14 reads of
    # 15-16 events. So per request: never more events than tokens, never more reads than events, TTFT <= E2EL,
    # strictly less wherever the answer came in more than one read; and some request of the run must have come
    # in more than one read (a client that took the last read's time for the first, or read whole answers,
    # fails here).
    def reads(r) -> int:
        return len(set(r["chunk_ns"]))

    assert measured["num_chunks"].between(1, OUTPUT_LEN).all(), measured["num_chunks"].tolist()
    assert (measured.apply(reads, axis=1) <= measured["num_chunks"]).all()
    assert (measured["ttft_ms"] <= measured["e2el_ms"]).all()
    several = measured[measured.apply(reads, axis=1) > 1]
    assert (several["ttft_ms"] < several["e2el_ms"]).all(), several[["ttft_ms", "e2el_ms", "num_chunks"]]
    run_reads = [reads(r) for pid in df["point_id"] for _, r in load_requests(summary.run_dir, pid).iterrows()
                 if not r["warmup"] and not r["cooldown"]]
    assert max(run_reads) > 1, "every measured answer of the run came in one read"


def test_results_layout(e2e_run):
    summary, _ = e2e_run
    d = summary.run_dir
    assert (d / "sweep.yaml").is_file() and (d / "env.json").is_file() and (d / "points.parquet").is_file()
    import json

    env = json.loads((d / "env.json").read_text())
    assert env["vllm"] and env["torch"] and env["transformers"] and env["device"] in ("cpu", "gpu")
