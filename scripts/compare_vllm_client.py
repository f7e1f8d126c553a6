"""Side-by-side: maas-bench's client vs vLLM's own benchmark client (`vllm bench serve`) on one vLLM server.

Why this shape (issue 27): on a 2-core box the client shares the CPU with the server, so each client's own
CPU cost moves the server's speed, and the two clients disagreed by 4-17% with a sign that followed the
machine's load. Here the server runs pinned to one core set and each client, in its own subprocess, to the
other (`taskset`); each run records the client's CPU-seconds per request and the server's, so a gap that
remains can be told apart from a client starving the server.

Protocol (the issue's, the defaults): one server, `--pairs` alternating pairs (pair 0: ours then vLLM's,
pair 1: vLLM's then ours, ...) of `--num-prompts` requests each, random prompts of `--isl` tokens,
`--osl` output tokens pinned with ignore_eos, closed loop at `--concurrency`. Both clients measure the
same thing: no warm-up (ours: `warmup_requests: 0`; vLLM's: `--num-warmups 0`), no cool-down (ours:
`cooldown: false`), so our window is first send to last completion, vLLM's benchmark duration, and both
throughputs are all output tokens / that duration. Both sample alike (`same_sampling`: greedy, min_tokens),
so the server does the same work for either client. The server is primed once before the pairs (one
unmeasured run) so neither client pays for the first large batch. Prefix caching is off on the server.

    .venv/bin/python scripts/compare_vllm_client.py --json            # the issue's protocol, pinned
    .venv/bin/python scripts/compare_vllm_client.py --no-pin --json   # the "before" numbers

Output: per client the median output tok/s, TTFT p50, TPOT p50 over the pairs, ours / vLLM's ratios
(medians and per pair), whether they agree (3% throughput, 5% TTFT/TPOT), CPU-seconds per request of each
client and of the server, and the load average. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

METRICS = ("output_tok_s", "ttft_ms_p50", "tpot_ms_p50")
# the goal: |ours / vLLM's - 1| within these, on the medians over the pairs
TOLERANCE = {"output_tok_s": 0.03, "ttft_ms_p50": 0.05, "tpot_ms_p50": 0.05}
CLIENTS = ("ours", "vllm")


# ---------------------------------------------------------------- pure logic (tests/unit/test_compare_vllm_client.py)

def pair_order(pair_idx: int) -> tuple[str, str]:
    """Who goes first in pair `pair_idx`: alternating, so a server that drifts hits both clients alike."""
    return CLIENTS if pair_idx % 2 == 0 else (CLIENTS[1], CLIENTS[0])


def split_cores(allowed: Sequence[int]) -> tuple[list[int], list[int]]:
    """(server cores, client cores) from the CPUs this process may use: the client gets the last one (one
    asyncio loop needs one core), the server the rest. Fewer than 2 CPUs cannot be split."""
    cores = sorted(set(allowed))
    if len(cores) < 2:
        raise ValueError(f"pinning needs at least 2 CPUs, this process may use {cores}; run with --no-pin")
    return cores[:-1], cores[-1:]


def cpu_list(cores: Sequence[int]) -> str:
    """taskset's list form: [0, 1, 3] -> '0,1,3'."""
    return ",".join(str(c) for c in sorted(cores))


def pinned(cmd: Sequence[str], cores: Sequence[int] | None) -> list[str]:
    """`cmd` run under `taskset -c <cores>`; unchanged when cores is None (--no-pin)."""
    return list(cmd) if cores is None else ["taskset", "-c", cpu_list(cores), *cmd]


def same_sampling(osl: int) -> list[str]:
    """vLLM client flags that make its requests sample as ours do (bench.measure.client's payload: greedy,
    min_tokens = max_tokens, special tokens kept). Without them the server samples vLLM's requests at its
    default temperature (1.0 here): a softmax and a random draw over the vocabulary each step that greedy
    requests skip, a different server workload rather than a different client."""
    return ["--temperature", "0", "--extra-body", json.dumps({"min_tokens": osl, "skip_special_tokens": False})]


def ratio(ours: float, theirs: float) -> float | None:
    """ours / vLLM's; None when vLLM's figure is zero or missing (no ratio to speak of)."""
    return ours / theirs if theirs else None


