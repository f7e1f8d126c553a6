"""Max-throughput mode: vLLM's offline `LLM.generate` on one batch, no HTTP server in the way.

It answers "how many tokens per GPU-second can this engine config produce at all?", the ceiling
for the online (served) numbers and the most favourable input to cost per token. There are no
per-request latencies: the whole batch is submitted at once and vLLM's scheduler runs up to
`max_num_seqs` of it at a time.

`LLM(...)` spawns engine processes, which must be started from a `__main__` module, so the
engine runs in a child process (`python -m bench.engines.vllm_offline REQUEST RESULT`) in its own
process group. The parent writes the request as JSON, waits with a timeout, captures the child's
output in the run's log, and kills the whole group on timeout or error. A failed child raises
`EngineStartError` with the reason from its log, like a server that fails to start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import quant as quant_registry
from bench.config.speculative import vllm_speculative_config
from bench.config.sweep import EngineSpec, ServerSpec
from bench.engines.base import BatchResult, EngineStartError, NoProcessEngine, refuse_disagg, register_engine
from bench.engines.process import start_group, stop_group
from bench.engines.serverlog import failure_reason_from_log
from bench.engines.vllm_server import check_speculative_support, server_env

if TYPE_CHECKING:
    from bench.measure.client import ClientConfig


OfflineResult = BatchResult  # the child writes it as JSON, the parent reads it back


def llm_kwargs(spec: ServerSpec, model_path: str, engine: EngineSpec, on_cpu: bool) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` from a server spec (the same knobs as the server flags)."""
    kw: dict[str, Any] = {
        "model": model_path,
        "dtype": spec.dtype,
        "max_model_len": spec.max_model_len,
        "max_num_seqs": spec.max_num_seqs,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "load_format": spec.load_format,
        "kv_cache_dtype": spec.kv_cache_dtype,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "enforce_eager": spec.enforce_eager,
    }
    if (flag := quant_registry.vllm_quantization(spec.quantization)) is not None:
        kw["quantization"] = flag
    if spec.max_num_batched_tokens:
        kw["max_num_batched_tokens"] = spec.max_num_batched_tokens
    if spec.expert_parallel:
        kw["enable_expert_parallel"] = True
    if spec.speculative is not None:
        kw["speculative_config"] = vllm_speculative_config(spec.speculative)
    if on_cpu:
        kw["gpu_memory_utilization"] = engine.cpu_gpu_memory_utilization
    return kw


def run_offline(spec: ServerSpec, model_path: str, engine: EngineSpec, prompts: list[str], warmup: list[str],
                output_len: int, log_path: Path, on_cpu: bool, timeout_s: float) -> OfflineResult:
    """Generate `prompts` (after an unmeasured `warmup` batch) in a child process; return the timing."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maas-bench-offline-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({"llm": llm_kwargs(spec, model_path, engine, on_cpu), "prompts": prompts,
                                   "warmup": warmup, "output_len": output_len}))
        cmd = [sys.executable, "-m", "bench.engines.vllm_offline", str(req), str(out)]
        with open(log_path, "ab") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            proc = start_group(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=server_env(engine, on_cpu))
            try:
                code = proc.wait(timeout=engine.startup_timeout_s + timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                stop_group(proc.pid, grace_s=0.0, proc=proc)  # the engine processes it left, at once
        if code is None:
            raise EngineStartError(f"offline run timed out after {engine.startup_timeout_s + timeout_s:g} s: "
                                   f"{failure_reason_from_log(log_path)}")
        if code != 0 or not out.is_file():
            raise EngineStartError(f"offline run exited with code {code}: {failure_reason_from_log(log_path)}")
        return OfflineResult(**json.loads(out.read_text()))


@register_engine
class VllmOfflineEngine(NoProcessEngine):
    """Engine kind "vllm-offline": no server; each point is one `LLM.generate` batch in a child process.

    There is nothing to start or keep alive between points (`starts_server` is False): the child
    loads the model for each batch, which the measured window (generate only) leaves out.
    """

    kind = "vllm-offline"
    starts_server = False
    uses_local_gpus = True
    batch = True

    @classmethod
    def preflight(cls, specs: list[ServerSpec], sweep: Any = None) -> None:
        """The installed vLLM has every version-gated feature the specs use (as for the server kind); no P/D."""
        refuse_disagg(cls.kind, specs)
        check_speculative_support(specs)

    def failure_reason(self) -> str:
        return failure_reason_from_log(self.log_path)

    def client_config(self, endpoint: str, timeout_s: float) -> ClientConfig:
        raise TypeError("vllm-offline serves no HTTP endpoint; measure its points with run_batch")

    def run_batch(self, prompts: list[str], warmup: list[str], output_len: int, timeout_s: float) -> OfflineResult:
        """Generate `prompts` after an unmeasured `warmup` batch; raises EngineStartError on failure."""
        return run_offline(self.spec, self.model_path, self.engine, prompts, warmup, output_len, self.log_path,
                           not self.on_gpu, timeout_s)


def _child(request_path: str, result_path: str) -> None:
    from vllm import LLM, SamplingParams

    req = json.loads(Path(request_path).read_text())
    n = int(req["output_len"])
    llm = LLM(**req["llm"])
    params = SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0)
    if req["warmup"]:
        llm.generate(req["warmup"], params, use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate(req["prompts"], params, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    res = OfflineResult(
        elapsed_s=elapsed,
        num_prompts=len(req["prompts"]),
        completed=sum(1 for o in outs if o.finished),
        input_tokens=sum(len(o.prompt_token_ids or ()) for o in outs),
        output_tokens=sum(len(o.outputs[0].token_ids) for o in outs if o.outputs),
    )
    Path(result_path).write_text(json.dumps(asdict(res)))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
