"""What every result-file reader shares: the parsed result, reading the file, and the checks that make
a bad file one line naming the file and the problem (`UserInputError`, exit 2).

Why readers return row fields and not rows: a reader knows one tool's file; what a row also needs (the
hardware, the price, the run id, the provenance columns) is the same for every tool and is added once by
`bench.sweep.imports.write`. A reader maps only what the file states: a figure the file lacks stays
out of its dict (null in the row), never estimated.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config.base import read_yaml
from bench.errors import UserInputError

# Why a cap: a results file is kilobytes to a few megabytes; a 1 GB file given by mistake (a trace, a
# tarball) should be refused at once, not parsed.
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass
class Parsed:
    """One result file, read: the tool, its version, and the row fields of each of its points."""

    tool: str
    tool_version: str | None
    points: list[dict[str, Any]]
    output_token_counter: str | None  # "server" (usage block) or "client" (the tool's tokenizer)
    notes: list[str] = field(default_factory=list)  # what was left out or converted, said once per file


def fail(path: Path, problem: str) -> UserInputError:
    """The one error of a bad file: `<file>: <problem>`."""
    return UserInputError(f"{path}: {problem}")


def file_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise fail(path, "is a directory, not a result file")
    if not path.is_file():
        raise fail(path, "no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise fail(path, f"{size} bytes is too large for a benchmark result file (limit {MAX_FILE_BYTES})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise fail(path, f"cannot read ({e.strerror or e})") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_document(path: Path, data: bytes) -> Any:
    """The file as JSON, or as YAML when it is not JSON and is named .yaml/.yml (llm-d writes YAML reports)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(path, "not UTF-8 text (a benchmark result file is JSON or YAML)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if path.suffix.lower() not in (".yaml", ".yml"):
            what = "truncated JSON" if e.pos >= len(text.rstrip()) else "invalid JSON"
            raise fail(path, f"{what} (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise fail(path, "JSON nested too deep") from None
    return read_yaml(path)  # bounded (size, aliases, depth) like every config read; errors name the file


def value_at(doc: Any, *keys: str) -> Any:
    """doc[k1][k2]...; None when a key is missing or a step on the way is not a mapping."""
    cur = doc
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def number(doc: Any, *keys: str) -> float | None:
    """The finite number at doc[k1][k2]...; None when a key is missing or the value is null/not a number."""
    cur = value_at(doc, *keys)
    if isinstance(cur, bool) or not isinstance(cur, (int, float)):
        return None
    return float(cur) if math.isfinite(cur) else None


def integer(doc: Any, *keys: str) -> int | None:
    v = number(doc, *keys)
    return int(v) if v is not None and v == int(v) else None


def text(doc: Any, *keys: str) -> str | None:
    """The scalar at doc[k1][k2]... as a string (a version may be written 0.2 or "0.2"); None when a key is
    missing or the value is null, a boolean, a list or a mapping."""
    cur = value_at(doc, *keys)
    return str(cur) if isinstance(cur, (str, int, float)) and not isinstance(cur, bool) else None


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# Reads one result object of a file as a point: (object, file, where it is for errors, notes said once per file).
PointReader = Callable[[Any, Path, str, list[str]], dict[str, Any]]


def objects(doc: Any) -> list[Any]:
    """The result objects of a file that holds one object or a list of them (InferenceX aggregates, llm-d
    reports; a file of many is the tool's collection of points)."""
    return doc if isinstance(doc, list) else [doc]


def first_object(doc: Any) -> Any:
    """The object a `matches` looks at: the first of a list, or the lone object (an empty list as is)."""
    return doc[0] if isinstance(doc, list) and doc else doc


def read_points(doc: Any, path: Path, tool_name: str, kind: str,
                point: PointReader) -> tuple[list[dict[str, Any]], list[str]]:
    """The points of a one-or-many file (see `objects`), each read by `point`, and the notes they left.

    Why here: the formats whose files hold one object or a list of them read them the same way; errors name
    the object as "<kind> <i>" in a list and "the <kind>" alone, and an empty list is refused rather than
    imported as a run with no points."""
    docs = objects(doc)
    if not docs:
        raise fail(path, f"an empty list: no {tool_name} {kind} in it")
    notes: list[str] = []
    points = [point(d, path, f"{kind} {i}" if isinstance(doc, list) else f"the {kind}", notes)
              for i, d in enumerate(docs)]
    return points, notes


def require_output_tokens(path: Path, point: dict[str, Any], where: str) -> None:
    """An imported point is priced per output token: a result with no output-token count (or throughput)
    cannot be priced and is refused rather than imported with its money columns empty."""
    if point.get("output_tokens") is None and point.get("output_tok_s") is None:
        raise fail(path, f"{where}: no output-token count or output throughput (cannot be priced per token)")


def compat_key(version: str) -> tuple[int, ...] | None:
    """The part of a version that may change field meanings, semver-style: the major for 1.x and later,
    (0, minor) for 0.x (where every minor release may break). None when the version has no leading number."""
    parts = version.strip().lstrip("vV").split(".")
    nums: list[int] = []
    for part in parts[:2]:
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits or not part.startswith(digits):
            break
        nums.append(int(digits))
    if not nums:
        return None
    return tuple(nums[:2]) if nums[0] == 0 else (nums[0],)


def check_version(path: Path, tool: str, version: str | None, known: tuple[str, ...]) -> str | None:
    """Check a file's tool version against the versions whose fields the reader was written against.

    `known` lists versions (e.g. "0.8.1"). A version whose compatibility key (`compat_key`: the major, or
    0.minor before 1.0) is not among the known ones is refused (one line, exit 2): a field that changed
    meaning (a TPOT that starts to include TTFT) would yield a wrong price silently. Another release with a
    known key is imported with a note (returned), as is a file that states no version."""
    if version is None:
        return f"{tool}: the file states no tool version; fields read as in {tool} {known[-1]}"
    v = version.strip().lstrip("vV")
    if v in known:
        return None
    key = compat_key(v)
    if key is None or key not in {compat_key(k) for k in known}:
        raise fail(path, f"{tool} version {version} is not one this importer knows ({', '.join(known)}); "
                         "its fields may mean something else")
    return f"{tool} {version}: fields read as in {tool} {known[-1]} (this release was not checked)"
