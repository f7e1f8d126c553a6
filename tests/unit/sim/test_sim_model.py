"""The simulated server's token and timing rules, without sockets."""

from __future__ import annotations

import pytest

from bench.errors import UserInputError
from bench.sim import model as sim


def test_prompt_tokens_are_whitespace_words() -> None:
    assert sim.prompt_tokens_completions("the quick  brown\tfox\njumps") == 5
    assert sim.prompt_tokens_completions([1, 2, 3, 4]) == 4  # token ids: one each
    assert sim.prompt_tokens_completions(["a b c"]) == 3
    with pytest.raises(sim.BadRequest):
        sim.prompt_tokens_completions(["a", "b"])
    with pytest.raises(sim.BadRequest):
        sim.prompt_tokens_completions(None)


def test_chat_prompt_tokens_sum_all_contents() -> None:
    messages = [
        {"role": "system", "content": "be brief"},  # 2
        {"role": "user", "content": [{"type": "text", "text": "one two three"}]},  # 3
        {"role": "assistant", "content": None},  # 0 (tool-call turn)
        {"role": "user", "content": "four"},  # 1
    ]
    assert sim.prompt_tokens_chat(messages) == 6
    with pytest.raises(sim.BadRequest):
        sim.prompt_tokens_chat([])


def test_plan_output_eos_max_tokens_and_ignore_eos() -> None:
    never_stops = sim.SimConfig()
    assert sim.plan_output(never_stops, 10, ignore_eos=False) == (10, "length")
    eos4 = sim.SimConfig(output_tokens=4)
    assert sim.plan_output(eos4, 10, ignore_eos=False) == (4, "stop")
    assert sim.plan_output(eos4, 4, ignore_eos=False) == (4, "stop")
    assert sim.plan_output(eos4, 3, ignore_eos=False) == (3, "length")
    assert sim.plan_output(eos4, 10, ignore_eos=True) == (10, "length")


def test_chunk_sizes_group_k_tokens() -> None:
    assert sim.chunk_sizes(7, 3) == [3, 3, 1]
    assert sim.chunk_sizes(6, 3) == [3, 3]
    assert sim.chunk_sizes(1, 4) == [1]
    assert sim.chunk_sizes(5, 1) == [1, 1, 1, 1, 1]


def test_offsets_are_absolute_ttft_plus_i_itl() -> None:
    cfg = sim.SimConfig(ttft_ms=40, itl_ms=7.5, prefill_ms_per_token=0.5)
    # TTFT = 40 + 0.5 * 20 prompt tokens = 50 ms; then every 7.5 ms
    assert sim.chunk_offsets_s(cfg, 4, 20, None) == pytest.approx([0.050, 0.0575, 0.065, 0.0725])


def test_jitter_is_seeded_bounded_and_monotonic() -> None:
    cfg = sim.SimConfig(ttft_ms=20, itl_ms=5, jitter_ms=2, seed=7)
    a = sim.chunk_offsets_s(cfg, 50, 0, sim.request_rng(cfg, 3))
    b = sim.chunk_offsets_s(cfg, 50, 0, sim.request_rng(cfg, 3))
    c = sim.chunk_offsets_s(cfg, 50, 0, sim.request_rng(cfg, 4))
    assert a == b and a != c
    assert 0.018 <= a[0] <= 0.022
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert all(0.003 - 1e-12 <= g <= 0.007 + 1e-12 for g in gaps)
    assert len(set(gaps)) > 1  # it does jitter


def test_usage_modes() -> None:
    assert sim.usage_block(sim.SimConfig(), 5, 7) == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert sim.usage_block(sim.SimConfig(usage_mode="missing"), 5, 7) is None
    wrong = sim.SimConfig(usage_mode="wrong", usage_offset_tokens=3)
    assert sim.usage_block(wrong, 5, 7) == {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15}
    under = sim.SimConfig(usage_mode="wrong", usage_offset_tokens=-10)
    assert sim.usage_block(under, 5, 7)["completion_tokens"] == 0


def test_fault_fractions_over_many_draws() -> None:
    cfg = sim.SimConfig(error_rate=0.2, cut_rate=0.1, seed=1)
    fates = [sim.draw_fate(cfg, sim.request_rng(cfg, i)) for i in range(5000)]
    errors = sum(f.error for f in fates)
    cuts = sum(f.cut for f in fates)
    assert not any(f.error and f.cut for f in fates)
    # binomial sd: sqrt(5000*.2*.8) = 28, sqrt(5000*.1*.9) = 21; bounds are > 4 sd
    assert 880 <= errors <= 1120
    assert 400 <= cuts <= 600


def test_bad_options_are_one_line_user_errors() -> None:
    with pytest.raises(UserInputError, match="usage_mode"):
        sim.sim_config_from_options(usage_mode="sometimes")
    with pytest.raises(UserInputError, match="tokens_per_chunk"):
        sim.sim_config_from_options(tokens_per_chunk=0)
    with pytest.raises(UserInputError, match="error_rate"):
        sim.sim_config_from_options(error_rate=0.7, cut_rate=0.7)
    assert sim.sim_config_from_options(ttft_ms=5, max_concurrent_streams=None).ttft_ms == 5


def test_told_request_metrics_by_hand() -> None:
    cfg = sim.SimConfig(ttft_ms=40, itl_ms=15, tokens_per_chunk=3)
    # 7 tokens -> chunks of 3, 3, 1 at 40, 55, 70 ms; TPOT = (70 - 40) / (7 - 1) = 5 ms
    told = sim.told_request_metrics(cfg, 7)
    assert told == {"ttft_ms": 40.0, "e2el_ms": 70.0, "tpot_ms": 5.0, "itl_ms": 15.0,
                    "n_chunks": 3.0, "output_tokens": 7.0}
    one = sim.told_request_metrics(sim.SimConfig(ttft_ms=10, prefill_ms_per_token=0.5), 1, prompt_tokens=8)
    assert one["ttft_ms"] == 14.0 and one["e2el_ms"] == 14.0  # 10 + 0.5 * 8
    assert one["tpot_ms"] is None and one["itl_ms"] is None
