"""Why an engine failed, read from its server log: the root-cause exception, not vLLM's wrappers.

Why a module of its own: vLLM reports a failed start several layers deep. A worker raises the real
error, the engine core wraps it ("Engine core initialization failed. See root cause above."), and
checks that run in a subprocess (the model-architecture inspection of
`vllm.model_executor.models.registry`) surface as `CalledProcessError` / "Error raised in
subprocess:", followed by the subprocess's own traceback. A point's recorded error must name the
cause (e.g. `ModuleNotFoundError: No module named 'torchvision'`), so these parsers skip the
wrappers. Used by both vLLM engines (server and offline).
"""

from __future__ import annotations

import re
from pathlib import Path

_REASON_MARKERS = ("Error", "error:", "ERROR", "Exception", "not supported", "NotImplementedError",
                   "RuntimeError", "ValueError", "AssertionError")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit): \S")
_LOG_PREFIX = re.compile(r"^\([^)]*\)\s+(?:ERROR|WARNING|INFO|DEBUG|CRITICAL)\s+\S+\s+\S+\s+\[[^\]]*\]\s*")
# vLLM wraps a worker's real error in these; they never say what went wrong.
_GENERIC_ERRORS = ("See root cause above", "See stack trace", "in a background process",
                   "EngineCore encountered an issue", "Engine core initialization failed")
# A subprocess failed; its own traceback (the cause) follows in the log. Reported only when nothing follows.
_SUBPROCESS_WRAPPERS = ("CalledProcessError: ", "Error raised in subprocess")
_SUBPROCESS_MODULE = re.compile(r"'-m', '([\w.]+)'")


def _last_launch(log_path: Path, max_lines: int = 5000) -> list[str] | None:
    """The log's lines from its last launch line (`$ cmd`) on; None when it cannot be read."""
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()[-max_lines:]
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    return lines[starts[-1] if starts else 0:]


def engine_root_cause(log_path: Path, max_lines: int = 5000) -> str | None:
    """The first non-generic exception line after the last launch line (`$ cmd`) of a server log.

    A subprocess wrapper (`CalledProcessError`, "Error raised in subprocess:") is skipped for the
    exception its subprocess printed after it, which is returned with the subprocess's module
    appended ("... (in subprocess vllm.model_executor.models.registry)"); the wrapper itself only
    when no exception follows it.
    """
    tail = _last_launch(log_path, max_lines)
    return None if tail is None else _root_cause_in(tail)


def _root_cause_in(tail: list[str]) -> str | None:
    wrapper: str | None = None
    for i, line in enumerate(tail):
        s = _LOG_PREFIX.sub("", line.strip())
        if not _EXCEPTION_LINE.match(s) or any(g in s for g in _GENERIC_ERRORS):
            continue
        if any(w in s for w in _SUBPROCESS_WRAPPERS):
            wrapper = wrapper or s
            continue
        if "validation error for" in s:  # pydantic: the engine's own words are on the next lines
            detail = _pydantic_detail(tail[i + 1:i + 8])
            if detail:
                s = detail
        if wrapper is not None and (m := _SUBPROCESS_MODULE.search(wrapper)):
            s = f"{s} (in subprocess {m.group(1)})"
        return s[:500]
    return wrapper[:500] if wrapper is not None else None


def clean_exit_reason(log_path: Path) -> str | None:
    """Why a server that exited with code 0 stopped, from the log after its last launch.

    vLLM also exits 0 when its engine died on an error (the API server then shuts down in order), so
    an exception logged BEFORE the first `[shutdown]` line is the cause ("AssertionError: Synthetic
    acceptance not supported ..."). Otherwise the first `[shutdown]` line says who stopped it
    ('[shutdown] API server: shutdown triggered'); the errors logged after it (requests cut off:
    'cannot schedule new futures after shutdown') are consequences, not the cause."""
    tail = _last_launch(log_path)
    if tail is None:
        return None
    first = next((i for i, line in enumerate(tail) if "[shutdown]" in line), len(tail))
    root = _root_cause_in(tail[:first])
    if root is not None:
        return root
    return _strip_prefix(tail[first].strip())[:300] if first < len(tail) else None


def _pydantic_detail(lines: list[str]) -> str | None:
    """'Value error, Tensor parallel size ...' from the lines after 'N validation error(s) for X'."""
    for line in lines:
        s = _LOG_PREFIX.sub("", line.strip())
        if "[type=" in s:
            return s.split(" [type=", 1)[0].removeprefix("Value error, ").strip() or None
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
    for line in reversed(text):  # ERROR-level lines first: a WARNING that mentions "error" is not why
        s = line.strip()
        if " ERROR " in s and not s.startswith("File "):
            return _strip_prefix(s)[:500]
    for line in reversed(text):
        s = line.strip()
        if any(m in s for m in _REASON_MARKERS) and not s.startswith("File ") and " WARNING " not in s:
            return _strip_prefix(s)[:500]
    tail = " | ".join(_strip_prefix(x.strip()) for x in text[-3:] if x.strip())
    return tail[:500] or "(empty server log)"


def _strip_prefix(line: str) -> str:
    # "(EngineCore pid=12) ERROR 11-24 03:06:40 [core.py:12] message" -> "message"
    if "] " in line and line.startswith("("):
        return line.split("] ", 1)[1]
    return line
