"""Workloads: exact prompt token counts (word-level and subword tokenizers), length laws, prefix, trace."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bench.config.sweep import WorkloadSpec
from bench.engines.modeldir import build_tokenizer_json, materialize
from bench.errors import UserInputError
from bench.measure.workloads import PromptFactory, generate, iter_requests, lognormal_len, ranged_len, read_trace


@pytest.fixture(scope="module")
def word_tok() -> Tokenizer:
    return Tokenizer.from_str(build_tokenizer_json(2048))


@pytest.fixture(scope="module")
def bpe_tok() -> Tokenizer:
    """A byte-level BPE trained here on a tiny corpus: decode -> encode is far from the identity for it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = ["call", "calls", "here", "there", "shere", "ing", "tion", "the", "then", "12", "3.5", "foo-bar", "über"]
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(300)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                        show_progress=False))
    return tok


def _n(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


def test_word_level_factory_from_tokenizer_is_exact(word_tok):
    f = PromptFactory.from_tokenizer(word_tok)
    assert f.word_level
    for n in (1, 2, 17, 500):
        assert _n(word_tok, f.make(n, random.Random(n))) == n
        assert f.count(f.make(n, random.Random(n))) == n


def test_subword_tokenizer_is_fitted_exactly(bpe_tok):
    f = PromptFactory.from_tokenizer(bpe_tok)
    assert not f.word_level
    rng = random.Random(1)
    # The naive way (random ids -> decode) gives the wrong length for most n with this tokenizer,
    # so this test would fail without the trim/pad loop.
    naive_wrong = sum(_n(bpe_tok, bpe_tok.decode(rng.choices(f._allowed, k=n))) != n for n in range(1, 40))
    assert naive_wrong > 10
    for n in (1, 2, 3, 10, 57, 120):
        assert _n(bpe_tok, f.make(n, random.Random(n))) == n


def test_subword_prefix_plus_suffix_is_exact(bpe_tok):
    f = PromptFactory.from_tokenizer(bpe_tok)
    prefix = f.make(30, random.Random(5))
    for n in (1, 9, 40):
        text = f.make(n, random.Random(n), prefix=prefix)
        assert text.startswith(prefix)
        assert _n(bpe_tok, text) == 30 + n


def test_special_tokens_never_appear_in_prompts(bpe_tok, word_tok):
    f = PromptFactory.from_tokenizer(bpe_tok)
    specials = {bpe_tok.token_to_id("<s>"), bpe_tok.token_to_id("</s>")}
    assert not specials & set(f._allowed)
    w = PromptFactory.from_tokenizer(word_tok)
    assert not {"<unk>", "<|endoftext|>", "<|user|>"} & set(w.words)


def test_ranged_bounds_match_vllm_random_dataset():
    rng = random.Random(0)
    # L=100, r=0.25 -> [floor(75), ceil(125)] = [75, 125]
    xs = [ranged_len(rng, 100, 0.25) for _ in range(4000)]
    assert min(xs) == 75 and max(xs) == 125
    assert abs(statistics.mean(xs) - 100) < 1.5  # centred on L (InferenceX's [rL, L] would give 62.5)
    # L=10, r=0.33 -> [floor(6.7), ceil(13.3)] = [6, 14]
    ys = [ranged_len(rng, 10, 0.33) for _ in range(2000)]
    assert min(ys) == 6 and max(ys) == 14
    assert {ranged_len(rng, 7, 0.0) for _ in range(50)} == {7}
    assert min(ranged_len(rng, 1, 0.9) for _ in range(200)) == 1  # never 0


def test_chat_lengths_are_lognormal_with_the_configured_median_and_shape():
    rng = random.Random(3)
    xs = [lognormal_len(rng, 200, 0.8) for _ in range(6000)]
    assert abs(statistics.median(xs) - 200) < 10
    logs = [math.log(x) for x in xs]
    assert abs(statistics.pstdev(logs) - 0.8) < 0.05
    assert max(xs) <= 1600 and min(xs) >= 1  # clipped to [1, 8 x median]


def test_fixed_and_ranged_requests_have_the_requested_token_counts(word_tok):
    f = PromptFactory.from_tokenizer(word_tok)
    for spec in (WorkloadSpec(input_len=33, output_len=7),
                 WorkloadSpec(kind="ranged", input_len=40, output_len=20, range_ratio=0.5),
                 WorkloadSpec(kind="chat", input_len=30, output_len=10)):
        reqs = generate(spec, 40, f)
        assert len(reqs) == 40
        for r in reqs:
            assert _n(word_tok, r.prompt) == r.input_len
        if spec.kind == "fixed":
            assert {(r.input_len, r.output_len) for r in reqs} == {(33, 7)}
        if spec.kind == "ranged":
            assert all(20 <= r.input_len <= 60 and 10 <= r.output_len <= 30 for r in reqs)
            assert len({r.input_len for r in reqs}) > 5


def test_same_seed_same_requests_and_offsets_differ(word_tok):
    f = PromptFactory.from_tokenizer(word_tok)
    spec = WorkloadSpec(kind="ranged", input_len=20, output_len=5, range_ratio=0.5, seed=4)
    a, b = generate(spec, 10, f, seed_offset=1), generate(spec, 10, f, seed_offset=1)
    assert [(r.prompt, r.output_len) for r in a] == [(r.prompt, r.output_len) for r in b]
    c = generate(spec, 10, f, seed_offset=2)
    assert [r.prompt for r in a] != [r.prompt for r in c]
    # generate(n) is the head of the endless stream, so a count-bounded and a duration-bounded run agree
    it = iter_requests(spec, f, seed_offset=1)
    assert [next(it).prompt for _ in range(10)] == [r.prompt for r in a]


def test_prefix_workload_lengths_reuse_and_sharing(word_tok):
    f = PromptFactory.from_tokenizer(word_tok)
    spec = WorkloadSpec(kind="prefix", num_prefixes=3, prefix_len=50, input_len=10, output_len=4, reuse_ratio=0.7)
    reqs = generate(spec, 400, f)
    assert {r.input_len for r in reqs} == {60}  # P + S for every request, reused or not
    assert all(_n(word_tok, r.prompt) == 60 for r in reqs)
    reused = [r for r in reqs if r.prefix_id is not None]
    assert 0.62 < len(reused) / len(reqs) < 0.78  # 0.7 +- 4 sigma of a binomial(400, 0.7) share
    assert [r.prefix_id for r in reused[:7]] == [0, 1, 2, 0, 1, 2, 0]  # round-robin
    heads = {}
    for r in reused:
        heads.setdefault(r.prefix_id, set()).add(" ".join(r.prompt.split()[:50]))
    assert all(len(h) == 1 for h in heads.values()) and len({next(iter(h)) for h in heads.values()}) == 3
    fresh = [" ".join(r.prompt.split()[:50]) for r in reqs if r.prefix_id is None]
    assert len(set(fresh)) == len(fresh)  # non-reused prefixes are unique
    # warm-up / cool-down streams (other seed offsets) share the same prefixes
    other = [r for r in generate(spec, 30, f, seed_offset=99) if r.prefix_id == 0]
    assert " ".join(other[0].prompt.split()[:50]) in heads[0]


def test_reuse_ratio_zero_and_one(word_tok):
    f = PromptFactory.from_tokenizer(word_tok)
    none = generate(WorkloadSpec(kind="prefix", prefix_len=8, input_len=4, reuse_ratio=0.0), 20, f)
    assert all(r.prefix_id is None for r in none)
    every = generate(WorkloadSpec(kind="prefix", num_prefixes=2, prefix_len=8, input_len=4, reuse_ratio=1.0), 20, f)
    assert [r.prefix_id for r in every] == [0, 1] * 10


def _write_trace(tmp_path, rows):
    p = tmp_path / "trace.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(p)


def test_trace_replay_times_lengths_and_prefixes(tmp_path, word_tok):
    f = PromptFactory.from_tokenizer(word_tok)
    path = _write_trace(tmp_path, [
        {"timestamp": 12.5, "input_len": 30, "output_len": 4, "prefix_id": 1},
        {"timestamp": 10.0, "input_len": 20, "output_len": 3},
        {"timestamp": 11.0, "input_len": 40, "output_len": 5, "prefix_id": 1},
        {"timestamp": 13.0, "input_len": 8, "output_len": 2, "prefix_id": 2},
    ])
    reqs = generate(WorkloadSpec(kind="trace", trace_path=path, prefix_len=16), 10, f)
    assert [r.arrival_s for r in reqs] == [0.0, 1.0, 2.5, 3.0]  # sorted, relative to the first row
    assert [r.input_len for r in reqs] == [20, 40, 30, 8]  # input_len is the whole prompt
    assert [_n(word_tok, r.prompt) for r in reqs] == [20, 40, 30, 8]
    assert [r.output_len for r in reqs] == [3, 5, 4, 2]
    # rows with prefix id 1 share their first 16 words; id 2 (8 tokens) keeps 7 prefix tokens
    assert reqs[1].prompt.split()[:16] == reqs[2].prompt.split()[:16]
    assert reqs[1].prompt.split()[16:] != reqs[2].prompt.split()[16:24]
    assert len(generate(WorkloadSpec(kind="trace", trace_path=path), 2, f)) == 2


def test_trace_errors_name_the_line(tmp_path):
    bad = _write_trace(tmp_path, [{"timestamp": 0, "input_len": 3, "output_len": 1}, {"timestamp": 1, "input_len": 3}])
    with pytest.raises(UserInputError, match=r"trace.jsonl:2: need timestamp, input_len, output_len"):
        read_trace(bad)
    with pytest.raises(UserInputError, match="no such file"):
        read_trace(str(tmp_path / "missing.jsonl"))
    zero = _write_trace(tmp_path, [{"timestamp": 0, "input_len": 0, "output_len": 1}])
    with pytest.raises(UserInputError, match=r":1: input_len must be an integer >= 1 \(got 0\)"):
        read_trace(zero)


def test_model_dir_factory_corrects_for_the_chat_template(tmp_path, word_tok):
    f = PromptFactory.for_model_dir(materialize("glm-4.5-tiny", None, tmp_path))
    assert f is not None and f.word_level
    # The materialized template renders "<|user|> {content} <|assistant|>": two special tokens.
    assert f.chat_overhead_tokens == 2
    chat = generate(WorkloadSpec(input_len=20, output_len=3, endpoint="chat"), 5, f)
    assert all(r.input_len == 20 and len(r.prompt.split()) == 18 for r in chat)
    plain = generate(WorkloadSpec(input_len=20, output_len=3), 5, f)
    assert all(len(r.prompt.split()) == 20 for r in plain)
    assert PromptFactory.for_model_dir(tmp_path) is None  # no tokenizer.json there
