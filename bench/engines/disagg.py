"""Prefill/decode disaggregation on the real engine: the servers of an xPyD deployment, the
`--kv-transfer-config` each one gets, and the proxy in front of them (bench.engines.disagg_proxy).

Why a module of its own: a `server.disagg` spec (bench.config.server_spec.DisaggSpec) is one server group
of several processes (x prefill servers, y decode servers, one proxy) that start, are watched and stop
together; the `vllm` engine kind hands such a spec to `DisaggServer`, which looks to it like one
`VllmServer` (start, stop, alive, base_url, failure_reason). Each member is an ordinary `VllmServer` (guarded
process group, pid file in the run dir, its own log `server-<hash>.prefill0.log`, ...), so stopping,
`--resume` and failure reasons work as for one server.

What is rendered (pure functions, unit-tested against hand-written command lines): per member the server
spec with the pool's tensor_parallel_size, the port, the kv-transfer-config JSON (vLLM 0.32's
KVTransferConfig keys: kv_connector, kv_role, kv_buffer_device, kv_connector_extra_config; it has no
kv_buffer_size any more), on a GPU machine CUDA_VISIBLE_DEVICES (consecutive GPUs: prefill replicas first),
and for NIXL a side-channel port per server (VLLM_NIXL_SIDE_CHANNEL_PORT; servers on one host must differ).
The shared-storage connector (ExampleConnector) gets a KV directory next to the server log, removed on stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.server_spec import DisaggSpec, ServerSpec
from bench.config.sweep import EngineSpec
from bench.engines.base import EngineStartError
from bench.engines.identity import port_owner_problem
from bench.engines.process import group_members, stop_group
from bench.engines.vllm_server import (
    VllmEngine,
    VllmServer,
    exit_description,
    free_port,
    grace_for,
    pid_file,
    server_env,
    server_failure,
    spawn_guarded,
    write_pid_file,
)
from bench.errors import UserInputError

ROLES = ("prefill", "decode")
# the connector's name before vLLM renamed it (vllm/distributed/kv_transfer/kv_connector/factory.py, 0.32)
CONNECTOR_ALIASES = {"SharedStorageConnector": "ExampleConnector"}
NIXL_CONNECTORS = ("NixlConnector",)
PROXY_MODULE = "bench.engines.disagg_proxy"
PROXY_READY_S = 30.0  # the proxy imports aiohttp only: ready in about a second


def vllm_connector(d: DisaggSpec) -> str | None:
    """vLLM's registry name of the spec's connector; None for the aggregated baseline."""
    return None if d.connector == "none" else CONNECTOR_ALIASES.get(d.connector, d.connector)


def kv_transfer_config(d: DisaggSpec, role: str, on_cpu: bool, kv_dir: Path | None) -> dict[str, Any] | None:
    """The `--kv-transfer-config` of one server of `role` (prefill or decode); None without a connector."""
    name = vllm_connector(d)
    if name is None:
        return None
    kv_role = "kv_both" if d.kv_roles == "both" else {"prefill": "kv_producer", "decode": "kv_consumer"}[role]
    extra: dict[str, Any] = {}
    if name == "ExampleConnector" and kv_dir is not None:
        extra["shared_storage_path"] = str(kv_dir)  # its default is /tmp, shared by every run
    extra.update(d.extra_config)
    cfg: dict[str, Any] = {"kv_connector": name, "kv_role": kv_role,
                           "kv_buffer_device": d.kv_buffer_device or ("cpu" if on_cpu else "cuda")}
    if extra:
        cfg["kv_connector_extra_config"] = extra
    return cfg


@dataclass(frozen=True)
class Member:
    """One vLLM server of a deployment, fully rendered (what its VllmServer is built from)."""

    role: str  # prefill or decode
    index: int  # within its pool
    spec: ServerSpec  # the deployment's spec with the pool's TP and no disagg
    engine: EngineSpec  # the sweep's engine block plus this server's --kv-transfer-config and env
    port: int
    kv_config: dict[str, Any] | None
    env: dict[str, str] = field(default_factory=dict)  # what this member adds to the server environment

    @property
    def name(self) -> str:
        return f"{self.role}{self.index}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def plan_members(spec: ServerSpec, engine: EngineSpec, on_cpu: bool, ports: Iterator[int], kv_dir: Path | None,
                 visible_devices: list[str] | None = None) -> list[Member]:
    """The servers of `spec`'s deployment: prefill pool then decode pool, each server taking its ports from
    `ports` (HTTP port, then the NIXL side-channel port when the connector is NIXL) and, on a GPU machine, the
    next TP-many devices of `visible_devices` (default 0, 1, 2, ...; the caller's CUDA_VISIBLE_DEVICES)."""
    d = spec.disagg
    if d is None:
        raise ValueError("plan_members needs a spec with server.disagg")
    total = d.gpu_count(spec.tensor_parallel_size)
    devices = list(visible_devices) if visible_devices else [str(i) for i in range(total)]
    if not on_cpu and len(devices) < total:
        raise EngineStartError(f"server.disagg needs {total} GPUs; CUDA_VISIBLE_DEVICES names {len(devices)}")
    members: list[Member] = []
    next_gpu = 0
    for role, pool in zip(ROLES, (d.prefill, d.decode), strict=True):
        tp = d.pool_tp(pool, spec.tensor_parallel_size)
        kv = kv_transfer_config(d, role, on_cpu, kv_dir)
        for i in range(pool.replicas):
            env: dict[str, str] = {}
            if not on_cpu:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[next_gpu:next_gpu + tp])
                next_gpu += tp
            port = next(ports)
            if vllm_connector(d) in NIXL_CONNECTORS:
                env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(next(ports))
            extra = (*engine.extra_args, "--kv-transfer-config", json.dumps(kv)) if kv else engine.extra_args
            member_engine = engine.model_copy(update={"extra_args": tuple(extra), "env": {**engine.env, **env}})
            member_spec = spec.model_copy(update={"tensor_parallel_size": tp, "disagg": None})
            members.append(Member(role, i, member_spec, member_engine, port, kv, env))
    return members


