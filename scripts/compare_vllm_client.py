"""Side-by-side: maas-bench's client vs vLLM's own benchmark client (vllm.benchmarks.serve).

Starts one vLLM server for a catalog model (tiny GLM twin by default), then for each concurrency
runs both clients on the same workload (random prompts, fixed ISL/OSL, ignore_eos) `--repeats`
times, alternating which goes first, and prints the medians of output tok/s, TTFT p50 and TPOT p50
for each with their ratios. Note the throughput definitions differ: vLLM's client divides all
output tokens by the whole benchmark (including the drain at the end); maas-bench counts tokens
streamed inside the measured window, with warm-up and cool-down load around it (steady state).

    .venv/bin/python scripts/compare_vllm_client.py --concurrency 1 4 16 --num-prompts 64
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
from pathlib import Path

from bench.config.sweep import EngineSpec, Sweep
from bench.engines.modeldir import materialize
from bench.engines.vllm_server import SERVED_MODEL_NAME, VllmServer, has_nvidia_gpu
from bench.sweep.run import run_sweep
from bench.sweep.store import load_results


def ours(base_url: str, model: str, c: int, n: int, isl: int, osl: int, out: Path) -> dict:
    sweep = Sweep(
        name=f"cmp-c{c}",
        engine={"kind": "openai", "base_url": base_url, "served_model_name": SERVED_MODEL_NAME, "ignore_eos": True},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
        server={"model": model},
        load={"concurrency": [c], "num_requests": n, "warmup_requests": min(c, 4)},
        workloads=[{"name": "random", "input_len": isl, "output_len": osl}],
    )
    row = load_results(run_sweep(sweep, out_root=out).run_dir).iloc[0]
    return {"output_tok_s": float(row.output_tok_s), "ttft_ms_p50": float(row.ttft_ms_p50),
            "tpot_ms_p50": float(row.tpot_ms_p50)}


def theirs(port: int, model_dir: Path, c: int, n: int, isl: int, osl: int) -> dict:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "vllm", "--host", "127.0.0.1", "--port", str(port), "--model", SERVED_MODEL_NAME,
        "--tokenizer", str(model_dir), "--dataset-name", "random", "--random-input-len", str(isl),
        "--random-output-len", str(osl), "--num-prompts", str(n), "--max-concurrency", str(c),
        "--ignore-eos", "--disable-tqdm", "--num-warmups", str(min(c, 4)), "--seed", "0",
    ])
    with contextlib.redirect_stdout(io.StringIO()):
        res = main(args)
    return {"output_tok_s": res["output_throughput"], "ttft_ms_p50": res["median_ttft_ms"],
            "tpot_ms_p50": res["median_tpot_ms"]}


def run(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glm-4.5-tiny")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--isl", type=int, default=128)
    ap.add_argument("--osl", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="runs per client per concurrency; medians reported")
    ap.add_argument("--out", type=Path, default=Path("/tmp/maas-bench-compare"))
    a = ap.parse_args(argv)
    model_dir = materialize(a.model)
    from bench.config.sweep import ServerSpec

    spec = ServerSpec(model=a.model, dtype="bfloat16", max_model_len=2048, max_num_seqs=32)
    server = VllmServer(spec, str(model_dir), EngineSpec(), a.out / "server.log", on_cpu=not has_nvidia_gpu())
    rows = []
    with server:
        for c in a.concurrency:
            runs: dict[str, list[dict]] = {"ours": [], "vllm": []}
            for rep in range(a.repeats):  # alternate who goes first: server drift hits both alike
                for who in (("ours", "vllm") if rep % 2 == 0 else ("vllm", "ours")):
                    if who == "ours":
                        runs[who].append(ours(server.base_url, a.model, c, a.num_prompts, a.isl, a.osl, a.out))
                    else:
                        runs[who].append(theirs(server.port, model_dir, c, a.num_prompts, a.isl, a.osl))
            row = {"concurrency": c, "repeats": a.repeats}
            for k in ("output_tok_s", "ttft_ms_p50", "tpot_ms_p50"):
                ours_k = statistics.median(r[k] for r in runs["ours"])
                vllm_k = statistics.median(r[k] for r in runs["vllm"])
                row[f"ours_{k}"] = round(ours_k, 2)
                row[f"vllm_{k}"] = round(vllm_k, 2)
                row[f"ratio_{k}"] = round(ours_k / vllm_k, 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
