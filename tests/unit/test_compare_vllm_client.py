"""The pure logic of scripts/compare_vllm_client.py: who goes first, the core split, taskset's command,
the medians, ratios and agreement verdict, and its one-line bad-input errors. No server.

Golden numbers are worked by hand in the comments (medians of three, ratios of the medians).
"""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def cmp(load_script) -> ModuleType:
    return load_script("compare_vllm_client")


def test_pairs_alternate_who_goes_first(cmp: ModuleType) -> None:
    assert [cmp.pair_order(i) for i in range(4)] == [("ours", "vllm"), ("vllm", "ours"),
                                                     ("ours", "vllm"), ("vllm", "ours")]


def test_core_split_gives_the_client_the_last_cpu_and_the_server_the_rest(cmp: ModuleType) -> None:
    assert cmp.split_cores([1, 0]) == ([0], [1])
    assert cmp.split_cores([0, 1, 2, 3]) == ([0, 1, 2], [3])
    assert cmp.split_cores([5, 2, 9]) == ([2, 5], [9])  # an affinity mask need not start at 0
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        cmp.split_cores([3])


def test_pinned_prefixes_taskset_and_no_pin_leaves_the_command(cmp: ModuleType) -> None:
    assert cmp.pinned(["python", "x.py"], [1]) == ["taskset", "-c", "1", "python", "x.py"]
    assert cmp.pinned(["python"], [3, 0, 1]) == ["taskset", "-c", "0,1,3", "python"]
    assert cmp.pinned(["python", "x.py"], None) == ["python", "x.py"]


def _run(tok_s: float, ttft: float, tpot: float, cpu: float = 0.01) -> dict[str, float]:
    return {"output_tok_s": tok_s, "ttft_ms_p50": ttft, "tpot_ms_p50": tpot, "cpu_s_per_request": cpu,
            "server_cpu_s_per_request": 0.5}


def test_compare_takes_medians_ratios_and_the_verdict(cmp: ModuleType) -> None:
    runs = {
        # ours: tok/s median of (100, 104, 90) = 100; TTFT median of (50, 40, 60) = 50; TPOT median of (20, 21, 19) = 20
        "ours": [_run(100, 50, 20, 0.02), _run(104, 40, 21, 0.03), _run(90, 60, 19, 0.01)],
        # vLLM's: tok/s median 98; TTFT median 45; TPOT median 20
        "vllm": [_run(98, 45, 20, 0.04), _run(110, 44, 22, 0.05), _run(97, 46, 18, 0.06)],
    }
    s = cmp.compare(runs)
    assert s["pairs"] == 3
    assert s["output_tok_s"]["ours"] == 100 and s["output_tok_s"]["vllm"] == 98
    assert s["output_tok_s"]["ratio"] == pytest.approx(100 / 98)  # 1.0204: inside 3%
    assert s["output_tok_s"]["within"] is True
    assert s["ttft_ms_p50"]["ratio"] == pytest.approx(50 / 45)  # 1.111: outside 5%
    assert s["ttft_ms_p50"]["within"] is False
    assert s["tpot_ms_p50"]["ratio"] == pytest.approx(1.0) and s["tpot_ms_p50"]["within"] is True
    assert s["agree"] is False  # one metric outside its tolerance
    # per-pair ratios, pair by pair: 100/98, 104/110, 90/97
    assert s["output_tok_s"]["pair_ratios"] == pytest.approx([100 / 98, 104 / 110, 90 / 97])
    assert s["cpu_s_per_request"] == {"ours": pytest.approx(0.02), "vllm": pytest.approx(0.05)}


def test_compare_tolerance_edges(cmp: ModuleType) -> None:
    # throughput 3.5% high is outside 3%; TTFT/TPOT 4% high are inside 5%
    s = cmp.compare({"ours": [_run(103.5, 52, 52)], "vllm": [_run(100, 50, 50)]})
    assert s["output_tok_s"]["within"] is False
    assert s["ttft_ms_p50"]["within"] is True and s["tpot_ms_p50"]["within"] is True
    s = cmp.compare({"ours": [_run(102.5, 49, 51)], "vllm": [_run(100, 50, 50)]})
    assert s["agree"] is True


def test_a_zero_reference_has_no_ratio_and_does_not_agree(cmp: ModuleType) -> None:
    s = cmp.compare({"ours": [_run(100, 50, 20)], "vllm": [_run(0, 50, 20)]})
    assert s["output_tok_s"]["ratio"] is None and s["output_tok_s"]["within"] is False
    assert s["agree"] is False


@pytest.mark.parametrize("argv, field", [
    (["--pairs", "0"], "--pairs"),
    (["--num-prompts", "-5"], "--num-prompts"),
    (["--concurrency", "x"], "--concurrency"),
    (["--server-cores", "a,b"], "--server-cores"),
])
def test_bad_input_is_one_line_naming_the_field_exit_2(cmp: ModuleType, argv: list[str], field: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cmp.parse(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and "Traceback" not in err


def test_defaults_are_the_issue_protocol(cmp: ModuleType) -> None:
    a = cmp.parse([])
    assert (a.pairs, a.num_prompts, a.isl, a.osl, a.concurrency, a.no_pin) == (3, 256, 128, 128, 16, False)


def test_vllm_client_is_told_to_sample_as_our_client_does(cmp: ModuleType) -> None:
    """The server's work per request must not depend on the client: vLLM's client leaves temperature to the
    server (1.0: a random draw each step) unless told; ours sends greedy with min_tokens. The flags given to
    vLLM's client must carry exactly the sampling fields our payload sends."""
    import json

    from bench.measure.client import ClientConfig, RequestSpec, StreamingClient

    ours = StreamingClient(ClientConfig(base_url="http://127.0.0.1:1", model="m")).payload(
        RequestSpec(prompt="p", output_len=77, input_len=5))
    flags = cmp.same_sampling(77)
    theirs = {"temperature": float(flags[flags.index("--temperature") + 1]),
              **json.loads(flags[flags.index("--extra-body") + 1])}
    assert theirs == {k: ours[k] for k in ("temperature", "min_tokens", "skip_special_tokens")}
