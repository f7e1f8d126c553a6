"""Each reader reproduces its tool's own headline figures from the committed fixtures.

The golden numbers are the tools' own: typed here from the field named beside each (the file the tool
wrote), and checked against the summary the tool printed (tests/fixtures/imports/<tool>/summary.txt, the
rounding it printed). They are not computed by the code under test. The fixtures and the commands that
made them: tests/fixtures/imports/README.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bench.sweep.imports import FORMATS, detect, read

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "imports"
VLLM = FIX / "vllm" / "vllm-bench-serve.json"
GUIDELLM = FIX / "guidellm" / "benchmarks.json"
AIPERF = FIX / "aiperf" / "profile_export_aiperf.json"
INFERENCEX = FIX / "inferencex" / "agg_glm45air_fp8_h200_tp8_conc64.json"
LLMD = FIX / "llm-d" / "benchmark_report_v0.2.1_glm45air_h200.json"


def _printed(tool: str, pattern: str) -> float:
    """A number the tool printed in its summary (summary.txt), by a regex with one group."""
    m = re.search(pattern, (FIX / tool / "summary.txt").read_text())
    assert m, f"{tool}: {pattern!r} not in its printed summary"
    return float(m.group(1))


@pytest.mark.parametrize(("path", "fmt"), [(VLLM, "vllm"), (GUIDELLM, "guidellm"), (AIPERF, "aiperf"),
                                           (INFERENCEX, "inferencex"), (LLMD, "llm-d")])
def test_each_fixture_is_detected_as_its_format(path, fmt):
    assert detect(json.loads(path.read_text())) == fmt
    assert sorted(FORMATS) == ["aiperf", "guidellm", "inferencex", "llm-d", "vllm"]


def test_vllm_bench_serve_headline():
    p = read(VLLM).parsed
    row = p.points[0]
    # the tool's own fields: output_throughput, median_ttft_ms, median_tpot_ms, request_throughput
    assert row["output_tok_s"] == 251.25318874637944
    assert row["ttft_ms_p50"] == 41.136791999633715
    assert row["tpot_ms_p50"] == json.loads(VLLM.read_text())["median_tpot_ms"]
    assert row["request_throughput"] == 15.703324296648715
    # ... and what `vllm bench serve` printed
    assert round(row["output_tok_s"], 2) == _printed("vllm", r"Output token throughput \(tok/s\):\s+([\d.]+)")
    assert round(row["ttft_ms_p50"], 2) == _printed("vllm", r"Median TTFT \(ms\):\s+([\d.]+)")
    assert round(row["tpot_ms_p50"], 2) == _printed("vllm", r"Median TPOT \(ms\):\s+([\d.]+)")
    assert (row["completed"], row["output_tokens"], row["input_tokens"]) == (24, 384, 1536)
    assert (p.tool, p.tool_version, p.output_token_counter) == ("vllm", "0.32.0", "server")


def test_guidellm_headline_and_its_tpot_left_out():
    p = read(GUIDELLM).parsed
    row = p.points[0]
    m = json.loads(GUIDELLM.read_text())["benchmarks"][0]["metrics"]
    # metrics.output_tokens_per_second.total.mean (its "Server Throughput" table), successful latencies
    assert row["output_tok_s"] == 256.12888972995836
    assert row["ttft_ms_p50"] == 33.88476371765137  # time_to_first_token_ms.successful.median
    assert row["tpot_ms_p50"] == 7.314046223958333  # inter_token_latency_ms.successful.median (our TPOT)
    assert round(row["output_tok_s"], 1) == 256.1 and round(row["ttft_ms_p50"], 1) == 33.9  # printed tables
    # its own "TPOT" includes the TTFT: not imported anywhere in the row
    their_tpot = m["time_per_output_token_ms"]["successful"]["median"]
    assert their_tpot not in row.values() and "itl_ms_p50" not in row
    assert row["e2el_ms_p50"] == pytest.approx(m["request_latency"]["successful"]["median"] * 1000, rel=1e-12)
    assert (p.tool_version, p.output_token_counter) == ("0.8.1", "server")
    assert any("includes TTFT" in n for n in p.notes)


def test_aiperf_headline_and_client_side_token_count():
    p = read(AIPERF).parsed
    row = p.points[0]
    assert row["output_tok_s"] == 227.19007390723266  # output_token_throughput.avg
    assert row["ttft_ms_p50"] == 41.243084499999995  # time_to_first_token.p50
    assert row["tpot_ms_p50"] == 5.6739089  # inter_token_latency.p50: (latency - ttft) / (osl - 1), our TPOT
    assert row["itl_ms_p50"] == 6.3545549999999995  # inter_chunk_latency.p50
    assert round(row["output_tok_s"], 2) == _printed("aiperf", r"Output Token Throughput \(tokens/sec\) │\s+([\d.]+)")
    ttft_p50_column = r"Time to First Token \(ms\) │(?:\s+[\d.]+\s+│){5}\s+([\d.]+)"  # avg min max p99 p90 p50
    assert round(row["ttft_ms_p50"], 2) == _printed("aiperf", ttft_p50_column)
    # AIPerf counts output tokens with its tokenizer: 382 where the server's usage says 384
    assert row["output_tokens"] == 382 and p.output_token_counter == "client"
    assert json.loads(AIPERF.read_text())["total_usage_completion_tokens"]["avg"] == 384.0
    assert p.tool_version == "0.13.0"


def test_inferencex_headline_back_in_ms_and_server_totals():
    p = read(INFERENCEX).parsed
    row = p.points[0]
    # process_result.py: tput_per_gpu = total / tp; median_ttft and median_tpot in seconds
    assert row["total_tok_s"] == 3072.0 * 8 and row["output_tok_s"] == 1536.0 * 8
    assert row["ttft_ms_p50"] == pytest.approx(380.0, rel=1e-12)  # median_ttft 0.38 s
    assert row["tpot_ms_p50"] == pytest.approx(40.0, rel=1e-12)  # median_tpot 0.04 s
    assert (row["gpu_count"], row["tensor_parallel_size"], row["quantization"], row["engine"]) == (8, 8, "fp8", "vllm")
    assert "output_tokens" not in row and "completed" not in row  # the file has no counts: left empty
    assert p.tool_version is None and any("states no tool version" in n for n in p.notes)


def test_inferencex_multinode_divisors(tmp_path):
    """Multi-node: output per GPU is over the decode GPUs, total over all, input over prefill (process_result)."""
    doc = json.loads(INFERENCEX.read_text())
    doc.update({"is_multinode": True, "num_prefill_gpu": 2, "num_decode_gpu": 6, "decode_tp": 2, "decode_ep": 1,
                "tput_per_gpu": 500.0, "output_tput_per_gpu": 400.0, "input_tput_per_gpu": 800.0})
    for k in ("tp", "ep"):
        doc.pop(k)
    f = tmp_path / "agg_multi.json"
    f.write_text(json.dumps([doc]))
    row = read(f).parsed.points[0]
    assert (row["output_tok_s"], row["total_tok_s"], row["input_tok_s"], row["gpu_count"]) == (2400.0, 4000.0,
                                                                                                  1600.0, 8)


def test_llmd_report_headline_json_and_yaml(tmp_path):
    p = read(LLMD).parsed
    row = p.points[0]
    assert row["output_tok_s"] == 3262.6  # throughput.output_token_rate.mean (tokens/s)
    assert row["ttft_ms_p50"] == pytest.approx(198.0, rel=1e-12)  # time_to_first_token.p50 0.198 s
    assert row["tpot_ms_p50"] == pytest.approx(28.8, rel=1e-12)  # time_per_output_token.p50 0.0288 s/token
    assert row["itl_ms_p50"] == pytest.approx(27.9, rel=1e-12)  # inter_token_latency.p50
    assert (row["num_requests"], row["failed"], row["completed"], row["gpu_count"]) == (960, 2, 958, 8)
    assert row["duration_s"] == 300.0 and p.tool_version == "0.2.1"
    y = tmp_path / "report.yaml"
    y.write_text(yaml.safe_dump(json.loads(LLMD.read_text())))
    assert read(y).parsed.points == p.points


def test_version_note_for_an_unchecked_release_of_a_known_line(tmp_path):
    doc = json.loads(VLLM.read_text())
    doc["vllm_version"] = "0.32.5"
    f = tmp_path / "v.json"
    f.write_text(json.dumps(doc))
    p = read(f).parsed
    assert p.tool_version == "0.32.5" and any("was not checked" in n for n in p.notes)


def test_row_source_reads_rows_written_before_the_column():
    from bench.sweep.rows import row_source

    assert row_source(None, "virtual") == "virtual" and row_source(float("nan"), "vllm") == "measured"
    assert row_source("imported", "vllm") == "imported" and row_source("bogus", "openai") == "measured"
