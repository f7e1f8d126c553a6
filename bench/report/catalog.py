"""The results catalog: every run under one or more results roots as one table, kept fresh incrementally.

Why an index: a month of runs is thousands of `points.parquet` files; reading each one (and its
sweep.yaml) on every `maas-bench catalog` or `query` takes seconds. Each root keeps an index under
`<root>/.catalog/`: parquet part files holding every point of every run in the declared schema
(bench.sweep.rows COLUMNS) plus `source`, `run_dir` (relative to the root) and `sweep_name`, and a
`manifest.json` naming the parts and, per run folder, the stat key (mtime and size) of the files it was
read from and the part it is in. Each call stats the run folders (cheap), re-reads only the runs whose
key changed into a new part, drops the runs that are gone and rewrites the manifest: a new run is
visible at once, without a rebuild step, and costs one small part file. A root that cannot be written
(someone else's results) is read the same way, in memory.

The catalog never writes into a run folder: it reads `points.parquet` directly (never
`store.load_results`, which rebuilds a stale table in place) and, when a run's rows/ holds more finished
points than its table (a run still going, or killed between a row and the table), reads the rows
instead (`RunStore.read_rows`, read-only).

`source` keeps measured, imported and simulated runs apart: bench.sweep.rows.row_source of each row (its own
`source`, else, for rows written before that column, `virtual` for the virtual engine, `measured` otherwise).
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.config.base import read_yaml
from bench.errors import UserInputError
from bench.sweep.rows import COLUMNS, row_source
from bench.sweep.store import POINTS_FILE, ROWS_DIR, RunStore, rows_to_frame

CATALOG_DIR = ".catalog"
MANIFEST_FILE = "manifest.json"
MAX_PARTS = 16  # more part files than this: the next update compacts them into one
STALE_PART_AGE_S = 600  # a part no manifest names is removed this long after it was written (a reader may hold it)
DEFAULT_ROOT = Path("results")
_INDEX_VERSION = 2
# catalog columns added to the declared ones (`source` only when rows.py does not declare it yet)
CATALOG_COLUMNS = ("source", "run_dir", "sweep_name")
_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}


@functools.lru_cache(maxsize=1)
def index_schema() -> pa.Schema:
    """The declared row columns (bench.sweep.rows) with their arrow types, then the catalog's own."""
    fields = [pa.field(c.name, _ARROW[c.dtype]) for c in COLUMNS]
    names = {c.name for c in COLUMNS}
    fields += [pa.field(n, pa.string()) for n in CATALOG_COLUMNS if n not in names]
    return pa.schema(fields)


def _schema_tag(schema: pa.Schema) -> str:
    """Changes when a column is declared or retyped: an index written under another schema is rebuilt."""
    return f"v{_INDEX_VERSION}:" + ",".join(f"{f.name}:{f.type}" for f in schema)


# --- finding runs -----------------------------------------------------------------------------


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def scan_runs(root: Path) -> dict[str, list[Any]]:
    """Every run folder under `root` (nested ones too; `root` itself may be one), as its path relative to
    `root` -> its key: the stat (mtime, size) of its table, of its rows/ folder (a new row renames a file
    into it, which changes the folder's mtime) and of its sweep.yaml (the sweep name). Hidden folders
    (`.catalog`) are skipped and a run folder's own subfolders (rows/, requests/, logs/) are not searched.
    One directory listing per folder and three stats per run: this runs on every call."""
    out: dict[str, list[Any]] = {}
    base = len(str(root)) + 1

    def walk(d: str) -> None:
        try:
            entries = {e.name: e for e in os.scandir(d)}
        except OSError:
            return
        rows = entries.get(ROWS_DIR)
        if POINTS_FILE in entries or (rows is not None and rows.is_dir()):
            rel = d[base:] or "."
            out[rel] = [_stat_key(os.path.join(d, POINTS_FILE)), _stat_key(os.path.join(d, ROWS_DIR)),
                        _stat_key(os.path.join(d, "sweep.yaml"))]
            return
        for name in sorted(entries):
            e = entries[name]
            if not name.startswith(".") and e.is_dir(follow_symlinks=False):
                walk(e.path)

    walk(str(root))
    return out


# --- reading one run --------------------------------------------------------------------------


