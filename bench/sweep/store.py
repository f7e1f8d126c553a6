"""Results layout, atomic writes, resume by point id, and loading results as pandas.

    results/<run_id>/
        sweep.yaml                 resolved sweep config (validated, defaults filled in)
        env.json                   versions, device, git sha
        rows/<point_id>.json       one finished point (ok or failed): the source of truth
        points.parquet             all rows, rebuilt atomically after every point
        requests/<point_id>.parquet  per-request observations
        logs/server-<hash>.log     engine logs

Every file is written to a temp file in the same directory and renamed into place, so a run
killed at any instant leaves either the old or the new file, never a torn one. A point counts as
finished once its `rows/<point_id>.json` exists; `--resume` skips those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from bench.atomic import atomic_write_parquet, atomic_write_text
from bench.errors import UserInputError
from bench.sweep.rows import COLUMNS, validate_row

POINTS_FILE = "points.parquet"
ROWS_DIR = "rows"
REQUESTS_DIR = "requests"
LOGS_DIR = "logs"


class RunStore:
    """One run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)

    @property
    def run_id(self) -> str:
        return self.dir.name

    def init(self, sweep_dump: dict[str, Any], env: dict[str, Any]) -> None:
        for sub in (ROWS_DIR, REQUESTS_DIR, LOGS_DIR):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "sweep.yaml", yaml.safe_dump(sweep_dump, sort_keys=False))
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
            try:
                row = json.loads(p.read_text())
            except (OSError, ValueError):
                bad.append(p)
                continue
            if not isinstance(row, dict) or row.get("point_id") != p.stem:
                bad.append(p)
                continue
            good.append(row)
        return good, bad

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
        """Requests first, then the row (the row marks the point finished), then the table.

        The row is checked against the declared schema (bench.sweep.rows) before anything is
        written, and written with every declared column (null where the point has no value).
        """
        row = validate_row(row)
        pid = row["point_id"]
        if requests is not None:
            atomic_write_parquet(self.dir / REQUESTS_DIR / f"{pid}.parquet", requests)
        atomic_write_text(self.dir / ROWS_DIR / f"{pid}.json", json.dumps(row, default=_json_default))
        self.rebuild_table()

    def rows(self) -> list[dict[str, Any]]:
        """Every readable row, in sweep order (unreadable row files are skipped; see read_rows)."""
        out, _ = self.read_rows()
        out.sort(key=lambda r: (r.get("point_index", 0), r.get("point_id", "")))
        return out

    def rebuild_table(self) -> pd.DataFrame:
        df = rows_to_frame(self.rows())
        atomic_write_parquet(self.dir / POINTS_FILE, df)
        return df


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

    The per-point JSON rows are the source of truth: if the run was killed between writing a row
    and rebuilding points.parquet, the table is rebuilt from the rows.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix != ".parquet":
            raise UserInputError(f"{p}: is a file; give a run directory (results/<run_id>/) or a points.parquet")
        return with_all_columns(_read_table(p))
    if not p.is_dir():
        raise UserInputError(f"{p}: no such results directory")
    store = RunStore(p)
    table = p / POINTS_FILE
    if table.is_file():
        try:
            df = pd.read_parquet(table)
        except (OSError, ValueError, pa.ArrowException):
            df = None  # truncated or empty: rebuilt from the rows below when they exist
        if df is not None and len(df) == len(store.finished_point_ids()):
            return with_all_columns(df)
    if (p / ROWS_DIR).is_dir():
        return store.rebuild_table()
    if table.is_file():
        raise UserInputError(f"{table}: unreadable (truncated or not parquet) and there is no rows/ to rebuild it")
    raise UserInputError(f"{p}: not a maas-bench run directory (no {POINTS_FILE})")


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
