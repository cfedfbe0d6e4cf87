"""Write dispositions on a Parquet dataset folder (Hive-partitioned or flat): append, delete_insert, merge, scd2.

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
- ``scd2`` (needs ``primary_key``): the same read-compute-swap as ``merge``, the new history computed by
  the tables' rules and row hash (a dataset's history equals write_duckdb's for the same loads). With
  ``full_snapshot`` (a key absent from the load is closed wherever it is) every partition is affected:
  the whole folder is rewritten and swapped at once.

A kill between the two renames of a swap leaves the old partition (or dataset) only in the killed run's
temporary folder: the next write puts it back before reading (:func:`_restore_interrupted_swaps`).

Every row written by a load carries its load id in ``load_id_column`` (``_oxi_load_id``; the state
store's load id in incremental runs, else the run id), as every table sink's rows do and as dlt's
filesystem destination writes ``_dlt_load_id`` into its files: a query over the dataset can tell the
loads apart (``GROUP BY _oxi_load_id``) without reading file names. Rows a load leaves in place
(merge's other keys, scd2's older versions, the partitions delete_insert does not replace) keep the id of
the load that wrote them; ``load_id_column: null`` leaves the column out. The files are still named after
the load, which the load protocol's recovery relies on.

Schema growth: a new input column is written in the files of this load only; read the dataset with
``union_by_name`` (read_parquet's default) to see it as NULL in older files. Partition values are
folder names written by DuckDB (URL-escaped; NULL as ``__HIVE_DEFAULT_PARTITION__``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from oxiflow.engine.duck import connect, ident, literal, unimportable_error
from oxiflow.errors import DataError, PathEscapeError
from oxiflow.incremental import crash_point
from oxiflow.oxi import PushedQuery, StepContext, check_inside
from oxiflow.oxis.databases.dispositions import (
    DUCKDB,
    IS_CURRENT,
    LOAD_ID_COLUMN,
    ROW_HASH,
    SCD2_COLUMNS,
    VALID_FROM,
    VALID_TO,
    MergeOptions,
    Scd2Options,
    dedup_select,
    deleted_expr,
)
from oxiflow.oxis.files.common import (
    atomic_output,
    file_load_committed,
    remove_temps,
    stale_temps,
    temp_sibling,
    write_load_marker,
)

if TYPE_CHECKING:
    import duckdb

    from oxiflow.data import OxiData

STAGING = "_oxiflow_staging"


@dataclass(frozen=True)
class History:
    """What ``scd2`` needs besides the key: its options, the load's timestamp and the load id column."""

    options: Scd2Options
    load_time: datetime
    load_id_column: str | None = LOAD_ID_COLUMN