def compare(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians over the pairs, ours / vLLM's ratios (of the medians and per pair) and the agreement verdict.

    `runs[client][i]` is pair i's run of that client, each a dict with METRICS and `cpu_s_per_request`.
    """
    n = min(len(runs["ours"]), len(runs["vllm"]))
    out: dict[str, Any] = {"pairs": n}
    agree = True
    for k in METRICS:
        med = {c: statistics.median(r[k] for r in runs[c][:n]) for c in CLIENTS}
        r = ratio(med["ours"], med["vllm"])
        within = r is not None and abs(r - 1) <= TOLERANCE[k]
        agree = agree and within
        out[k] = {"ours": med["ours"], "vllm": med["vllm"], "ratio": r, "within": within,
                  "tolerance": TOLERANCE[k],
                  "pair_ratios": [ratio(runs["ours"][i][k], runs["vllm"][i][k]) for i in range(n)]}
    for key in ("cpu_s_per_request", "server_cpu_s_per_request"):
        vals = {c: [r[key] for r in runs[c][:n] if r.get(key) is not None] for c in CLIENTS}
        out[key] = {c: statistics.median(v) if v else None for c, v in vals.items()}
    out["agree"] = agree
    return out


# ---------------------------------------------------------------- measuring a client (in its own subprocess)

@contextlib.contextmanager
def cpu_clock(acc: dict[str, float]) -> Iterator[None]:
    """Adds this process's CPU-seconds (all threads, plus reaped children) spent inside the block to acc['cpu_s']."""
    def now() -> float:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + ch.ru_utime + ch.ru_stime

    t0 = now()
    try:
        yield
    finally:
        acc["cpu_s"] = acc.get("cpu_s", 0.0) + now() - t0


def run_ours(a: argparse.Namespace) -> dict[str, float]:
    """maas-bench's client through the ordinary sweep path (an `openai` engine at the server's URL)."""
    from bench.config.sweep import Sweep
    from bench.engines.vllm_server import SERVED_MODEL_NAME
    from bench.sweep import session
    from bench.sweep.run import run_sweep
    from bench.sweep.store import load_results

    acc: dict[str, float] = {}
    drive = session._drive

    async def timed_drive(*args: Any, **kw: Any) -> Any:  # the load itself, as vLLM's `benchmark()` below
        with cpu_clock(acc):
            return await drive(*args, **kw)

    session._drive = timed_drive  # type: ignore[assignment]
    sweep = Sweep(
        name=f"cmp-c{a.concurrency}",
        engine={"kind": "openai", "base_url": a.base_url, "served_model_name": SERVED_MODEL_NAME, "ignore_eos": True,
                "kernel_timestamps": not a.loop_stamps},
        hardware={"gpu": "cpu-2core", "usd_per_gpu_hour": 0.1},
        server={"model": a.model},
        load={"concurrency": [a.concurrency], "num_requests": a.num_prompts, "warmup_requests": 0,
              "cooldown": False},
        workloads=[{"name": "random", "input_len": a.isl, "output_len": a.osl, "seed": a.seed}],
    )
    row = load_results(run_sweep(sweep, out_root=Path(a.out)).run_dir).iloc[0]
    if row.status != "ok":
        raise RuntimeError(f"our run was {row.status}: {row.get('error')}")
    return {"output_tok_s": float(row.output_tok_s), "ttft_ms_p50": float(row.ttft_ms_p50),
            "tpot_ms_p50": float(row.tpot_ms_p50), "cpu_s": acc.get("cpu_s", float("nan")),
            "completed": float(row.completed), "duration_s": float(row.duration_s),
            "output_tokens": float(row.output_tokens), "tpot_ms_mean": float(row.tpot_ms_mean),
            "e2el_ms_mean": float(row.e2el_ms_mean)}


def run_vllm(a: argparse.Namespace) -> dict[str, float]:
    """vLLM's own client (vllm.benchmarks.serve, what `vllm bench serve` runs) on the same protocol."""
    import vllm.benchmarks.serve as vbs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from bench.engines.vllm_server import SERVED_MODEL_NAME

    acc: dict[str, float] = {}
    bench_fn = vbs.benchmark

    async def timed_benchmark(*args: Any, **kw: Any) -> Any:  # its ready check (one request) and the load
        with cpu_clock(acc):
            return await bench_fn(*args, **kw)

    vbs.benchmark = timed_benchmark  # type: ignore[assignment]
    parser = FlexibleArgumentParser()
    vbs.add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "vllm", "--base-url", a.base_url, "--model", SERVED_MODEL_NAME,
        "--tokenizer", a.model_dir, "--dataset-name", "random", "--random-input-len", str(a.isl),
        "--random-output-len", str(a.osl), "--num-prompts", str(a.num_prompts),
        "--max-concurrency", str(a.concurrency), "--ignore-eos", "--disable-tqdm", "--num-warmups", "0",
        "--seed", str(a.seed), *same_sampling(a.osl),
    ])
    with contextlib.redirect_stdout(io.StringIO()):
        res = vbs.main(args)
    return {"output_tok_s": float(res["output_throughput"]), "ttft_ms_p50": float(res["median_ttft_ms"]),
            "tpot_ms_p50": float(res["median_tpot_ms"]), "cpu_s": acc.get("cpu_s", float("nan")),
            "completed": float(res["completed"]), "duration_s": float(res["duration"]),
            "output_tokens": float(res["total_output_tokens"]), "tpot_ms_mean": float(res["mean_tpot_ms"]),
            "e2el_ms_mean": 1000 * statistics.fmean(res["latencies"])}