def _sweep_name(run_dir: Path) -> str | None:
    """The sweep's `name:` (None when the run has no readable sweep.yaml: an imported run, a hand edit)."""
    try:
        doc = read_yaml(run_dir / "sweep.yaml")  # bounded (size, aliases, depth) like every config read
    except UserInputError:
        return None
    name = doc.get("name") if isinstance(doc, dict) else None
    return str(name) if name is not None else None


def _points_table(run_dir: Path) -> pa.Table:
    """The run's points: its table, or its rows when they hold more points (read-only either way)."""
    table: pa.Table | None = None
    err = ""
    if (run_dir / POINTS_FILE).is_file():
        try:
            table = pq.read_table(run_dir / POINTS_FILE)
        except (OSError, ValueError, pa.ArrowException) as e:
            err = " ".join(str(e).split())[:160]
    n_rows = sum(1 for _ in (run_dir / ROWS_DIR).glob("*.json")) if (run_dir / ROWS_DIR).is_dir() else 0
    if table is not None and table.num_rows >= n_rows:
        return table
    rows, _ = RunStore(run_dir).read_rows()
    if rows and (table is None or len(rows) > table.num_rows):
        return pa.Table.from_pandas(rows_to_frame(rows), preserve_index=False)
    if table is not None:
        return table
    raise ValueError(f"{run_dir / POINTS_FILE}: unreadable ({err or 'missing'}) and rows/ holds no readable row")


def _column(table: pa.Table, name: str, typ: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, typ)
    col = table.column(name)
    if col.type == typ:
        return col
    try:
        return col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return col.cast(typ, safe=False) if pa.types.is_integer(typ) and pa.types.is_floating(col.type) \
            else pa.nulls(table.num_rows, typ)


def read_run(run_dir: Path, root: Path) -> pa.Table:
    """One run's points in the index schema: run_id filled from the folder name where missing, `source`
    derived where the run wrote none, `run_dir` relative to `root`."""
    table = _points_table(run_dir)
    schema = index_schema()
    n = table.num_rows
    cols = {f.name: _column(table, f.name, f.type) for f in schema if f.name not in ("run_dir", "sweep_name")}
    import pyarrow.compute as pc

    cols["run_id"] = pc.fill_null(cols["run_id"], run_dir.name)
    cols["source"] = pa.array([row_source(s, e) for s, e in zip(cols["source"].to_pylist(),
                                                                cols["engine"].to_pylist(), strict=True)], pa.string())
    rel = run_dir.relative_to(root).as_posix() if run_dir != root else "."
    cols["run_dir"] = pa.array([rel] * n, pa.string())
    cols["sweep_name"] = pa.array([_sweep_name(run_dir)] * n, pa.string())
    return pa.table([cols[f.name] for f in schema], schema=schema)


# --- the index of one root --------------------------------------------------------------------