def write_dataset(
    ctx: StepContext,
    target: Path,
    copy_options: str,
    *,
    disposition: str,
    partition_by: list[str] | None,
    primary_key: list[str] | None,
    merge: MergeOptions | None,
    history: History | None = None,
    load_id_column: str | None = LOAD_ID_COLUMN,
    data: OxiData | None = None,
    query: PushedQuery | None = None,
) -> int:
    """Apply one load to the dataset folder ``target``; the number of rows in the load. Its rows get the
    load id in ``load_id_column`` (None: no such column)."""
    import duckdb

    if target.exists() and not target.is_dir():
        raise DataError(
            f"{target} is a file; write_disposition {disposition} adds to a dataset folder",
            file=str(target),
            hint="point `path` at a folder (or use write_disposition: replace)",
        )
    raw_load_id = str(ctx.load_id or ctx.metadata.get("load_id") or ctx.run_id)
    load_id = _safe(raw_load_id)
    # files are named after the load: a rerun of the same load rewrites the same names
    name = f"part-{load_id}"
    opts = copy_options + (f", FILENAME_PATTERN {literal(name + '-{i}')}" if partition_by else "")
    keyed = disposition in ("merge", "scd2")
    # the scan's memory cap for a pushed-down query, half the cores for a drained stream (duck.connect);
    # merge and scd2 join and sort: DuckDB's defaults
    con = connect(ctx, stream=None if keyed else "write" if data is not None else "read")
    # what killed runs left is decided now: putting their old partitions back touches their folders
    stale = stale_temps(target, _now())
    _restore_interrupted_swaps(target, len(partition_by or []))
    tmp = temp_sibling(target, ctx.run_id)
    tmp.mkdir(parents=True)
    try:
        if data is not None:
            con.register("input_stream", data.to_reader())
            source = "SELECT * FROM input_stream"
        else:
            assert query is not None
            query.prepare(con)
            source = query.sql
        columns = {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE {source}").fetchall()}
        # the system columns are written here: an input column of that name is replaced, as in tables
        reserved = _reserved(history, load_id_column)
        columns = {c: t for c, t in columns.items() if c not in reserved}
        options = history.options if history is not None else merge or MergeOptions()
        _check_columns(columns, partition_by, primary_key, options)
        if keyed:
            assert primary_key
            # the load in a temp table: a stream can be read once, and merge/scd2 read it twice
            cols = ", ".join(ident(c) for c in columns)
            con.execute(f"CREATE TEMP TABLE {STAGING} AS SELECT {cols} FROM ({source})")
            rows = _scalar(con, f"SELECT count(*) FROM {STAGING}")
            keyed_load = KeyedLoad(
                target, tmp, opts, name, columns, partition_by, primary_key, options, load_id_column, raw_load_id
            )
            _rewrite_keyed(con, ctx, keyed_load, history, raw_load_id)
        else:
            out = tmp / "data"
            if load_id_column or reserved & set(columns):
                source = f"SELECT {_tagged(columns, load_id_column, raw_load_id)} FROM ({source}) AS src"
            rows = _scalar(con, f"COPY ({source}) TO {literal(str(_folder(out, partition_by, name)))} ({opts})")
            _check_tree(out)
            ctx.check_cancelled()
            target.mkdir(parents=True, exist_ok=True)
            if disposition == "append":
                _move_files(out, target)
            else:  # delete_insert
                _swap_partitions(out, target, _leaves(out, len(partition_by or [])), tmp)
    except duckdb.InterruptException:
        from oxiflow.errors import RunCancelled

        raise RunCancelled("write interrupted", step=ctx.step_id) from None
    except duckdb.Error as exc:
        if data is None:
            raise  # pushed down: the engine tells reader errors (file, line) from the sink's
        if (unfit := unimportable_error(data.schema, f"dataset {target}")) is not None:
            raise unfit from None
        raise DataError(
            f"writing dataset {target} ({disposition}) failed: {str(exc).strip().splitlines()[0]}",
            file=str(target),
            hint="nothing was swapped in unless the error came while swapping partitions (docs/dispositions.md)",
        ) from None
    finally:
        con.close()
        if tmp.exists():
            _put_back(tmp, target, len(partition_by or []))  # an error between a swap's two renames
            shutil.rmtree(tmp, ignore_errors=True)
    if ctx.load_id is not None:
        crash_point("after_publish")
        write_load_marker(target, ctx.load_id)
    remove_temps(stale)
    ctx.metadata.update(path=str(target), rows=rows, load_id=raw_load_id if load_id_column else load_id)
    ctx.bytes_written += sum(p.stat().st_size for p in target.rglob("*.parquet"))
    return rows


@dataclass(frozen=True)
class KeyedLoad:
    """A load staged in ``STAGING`` for merge or scd2, and where it goes."""

    target: Path
    tmp: Path
    copy_options: str
    name: str
    types: dict[str, str]
    partition_by: list[str] | None
    keys: list[str]
    options: MergeOptions
    load_id_column: str | None = LOAD_ID_COLUMN
    load_id: str = ""


def _rewrite_keyed(
    con: duckdb.DuckDBPyConnection, ctx: StepContext, load: KeyedLoad, history: History | None, load_id: str
) -> None:
    """merge / scd2: read back the partitions the load affects, compute their new rows, swap them in."""
    nulls = _scalar(
        con, f"SELECT count(*) FROM {STAGING} WHERE " + " OR ".join(f"{ident(k)} IS NULL" for k in load.keys)
    )
    if nulls:
        raise DataError(f"{nulls} row(s) of the load have a NULL in the primary key {load.keys}", file=str(load.target))
    # scd2 with full_snapshot: the load is the whole source, so a key absent from it is closed wherever
    # its partition is: every partition is affected, and the dataset is rewritten as one
    whole = swaps_whole(
        "scd2" if history else "merge", load.partition_by, bool(history and history.options.full_snapshot)
    )
    if whole:
        affected = _leaves(load.target, len(load.partition_by or [])) if load.target.is_dir() else []
    else:
        affected = _load_partitions(con, load)
    old = sorted(str(f) for rel in affected for f in (load.target / rel).glob("*.parquet"))
    scan = _scan(old, load.partition_by, load.types) if old else None
    hashed = None
    if history is not None:
        hashed = [c for c in load.types if c not in load.keys and c != load.options.hard_delete]
        if scan is not None:
            _check_history_columns(con, scan, load.target)
    _create_winners(con, load, hashed)
    select = _merged_select(load, scan) if history is None else _history_select(load, scan, history, load_id)
    if whole:
        _publish_whole(con, ctx, load, select)
    else:
        _publish_partitions(con, ctx, load, select, affected)


def _load_partitions(con: duckdb.DuckDBPyConnection, load: KeyedLoad) -> list[Path]:
    """The partition folders the load touches, named exactly as DuckDB names them: write its distinct values."""
    assert load.partition_by
    probe = load.tmp / "probe"
    parts = ", ".join(ident(c) for c in load.partition_by)
    con.execute(
        f"COPY (SELECT DISTINCT {parts}, 1 AS _oxi_probe FROM {STAGING}) TO {literal(str(probe))} ({load.copy_options})"
    )
    affected = _leaves(probe, len(load.partition_by))
    shutil.rmtree(probe)
    return affected


def _scan(files: list[str], partition_by: list[str] | None, types: dict[str, str]) -> str:
    """read_parquet over the dataset's ``files``; partition columns typed as in the load."""
    hive_types = {c: types[c] for c in partition_by or []}
    return (
        f"read_parquet({literal(files)}, union_by_name = true, hive_partitioning = {literal(bool(partition_by))}"
        + (f", hive_types = {literal(hive_types)}" if hive_types else "")
        + ")"
    )


WINNERS = "_oxiflow_winners"


def _create_winners(con: duckdb.DuckDBPyConnection, load: KeyedLoad, hashed: list[str] | None) -> None:
    """The winning row per key (the tables' dedup rule), with ``_oxi_deleted`` and, for scd2, ``_oxi_hash``."""
    marked = load.options.hard_delete if load.options.hard_delete in load.types else None
    deleted = deleted_expr(DUCKDB, marked, load.types[marked], "w") if marked else "false"
    row_hash = f", {DUCKDB.row_hash('w', hashed)} AS _oxi_hash" if hashed is not None else ""
    dedup = dedup_select(DUCKDB, STAGING, list(load.types), load.keys, load.options)
    con.execute(f"CREATE TEMP TABLE {WINNERS} AS SELECT *, {deleted} AS _oxi_deleted{row_hash} FROM ({dedup}) AS w")


def _merged_select(load: KeyedLoad, scan: str | None) -> str:
    """merge: the old rows whose key is not in the load (with their own load id), plus the load's winners
    that are not deletes (with this load's)."""
    cols = _tagged(load.types, load.load_id_column, load.load_id)
    merged = f"SELECT {cols} FROM {WINNERS} WHERE NOT _oxi_deleted"
    if scan is None:
        return merged
    kept = f"SELECT * FROM {scan} AS o WHERE NOT EXISTS (SELECT 1 FROM {WINNERS} AS w WHERE {_on(load.keys)})"
    return f"{kept} UNION ALL BY NAME {merged}"


def _history_select(load: KeyedLoad, scan: str | None, history: History, load_id: str) -> str:
    """scd2: the old versions, closed where the load changes, deletes or (full_snapshot) omits their key,
    plus a new version for each new or changed key. The same rules as the table statements
    (:func:`oxiflow.oxis.databases.dispositions.statements`), as one SELECT."""
    q, ts, on = ident, DUCKDB.timestamp(history.load_time), _on(load.keys)
    opened_cols = [
        *(f"w.{q(c)}" for c in load.types),
        f"{ts} AS {q(VALID_FROM)}",
        f"CAST(NULL AS {DUCKDB.timestamp_type}) AS {q(VALID_TO)}",
        f"true AS {q(IS_CURRENT)}",
        f"w._oxi_hash AS {q(ROW_HASH)}",
    ]
    if history.load_id_column:
        opened_cols.append(f"{literal(load_id)} AS {q(history.load_id_column)}")
    opened = f"SELECT {', '.join(opened_cols)} FROM {WINNERS} AS w WHERE NOT w._oxi_deleted"
    if scan is None:
        return opened
    # a winner opens a version unless its key's current version has the same hash
    same = DUCKDB.not_distinct(f"o.{q(ROW_HASH)}", "w._oxi_hash")
    opened += f" AND NOT EXISTS (SELECT 1 FROM {scan} AS o WHERE {on} AND o.{q(IS_CURRENT)} AND {same})"
    changed = DUCKDB.distinct(f"o.{q(ROW_HASH)}", "w._oxi_hash")
    closes = f"EXISTS (SELECT 1 FROM {WINNERS} AS w WHERE {on} AND (w._oxi_deleted OR {changed}))"
    if history.options.full_snapshot:
        closes = f"({closes} OR NOT EXISTS (SELECT 1 FROM {WINNERS} AS w WHERE {on}))"
    marked = f"SELECT *, coalesce(o.{q(IS_CURRENT)}, false) AND {closes} AS _oxi_closes FROM {scan} AS o"
    kept = (
        f"SELECT * EXCLUDE (_oxi_closes) REPLACE ("
        f"CASE WHEN _oxi_closes THEN {ts} ELSE {q(VALID_TO)} END AS {q(VALID_TO)}, "
        f"{q(IS_CURRENT)} AND NOT _oxi_closes AS {q(IS_CURRENT)}) FROM ({marked}) AS o"
    )
    return f"{kept} UNION ALL BY NAME {opened}"


def _check_history_columns(con: duckdb.DuckDBPyConnection, scan: str, target: Path) -> None:
    """An scd2 load needs the dataset's versions: a dataset written by another disposition has none."""
    names = {str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    missing = [c for c in SCD2_COLUMNS if c not in names]
    if missing:
        raise DataError(
            f"dataset {target} has no scd2 column(s) {missing}: it was not written with write_disposition scd2",
            file=str(target),
            hint="write the history to a new folder (or replace this one once with the scd2 columns)",
        )


def _publish_whole(con: duckdb.DuckDBPyConnection, ctx: StepContext, load: KeyedLoad, select: str) -> None:
    """The whole dataset rewritten: one folder swap (atomic_output), partitioned or not."""
    with atomic_output(load.target, ctx) as folder:
        folder.mkdir()  # a folder even when no row is left
        out = _folder(folder, load.partition_by, load.name)
        con.execute(f"COPY ({select}) TO {literal(str(out))} ({load.copy_options})")
        _check_tree(folder)


def _publish_partitions(
    con: duckdb.DuckDBPyConnection, ctx: StepContext, load: KeyedLoad, select: str, affected: list[Path]
) -> None:
    """The affected partitions rewritten in the temporary folder, then swapped in one by one."""
    out = load.tmp / "data"
    con.execute(f"COPY ({select}) TO {literal(str(out))} ({load.copy_options})")
    _check_tree(out)
    ctx.check_cancelled()
    load.target.mkdir(parents=True, exist_ok=True)
    _swap_partitions(out, load.target, affected, load.tmp)


def _on(keys: list[str]) -> str:
    return " AND ".join(f"o.{ident(k)} = w.{ident(k)}" for k in keys)


def _reserved(history: History | None, load_id_column: str | None) -> set[str]:
    """Input columns the load writes itself (replaced when the input has them)."""
    names = {load_id_column} if load_id_column else set()
    if history is not None:
        names |= set(SCD2_COLUMNS) | ({history.load_id_column} if history.load_id_column else set())
    return names


def _tagged(columns: dict[str, str] | Sequence[str], load_id_column: str | None, load_id: str) -> str:
    """The select list of ``columns``, plus the load id as ``load_id_column`` when there is one."""
    cols = [ident(c) for c in columns]
    if load_id_column:
        cols.append(f"{literal(load_id)} AS {ident(load_id_column)}")
    return ", ".join(cols)


def _folder(tmp: Path, partition_by: list[str] | None, name: str) -> Path:
    """COPY's target: a folder with PARTITION_BY, else one file ``name.parquet`` in the folder."""
    if partition_by:
        return tmp
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp / f"{name}.parquet"


def dataset_load_committed(target: Path, load_id: str, disposition: str, *, whole_swap: bool = False) -> bool:
    """Whether the load ``load_id`` was published to the dataset ``target``: its marker is there, or
    (``whole_swap``: the load rewrote the whole folder in one rename) its files are, so a kill between
    that rename and the marker rolls the load forward. An append without its marker may have renamed
    some of its files in before a kill: they are removed, so that rolling the load back (and reading its
    rows again) cannot leave them twice. Merge, scd2 and delete_insert need no undo: applying the same
    load again gives the same dataset (scd2: with the same load time; docs/dispositions.md)."""
    if file_load_committed(target, load_id):
        return True
    if not target.is_dir():
        return False
    files = [f for f in target.rglob("*.parquet") if _named_after(f.name, load_id)]
    if whole_swap:
        return bool(files)
    if disposition == "append":
        for f in files:
            f.unlink()
    return False


def swaps_whole(disposition: str, partition_by: list[str] | None, full_snapshot: bool) -> bool:
    """Whether a merge / scd2 load rewrites the whole dataset (one folder rename) rather than partitions:
    without ``partition_by``, or for an scd2 full snapshot (a key absent from it may be in any partition)."""
    return disposition in ("merge", "scd2") and (not partition_by or (disposition == "scd2" and full_snapshot))


def _named_after(file_name: str, load_id: str) -> bool:
    """``part-<load id>.parquet`` or ``part-<load id>-<n>.parquet``: a file written by that load."""
    return re.fullmatch(rf"part-{re.escape(_safe(load_id))}(-\d+)?\.parquet", file_name) is not None


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


def _swap_partitions(new_root: Path, target: Path, partitions: list[Path], tmp: Path) -> None:
    """Put ``new_root/rel`` in the place of ``target/rel`` for each partition (absent new: removed).

    The old folder is renamed to ``tmp/old/rel`` (inside the hidden temporary folder, outside the dataset),
    so a kill between the two renames leaves no stray copy that a reader would see, and the next write
    puts it back (:func:`_restore_interrupted_swaps`). It is renamed once more before it is removed, so a
    kill while removing it never leaves a partial partition there to restore."""
    for n, rel in enumerate(partitions):
        new, dest, old, trash = new_root / rel, target / rel, tmp / "old" / rel, tmp / "trash" / str(n)
        if dest.exists():
            old.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dest, old)
        if new.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(new, dest)
        if old.exists():
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)