def proxy_command(python: str, port: int, members: list[Member], aggregated: bool) -> list[str]:
    """The proxy's command line: every prefill server, then every decode server (all of them as one pool
    with `--aggregated`: the baseline of the same servers without P/D)."""
    cmd = [python, "-m", PROXY_MODULE, "--port", str(port)]
    if aggregated:
        cmd.append("--aggregated")
    for m in members:
        cmd += ["--decode" if aggregated or m.role == "decode" else "--prefill", m.base_url]
    return cmd


def check_disagg(specs: list[ServerSpec], sweep: Any = None) -> None:
    """Before anything starts: a disaggregated spec's GPUs are what the sweep's hardware.count says, so
    the cost per token is charged on every GPU of the deployment (one line, naming the field)."""
    for spec in specs:
        d = spec.disagg
        if d is None or sweep is None:
            continue
        need = d.gpu_count(spec.tensor_parallel_size)
        count = sweep.hardware.count
        layout = (f"{d.prefill.replicas} prefill x TP{d.pool_tp(d.prefill, spec.tensor_parallel_size)} + "
                  f"{d.decode.replicas} decode x TP{d.pool_tp(d.decode, spec.tensor_parallel_size)}")
        if count is None and need != spec.tensor_parallel_size:
            raise UserInputError(f"hardware.count: server.disagg ({layout}) uses {need} GPUs; set hardware.count: "
                                 f"{need} (the GPUs a point's cost is charged on)")
        if count is not None and count != need:
            raise UserInputError(f"hardware.count is {count} but server.disagg ({layout}) uses {need} GPUs; the "
                                 "pools must add up to hardware.count")


