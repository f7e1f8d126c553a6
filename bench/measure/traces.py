"""Trace replay: maas-bench JSONL traces (kind trace) and Mooncake traces (kind mooncake).

The semantics of both kinds are in bench.measure.workloads (which re-exports these names). Every
row is read and checked when the sweep starts (`check_workload_files`), so a bad row is one line
naming the file and line (exit 2) before any server starts.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.config.workload_spec import WorkloadSpec
from bench.errors import UserInputError
from bench.measure.client import RequestSpec
from bench.measure.prompts import PromptFactory, sized_request
from bench.units import ms_to_s


def _trace_lines(path: str | None) -> Iterator[tuple[int, str]]:
    """(line number, line) of a JSONL trace's non-blank lines; a missing, unreadable or non-UTF-8 file is a
    user error naming the file (and the line, for bytes that are not UTF-8)."""
    if not path or not Path(path).is_file():
        raise UserInputError(f"workload.trace_path: no such file {path!r}")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserInputError(f"workload.trace_path: {path}: cannot read ({e.strerror or e})") from None
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserInputError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                                 f"{e.start + 1})") from None
        if line.strip():
            yield lineno, line


def _no_constant(name: str) -> Any:
    """json.loads hook: `NaN`, `Infinity` and `-Infinity` are not JSON (Python's parser accepts them)."""
    raise ValueError(f"{name} is not a JSON number")


def _json_row(line: str, where: str) -> dict[str, Any]:
    """One JSONL row as a dict; anything else (invalid JSON, NaN/Infinity, too deep, not an object) is one line."""
    try:
        row = json.loads(line, parse_constant=_no_constant)
    except RecursionError:
        raise UserInputError(f"{where}: nested too deep to be a trace row") from None
    except ValueError as e:
        raise UserInputError(f"{where}: not a JSON object ({e})") from None
    if not isinstance(row, dict):
        raise UserInputError(f"{where}: not a JSON object")
    return row


def _length(row: dict[str, Any], name: str, where: str) -> int:
    """row[name] as a token count: a JSON integer >= 1 (3.9, true, "4" are refused, not coerced)."""
    v = row[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserInputError(f"{where}: {name} must be an integer >= 1 (got {json.dumps(v)[:40]})")
    return v


def _timestamp(row: dict[str, Any], name: str, where: str, unit: str) -> float:
    v = row[name]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise UserInputError(f"{where}: {name} must be a finite number of {unit} (got {json.dumps(v)[:40]})")
    return float(v)


def read_trace(path: str | None) -> list[tuple[float, int, int, int | None]]:
    """(timestamp_s, input_len, output_len, prefix_id) rows of a JSONL trace, sorted by time.

    Types are strict: lengths and prefix_id are JSON integers (a float, a bool or a string is refused with
    the file, line and field, never coerced), the timestamp a finite number."""
    rows = []
    for lineno, line in _trace_lines(path):
        where = f"{path}:{lineno}"
        row = _json_row(line, where)
        missing = [f for f in ("timestamp", "input_len", "output_len") if f not in row]
        if missing:
            raise UserInputError(f"{where}: need timestamp, input_len, output_len (missing {', '.join(missing)})")
        ts = _timestamp(row, "timestamp", where, "seconds")
        isl, osl = _length(row, "input_len", where), _length(row, "output_len", where)
        pid = row.get("prefix_id")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
            raise UserInputError(f"{where}: prefix_id must be an integer or null (got {json.dumps(pid)[:40]})")
        rows.append((ts, isl, osl, pid))
    if not rows:
        raise UserInputError(f"workload.trace_path: {path} has no rows")
    rows.sort(key=lambda r: r[0])
    return rows


def trace_requests(spec: WorkloadSpec, factory: PromptFactory, rng: random.Random) -> Iterator[RequestSpec]:
    """The requests of a kind-trace workload, in time order, with `arrival_s` from the trace."""
    rows = read_trace(spec.trace_path)
    t0 = rows[0][0]
    prefixes: dict[tuple[int, int], str] = {}
    for ts, isl, osl, pid in rows:
        if pid is None or isl < 2:
            yield sized_request(factory, spec, isl, osl, rng, arrival_s=ts - t0)
            continue
        p_len = min(spec.prefix_len, isl - 1)
        key = (pid, p_len)
        if key not in prefixes:  # same (seed, id) -> same words, so shorter cuts share the start
            prefixes[key] = factory.make(p_len, random.Random(spec.seed * 1_000_003 + 7919 * (pid + 1)))
        yield sized_request(factory, spec, isl, osl, rng, prefixes[key], p_len, pid, arrival_s=ts - t0)


# --- Mooncake traces ---------------------------------------------------------------------------

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
_BLOCK_MEMO = 4096  # block texts kept by mooncake_requests (~3 KB each at 512 tokens)


def read_mooncake(path: str | None) -> list[tuple[float, int, int, list[int]]]:
    """(timestamp_s, input_length, output_length, hash_ids) rows of a Mooncake JSONL trace, by time.

    Mooncake timestamps are milliseconds; they come back in seconds. Every row must have all four
    fields, lengths >= 1 and hash_ids a list of integers: anything else is one line naming the file
    and line (exit 2), before any server starts.
    """
    rows = []
    for lineno, line in _trace_lines(path):
        where = f"{path}:{lineno}"
        row = _json_row(line, where)
        missing = [f for f in MOONCAKE_FIELDS if f not in row]
        if missing:
            raise UserInputError(f"{where}: missing field(s) {', '.join(missing)}; a Mooncake row needs "
                                 f"{', '.join(MOONCAKE_FIELDS)}")
        ids = row["hash_ids"]
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise UserInputError(f"{where}: hash_ids must be a list of integers (got {str(ids)[:60]})")
        isl, osl = _length(row, "input_length", where), _length(row, "output_length", where)
        ts = _timestamp(row, "timestamp", where, "milliseconds")
        rows.append((ms_to_s(float(ts)), isl, osl, ids))
    if not rows:
        raise UserInputError(f"workload.trace_path: {path} has no rows")
    rows.sort(key=lambda r: r[0])
    return rows


def block_text(factory: PromptFactory, hash_id: int, n_tokens: int, block_tokens: int, seed: int) -> str:
    """The first `n_tokens` of the token block of `hash_id`: the same text for the same (seed, id).

    Word-level: a cut of one fixed word list, so a partial block is a prefix of the full one.
    """
    rng = random.Random(seed * 1_000_003 + 15_485_863 * (hash_id + 1))
    if factory.word_level:
        return " ".join(rng.choices(factory.words, k=block_tokens)[:n_tokens])
    return factory.make(n_tokens, rng)


def mooncake_prompt(factory: PromptFactory, isl: int, hash_ids: list[int], block_tokens: int, seed: int,
                    rng: random.Random, blocks: dict[tuple[int, int], str] | None = None) -> str:
    """A prompt of `isl` tokens whose i-th block is hash_ids[i]'s block (fresh tokens past the list).

    `blocks` memoizes block texts by (hash_id, tokens): the format's point is that ids repeat, and a
    block is the same text every time (its rng is seeded by (seed, hash_id) alone)."""
    parts = []
    for i in range(math.ceil(isl / block_tokens)):
        n = min(block_tokens, isl - i * block_tokens)
        if i >= len(hash_ids):
            parts.append(factory.make(n, rng))
            continue
        key = (hash_ids[i], n)
        text = blocks.get(key) if blocks is not None else None
        if text is None:
            text = block_text(factory, hash_ids[i], n, block_tokens, seed)
            if blocks is not None:
                if len(blocks) >= _BLOCK_MEMO:  # bounded: drop the oldest (a public trace has ~1e5 ids)
                    blocks.pop(next(iter(blocks)))
                blocks[key] = text
        parts.append(text)
    return " ".join(parts)


def mooncake_requests(spec: WorkloadSpec, factory: PromptFactory, rng: random.Random) -> Iterator[RequestSpec]:
    """The requests of a kind-mooncake workload, in time order; hash-id blocks give the shared prefixes."""
    rows = read_mooncake(spec.trace_path)
    t0 = rows[0][0]
    overhead = factory.chat_overhead_tokens if spec.endpoint == "chat" else 0
    blocks: dict[tuple[int, int], str] = {}
    for ts, isl, osl, ids in rows:
        prompt = mooncake_prompt(factory, isl, ids, spec.block_tokens, spec.seed, rng, blocks)
        yield RequestSpec(prompt=prompt, input_len=isl + overhead, output_len=osl,
                          prefix_id=ids[0] if ids else None, arrival_s=ts - t0)