def _restore_interrupted_swaps(target: Path, depth: int) -> None:
    """Put back what a run killed between the two renames of a swap left aside: a partition in its
    temporary folder's ``old/`` with nothing in its place, or (atomic_output) the whole old dataset with
    no dataset in its place. Without this the next merge or scd2 would read that partition as empty and
    lose its rows; the killed load had no marker, so it is rolled back and applied again."""
    for leftover in sorted(target.parent.glob(f".{glob.escape(target.name)}.oxitmp-*")):
        if not leftover.is_dir():
            continue
        if "-old-" in leftover.name and not target.exists():
            os.replace(leftover, target)
        else:
            _put_back(leftover, target, depth)


def _put_back(tmp: Path, target: Path, depth: int) -> None:
    """Rename each old partition left in ``tmp/old`` back to its place when nothing took it."""
    aside = tmp / "old"
    if depth and aside.is_dir():
        for rel in _leaves(aside, depth):
            if not (target / rel).exists():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(aside / rel, target / rel)


def _check_columns(
    columns: dict[str, str], partition_by: list[str] | None, primary_key: list[str] | None, options: MergeOptions
) -> None:
    named = {
        "partition_by": partition_by or [],
        "primary_key": primary_key or [],
        "dedup_sort": [options.dedup_sort.column] if options.dedup_sort else [],
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
