"""Other tools' benchmark results as maas-bench runs: THE registry of result-file formats.

One module per format (`vllm`, `guidellm`, `aiperf`, `inferencex`, `llmd`), each with `TOOL`, `matches(doc)`
(does this parsed file look like mine?) and `parse(doc, path) -> Parsed` (the row fields of its points).
`read` picks the format from the content (or `--format`), and `bench.sweep.imports.write` turns the parsed
files into a run folder with the ordinary `RunStore`, so every command that reads runs reads these too.
`bench.sweep.imports.llmd_export` goes the other way: a run's points as llm-d Benchmark Reports.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from bench.sweep.imports import aiperf, guidellm, inferencex, llmd, vllm
from bench.sweep.imports.base import Parsed, fail, file_bytes, load_document, sha256_hex

# Order matters for detection: the more specific formats first (an InferenceX aggregate is never a
# vLLM result, but a vLLM result is checked after the tools whose files could carry similar keys).
FORMATS: dict[str, ModuleType] = {"llm-d": llmd, "inferencex": inferencex, "aiperf": aiperf, "guidellm": guidellm,
                                  "vllm": vllm}
AUTO = "auto"


class ReadFile(NamedTuple):
    path: Path
    format: str
    sha256: str
    parsed: Parsed


def detect(doc: object) -> str | None:
    """The format whose `matches` accepts the parsed document; None when none does."""
    return next((name for name, mod in FORMATS.items() if mod.matches(doc)), None)


def read(path: Path, fmt: str = AUTO) -> ReadFile:
    """One result file, read and mapped; every problem is one line naming the file (UserInputError)."""
    if fmt != AUTO and fmt not in FORMATS:
        raise fail(path, f"unknown --format {fmt!r}; known: {AUTO}, {', '.join(FORMATS)}")
    data = file_bytes(path)
    doc = load_document(path, data)
    found = detect(doc)
    if fmt == AUTO:
        if found is None:
            raise fail(path, f"unknown result format (not one of: {', '.join(FORMATS)}); name it with --format")
        fmt = found
    elif not FORMATS[fmt].matches(doc):
        raise fail(path, f"not a {fmt} result file" + (f" (it looks like {found})" if found else ""))
    try:
        parsed = FORMATS[fmt].parse(doc, path)
    except (AttributeError, TypeError, KeyError, IndexError) as e:  # valid JSON of an unexpected shape
        raise fail(path, f"unexpected structure for a {fmt} result ({type(e).__name__}: {e})") from None
    if not parsed.points:
        raise fail(path, "no benchmark points in it")
    return ReadFile(path, fmt, sha256_hex(data), parsed)


__all__ = ["AUTO", "FORMATS", "Parsed", "ReadFile", "detect", "read"]
