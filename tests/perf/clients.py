"""Capacity runs of two load generators against the same simulated server, each in a fresh process.

`python tests/perf/clients.py ours|ours-loop|vllm URL CONCURRENCY NUM_PROMPTS OUTPUT_LEN MODEL_DIR` prints one
JSON line: {"duration_s", "completed", "chunks", "itl_ms": [...], "ttft_ms": [...], "streams": [...]}.
`streams` holds, per completed request, the crc32 of its prompt (what the sim's opt-in send log keys its
streams by, bench/sim/server.py) and its per-chunk ITLs in ms, plus for ours the absolute chunk times
(perf_counter_ns: CLOCK_MONOTONIC, the same clock as the sim's log), for tests/perf/test_timestamps_perf.py.

- ours: bench.measure.loadgen.run_load + bench.measure.client.StreamingClient, closed loop at CONCURRENCY, no warm-up,
  no cool-down (so both clients do the same work). Chunk times are kernel receive stamps (bench.measure.kstamp);
  ours-loop is the same client with `kernel_timestamps=False` (stamped when the event loop reads).
- vllm: vLLM's own benchmark client, `vllm.benchmarks.serve.main_async`, with an argparse Namespace
  from its own parser: random dataset, --max-concurrency CONCURRENCY, --request-rate inf,
  --ignore-eos, --save-detailed (for its per-request ITLs). Its tokenizer is the materialized dir's.
Duration is each client's own benchmark window (first send to last completion).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import time
import zlib


def prompt_crc32(prompt: object) -> int:
    """The key of a stream in the sim's send log: crc32 of str(prompt), as bench/sim/server.py computes it."""
    return zlib.crc32(str(prompt).encode())


def run_ours(url: str, conc: int, n: int, out_len: int, input_len: int = 32, kernel_timestamps: bool = True) -> dict:
    from bench.config.sweep import LoadPoint, WorkloadSpec
    from bench.measure.client import ClientConfig, StreamingClient, run_async
    from bench.measure.loadgen import run_load
    from bench.measure.metrics import summarize
    from bench.measure.workloads import PromptFactory, generate

    f = PromptFactory.for_vocab_size(2048)
    reqs = generate(WorkloadSpec(input_len=input_len, output_len=out_len), n, f)

    from bench.measure.http import _Conn

    cpu = {}
    keys: dict[int, int] = {}
    # The same run's read times: each kernel stamp -> perf_counter_ns when the loop read those bytes, so the
    # stamp the loop path would have taken is compared with the kernel's on the very same chunks and load.
    read_ns: dict[int, int] = {}
    received_at = _Conn.received_at

    def received_at_and_read_time(self, now: int, data: bytes) -> None:
        read_ns[now] = time.perf_counter_ns()
        received_at(self, now, data)

    if kernel_timestamps:
        _Conn.received_at = received_at_and_read_time  # type: ignore[method-assign]

    async def main():
        async with StreamingClient(ClientConfig(base_url=url, model="sim-model",
                                                kernel_timestamps=kernel_timestamps)) as c:
            async def send(idx, req, warm, scheduled_ns):
                keys[idx] = prompt_crc32(req.prompt)
                return await c.send(idx, req, warm, scheduled_ns)

            cpu["t0"] = time.process_time()
            res = await run_load(send, [], reqs, LoadPoint(concurrency=conc, num_requests=n, warmup_requests=0))
            cpu["t1"] = time.process_time()
            return res

    res = run_async(main())
    row = summarize(res.records)
    done = [r for r in res.records if r.ok]
    chunks = sum(len(r.chunk_ns) for r in done)
    return {"duration_s": row["duration_s"], "completed": row["completed"], "chunks": chunks,
            "itl_ms": [x for r in done for x in r.itl_ms], "ttft_ms": [r.ttft_ms for r in done],
            "coalesced_chunk_frac": res.coalesced_chunk_frac, "cpu_s": cpu["t1"] - cpu["t0"],
            "timestamp_sources": sorted({str(r.timestamp_source) for r in done}),
            "streams": [{"crc": keys[r.request_idx], "itl_ms": r.itl_ms, "chunk_ns": r.chunk_ns,
                         "read_ns": [read_ns.get(t, t) for t in r.chunk_ns]} for r in done]}


