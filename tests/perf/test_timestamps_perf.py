"""Chunk timestamp error under load: ours with kernel receive stamps, ours stamped at the event loop's read,
and vLLM's own benchmark client, in the same run against the simulator (`make perf`; or by hand:
`python tests/perf/test_timestamps_perf.py [CONCURRENCY ITL_MS OUTPUT_LEN ROUNDS]`).

Each client runs in its own process (tests/perf/clients.py) against a fresh sim process whose opt-in send log
(MAAS_BENCH_SIM_SEND_LOG, bench/sim/server.py) holds the perf_counter_ns just before every chunk's write.
perf_counter_ns is CLOCK_MONOTONIC, one clock for every process of the machine, so the two can be compared.
Streams are matched by their prompt's crc32. Two errors per inter-token gap, both |measured - reference|:

- vs the told schedule: reference = the told ITL. It also holds the sim's own lateness (a sim process that
  is descheduled on a loaded 2-core box writes late, then on time again), which is no client's error.
- vs the actual writes: reference = the gap between the sim's two writes. This is the client's error, and the
  one the goal (p99 < 1 ms at 200 streams, < 2 ms at 1,000) is judged on.

For ours the absolute delivery lag (chunk stamp - write time) is reported too; vLLM's client reports only gaps.
Machine load (1-minute load average, share of CPU busy over each run from /proc/stat) is reported beside every
figure: the 2 cores are shared with other jobs, so these are noisy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

CLIENTS = ("ours", "ours-loop", "vllm")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return sum(parts) - idle, sum(parts)


def _percentile(xs: list[float], q: float) -> float | None:
    """Percentile with linear interpolation, as the rows' percentiles (q in 0..100); None for no samples."""
    return float(np.percentile(xs, q)) if xs else None


def same_run_read_stamps(streams: list[dict]) -> list[dict]:
    """Ours' streams re-timed with the same run's read times (when the loop read each chunk's bytes)."""
    out = []
    for st in streams:
        t = st["read_ns"]
        out.append({"crc": st["crc"], "chunk_ns": t, "itl_ms": [(t[k + 1] - t[k]) / 1e6 for k in range(len(t) - 1)]})
    return out


def gap_errors(streams: list[dict], sent: dict[int, list[int]], itl_ms: float) -> dict:
    """Per-gap errors of one client's streams against the told ITL and the sim's actual write times (ms)."""
    told, actual, lag = [], [], []
    unmatched = 0
    for st in streams:
        itls = st["itl_ms"]
        told.extend(abs(x - itl_ms) for x in itls)
        s = sent.get(st["crc"])
        if s is None or len(s) != len(itls) + 1:
            unmatched += 1
            continue
        actual.extend(abs(x - (s[k + 1] - s[k]) / 1e6) for k, x in enumerate(itls))
        if "chunk_ns" in st:
            lag.extend((c - w) / 1e6 for c, w in zip(st["chunk_ns"], s, strict=True))
    out = {"gaps": len(told), "unmatched_streams": unmatched}
    for name, xs in (("told", told), ("actual", actual), ("delivery_lag", lag)):
        for q in (50, 99):
            out[f"{name}_p{q}_ms"] = _percentile(xs, q)
    return out


def _read_send_log(path: str) -> dict[int, list[int]]:
    sent: dict[int, list[int]] = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            sent[row["prompt_crc32"]] = row["sent_ns"]
    return sent


