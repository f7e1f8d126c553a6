"""Results layout, atomic writes, resume by point id, and loading results as pandas.

    results/<run_id>/
        sweep.yaml                 resolved sweep config (validated, defaults filled in)
        env.json                   versions, device, git sha
        rows/<point_id>.json       one finished point (ok or failed): the source of truth
        points.parquet             all rows: written when the run ends, rebuilt by load_results when stale
        requests/<point_id>.parquet  per-request observations
        logs/server-<hash>.log     engine logs
        sweep.sha256               hash of sweep.yaml's content: which sweep this directory belongs to
        .lock                      held (flock) by the maas-bench run that owns the directory; holds its pid

Every file is written to a temp file in the same directory and renamed into place, so a run
killed at any instant leaves either the old or the new file, never a torn one. A point counts as
finished once its `rows/<point_id>.json` exists; `--resume` skips those.

Ownership: a run directory is created with one `os.mkdir` (atomic: it fails when the name exists, and the
next suffix is tried), so runs started in the same second never share one; the run then holds an
exclusive `flock` on `.lock` until it ends (the kernel drops it when the process dies, however it dies),
and a `--resume` of a directory whose lock is held is refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from bench.atomic import atomic_write_parquet, atomic_write_text
from bench.config.base import read_yaml, stable_hash
from bench.errors import UserInputError
from bench.sweep.rows import COLUMNS, validate_row

POINTS_FILE = "points.parquet"
ROWS_DIR = "rows"
REQUESTS_DIR = "requests"
LOGS_DIR = "logs"
LOCK_FILE = ".lock"
SWEEP_HASH_FILE = "sweep.sha256"


def sweep_config_hash(sweep_dump: dict[str, Any]) -> str:
    """The resolved sweep config's hash (stored in the run dir; `--resume` compares it)."""
    return stable_hash(sweep_dump, length=64)


