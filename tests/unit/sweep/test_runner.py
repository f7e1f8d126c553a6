"""Runner helpers that need no server; the engine-failure reason read from a server log."""

from __future__ import annotations

from bench.config.sweep import Sweep
from bench.engines.vllm_server import engine_root_cause, failure_reason_from_log
from bench.sweep.run import group_points

# Shaped like a vLLM CPU log of a failed fp8 start: a first launch that was fine, then a relaunch whose
# worker raised the real error, wrapped twice by generic errors, the last of which ends the log.
LOG = """\
$ python -m vllm.entrypoints.openai.api_server --model m
(APIServer pid=1) ERROR 11-24 03:00:00 [x.py:1] ValueError: an old error from the first launch
$ python -m vllm.entrypoints.openai.api_server --model m --quantization fp8
(APIServer pid=2) WARNING 11-24 03:25:58 [s.py:255] Found ulimit; `OSError: [Errno 24] Too many open files`
(Worker pid=3) ERROR 11-24 03:26:15 [multiproc_executor.py:953] Traceback (most recent call last):
(Worker pid=3) ERROR 11-24 03:26:15 [multiproc_executor.py:953] RuntimeError: _C::fp8_quant() expected 0 args
(EngineCore pid=4) ERROR 11-24 03:26:17 [core.py:1510] Exception: WorkerProc initialization failed due to an \
exception in a background process. See stack trace for root cause.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_root_cause_is_the_first_specific_exception_of_the_last_launch(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(LOG)
    assert engine_root_cause(log) == "RuntimeError: _C::fp8_quant() expected 0 args"
    # the reason a failed start reports is that root cause, not vLLM's generic wrapper
    assert f"vLLM exited with code 1 during start: {failure_reason_from_log(log)}" == (
        "vLLM exited with code 1 during start: RuntimeError: _C::fp8_quant() expected 0 args")


def test_no_specific_exception_keeps_the_message(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("$ cmd\nINFO: shutting down\n"
                   "RuntimeError: Engine core initialization failed. See root cause above.\n")
    assert engine_root_cause(log) is None
    # no specific exception: the reason falls back to the last error line of the log
    assert failure_reason_from_log(log) == "RuntimeError: Engine core initialization failed. See root cause above."
    assert engine_root_cause(tmp_path / "missing.log") is None


def test_group_points_skips_finished_and_keeps_sweep_order():
    sweep = Sweep(name="g", engine={"kind": "openai", "base_url": "http://127.0.0.1:9"},
                  server={"model": "glm-4.5-tiny", "max_num_seqs": [4, 8]}, load={"concurrency": [1, 2]})
    pts = sweep.points()  # (4,c1) (4,c2) (8,c1) (8,c2)
    groups, skipped = group_points(pts, {pts[1].point_id, pts[2].point_id})
    assert skipped == 2
    assert [[i for i, _ in g] for g in groups] == [[0], [3]]
    assert [g[0][1].server.max_num_seqs for g in groups] == [4, 8]