def run_vllm(url: str, conc: int, n: int, out_len: int, model_dir: str, input_len: int = 32) -> dict:
    import vllm.benchmarks.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cpu = {}
    inner = serve.benchmark

    async def timed_benchmark(*a, **kw):  # CPU seconds of vLLM's benchmark() itself, not of dataset building
        cpu["prompts"] = [r.prompt for r in kw["input_requests"]]  # outputs come back in this order
        cpu["t0"] = time.process_time()
        try:
            return await inner(*a, **kw)
        finally:
            cpu["t1"] = time.process_time()

    serve.benchmark = timed_benchmark

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "vllm", "--base-url", url, "--endpoint", "/v1/completions", "--model", model_dir,
        "--served-model-name", "sim-model", "--tokenizer", model_dir, "--dataset-name", "random",
        "--random-input-len", str(input_len), "--random-output-len", str(out_len), "--num-prompts", str(n),
        "--max-concurrency", str(conc), "--request-rate", "inf", "--ignore-eos", "--disable-tqdm",
        "--save-detailed", "--num-warmups", "0", "--ready-check-timeout-sec", "0", "--seed", "0",
    ])
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its own report
        res = asyncio.run(serve.main_async(args))
    itls = [x * 1e3 for per in res["itls"] for x in per]
    chunks = sum(len(per) + 1 for per, t in zip(res["itls"], res["ttfts"], strict=True) if t > 0)
    return {"duration_s": res["duration"], "completed": res["completed"], "chunks": chunks, "itl_ms": itls,
            "ttft_ms": [t * 1e3 for t in res["ttfts"]], "coalesced_chunk_frac": None, "cpu_s": cpu["t1"] - cpu["t0"],
            "streams": [{"crc": prompt_crc32(p), "itl_ms": [x * 1e3 for x in per]}
                        for p, per, t in zip(cpu["prompts"], res["itls"], res["ttfts"], strict=True) if t > 0]}


def _main() -> None:
    which, url, conc, n, out_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if which == "vllm":
        out = run_vllm(url, conc, n, out_len, sys.argv[6])
    else:
        out = run_ours(url, conc, n, out_len, kernel_timestamps=which == "ours")
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")


def compare(concurrency: int = 200, repeats: int = 3, out_len: int = 100, itl_ms: float = 10.0,
            rounds_per_client: int = 3) -> dict:
    """Both clients back to back against one sim process, `repeats` times; ratios are ours / vLLM's.

    Capacity on one core = chunks (or requests) handled per CPU-second of the client process, a figure
    the shared machine's other jobs disturb far less than wall-clock throughput. The delivered rates
    (per wall-clock second) and ITL error p99 (|measured ITL - told ITL|) are reported beside it.
    """
    import statistics
    import subprocess

    from bench.engines.modeldir import materialize
    from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess

    model_dir = str(materialize("glm-4.5-tiny"))
    proc, url = start_sim_subprocess(SimConfig(ttft_ms=5, itl_ms=itl_ms, spin_ms=0))
    runs: list[dict] = []
    try:
        for _ in range(repeats):
            pair = {}
            for which in ("ours", "vllm"):
                cmd = [sys.executable, __file__, which, url, str(concurrency), str(concurrency * rounds_per_client),
                       str(out_len), model_dir]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    raise RuntimeError(f"{which} client failed: {out.stderr[-1500:]}")
                r = json.loads(line[7:])
                itl = sorted(abs(x - itl_ms) for x in r["itl_ms"])
                pair[which] = {
                    "chunk_capacity_per_cpu_s": r["chunks"] / r["cpu_s"],
                    "request_capacity_per_cpu_s": r["completed"] / r["cpu_s"],
                    "delivered_chunks_s": r["chunks"] / r["duration_s"],
                    "delivered_req_s": r["completed"] / r["duration_s"],
                    "itl_error_p99_ms": itl[int(0.99 * (len(itl) - 1))] if itl else None,
                    "completed": r["completed"],
                }
            pair["chunk_capacity_ratio"] = (pair["ours"]["chunk_capacity_per_cpu_s"]
                                            / pair["vllm"]["chunk_capacity_per_cpu_s"])
            pair["request_capacity_ratio"] = (pair["ours"]["request_capacity_per_cpu_s"]
                                              / pair["vllm"]["request_capacity_per_cpu_s"])
            runs.append(pair)
    finally:
        stop_sim_subprocess(proc)
    return {"concurrency": concurrency, "runs": runs,
            "median_chunk_capacity_ratio": statistics.median(r["chunk_capacity_ratio"] for r in runs),
            "median_request_capacity_ratio": statistics.median(r["request_capacity_ratio"] for r in runs)}


if __name__ == "__main__":
    if sys.argv[1] == "compare":  # python tests/perf/clients.py compare [CONCURRENCY]
        conc = int(sys.argv[2]) if len(sys.argv) > 2 else 200
        sys.stdout.write(json.dumps(compare(conc), indent=1) + "\n")
    else:
        _main()