def create_run_dir(base: Path) -> Path:
    """Create `base`, or `base-2`, `base-3`, ... : the first name that did not exist, atomically.

    `os.mkdir` fails when the directory exists, so two runs racing for one name get two directories
    (an exists() check followed by a later mkdir let three runs started together share one)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        d = base if n == 1 else Path(f"{base}-{n}")
        try:
            os.mkdir(d)
            return d
        except FileExistsError:
            n += 1


def check_output_dir(out: Path, flag: str = "--out") -> None:
    """Raise UserInputError (one line naming `out`) unless `out` is, or can be created as, a writable
    directory. Checked before anything runs or is written, without creating anything: an existing file,
    a dangling symlink, a name longer than the file system allows, a path under a file, a directory
    that cannot be written."""
    out = Path(out)
    try:
        name_max = os.pathconf(_existing_ancestor(out), "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in out.parts:
        if len(os.fsencode(part)) > name_max:
            raise UserInputError(f"{flag}: {out}: a name in it is longer than {name_max} bytes (File name too long)")
    if len(os.fsencode(str(out))) >= os.pathconf("/", "PC_PATH_MAX") - 256:  # room for <run_id>/<file>
        raise UserInputError(f"{flag}: {out}: path too long")
    if out.is_symlink() and not out.exists():
        raise UserInputError(f"{flag}: {out} is a dangling symlink (to {os.readlink(out)})")
    if out.exists():
        if not out.is_dir():
            raise UserInputError(f"{flag}: {out} is a file, not a directory")
        target = out
    else:
        target = _existing_ancestor(out)
        if target.is_symlink() and not target.exists():
            raise UserInputError(f"{flag}: {out}: {target} is a dangling symlink (to {os.readlink(target)})")
        if not target.is_dir():
            raise UserInputError(f"{flag}: {out}: {target} is a file, not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserInputError(f"{flag}: {out}: {target} is not writable (Permission denied)")


def _existing_ancestor(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (a dangling symlink counts: it is there)."""
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def lock_holder(run_dir: Path) -> int | None:
    """The pid written in the run dir's lock file (None when there is none or it is unreadable)."""
    try:
        return int((Path(run_dir) / LOCK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def check_resume_target(run_dir: Path, sweep_dump: dict[str, Any]) -> bool:
    """Whether `run_dir` may be resumed with this sweep config; True when the config changed since.

    Raises UserInputError (one line) when the directory belongs to another sweep: its stored config hash
    (sweep.sha256; sweep.yaml's content for directories written before the hash was stored) differs AND
    its sweep has another name. The same name with another hash is the same sweep, edited: resumed, and
    the points whose resolved config changed are measured again (their point ids differ)."""
    run_dir = Path(run_dir)
    want = sweep_config_hash(sweep_dump)
    have = RunStore(run_dir).stored_config_hash()
    try:
        stored = read_yaml(run_dir / "sweep.yaml")  # bounded like every config file
    except UserInputError:
        stored = None
    if have is None and isinstance(stored, dict):
        have = sweep_config_hash(stored)
    if have == want:
        return False
    name = stored.get("name") if isinstance(stored, dict) else None
    if name is not None and name != sweep_dump.get("name"):
        held = have[:12] if have else "?"
        raise UserInputError(f"--resume: {run_dir} holds another sweep ({name!r}, config hash {held}; this config "
                             f"is {sweep_dump.get('name')!r}, hash {want[:12]}); resume it with its own config or "
                             "start a new run")
    return True


class RunStore:
    """One run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the run dir's exclusive lock (flock on `.lock`) for this run's life, and write our pid into it.

        Raises UserInputError (one line) when another process holds it. The lock file descriptor is not
        inherited by child processes (Python opens it close-on-exec and subprocess closes the rest), so a
        server left running by a killed run does not keep the directory locked."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = lock_holder(self.dir)
                raise UserInputError(f"run directory {self.dir} is in use by another maas-bench run "
                                     f"(pid {pid if pid is not None else '?'})") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock taken by `lock` (the file stays; its pid is stale once unlocked)."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def check_not_locked(self) -> None:
        """Raise UserInputError when another process holds the lock (a probe: takes and drops it at once)."""
        if not (self.dir / LOCK_FILE).is_file():
            return
        self.lock()
        self.unlock()

    def stored_config_hash(self) -> str | None:
        try:
            return (self.dir / SWEEP_HASH_FILE).read_text().strip() or None
        except OSError:
            return None

    @property
    def run_id(self) -> str:
        return self.dir.name

    def init(self, sweep_dump: dict[str, Any], env: dict[str, Any]) -> None:
        for sub in (ROWS_DIR, REQUESTS_DIR, LOGS_DIR):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "sweep.yaml", yaml.safe_dump(sweep_dump, sort_keys=False))
        atomic_write_text(self.dir / SWEEP_HASH_FILE, sweep_config_hash(sweep_dump) + "\n")
        atomic_write_text(self.dir / "env.json", json.dumps(env, indent=2, default=str))

    def log_path(self, server_hash: str) -> Path:
        return self.dir / LOGS_DIR / f"server-{server_hash}.log"

    def finished_point_ids(self, keep_failed: bool = True) -> set[str]:
        """Points that have a readable row; with keep_failed=False only those whose status is ok
        (the others are measured again on --resume). A corrupt row file never counts as finished."""
        rows, _ = self.read_rows()
        return {r["point_id"] for r in rows if keep_failed or r.get("status") == "ok"}

    def read_rows(self) -> tuple[list[dict[str, Any]], list[Path]]:
        """The readable rows, and the row files that are not (torn by a disk fault, edited by hand)."""
        good: list[dict[str, Any]] = []
        bad: list[Path] = []
        rows_dir = self.dir / ROWS_DIR
        for p in sorted(rows_dir.glob("*.json")) if rows_dir.is_dir() else []:
            row, problem = _read_row(p)
            if problem is not None:
                bad.append(p)
                continue
            good.append(row)
        return good, bad

    def check_rows(self) -> None:
        """UserInputError naming the first row file that is not a row (torn, hand-edited, a number that is a
        string): for readers (`report`, `margin --results`), which must not drop a point silently."""
        _, bad = self.read_rows()
        if bad:
            raise UserInputError(f"{bad[0]}: corrupt run file: {_read_row(bad[0])[1]}"
                                 + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))

    def set_aside_corrupt_rows(self) -> list[Path]:
        """Rename unreadable rows/<id>.json to <id>.json.corrupt (kept for inspection, no longer a row),
        so their points are measured again and the table is rebuilt from the readable rows."""
        _, bad = self.read_rows()
        moved = []
        for p in bad:
            target = p.with_name(p.name + ".corrupt")
            p.replace(target)
            moved.append(target)
        return moved

    def write_point(self, row: dict[str, Any], requests: pd.DataFrame | None = None) -> None:
        """Requests first, then the row (the row marks the point finished). Not the table: its cost grows
        with the run (every row is read), and rebuilding it after each point made a sweep slower point by
        point (issue 25); rows/ is the source of truth, the run writes points.parquet once when it ends
        (`rebuild_table`) and `load_results` rebuilds it when it is stale (a killed run, a resume).

        The row is checked against the declared schema (bench.sweep.rows) before anything is
        written, and written with every declared column (null where the point has no value).
        """
        row = validate_row(row)
        pid = row["point_id"]
        if requests is not None:
            atomic_write_parquet(self.dir / REQUESTS_DIR / f"{pid}.parquet", requests)
        atomic_write_text(self.dir / ROWS_DIR / f"{pid}.json", json.dumps(row, default=_json_default))

    def rows(self) -> list[dict[str, Any]]:
        """Every readable row, in sweep order (unreadable row files are skipped; see read_rows)."""
        out, _ = self.read_rows()
        out.sort(key=lambda r: (r.get("point_index", 0), r.get("point_id", "")))
        return out

    def rebuild_table(self) -> pd.DataFrame:
        """points.parquet from every readable row (read again from rows/)."""
        return self.write_table(self.rows())

    def write_table(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """points.parquet from `rows` (every row of the run, in sweep order, as `rows()` returns them)."""
        df = rows_to_frame(rows)
        atomic_write_parquet(self.dir / POINTS_FILE, df)
        return df


def _read_row(path: Path) -> tuple[dict[str, Any], str | None]:
    """A row file's row and None, or ({}, what is wrong with it): unreadable, not JSON, not an object, a
    point_id other than its name, or a declared column of the wrong type (`"output_tok_s": "abc"` would stop
    the table from being written)."""
    try:
        row = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        return {}, f"cannot read ({e.strerror or e})"
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}, f"not a JSON row ({str(e)[:80] or type(e).__name__})"
    if not isinstance(row, dict) or row.get("point_id") != path.stem:
        return {}, "not a row of this run (no object with point_id equal to the file's name)"
    declared = {k: v for k, v in row.items() if k in _SCHEMA_NAMES}
    try:
        validate_row(declared)
    except ValueError as e:
        return {}, str(e)[:200]
    huge = [k for k, v in declared.items() if isinstance(v, int) and not -(2**63) <= v < 2**63]
    if huge:  # JSON integers are unbounded; a parquet column is not
        return {}, f"{huge[0]}={declared[huge[0]]} does not fit a 64-bit integer"
    return row, None


_SCHEMA_NAMES = frozenset(c.name for c in COLUMNS)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return with_all_columns(pd.DataFrame(list(rows)))


def with_all_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add every declared column a frame lacks, as null, so that a run written before a column was
    declared (e.g. `expert_parallel`) reads like a new one; columns it has keep their order."""
    missing = [c.name for c in COLUMNS if c.name not in df.columns]
    if not missing:
        return df
    return pd.concat([df, pd.DataFrame({m: [None] * len(df) for m in missing}, index=df.index)], axis=1)


def load_results(path: str | Path) -> pd.DataFrame:
    """Points of one run directory (or a points.parquet file) as a DataFrame.

    The per-point JSON rows are the source of truth: when points.parquet is older than the last row
    written (a run still going, killed, or resumed: the table is written when a run ends), it is rebuilt
    from the rows (`table_is_fresh`).
    """
    p = Path(path)
    if p.is_file():
        if p.suffix != ".parquet":
            raise UserInputError(f"{p}: is a file; give a run directory (results/<run_id>/) or a points.parquet")
        return with_all_columns(_checked_types(_read_table(p), p))
    if not p.is_dir():
        raise UserInputError(f"{p}: no such results directory")
    store = RunStore(p)
    table = p / POINTS_FILE
    df = None
    if table.is_file():
        try:
            df = pd.read_parquet(table)
        except (OSError, ValueError, pa.ArrowException):
            df = None  # truncated or empty: rebuilt from the rows below when they exist
        if df is not None and table_is_fresh(p, len(df)):
            return with_all_columns(_checked_types(df, table))
    if (p / ROWS_DIR).is_dir():
        store.check_rows()  # a corrupt row is one line naming it, never a point dropped or a traceback
        if df is None and table.is_file() and not store.rows():  # never replace it with an empty table
            raise UserInputError(f"{table}: unreadable (truncated or not parquet) and rows/ holds no row to "
                                 "rebuild it from")
        try:
            return store.rebuild_table()
        except (pa.ArrowException, TypeError, ValueError) as e:  # rows that each pass but do not make a table
            raise UserInputError(f"{p / ROWS_DIR}: corrupt run files: the rows do not make a table "
                                 f"({' '.join(str(e).split())[:160]})") from None
    if table.is_file():
        raise UserInputError(f"{table}: unreadable (truncated or not parquet) and there is no rows/ to rebuild it")
    raise UserInputError(f"{p}: not a maas-bench run directory (no {POINTS_FILE})")


def _checked_types(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """`df` when every declared number column holds numbers (or only nulls); else one line naming the file and
    the column: a hand-edited table with text in a number column ended in a traceback deep in the report."""
    for c in COLUMNS:
        if c.dtype in ("int", "float") and c.name in df.columns:
            col = df[c.name]
            if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)) \
                    and not col.isna().all():
                raise UserInputError(f"{path}: corrupt run file: column {c.name} holds values that are not "
                                     f"numbers (dtype {col.dtype}; expected {c.dtype})")
    return df


def table_is_fresh(run_dir: Path, table_rows: int) -> bool:
    """Whether points.parquet (holding `table_rows` rows) was written after the last change to rows/.

    Every row write (and a resume's replacement of a failed row) creates and renames a file in rows/, which
    moves the directory's mtime; a table written later has a later mtime. Equal times (one clock tick) count as
    stale: a rebuild costs time, never a row. The count of row files must match too (no file is read). A
    directory without rows/ has only the table."""
    rows_dir = run_dir / ROWS_DIR
    if not rows_dir.is_dir():
        return True
    try:
        table_ns = (run_dir / POINTS_FILE).stat().st_mtime_ns
        rows_ns = rows_dir.stat().st_mtime_ns
        count = sum(1 for e in os.scandir(rows_dir) if e.name.endswith(".json"))
    except OSError:
        return False
    return table_ns > rows_ns and count == table_rows


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserInputError(f"{path}: not a readable parquet file ({' '.join(str(e).split())[:200]})") from None


def load_requests(run_dir: str | Path, point_id: str) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / REQUESTS_DIR / f"{point_id}.parquet")


def latest_run(results_root: str | Path = "results") -> Path | None:
    """Most recently modified run directory under results_root."""
    root = Path(results_root)
    runs = [d for d in root.iterdir() if d.is_dir() and (d / "sweep.yaml").is_file()] if root.is_dir() else []
    return max(runs, key=lambda d: d.stat().st_mtime) if runs else None