def measure(concurrency: int = 200, itl_ms: float = 10.0, out_len: int = 100, rounds: int = 2,
            clients: tuple[str, ...] = CLIENTS) -> dict:
    """Every client in `clients` against its own fresh sim (send log on), back to back; errors per client."""
    from bench.engines.modeldir import materialize
    from bench.sim import SimConfig, start_sim_subprocess, stop_sim_subprocess

    model_dir = str(materialize("glm-4.5-tiny"))
    script = str(Path(__file__).parent / "clients.py")
    out: dict = {"concurrency": concurrency, "itl_ms": itl_ms, "output_len": out_len,
                 "requests": concurrency * rounds, "clients": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for which in clients:
            log = os.path.join(tmp, f"{which}.jsonl")
            os.environ["MAAS_BENCH_SIM_SEND_LOG"] = log
            try:
                proc, url = start_sim_subprocess(SimConfig(ttft_ms=20, itl_ms=itl_ms))
            finally:
                del os.environ["MAAS_BENCH_SIM_SEND_LOG"]
            try:
                load0, busy0 = os.getloadavg()[0], _cpu_ticks()
                cmd = [sys.executable, script, which, url, str(concurrency), str(concurrency * rounds),
                       str(out_len), model_dir]
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                busy1 = _cpu_ticks()
            finally:
                stop_sim_subprocess(proc)
            line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{which} client failed: {run.stderr[-1500:]}")
            r = json.loads(line[7:])
            sent = _read_send_log(log)
            res = gap_errors(r["streams"], sent, itl_ms)
            if which == "ours":
                res["same_run_read_stamps"] = gap_errors(same_run_read_stamps(r["streams"]), sent, itl_ms)
            res.update({
                "completed": r["completed"], "chunks": r["chunks"], "duration_s": r["duration_s"],
                "client_cpu_us_per_chunk": r["cpu_s"] / r["chunks"] * 1e6 if r["chunks"] else None,
                "coalesced_chunk_frac": r["coalesced_chunk_frac"], "timestamp_sources": r.get("timestamp_sources"),
                "loadavg_1m_before": load0, "loadavg_1m_after": os.getloadavg()[0],
                "cpu_busy_frac": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            })
            out["clients"][which] = res
    return out


def table(result: dict) -> str:
    """One line per client: p50/p99 errors (ms) vs told and vs actual writes, and the load."""
    head = (f"{result['concurrency']} streams, told ITL {result['itl_ms']:g} ms, "
            f"{result['requests']} x {result['output_len']} tokens\n"
            "client     told p50/p99   actual p50/p99  lag p50/p99    coalesced  cpu us/chunk  load  busy")
    lines = [head]

    def f(x: float | None) -> str:
        return "   -" if x is None else f"{x:5.2f}"

    rows = list(result["clients"].items())
    if "same_run_read_stamps" in result["clients"].get("ours", {}):
        ours = result["clients"]["ours"]
        rows.insert(1, ("ours@read", {**ours, **ours["same_run_read_stamps"]}))
    for name, c in rows:
        co = c["coalesced_chunk_frac"]
        lines.append(f"{name:<10} {f(c['told_p50_ms'])}/{f(c['told_p99_ms'])}  {f(c['actual_p50_ms'])}/"
                     f"{f(c['actual_p99_ms'])}  {f(c['delivery_lag_p50_ms'])}/{f(c['delivery_lag_p99_ms'])}  "
                     f"{'  -  ' if co is None else f'{co:5.3f}'}      {c['client_cpu_us_per_chunk']:6.1f}     "
                     f"{c['loadavg_1m_before']:4.1f}  {c['cpu_busy_frac']:.2f}")
    return "\n".join(lines)


def test_gap_errors_by_hand():
    """Told ITL 10 ms; the sim wrote at 0, 10.5, 20 ms; the client saw gaps of 10.5 and 9.0 ms."""
    streams = [{"crc": 7, "itl_ms": [10.5, 9.0], "chunk_ns": [200_000, 10_700_000, 19_700_000]}]
    sent = {7: [0, 10_500_000, 20_000_000]}
    e = gap_errors(streams, sent, 10.0)
    # told: |10.5-10|=0.5, |9-10|=1.0 -> p50 0.75, p99 0.5 + 0.99 * 0.5 = 0.995
    # actual: |10.5-10.5|=0, |9.0-9.5|=0.5 -> p50 0.25, p99 0.495; lag: 0.2, 0.2, -0.3 ms -> p50 and p99 0.2
    assert e["told_p50_ms"] == pytest.approx(0.75) and e["told_p99_ms"] == pytest.approx(0.995)
    assert e["actual_p50_ms"] == pytest.approx(0.25) and e["actual_p99_ms"] == pytest.approx(0.495)
    assert e["delivery_lag_p50_ms"] == pytest.approx(0.2) and e["delivery_lag_p99_ms"] == pytest.approx(0.2)
    assert gap_errors(streams, {}, 10.0)["unmatched_streams"] == 1
    # re-timed with read times 1, 12, 21 ms: gaps 11 and 9 ms
    (st,) = same_run_read_stamps([{**streams[0], "read_ns": [1_000_000, 12_000_000, 21_000_000]}])
    assert st["itl_ms"] == [11.0, 9.0] and st["chunk_ns"] == [1_000_000, 12_000_000, 21_000_000]


READ_CHUNKS = 5000


def stream_through_socket(kernel: bool, n: int = READ_CHUNKS) -> float:
    """CPU microseconds per chunk of the client's read path on a real loopback socket, one chunk per read.

    The peer writes one framed SSE event, the client reads it (kernel-stamped KStampTransport, or asyncio's
    transport stamping in data_received), decodes it and wakes the writer: the peer's send and the wake-up
    are the same for both, so the difference between the two is the transports' own cost.
    """
    from bench.measure import kstamp
    from bench.measure.client import run_async
    from bench.measure.http import _Conn, _Response

    event = (b'data: {"id":"cmpl-8f1e2d","object":"text_completion","created":1733000000,"model":"glm",'
             b'"choices":[{"index":0,"text":" ba","logprobs":null,"finish_reason":null}],"usage":null}\n\n')
    framed = f"{len(event):x}\r\n".encode() + event + b"\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def go() -> float:
        import asyncio
        import socket
        import time

        loop = asyncio.get_running_loop()
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        if kernel:
            t, conn = await kstamp.open_connection(_Conn, "127.0.0.1", port)
        else:
            t, conn = await loop.create_connection(_Conn, "127.0.0.1", port)
        peer, _ = lsock.accept()
        peer.setblocking(False)
        got: list[asyncio.Future[None]] = []
        stamps: list[int] = []

        def on_events(now: int, events: list[bytes]) -> None:
            stamps.append(now)
            got[0].set_result(None)

        conn.response = _Response(loop.create_future(), on_events)
        peer.send(head)
        cpu0 = time.process_time()
        for _ in range(n):
            got[:] = [loop.create_future()]
            peer.send(framed)
            await got[0]
        cpu = time.process_time() - cpu0
        conn.response = None
        t.close()
        peer.close()
        lsock.close()
        assert len(stamps) == n
        return cpu / n * 1e6

    return run_async(go())


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-stamps", "loop-stamps"])
def test_read_path_cpu_per_chunk(benchmark, kernel):
    """The transport's own per-chunk cost, kernel stamps vs asyncio's path (report both; no goal)."""
    us = benchmark.pedantic(stream_through_socket, args=(kernel,), rounds=5, iterations=1)
    benchmark.extra_info["cpu_us_per_chunk_last_round"] = us
    assert us > 0


@pytest.mark.slow
@pytest.mark.parametrize(("concurrency", "itl_ms", "out_len", "rounds"), [(200, 10.0, 100, 2), (1000, 50.0, 60, 1)])
def test_timestamp_error_vs_vllm_client(benchmark, concurrency, itl_ms, out_len, rounds):
    """The same chunk rate (20,000 chunks/s) at 200 and 1,000 streams; goal p99 < 1 ms (200) and < 2 ms (1,000)
    vs the actual writes, printed with the load it was measured under.

    `ours@read` re-times ours' own run with the time the loop read each chunk (the stamp the loop path takes),
    so kernel stamps and loop stamps are compared on the very same chunks under the very same load; `ours-loop`
    is a separate run on asyncio's transport (the load on a shared box moves between runs).

    Asserted (a regression guard that holds on a loaded box, not the goal): the kernel stamps are arrival times,
    so their median delivery lag (stamp - write) is below the same run's read times', and their p99 gap error
    is no worse than the read times' and below vLLM's client's. The goal itself depends on the CPU the client gets: when
    several chunks of one stream queue before it reads, they share one stamp (coalesced_chunk_frac). On
    2 shared cores at load average 8-13 the kernel path's p99 was 0.11 ms (200) and 0.16 ms (1,000); at load
    average 25, 5.4 ms at 1,000 streams (the loop path 9.9 ms, vLLM's client 488 ms)."""
    pytest.importorskip("vllm")
    out = benchmark.pedantic(measure, args=(concurrency, itl_ms, out_len, rounds), rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    sys.stdout.write(table(out) + "\n")
    ours, loop, vllm = out["clients"]["ours"], out["clients"]["ours-loop"], out["clients"]["vllm"]
    assert ours["timestamp_sources"] == ["kernel"] and loop["timestamp_sources"] == ["loop"]
    assert all(c["completed"] == concurrency * rounds and c["unmatched_streams"] == 0
               for c in out["clients"].values()), out
    read = ours["same_run_read_stamps"]
    assert ours["delivery_lag_p50_ms"] < read["delivery_lag_p50_ms"], table(out)
    assert ours["actual_p99_ms"] <= read["actual_p99_ms"], table(out)
    assert ours["actual_p99_ms"] < vllm["actual_p99_ms"], table(out)


if __name__ == "__main__":
    args = [float(x) for x in sys.argv[1:5]]
    conc, itl, olen, rnds = (int(args[0]) if args else 200, args[1] if len(args) > 1 else 10.0,
                             int(args[2]) if len(args) > 2 else 100, int(args[3]) if len(args) > 3 else 2)
    res = measure(conc, itl, olen, rnds)
    sys.stdout.write(table(res) + "\n" + json.dumps(res) + "\n")