def child_main(a: argparse.Namespace) -> None:
    """One client run; writes its figures as JSON to --result-file."""
    res = run_ours(a) if a.child == "ours" else run_vllm(a)
    res["cpu_s_per_request"] = res["cpu_s"] / a.num_prompts
    Path(a.result_file).write_text(json.dumps(res))


# ---------------------------------------------------------------- the orchestrator (server + pairs)

def group_cpu_s(pgid: int) -> float:
    """CPU-seconds (user + system, all threads) of the live processes of a process group, from /proc."""
    from bench.engines.process import group_members

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / tick


def group_affinity(pgid: int) -> list[int]:
    """Every CPU some process of the group may run on: proves the server's pinning held after start."""
    from bench.engines.process import group_members

    cpus: set[int] = set()
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            cpus |= os.sched_getaffinity(pid)
    return sorted(cpus)


def run_client(who: str, a: argparse.Namespace, base_url: str, model_dir: Path, seed: int, num_prompts: int,
               cores: list[int] | None, tag: str, server_pgid: int) -> dict[str, Any]:
    """Run one client in a subprocess (pinned to `cores`); its figures, CPU-seconds and the server's."""
    out = Path(a.out) / tag
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", who, "--base-url", base_url,
           "--model", a.model, "--model-dir", str(model_dir), "--seed", str(seed), "--num-prompts", str(num_prompts),
           "--isl", str(a.isl), "--osl", str(a.osl), "--concurrency", str(a.concurrency), "--out", str(out),
           "--result-file", str(result_file), *(["--loop-stamps"] if a.loop_stamps else [])]
    server0 = group_cpu_s(server_pgid)
    t0 = time.monotonic()
    with open(out / "client.log", "wb") as log:
        proc = subprocess.Popen(pinned(cmd, cores), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result_file.exists():
        tail = (out / "client.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{who} client exited {proc.returncode}:\n" + "\n".join(tail))
    res: dict[str, Any] = json.loads(result_file.read_text())
    res["wall_s"] = time.monotonic() - t0
    res["process_cpu_s"] = ru.ru_utime + ru.ru_stime  # the whole child, imports included
    res["server_cpu_s_per_request"] = (group_cpu_s(server_pgid) - server0) / num_prompts
    res["loadavg_1m"] = os.getloadavg()[0]
    return res


def start_server(a: argparse.Namespace, model_dir: Path, server_cores: list[int] | None) -> Any:
    """The vLLM server, started while this process's affinity is `server_cores`: the guard, the API server,
    the engine core and the CPU worker inherit it (vLLM's own OMP binding picks from the allowed CPUs)."""
    from bench.config.sweep import EngineSpec, ServerSpec
    from bench.engines.vllm_server import VllmServer, has_nvidia_gpu

    spec = ServerSpec(model=a.model, dtype="bfloat16", max_model_len=2048, max_num_seqs=32,
                      enable_prefix_caching=False)
    server = VllmServer(spec, str(model_dir), EngineSpec(), Path(a.out) / "server.log", on_cpu=not has_nvidia_gpu())
    mine = os.sched_getaffinity(0)
    if server_cores is not None:
        os.sched_setaffinity(0, server_cores)
    try:
        server.start()
    finally:
        os.sched_setaffinity(0, mine)
    return server


def orchestrate(a: argparse.Namespace) -> dict[str, Any]:
    from bench.engines.modeldir import materialize

    server_cores = client_cores = None
    if not a.no_pin:
        if shutil.which("taskset") is None:
            fail("--no-pin: taskset is not installed here; install util-linux or run with --no-pin")
        try:
            server_cores, client_cores = split_cores(sorted(os.sched_getaffinity(0)))
        except ValueError as e:
            fail(f"--no-pin: {e}")
        if a.server_cores:
            server_cores = a.server_cores
        if a.client_cores:
            client_cores = a.client_cores
    model_dir = materialize(a.model)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "protocol": {"num_prompts": a.num_prompts, "isl": a.isl, "osl": a.osl, "concurrency": a.concurrency,
                     "pairs": a.pairs, "warmup": 0, "cooldown": False, "prefix_caching": False, "model": a.model},
        "pinned": not a.no_pin, "our_stamps": "loop" if a.loop_stamps else "kernel",
        "server_cores": server_cores, "client_cores": client_cores,
        "cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
    }
    t0 = time.monotonic()
    server = start_server(a, model_dir, server_cores)
    try:
        assert server.proc is not None
        pgid = server.proc.pid
        report["server_start_s"] = round(time.monotonic() - t0, 1)
        report["server_affinity"] = group_affinity(pgid)
        log(f"server up in {report['server_start_s']} s on CPUs {report['server_affinity']}")
        prime_n = min(a.num_prompts, 4 * a.concurrency)
        run_client("ours", a, server.base_url, model_dir, 999, prime_n, client_cores, "prime", pgid)
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
        for i in range(a.pairs):
            for who in pair_order(i):
                r = run_client(who, a, server.base_url, model_dir, i, a.num_prompts, client_cores, f"p{i}-{who}", pgid)
                runs[who].append(r)
                log(f"pair {i} {who}: {json.dumps({k: round(v, 3) for k, v in r.items()})}")
    finally:
        server.stop()
    report["runs"] = runs
    report["summary"] = compare(runs)
    report["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = round(time.monotonic() - t0, 1)
    return report


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str) -> NoReturn:
    """Bad input: one line naming the field, exit 2, no traceback."""
    print(f"compare_vllm_client: {msg}", file=sys.stderr)
    raise SystemExit(2)


