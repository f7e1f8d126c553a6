"""Measure issue 18's fault table on the REAL engine: inject each fault into a small vLLM sweep and check
the outcome from the outside.

Each case runs `maas-bench run` (the console script, as a user would) on a 2-point sweep of the tiny GLM
twin on vLLM (CPU build is fine; 8 requests per point, 16-token prompts, 128-token outputs), injects one
fault, and then checks what it left WITHOUT asking the harness: the row files and points.parquet read
here, the processes read from `ps` (a vLLM server's processes by command line, VLLM_MARKERS, that were not
running before the case, and the members of the server's process group), and the server's own /metrics to
know a point is in flight.

    a  SIGKILL the vLLM API server mid-point   -> point failed "server died: killed by signal 9 (SIGKILL)",
                                                  the next point restarts the server and is ok
    b  SIGTERM the vLLM API server mid-point   -> same, with the reason vLLM's exit gives
    c  SIGINT (Ctrl-C) to `maas-bench run`     -> prompt exit, no vLLM left, finished rows intact on disk,
                                                  `--resume` measures only the missing point
    d  SIGTERM to `maas-bench run`             -> same
    e  SIGKILL to `maas-bench run`             -> the guard (bench/engines/guard.py) stops the server; resume
    f  a server that cannot start (fp8 on CPU) -> its point failed with the engine's reason, the next ok

Times are wall-clock seconds from the signal: to the harness's exit, to the next server answering /health
(a, b), to the last vLLM process gone. Not part of CI (about 12 minutes on 2 cores). Run it alone:

    flock /tmp/vllm.lock .venv/bin/python scripts/fault_table.py [--only a,c] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXE = str(ROOT / ".venv" / "bin" / "maas-bench")
KILL_MSG = "server died: killed by signal 9 (SIGKILL)"


def sweep(name: str, quantization: list[str | None] | None = None, concurrency: list[int] | None = None) -> dict:
    return {
        "name": name, "engine": {"kind": "vllm", "startup_timeout_s": 600}, "hardware": {"gpu": "cpu-2core"},
        "server": {"model": "glm-4.5-tiny", "max_model_len": 512, "max_num_seqs": 8,
                   "quantization": quantization or [None]},
        "load": {"concurrency": concurrency or [1, 2], "num_requests": 8, "warmup_requests": 0, "timeout_s": 120},
        "workloads": [{"name": "w", "input_len": 16, "output_len": 128}],
    }


# ---- the outside view: processes, the server's metrics, the run dir ---------------------------------------

# what a vLLM server's processes show in `ps`: the guard, the API server, and the engine core and workers
# (vLLM retitles them VLLM::EngineCore, VLLM::Worker...). Not "vllm" alone: `flock /tmp/vllm.lock ...` matches.
VLLM_MARKERS = ("bench.engines.guard", "vllm.entrypoints", "vllm serve", "VLLM::", "vllm.v1.", "-m vllm")


def vllm_processes() -> dict[int, str]:
    """pid -> command of every live process that belongs to a vLLM server (by `ps`, zombies excluded)."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    procs = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[1].startswith("Z") or int(parts[0]) == os.getpid():
            continue
        if any(m in parts[2] for m in VLLM_MARKERS):
            procs[int(parts[0])] = parts[2][:120]
    return procs


def group_members(pgid: int) -> set[int]:
    """Live members of a process group, by `ps` (the server's guard leads its group)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True, check=True).stdout
    return {int(p) for p, g, st in (ln.split()[:3] for ln in out.splitlines()) if int(g) == pgid
            and not st.startswith("Z")}


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, pp in (ln.split() for ln in out.splitlines()) if int(pp) == pid]


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode(errors="replace")
    except OSError:
        return None


def requests_running(port: int) -> float:
    """vLLM's own gauge of requests in flight (0 when the server does not answer)."""
    text = get(f"http://127.0.0.1:{port}/metrics") or ""
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith("vllm:num_requests_running"))


def run_dir_of(out: Path) -> Path | None:
    dirs = [d for d in out.iterdir() if d.is_dir()] if out.is_dir() else []
    return dirs[0] if len(dirs) == 1 else None


def server_record(run_dir: Path | None) -> tuple[int, int] | None:
    """(guard pid, port) of the running server, from logs/server-*.pid.json and its recorded command."""
    for f in sorted((run_dir / "logs").glob("*.pid.json")) if run_dir else []:
        try:
            rec = json.loads(f.read_text())
            cmd = rec["command"]
            return int(rec["pid"]), int(cmd[cmd.index("--port") + 1])
        except (OSError, ValueError, KeyError):
            continue
    return None


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "rows").glob("*.json"))]


