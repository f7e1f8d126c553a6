"""Atomic file writes: a temp file in the target's directory, then a rename.

Why a root module (layer 0): the run store (sweep), calibration (planner) and the report all
write files that a killed process must never leave torn; they sit in different layers, so the
helper lives below all of them. A reader sees either the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[int, str]]:
    """A temp file in `path`'s directory (its open descriptor and its name, for the block to write and close),
    renamed onto `path` when the block ends; removed when it raises, an OSError then naming `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(path, e) from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _temp_beside(Path(path)) as (fd, _), os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    with _temp_beside(Path(path)) as (fd, tmp):
        os.close(fd)
        df.to_parquet(tmp, index=False)
