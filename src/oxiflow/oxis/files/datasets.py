"""Write dispositions on a Parquet dataset folder (Hive-partitioned or flat): append, delete_insert, merge.

``write_parquet``'s default ``replace`` rewrites the whole output through ``atomic_output``; the
dispositions here change part of a dataset folder and keep the rest:

- ``append``: the load becomes new files ``part-<load id>-<n>.parquet`` (one per partition it
  touches). They are written in a hidden temporary folder next to the dataset, then each is
  renamed into its partition folder: a kill leaves no partial file visible, but a load spanning
  several partitions can be visible in some of them only until the next run. In an incremental
  run (exactly-once protocol, docs/incremental.md) the load's marker is written after the last
  rename; a load found without its marker is rolled back by removing its files
  (:func:`dataset_load_committed`), so a kill between the renames never leaves rows twice.
- ``delete_insert`` (needs ``partition_by``): the partition folders present in the load are
  written in the temporary folder, then each replaces its old folder (rename the old one aside,
  rename the new one in, remove the old one). Per partition that is two renames: a reader listing
  the folder between them misses that partition, and readers may see new partitions next to
  not-yet-swapped ones. Partitions absent from the load are untouched.
- ``merge`` (needs ``primary_key``): the affected partitions -- those present in the load, or the
  whole dataset without ``partition_by`` -- are read back, merged with the load in DuckDB by the
  same rule as the tables (:func:`oxiflow.oxis.databases.dispositions.dedup_select`: dedup,
  hard deletes), written, and swapped in like ``delete_insert`` (without ``partition_by``: the whole
  folder, atomically). A key whose partition values change between loads is not looked for in its
  old partition: make the partition columns part of the key, or depend on it.

Schema growth: a new input column is written in the files of this load only; read the dataset with
``union_by_name`` (read_parquet's default) to see it as NULL in older files. Partition values are
folder names written by DuckDB (URL-escaped; NULL as ``__HIVE_DEFAULT_PARTITION__``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from oxiflow.engine.duck import connect, ident, literal
from oxiflow.errors import DataError, PathEscapeError
from oxiflow.incremental import crash_point
from oxiflow.oxi import StepContext, check_inside
from oxiflow.oxis.databases.dispositions import DUCKDB, MergeOptions, dedup_select, deleted_expr
from oxiflow.oxis.files.common import (
    atomic_output,
    file_load_committed,
    remove_stale_temps,
    temp_sibling,
    write_load_marker,
)

if TYPE_CHECKING:
    import duckdb

    from oxiflow.data import OxiData

STAGING = "_oxiflow_staging"


def write_dataset(
    ctx: StepContext,
    target: Path,
    copy_options: str,
    *,
    disposition: str,
    partition_by: list[str] | None,
    primary_key: list[str] | None,
    merge: MergeOptions | None,
    data: OxiData | None = None,
    query: str | None = None,
    views: Sequence[tuple[str, str]] = (),
) -> int:
    """Apply one load to the dataset folder ``target``; the number of rows in the load."""
    import duckdb

    if target.exists() and not target.is_dir():
        raise DataError(
            f"{target} is a file; write_disposition {disposition} adds to a dataset folder",
            file=str(target),
            hint="point `path` at a folder (or use write_disposition: replace)",
        )
    load_id = _safe(ctx.load_id or ctx.metadata.get("load_id") or ctx.run_id)
    # files are named after the load: a rerun of the same load rewrites the same names
    name = f"part-{load_id}"
    opts = copy_options + (f", FILENAME_PATTERN {literal(name + '-{i}')}" if partition_by else "")
    # the scan's memory cap for a pushed-down query, half the cores for a drained stream (duck.connect);
    # merge joins and sorts: DuckDB's defaults
    con = connect(ctx, stream=None if disposition == "merge" else "write" if data is not None else "read")
    started = _now()
    tmp = temp_sibling(target, ctx.run_id)
    tmp.mkdir(parents=True)
    try:
        if data is not None:
            con.register("input_stream", data.to_reader())
            source = "SELECT * FROM input_stream"
        else:
            assert query is not None
            for view, sql in views:
                con.execute(f"CREATE TEMP VIEW {ident(view)} AS {sql}")
            source = query
        columns = {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE {source}").fetchall()}
        _check_columns(columns, partition_by, primary_key, merge)
        if disposition == "merge":
            assert primary_key
            # the load in a temp table: a stream can be read once, and merge reads it twice
            con.execute(f"CREATE TEMP TABLE {STAGING} AS {source}")
            rows = _scalar(con, f"SELECT count(*) FROM {STAGING}")
            _merge(con, ctx, target, tmp, opts, name, columns, partition_by, primary_key, merge or MergeOptions())
        else:
            out = tmp / "data"
            rows = _scalar(con, f"COPY ({source}) TO {literal(str(_folder(out, partition_by, name)))} ({opts})")
            _check_tree(out)
            ctx.check_cancelled()
            target.mkdir(parents=True, exist_ok=True)
            if disposition == "append":
                _move_files(out, target)
            else:  # delete_insert
                _swap_partitions(out, target, _leaves(out, len(partition_by or [])), tmp / "old")
    except duckdb.InterruptException:
        from oxiflow.errors import RunCancelled

        raise RunCancelled("write interrupted", step=ctx.step_id) from None
    except duckdb.Error as exc:
        if data is None:
            raise  # pushed down: the engine tells reader errors (file, line) from the sink's
        raise DataError(
            f"writing dataset {target} ({disposition}) failed: {str(exc).strip().splitlines()[0]}",
            file=str(target),
            hint="nothing was swapped in unless the error came while swapping partitions (docs/dispositions.md)",
        ) from None
    finally:
        con.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if ctx.load_id is not None:
        crash_point("after_publish")
        write_load_marker(target, ctx.load_id)
    remove_stale_temps(target, started)
    ctx.metadata.update(path=str(target), rows=rows, load_id=load_id)
    ctx.bytes_written += sum(p.stat().st_size for p in target.rglob("*.parquet"))
    return rows


def _merge(
    con: duckdb.DuckDBPyConnection,
    ctx: StepContext,
    target: Path,
    tmp: Path,
    opts: str,
    name: str,
    types: dict[str, str],
    partition_by: list[str] | None,
    keys: list[str],
    merge: MergeOptions,
) -> None:
    nulls = _scalar(con, f"SELECT count(*) FROM {STAGING} WHERE " + " OR ".join(f"{ident(k)} IS NULL" for k in keys))
    if nulls:
        raise DataError(f"{nulls} row(s) of the load have a NULL in the primary key {keys}", file=str(target))
    columns = list(types)
    if partition_by:
        # which folders the load touches, named exactly as DuckDB names them: write its distinct values
        probe = tmp / "probe"
        parts = ", ".join(ident(c) for c in partition_by)
        con.execute(f"COPY (SELECT DISTINCT {parts}, 1 AS _oxi_probe FROM {STAGING}) TO {literal(str(probe))} ({opts})")
        affected = _leaves(probe, len(partition_by))
        shutil.rmtree(probe)
    else:
        affected = [Path(".")]
    old = sorted(str(f) for rel in affected for f in (target / rel).glob("*.parquet") if (target / rel).is_dir())
    marked = merge.hard_delete if merge.hard_delete in types else None
    deleted = deleted_expr(DUCKDB, marked, types[marked]) if marked else "false"
    winners = f"SELECT *, {deleted} AS _oxi_deleted FROM ({dedup_select(DUCKDB, STAGING, columns, keys, merge)}) AS w"
    con.execute(f"CREATE TEMP TABLE _oxiflow_winners AS {winners}")
    cols = ", ".join(ident(c) for c in columns)
    merged = f"SELECT {cols} FROM _oxiflow_winners WHERE NOT _oxi_deleted"
    if old:
        hive_types = {c: types[c] for c in partition_by or []}
        scan = (
            f"read_parquet({literal(old)}, union_by_name = true, hive_partitioning = {literal(bool(partition_by))}"
            + (f", hive_types = {literal(hive_types)}" if hive_types else "")
            + ")"
        )
        on = " AND ".join(f"o.{ident(k)} = w.{ident(k)}" for k in keys)
        kept = f"SELECT * FROM {scan} AS o WHERE NOT EXISTS (SELECT 1 FROM _oxiflow_winners AS w WHERE {on})"
        merged = f"{kept} UNION ALL BY NAME {merged}"
    if partition_by:
        out = tmp / "data"
        con.execute(f"COPY ({merged}) TO {literal(str(out))} ({opts})")
        _check_tree(out)
        ctx.check_cancelled()
        target.mkdir(parents=True, exist_ok=True)
        _swap_partitions(out, target, affected, tmp / "old")
    else:
        # the whole dataset is rewritten: one folder swap, atomic
        with atomic_output(target, ctx) as folder:
            folder.mkdir()
            con.execute(f"COPY ({merged}) TO {literal(str(_folder(folder, None, name)))} ({opts})")


def _folder(tmp: Path, partition_by: list[str] | None, name: str) -> Path:
    """COPY's target: a folder with PARTITION_BY, else one file ``name.parquet`` in the folder."""
    if partition_by:
        return tmp
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp / f"{name}.parquet"