class DisaggServer:
    """A running xPyD deployment: its vLLM servers and the proxy, started and stopped as one server."""

    @staticmethod
    def preflight(specs: list[ServerSpec], sweep: Any = None) -> None:
        check_disagg(specs, sweep)

    def __init__(self, spec: ServerSpec, model_path: str, engine: EngineSpec, log_path: Path, on_cpu: bool) -> None:
        assert spec.disagg is not None
        self.spec, self.model_path, self.engine, self.log_path, self.on_cpu = spec, model_path, engine, log_path, on_cpu
        self.kv_dir = log_path.with_name(log_path.stem + ".kv") if vllm_connector(spec.disagg) else None
        self._ports = _distinct_ports()  # members, side channels and the proxy never draw the same port
        self.members = plan_members(spec, engine, on_cpu, self._ports, self.kv_dir, _visible_devices())
        self.servers = [_MemberServer(m.spec, model_path, m.engine, log_path.with_name(f"{log_path.stem}.{m.name}.log"),
                                      on_cpu=on_cpu, port=m.port) for m in self.members]
        self.proxy_port = next(self._ports)  # redrawn when the proxy starts
        self.proxy_log = log_path.with_name(f"{log_path.stem}.proxy.log")
        self.proc: Any = None  # the proxy's Popen: the deployment's pid in progress events
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def command(self) -> list[str]:
        return proxy_command(sys.executable, self.proxy_port, self.members, vllm_connector(self.spec.disagg) is None)

    def start(self) -> None:
        """Start every server (at once: each start is minutes on a GPU), then the proxy; on any failure
        stop everything started and raise EngineStartError naming the member and the engine's reason.

        Every server is spawned from this thread, not from a pool: the guard's parent-death signal
        (PR_SET_PDEATHSIG) fires when the *thread* that spawned it exits, which stopped servers started
        from worker threads right after they were ready."""
        t0 = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.kv_dir is not None:
            self.kv_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            for m, s in zip(self.members, self.servers, strict=True):
                log.write((f"# {m.name}: {s.log_path.name}; env {json.dumps(m.env)}\n$ "
                           + " ".join(s.command()) + "\n").encode())
            log.write(("# proxy: " + self.proxy_log.name + "\n$ " + " ".join(self.command()) + "\n").encode())
        try:
            for s in self.servers:  # spawned from this thread, all at once
                s.start()
            self._wait_servers_ready(t0)
            self._start_proxy()
        except BaseException as e:
            self.stop(grace_for(e))  # short while a Ctrl-C unwinds the run
            raise
        self.startup_s = time.monotonic() - t0

    def _wait_servers_ready(self, t0: float) -> None:
        """Until every server answers /health; the first one that exits (or is not ready in time) fails the
        start with its name and the engine's reason, as VllmServer words it for one server."""
        waiting = list(zip(self.members, self.servers, strict=True))
        deadline = t0 + self.engine.startup_timeout_s
        impostor: dict[str, str] = {}  # member -> why what answers /health on its port is not that server
        while waiting:
            for m, s in list(waiting):
                code = s.proc.poll() if s.proc is not None else None
                if code is not None:
                    raise EngineStartError(f"{m.name}: vLLM {exit_description(code)} during start: "
                                           f"{s.failure_reason()}")
                if s.healthy():
                    problem = s.identity_problem()  # the same proof as for one server: our port, our name
                    if problem is None:
                        s.startup_s = time.monotonic() - t0
                        waiting.remove((m, s))
                    else:
                        impostor[m.name] = problem
            if waiting and time.monotonic() > deadline:
                m, s = waiting[0]
                raise EngineStartError(f"{m.name}: vLLM not ready after {self.engine.startup_timeout_s:g} s: "
                                       f"{impostor.get(m.name) or s.failure_reason()}")
            if waiting:
                time.sleep(0.5)

    def _start_proxy(self) -> None:
        self.proxy_port = next(self._ports)  # drawn now, not minutes earlier before the servers loaded
        with open(self.proxy_log, "ab") as log:
            self.proc = spawn_guarded(self.command(), log, server_env(self.engine, self.on_cpu))
        write_pid_file(pid_file(self.proxy_log), self.proc)
        deadline = time.monotonic() + PROXY_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineStartError(f"P/D proxy exited during start: {_tail(self.proxy_log)}")
            if _healthy(self.base_url):
                impostor = port_owner_problem(self.proxy_port, group_members(self.proc.pid))
                if impostor is None:
                    return
                raise EngineStartError(f"P/D proxy: {impostor} (it answers /health)")
            time.sleep(0.2)
        raise EngineStartError(f"P/D proxy not ready after {PROXY_READY_S:g} s: {_tail(self.proxy_log)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and all(s.alive() for s in self.servers)

    def failure_reason(self) -> str:
        """The first member that died, and why (as the one-server engine says it), else the proxy's state."""
        for m, s in zip(self.members, self.servers, strict=True):
            if s.proc is not None and s.proc.poll() is not None:
                return f"{m.name}: {server_failure(s)}"
        if self.proc is not None and self.proc.poll() is not None:
            return f"P/D proxy exited: {_tail(self.proxy_log)}"
        for m, s in zip(self.members, self.servers, strict=True):  # still running: its log's last error
            reason = s.failure_reason()
            if reason:
                return f"{m.name}: {reason}"
        return "P/D deployment running"

    def stop(self, grace_s: float = 15.0) -> None:
        """The proxy first (no new requests reach a stopping server), then every server; the KV directory last."""
        if self.proc is not None:
            stop_group(self.proc.pid, min(grace_s, 2.0), proc=self.proc)
            self.proc = None
            pid_file(self.proxy_log).unlink(missing_ok=True)
        for s in self.servers:  # every server is told first, so their graces run side by side, not in turn
            if s.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, signal.SIGTERM)
        for s in self.servers:
            s.stop(grace_s)
        if self.kv_dir is not None:
            shutil.rmtree(self.kv_dir, ignore_errors=True)


class _MemberServer(VllmServer):
    """A VllmServer whose start() only spawns it (log, guard, pid file): DisaggServer awaits every member's
    readiness at once (`_wait_servers_ready`), so the servers of a deployment load at the same time."""

    def _wait_ready(self, t0: float) -> None:  # called by VllmServer.start
        return None


def _distinct_ports() -> Iterator[int]:
    """Free ports, none twice (each probe releases its port, so two probes can otherwise draw the same one)."""
    drawn: set[int] = set()
    while True:
        port = free_port()
        if port not in drawn:
            drawn.add(port)
            yield port


def _visible_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    raw = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES", "").strip()
    return [d.strip() for d in raw.split(",") if d.strip()] or None


def _healthy(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no proxy log"
    return " | ".join(text[-lines:]) or "empty proxy log"


VllmEngine.deployment = DisaggServer  # the `vllm` kind serves server.disagg specs with it
