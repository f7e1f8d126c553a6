"""Atomic file writes: a temp file in the target's directory, then a rename.

Why a root module (layer 0): the run store (sweep), calibration (planner) and the report all
write files that a killed process must never leave torn; they sit in different layers, so the
helper lives below all of them. A reader sees either the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _naming(path: Path, e: OSError) -> OSError:
    """`e` with `path` as its file name when it has none or names our temp file (a full disk's
    ENOSPC from write/fsync names no file): the one-line error then names the file being written."""
    if e.filename is None or str(e.filename).endswith(".tmp"):
        return OSError(e.errno, e.strerror or str(e), str(path))
    return e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(path, e) from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(path, e) from e
        raise