@dataclass
class RootIndex:
    """The points of every run under one root: in the index's part files (`parts`) when they are on disk and
    up to date, else in memory (`table`: a root that cannot be written); and what bringing it up to date
    found."""

    root: Path
    parts: list[Path]
    table: pa.Table | None
    rows: int
    runs: int
    reread: int  # runs (re)read from their folders this time; 0 = the index was up to date
    written: bool  # the index was updated on disk
    warnings: list[str] = field(default_factory=list)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The points (all columns, or `columns`) as an arrow table."""
        cols = list(columns) if columns is not None else None
        if self.table is not None:
            return self.table if cols is None else self.table.select(cols)
        tables = [pq.read_table(p, columns=cols) for p in self.parts]
        empty = index_schema().empty_table()
        return pa.concat_tables(tables) if tables else (empty if cols is None else empty.select(cols))


def _read_manifest(cat_dir: Path, schema: pa.Schema) -> dict[str, Any] | None:
    """The index's manifest (None: no index, a torn one, one of another schema, or a part file missing)."""
    try:
        man = json.loads((cat_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(man, dict) or man.get("schema") != _schema_tag(schema):
        return None
    if not all(isinstance(v, dict) for v in (man.get("parts"), man.get("runs"), man.get("skipped"))):
        return None
    if not all((cat_dir / name).is_file() for name in man["parts"]):
        return None
    return man


def index_root(root: str | Path, *, write: bool = True) -> RootIndex:
    """The root's index, brought up to date (see the module docstring); `write=False` never writes.

    The index is a manifest and immutable part files. An update writes one new part holding the runs
    (re)read this time, plus the unchanged runs that shared a part with a changed or removed run (that
    part is dropped); other parts are kept as they are, so adding a run costs that run, not the catalog.
    Past MAX_PARTS parts, everything is compacted into one.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"catalog: results root {root} is not a directory")
    schema = index_schema()
    cat_dir = root / CATALOG_DIR
    found = _read_manifest(cat_dir, schema)
    man = found or {"parts": {}, "runs": {}, "skipped": {}}
    old = {rel: v[0] for rel, v in man["runs"].items()}
    keys = scan_runs(root)
    if found is not None and {**old, **{r: v[0] for r, v in man["skipped"].items()}} == keys:
        # up to date: nothing was read but the manifest (a run skipped before is skipped again, said again)
        return RootIndex(root, [cat_dir / p for p in man["parts"]], None, sum(man["parts"].values()), len(keys),
                         0, False, [v[1] for v in man["skipped"].values()])
    unchanged = {rel for rel, k in keys.items() if old.get(rel) == k}
    stale = {man["runs"][rel][1] for rel in old if rel not in unchanged}  # parts with a changed or gone run
    kept = {p: n for p, n in man["parts"].items() if p not in stale}
    if len(kept) >= MAX_PARTS:
        kept = {}
    fresh: list[pa.Table] = []
    import pyarrow.compute as pc

    for p in sorted(set(man["parts"]) - set(kept)):  # carry the unchanged runs of the parts dropped
        t = pq.read_table(cat_dir / p).replace_schema_metadata(None)
        fresh.append(t.filter(pc.is_in(t.column("run_dir"), pa.array(sorted(unchanged), pa.string()))))
    skipped: dict[str, Any] = {}
    reread = 0
    for rel in keys:
        if rel in unchanged:
            continue
        reread += 1
        try:
            fresh.append(read_run(root / rel, root))
        except (OSError, ValueError, pa.ArrowException) as e:
            skipped[rel] = [keys[rel], f"{root / rel}: skipped ({' '.join(str(e).split())[:200]})"]
    warnings = [v[1] for v in skipped.values()]
    new = pa.concat_tables(fresh) if fresh else schema.empty_table()
    part = f"part-{uuid.uuid4().hex}.parquet"
    runs = {rel: [k, man["runs"][rel][1] if rel in unchanged and man["runs"][rel][1] in kept else part]
            for rel, k in keys.items() if rel not in skipped}
    parts = {**kept, **({part: new.num_rows} if new.num_rows else {})}
    manifest = {"schema": _schema_tag(schema), "parts": parts, "runs": runs, "skipped": skipped}
    if write and _write_index(cat_dir, part, new, manifest):
        return RootIndex(root, [cat_dir / p for p in parts], None, sum(parts.values()), len(keys), reread, True,
                         warnings)
    tables = [pq.read_table(cat_dir / p).replace_schema_metadata(None) for p in kept] + [new]
    table = pa.concat_tables(tables)
    return RootIndex(root, [], table, table.num_rows, len(keys), reread, False, warnings)


def _write_index(cat_dir: Path, part: str, table: pa.Table, manifest: dict[str, Any]) -> bool:
    """Write the new part (when it has rows), then the manifest, each atomically (temp file + rename); then
    remove the parts no manifest names any more once they are old enough that no reader still reads them.
    False when the root is read-only (the caller keeps the index in memory)."""
    from bench.atomic import atomic_write_text

    try:
        cat_dir.mkdir(exist_ok=True)
        if table.num_rows:
            tmp = cat_dir / f".{part}.tmp"
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, cat_dir / part)
        atomic_write_text(cat_dir / MANIFEST_FILE, json.dumps(manifest))
    except OSError:
        return False
    now = time.time()
    for p in cat_dir.glob("part-*.parquet"):
        try:
            if p.name not in manifest["parts"] and now - p.stat().st_mtime > STALE_PART_AGE_S:
                p.unlink()
        except OSError:
            continue
    return True


# --- several roots ----------------------------------------------------------------------------


def sql_text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Catalog:
    """Every point under the given roots; in SQL (`connect`), the view `cat`: the index columns plus
    `results_root` (the root as given), so a run folder is results_root/run_dir."""

    roots: list[Path]
    indexes: list[RootIndex]

    @property
    def warnings(self) -> list[str]:
        return [w for ix in self.indexes for w in ix.warnings]

    @property
    def num_rows(self) -> int:
        return sum(ix.rows for ix in self.indexes)

    @property
    def files(self) -> list[str]:
        """The index files the view reads (DuckDB's allowed paths once external access is off)."""
        return [str(p.resolve()) for ix in self.indexes for p in ix.parts]

    def connect(self) -> Any:
        """An in-memory DuckDB connection with the view `cat` over every root (index files are read by
        DuckDB itself, lazily, only the columns and rows a query needs; in-memory roots are registered)."""
        import duckdb

        con = duckdb.connect(":memory:")
        selects = []
        for i, ix in enumerate(self.indexes):
            if ix.table is None and ix.parts:
                src = f"read_parquet([{', '.join(sql_text(str(p.resolve())) for p in ix.parts)}])"
            else:
                con.register(f"catalog_root_{i}", ix.table if ix.table is not None else index_schema().empty_table())
                src = f"catalog_root_{i}"
            selects.append(f"SELECT *, {sql_text(str(ix.root))} AS results_root FROM {src}")
        con.execute("CREATE VIEW cat AS " + " UNION ALL ".join(selects))
        return con

    def read(self, sql: str) -> pa.Table:
        """The arrow result of `sql` over the view `cat`."""
        con = self.connect()
        try:
            return con.sql(sql).to_arrow_table()
        finally:
            con.close()


def load_catalog(roots: Sequence[str | Path] | None = None, *, write: bool = True) -> Catalog:
    """The catalog of `roots` (default results/), each root's index brought up to date."""
    paths = [Path(r) for r in roots] if roots else [DEFAULT_ROOT]
    seen: set[Path] = set()
    indexes = []
    for p in paths:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        indexes.append(index_root(p, write=write))
    return Catalog(paths, indexes)


# --- the run listing --------------------------------------------------------------------------

# two steps: per (run, model, GPU, engine, source) first, so the DISTINCT lists join a handful of rows per run
RUN_LIST_SQL = """
WITH g AS (
  SELECT results_root, run_dir, model, gpu_type, engine, source, any_value(run_id) AS run_id,
         any_value(sweep_name) AS sweep_name, count(*) FILTER (WHERE status = 'ok') AS ok,
         count(*) FILTER (WHERE status IS DISTINCT FROM 'ok') AS failed, min(started_at) AS started_at
  FROM cat GROUP BY results_root, run_dir, model, gpu_type, engine, source)
SELECT results_root, run_dir, any_value(run_id) AS run_id, any_value(sweep_name) AS sweep_name,
       string_agg(DISTINCT model, ', ' ORDER BY model) AS model,
       string_agg(DISTINCT gpu_type, ', ' ORDER BY gpu_type) AS gpu_type,
       string_agg(DISTINCT engine, ', ' ORDER BY engine) AS engine,
       string_agg(DISTINCT source, ', ' ORDER BY source) AS source,
       CAST(sum(ok) AS BIGINT) AS points_ok, CAST(sum(failed) AS BIGINT) AS points_failed,
       min(started_at) AS started_at
FROM g GROUP BY results_root, run_dir ORDER BY started_at NULLS LAST, results_root, run_dir
"""
RUN_LIST_COLUMNS = ("run_id", "sweep_name", "model", "gpu_type", "engine", "source", "points_ok", "points_failed",
                    "date", "run_dir")


def list_runs(catalog: Catalog) -> list[dict[str, Any]]:
    """One row per run: id, sweep name, model(s), GPU(s), engine kind(s), source, ok / failed points, the
    date its first point started (UTC) and its folder. A `partial` point counts as failed (not ok)."""
    con = catalog.connect()
    try:
        rows = con.execute(RUN_LIST_SQL).fetchall()
        names = [d[0] for d in con.description]
    finally:
        con.close()
    out = []
    for r in rows:
        rec = dict(zip(names, r, strict=True))
        rec["date"] = (rec.pop("started_at") or "")[:10] or None
        rec["run_dir"] = os.path.join(rec.pop("results_root"), rec["run_dir"])
        out.append({k: rec[k] for k in RUN_LIST_COLUMNS})
    return out