def positive_int(v: str) -> int:
    n = int(v) if v.strip().lstrip("+").isdigit() else 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {v!r})")
    return n


def core_list(v: str) -> list[int]:
    try:
        cores = sorted({int(x) for x in v.split(",") if x.strip()})
    except ValueError:
        cores = []
    if not cores or min(cores) < 0:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of CPU ids (got {v!r})")
    return cores


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's usage block + message -> the one line
        fail(message)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=positive_int, default=3, help="alternating pairs (ours/vLLM's); medians reported")
    ap.add_argument("--num-prompts", type=positive_int, default=256, help="requests per run")
    ap.add_argument("--isl", type=positive_int, default=128, help="input tokens per request")
    ap.add_argument("--osl", type=positive_int, default=128, help="output tokens per request (ignore_eos)")
    ap.add_argument("--concurrency", type=positive_int, default=16, help="closed-loop concurrency")
    ap.add_argument("--no-pin", action="store_true", help="no taskset: server and clients share every CPU (before)")
    ap.add_argument("--server-cores", type=core_list, help="CPU ids for the server (default: all but the last)")
    ap.add_argument("--client-cores", type=core_list, help="CPU ids for each client (default: the last)")
    ap.add_argument("--loop-stamps", action="store_true",
                    help="our client stamps chunks when its loop reads them (as vLLM's does), not by kernel stamps")
    ap.add_argument("--model", default="glm-4.5-tiny")
    ap.add_argument("--out", default="/tmp/maas-bench-compare", help="server log and each run's files")
    ap.add_argument("--json", action="store_true", help="print the whole report as JSON on stdout")
    # internal: one client run in a subprocess
    ap.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def table(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [f"pinned={report['pinned']} server CPUs {report.get('server_affinity')} client CPUs "
             f"{report['client_cores']}  load {report['loadavg_start'][0]:.2f} -> {report['loadavg_end'][0]:.2f}",
             f"{'metric':<14}{'ours':>10}{'vllm':>10}{'ratio':>8}  within  per-pair ratios"]
    for k in METRICS:
        m = s[k]
        pr = " ".join(f"{x:.3f}" if x is not None else "-" for x in m["pair_ratios"])
        rr = f"{m['ratio']:.3f}" if m["ratio"] is not None else "-"
        lines.append(f"{k:<14}{m['ours']:>10.2f}{m['vllm']:>10.2f}{rr:>8}  {str(m['within']):<6}  {pr}")
    for key in ("cpu_s_per_request", "server_cpu_s_per_request"):
        v = s[key]
        lines.append(f"{key:<26} ours {v['ours'] or float('nan'):.4f}  vllm {v['vllm'] or float('nan'):.4f}")
    lines.append(f"agree: {s['agree']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.child:
        child_main(a)
        return
    report = orchestrate(a)
    print(json.dumps(report, indent=1) if a.json else table(report))


if __name__ == "__main__":
    main()