def dataset_load_committed(target: Path, load_id: str, disposition: str) -> bool:
    """Whether the load ``load_id`` was published to the dataset ``target`` (its marker is there). An
    append without its marker may have renamed some of its files in before a kill: they are removed,
    so that rolling the load back (and reading its rows again) cannot leave them twice. Merge and
    delete_insert need no undo: applying the same load again gives the same dataset."""
    if file_load_committed(target, load_id):
        return True
    if disposition == "append" and target.is_dir():
        for f in target.rglob(f"part-{_safe(load_id)}*.parquet"):
            f.unlink()
    return False


def _safe(name: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))


def _leaves(root: Path, depth: int) -> list[Path]:
    """The partition folders (relative) ``depth`` levels under ``root``; ``.`` without partitions."""
    if depth == 0:
        return [Path(".")]
    return sorted(p.relative_to(root) for p in root.glob("/".join(["*"] * depth)) if p.is_dir())


def _move_files(tmp: Path, target: Path) -> None:
    """Rename each new file into its place (a file appears whole or not at all)."""
    for f in sorted(tmp.rglob("*.parquet")):
        dest = target / f.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)


def _swap_partitions(new_root: Path, target: Path, partitions: list[Path], aside: Path) -> None:
    """Put ``new_root/rel`` in the place of ``target/rel`` for each partition (absent new: removed).

    The old folder is renamed into ``aside`` (inside the hidden temporary folder, outside the
    dataset), so a kill between the two renames leaves no stray copy that a reader would see."""
    for n, rel in enumerate(partitions):
        new, dest, old = new_root / rel, target / rel, aside / str(n)
        if dest.exists():
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dest, old)
        if new.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, dest)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)


def _check_columns(
    columns: dict[str, str], partition_by: list[str] | None, primary_key: list[str] | None, merge: MergeOptions | None
) -> None:
    named = {
        "partition_by": partition_by or [],
        "primary_key": primary_key or [],
        "dedup_sort": [merge.dedup_sort.column] if merge and merge.dedup_sort else [],
    }
    for option, names in named.items():
        missing = [n for n in names if n not in columns]
        if missing:
            raise DataError(
                f"{option} names column(s) {missing} that the input does not have",
                hint=f"the input's columns: {', '.join(columns)}",
            )


def _check_tree(root: Path) -> None:
    """Partition values come from data: make sure none of them wrote outside the folder."""
    for p in root.rglob("*"):
        try:
            check_inside(root, p)
        except PathEscapeError:
            raise PathEscapeError(f"a partition value would write outside {root}: {p}") from None


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _now() -> float:
    import time

    return time.time()