def row_hashes(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run_dir / "rows").glob("*.json")}


def disk_state(run_dir: Path) -> dict[str, Any]:
    """What is on disk: row statuses, points.parquet's row count, stray temp files of atomic writes."""
    rs = rows(run_dir)
    pq_rows = pq.read_table(run_dir / "points.parquet").num_rows if (run_dir / "points.parquet").exists() else 0
    tmp = [p.name for p in run_dir.rglob("*.tmp")]
    return {"statuses": sorted(r["status"] for r in rs), "parquet_rows": pq_rows, "tmp_files": tmp,
            "errors": {r["point_index"]: r.get("error") for r in rs if r["status"] != "ok"}}


def launches(run_dir: Path) -> int:
    """Server launches recorded in the run's logs (one `$ cmd` line per start)."""
    return sum(line.startswith("$ ") for p in (run_dir / "logs").glob("*.log")
               for line in p.read_text(errors="replace").splitlines())


def wait(cond: Any, timeout_s: float, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every_s)
    return None


# ---- one case ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    key: str
    fault: str
    expect: str
    result: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)


def start_harness(cfg: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    # its own session: a Ctrl-C is a SIGINT to the harness's process group, as a terminal sends it
    with open(log, "ab") as f:
        return subprocess.Popen([EXE, "run", str(cfg), "--out", str(out), *extra], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)


def point_in_flight(out: Path, finished: int) -> tuple[Path, int, int] | None:
    """(run dir, guard pid, port) once `finished` rows exist and the server has requests running."""
    rd = run_dir_of(out)
    rec = server_record(rd)
    if rd is None or rec is None or len(list((rd / "rows").glob("*.json"))) != finished:
        return None
    return (rd, *rec) if requests_running(rec[1]) >= 1 else None


def leftover_after(baseline: dict[int, str], t0: float, timeout_s: float, pgids: tuple[int, ...] = ()
                   ) -> tuple[int, float | None]:
    """(vLLM processes alive now that were not there before the case, or members of the servers' process
    groups `pgids`; seconds from t0 until none is left)."""
    def left() -> set[int]:
        return (set(vllm_processes()) - set(baseline)).union(*(group_members(g) for g in pgids))

    at_call = len(left())
    gone = wait(lambda: not left() or None, timeout_s, 0.1)
    return at_call, (time.monotonic() - t0) if gone else None


def start_until_in_flight(case: Case, tmp: Path, point: int
                          ) -> tuple[subprocess.Popen[bytes], Path, int, dict[int, str]] | None:
    """Start the case's 2-point sweep; return (harness, run dir, guard pid, vLLM processes before) once
    point `point` has requests in flight on the server (None, the harness killed, if it never does)."""
    out, cfg, log = tmp / "out", tmp / "sweep.yaml", tmp / "harness.log"
    cfg.write_text(yaml.safe_dump(sweep(f"fault-{case.key}")))
    baseline = vllm_processes()
    h = start_harness(cfg, out, log)
    hit = wait(lambda: point_in_flight(out, point), 600)
    if hit is None:
        case.check(f"point {point} seen in flight", False)
        h.kill()
        return None
    return h, hit[0], hit[1], baseline


def server_fault(case: Case, tmp: Path, sig: signal.Signals) -> None:
    """a/b: kill the API server (the guard's child, as a crash would) while point 0 is in flight."""
    started = start_until_in_flight(case, tmp, 0)
    if started is None:
        return
    h, rd, guard, baseline = started
    api = children(guard)
    t0 = time.monotonic()
    os.kill(api[0], sig)
    new = wait(lambda: ((r := server_record(rd)) and r[0] != guard and get(f"http://127.0.0.1:{r[1]}/health")
                        is not None and r) or (h.poll() is not None and "harness exited"), 600)
    case.result["recover_s"] = time.monotonic() - t0 if isinstance(new, tuple) else None
    code = h.wait(600)
    case.result["exit_code"] = code
    case.result["orphans"], _ = leftover_after(baseline, t0, 0, (guard, new[0]) if isinstance(new, tuple) else (guard,))
    st = disk_state(rd)
    case.result["disk"] = st
    by_index = {r["point_index"]: r for r in rows(rd)}
    err = (by_index.get(0) or {}).get("error") or ""
    case.result["error"] = err
    case.check("point 0 failed", by_index.get(0, {}).get("status") == "failed")
    case.check("reason says the server died", "server died: " in err)
    if sig == signal.SIGKILL:
        case.check(f"reason is '{KILL_MSG}'", KILL_MSG in err)
    case.check("point 1 ok on a restarted server", by_index.get(1, {}).get("status") == "ok" and launches(rd) == 2)
    case.check("exit 1 (a point failed)", code == 1)
    case.check("no vLLM process left", case.result["orphans"] == 0)
    case.result["ok_failed"] = (st["statuses"].count("ok"), st["statuses"].count("failed"))


def harness_fault(case: Case, tmp: Path, sig: signal.Signals) -> None:
    """c/d/e: signal `maas-bench run` while point 1 is in flight (point 0 finished), then --resume."""
    started = start_until_in_flight(case, tmp, 1)
    if started is None:
        return
    h, rd, guard, baseline = started
    cfg, out, log = tmp / "sweep.yaml", tmp / "out", tmp / "harness.log"
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(h.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
    else:
        os.kill(h.pid, sig)
    case.result["server_group_size"] = len(group_members(guard))  # read after the signal: not to delay it
    try:
        code = h.wait(120)
    except subprocess.TimeoutExpired:
        code = None
        h.kill()
        h.wait()
    case.result["exit_s"] = time.monotonic() - t0
    case.result["exit_code"] = code
    orphans, gone_s = leftover_after(baseline, t0, 60, (guard,))
    case.result["orphans"], case.result["vllm_gone_s"] = orphans, gone_s
    case.result["orphans_after_60s"] = len(set(vllm_processes()) - set(baseline))
    st = disk_state(rd)
    case.result["disk_after_fault"] = st
    before = row_hashes(rd)
    if sig == signal.SIGKILL:
        case.check("vLLM gone within 30 s of the harness's death (guard)", gone_s is not None and gone_s <= 30)
    else:
        case.check("harness exits within 30 s", code is not None and case.result["exit_s"] <= 30)
        case.check("no vLLM process left at the harness's exit", orphans == 0)
    case.check("the signal came mid-point: point 1 has no row", len(rows(rd)) == 1)
    case.check("finished point intact: 1 ok row, points.parquet has it, no temp file",
               st["statuses"] == ["ok"] and st["parquet_rows"] == 1 and not st["tmp_files"])
    # resume: only the missing point is measured
    t1 = time.monotonic()
    h2 = start_harness(cfg, out, log, "--resume", str(rd))
    code2 = h2.wait(600)
    case.result["resume_s"] = time.monotonic() - t1
    case.result["resume_exit_code"] = code2
    st2 = disk_state(rd)
    after = row_hashes(rd)
    case.result["ok_failed"] = (st2["statuses"].count("ok"), st2["statuses"].count("failed"))
    case.result["orphans_after_resume"] = len(set(vllm_processes()) - set(baseline))
    case.check("resume exit 0, both points ok, parquet has 2 rows",
               code2 == 0 and st2["statuses"] == ["ok", "ok"] and st2["parquet_rows"] == 2)
    case.check("resume left the finished row untouched and wrote one new row",
               all(after.get(k) == v for k, v in before.items()) and len(after) == len(before) + 1)
    case.check("no vLLM process left after resume", case.result["orphans_after_resume"] == 0)


def start_failure(case: Case, tmp: Path) -> None:
    """f: fp8 cannot start on the CPU build; the bf16 group after it must still run."""
    out, cfg, log = tmp / "out", tmp / "sweep.yaml", tmp / "harness.log"
    cfg.write_text(yaml.safe_dump(sweep(f"fault-{case.key}", quantization=["fp8", None], concurrency=[1])))
    baseline = vllm_processes()
    t0 = time.monotonic()
    code = start_harness(cfg, out, log).wait(600)
    case.result["exit_code"] = code
    case.result["wall_s"] = time.monotonic() - t0
    rd = run_dir_of(out)
    assert rd is not None
    by_q = {r["quantization"]: r for r in rows(rd)}
    err = (by_q.get("fp8") or {}).get("error") or ""
    case.result["error"] = err
    case.result["orphans"] = len(set(vllm_processes()) - set(baseline))
    st = disk_state(rd)
    case.result["ok_failed"] = (st["statuses"].count("ok"), st["statuses"].count("failed"))
    case.check("fp8 point failed with the engine's reason (names fp8, not a generic wrapper)",
               by_q.get("fp8", {}).get("status") == "failed" and "engine failed to start" in err
               and "fp8" in err.lower() and "See root cause above" not in err)
    case.check("bf16 point after it ok", by_q.get("none", {}).get("status") == "ok")
    case.check("exit 1, no vLLM process left", code == 1 and case.result["orphans"] == 0)


CASES = {
    "a": ("SIGKILL to the vLLM API server, mid-point", "point failed, next point restarts the server",
          lambda c, t: server_fault(c, t, signal.SIGKILL)),
    "b": ("SIGTERM to the vLLM API server, mid-point", "point failed, next point restarts the server",
          lambda c, t: server_fault(c, t, signal.SIGTERM)),
    "c": ("SIGINT (Ctrl-C) to `maas-bench run`, mid-point", "prompt exit, no orphan, resume finishes",
          lambda c, t: harness_fault(c, t, signal.SIGINT)),
    "d": ("SIGTERM to `maas-bench run`, mid-point", "prompt exit, no orphan, resume finishes",
          lambda c, t: harness_fault(c, t, signal.SIGTERM)),
    "e": ("SIGKILL to `maas-bench run`, mid-point", "guard stops vLLM, resume finishes",
          lambda c, t: harness_fault(c, t, signal.SIGKILL)),
    "f": ("server cannot start (fp8 on the CPU build)", "point failed with the engine's reason, sweep goes on",
          start_failure),
}


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)


def table(cases: list[Case]) -> str:
    head = ("| case | fault | outcome | exit code | time to exit (s) | time to recover (s) | vLLM processes left "
            "| points ok/failed (after resume) | recorded reason |")
    lines = [head, "|" + " --- |" * 9]
    for c in cases:
        r = c.result
        recover = r.get("recover_s") if "recover_s" in r else r.get("resume_s") if "resume_s" in r else r.get("wall_s")
        recover_txt = fmt(recover) + (" (resume run)" if "resume_s" in r else " (whole sweep)" if "wall_s" in r
                                      else " (next server healthy)")
        exit_s = r.get("exit_s")
        if r.get("vllm_gone_s") is not None and c.key == "e":
            exit_s_txt = f"{fmt(exit_s)} (vLLM gone after {fmt(r['vllm_gone_s'])})"
        else:
            exit_s_txt = fmt(exit_s)
        left = fmt(r.get("orphans"))
        if r.get("orphans") and r.get("orphans_after_60s") == 0:  # SIGKILL: the guard stops them after
            left = f"0 ({r['orphans']} still stopping at the harness's death)"
        if "orphans_after_resume" in r:
            left += f"; after resume {r['orphans_after_resume']}"
        okf = r.get("ok_failed")
        reason = (r.get("error") or "").replace("|", "/")[:110] or "-"
        outcome = "PASS" if c.passed else "FAIL: " + "; ".join(w for w, ok in c.checks if not ok)
        code = fmt(r.get("exit_code")) + (f", resume {r['resume_exit_code']}" if "resume_exit_code" in r else "")
        lines.append(f"| {c.key} | {c.fault} | {outcome} | {code} | {exit_s_txt} | {recover_txt} | {left} | "
                     f"{fmt(okf[0]) + '/' + fmt(okf[1]) if okf else '-'} | {reason} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated case keys (default: all)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run dirs under this directory")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = ap.parse_args()
    keys = [k for k in args.only.split(",") if k] or list(CASES)
    done: list[Case] = []
    root = args.keep or Path(tempfile.mkdtemp(prefix="fault-table-"))
    for k in keys:
        fault, expect, fn = CASES[k]
        case = Case(k, fault, expect)
        tmp = root / k
        tmp.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        try:
            fn(case, tmp)
        except Exception as e:  # a broken case is a row in the table, not the end of the measurement
            case.check(f"case raised {type(e).__name__}: {e}", False)
        print(f"[{k}] {'PASS' if case.passed else 'FAIL'} in {time.monotonic() - t:.0f} s: "
              f"{json.dumps(case.result, default=str)}", file=sys.stderr, flush=True)
        for what, ok in case.checks:
            print(f"    {'ok ' if ok else 'BAD'} {what}", file=sys.stderr, flush=True)
        done.append(case)
    print(table(done))
    if args.json:
        args.json.write_text(json.dumps([{"case": c.key, "fault": c.fault, "passed": c.passed, "checks": c.checks,
                                          **c.result} for c in done], indent=2, default=str))
    print(f"run dirs: {root}", file=sys.stderr)
    return 0 if all(c.passed for c in done) else 1


if __name__ == "__main__":
    sys.exit(main())
