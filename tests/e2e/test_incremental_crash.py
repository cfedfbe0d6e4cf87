"""Exactly-once under crashes: `oxiflow run` is killed with SIGKILL, then rerun; the target must then be
exactly what the same runs without the crash give: the same rows, no key twice (scd2: one current version
per key), the same content hash.

Two kinds of kill:

- *hook points*: the test hook OXIFLOW_TEST_CRASH_AT makes the process kill itself at a chosen point of the
  load protocol (docs/incremental.md), so every protocol state is reached on purpose;
- *timed kills*: the run is started and its process group gets SIGKILL after a delay drawn by the trial's
  seeded RNG from [0, 1.1 * D], D the duration of a clean run of the same pipeline. They land anywhere:
  during start-up, while the source is read, in the middle of a COPY, of a dataset's renames or of a
  COMMIT, in the state store's commit, after the end. Where one landed is read afterwards from the state
  store and the sink's marker (Setup.phase_after_kill); it is reported, never asserted per kill.

Every (sink, disposition) pair in DISPOSITION_SINKS is covered: the source (an incremental SQLite table)
gets new keys, late rows, updates of existing keys and deletes between loads, and the expected target is
computed here from snapshots of the source at each successful load (no oxiflow code), so a crash that
rolls a load forward or back wrongly shows as a missing row, a duplicate or a wrong version.

`make test` runs the sink-specific crash points (SINK_POINTS) for every pair, every point for the first
sink of each disposition, and the randomized loop on FAST_PAIRS (PostgreSQL, DuckDB and Parquet; append,
merge and scd2), each trial with at least one timed kill. With OXIFLOW_SOAK_TRIALS set (`make soak`: 100)
every point runs for every pair and the randomized loop runs that many trials over every pair, mixing
hook-point and timed kills, and checks that the timed kills landed in several phases (OXIFLOW_SOAK_SEED
picks another sequence).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.state.store import open_store

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Which sinks take each disposition and so are under this suite: adding a sink to a tuple is all it takes
# to crash-test it (test_disposition_support_is_current fails as a reminder once a sink accepts a
# disposition it is not listed for).
DISPOSITION_SINKS: dict[str, tuple[str, ...]] = {
    "append": ("sqlite", "postgres", "duckdb", "parquet", "parquet_partitioned"),
    "merge": ("duckdb", "postgres", "sqlite", "parquet", "parquet_partitioned"),
    "scd2": ("duckdb", "postgres", "sqlite", "parquet", "parquet_partitioned"),
}
SINK_OXI = {
    "sqlite": "write_sqlite",
    "postgres": "write_postgres",
    "duckdb": "write_duckdb",
    "parquet": "write_parquet",
    "parquet_partitioned": "write_parquet",  # partition_by: [grp]
}

# The hook points, in protocol order. SQL sinks (and DuckDB) reach before_sink_commit inside their
# transaction; a Parquet dataset reaches after_publish only where it publishes through atomic_output
# (merge without partition_by swaps the whole folder).
POINTS = (
    "after_begin_load",
    "after_stage",
    "before_sink_commit",
    "after_publish",
    "after_sink_commit",
    "before_state_commit",
    "after_state_commit",
)

# Where the sink's own recovery decides the outcome: inside its transaction, between its publish and its
# marker, just after its commit (the state store not yet told). At the other points the sink is in one of
# those states too (untouched, or committed with the load committed or not), so `make test` runs them on
# the first sink of each disposition only; `make soak` (OXIFLOW_SOAK_TRIALS set) runs every point on every
# sink.
SINK_POINTS = {"before_sink_commit", "after_publish", "after_sink_commit"}

# Cases that leave a wrong target today: (sink, disposition, point) -> what goes wrong. Each is an
# xfail(strict=True) in the point matrix (so a fix turns it into a visible XPASS) and is left out of
# the randomized loop. None at the moment.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}

# Where a timed kill landed, as the state store and the sink tell after it (Setup.phase_after_kill), in
# protocol order. The source's cursor is staged when its stream ends, which the sink reaches inside its
# load (the end of its COPY), so both STREAMING and SINK_COMMIT are during the sink's load. A load that
# reads no new row stages no cursor: its whole sink load counts as STREAMING.
STARTUP = "start-up"  # no load begun: interpreter start, imports, plan, lock, settling an earlier load
STREAMING = "streaming"  # the load began, the source's stream has not ended: rows read, the sink's COPY
SINK_COMMIT = "sink commit"  # cursor staged, no marker yet: the sink's statements, its COMMIT, renames
SINK_COMMITTED = "sink committed"  # the sink's marker is there; the state store's load still pending
STATE_COMMITTED = "state committed"  # the load committed in the state store; the process was shutting down
FINISHED = "finished"  # the run exited 0 before the signal (a clean load, not a kill)
PHASES = (STARTUP, STREAMING, SINK_COMMIT, SINK_COMMITTED, STATE_COMMITTED, FINISHED)
# What the soak's timed kills must all have hit, so that they cannot silently degrade into killing at
# start-up only (each group: at least one kill in one of its phases). In 100 trials (about 230 timed
# kills) each group gets 8% of them or more.
REQUIRED_PHASES = ((STARTUP,), (STREAMING,), (SINK_COMMIT,), (SINK_COMMITTED, STATE_COMMITTED))
SOAK_MIN_TRIALS = 50  # the phase check needs this many trials (a few trials may well miss a phase)

# The randomized loop of `make test`: each sink family and each disposition twice, a few seconds each.
FAST_PAIRS = (
    ("postgres", "append"),
    ("duckdb", "merge"),
    ("parquet", "scd2"),
    ("postgres", "scd2"),
    ("duckdb", "append"),
    ("parquet_partitioned", "merge"),
)
TIMED_SHARE = 0.6  # the share of timed kills among a trial's kills after its first (which is always timed)
KILL_WINDOW = 1.1  # a timed kill's delay is drawn from [0, KILL_WINDOW * D]

DATA_COLUMNS = ("id", "updated_at", "v", "deleted_at", "grp")
SCD2_COLUMNS = ("_valid_from", "_valid_to", "_is_current")
TIMESTAMP_COLUMNS = {"updated_at", "deleted_at", "_valid_from", "_valid_to"}
SYSTEM_COLUMNS = {"_oxi_load_id", "_row_hash"}

Row = tuple[Any, ...]


def crash_points(sink: str, disposition: str) -> list[str]:
    """The hook points a run of this sink reaches (a point it never reaches would not kill it)."""
    if not sink.startswith("parquet"):
        return [p for p in POINTS if p != "after_publish"]
    # a dataset is published by renames, then marked (after_publish): there is no transaction to commit
    return [p for p in POINTS if p != "before_sink_commit"]


def supported_pairs() -> list[tuple[str, str]]:
    return [(sink, disposition) for disposition, sinks in DISPOSITION_SINKS.items() for sink in sinks]


# -- the source -------------------------------------------------------------------------------------------
class Source:
    """An incremental SQLite table `t` (cursor updated_at, key id, lag 30 s) and the edits made to it."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("CREATE TABLE t (id INTEGER, updated_at TIMESTAMP, v TEXT, deleted_at TIMESTAMP, grp INTEGER)")
        self.next_id = 0
        self.cursor = 1000  # the highest cursor in the table, in seconds of 2024-01-01
        self.edits = 0

    def insert(self, rng: random.Random, n: int) -> None:
        """New keys, some with a cursor equal to the last one, some late (inside the 30 s lag)."""
        rows = []
        for _ in range(n):
            kind = rng.random()
            if kind < 0.2:
                cursor = self.cursor - rng.randrange(1, 30)
            else:
                cursor = self.cursor + (kind > 0.5) * rng.randrange(1, 9)
            self.cursor = max(self.cursor, cursor)
            rows.append((self.next_id, _ts(cursor), f"v{self.next_id}", None, self.next_id % 3))
            self.next_id += 1
        self.db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)

    def update(self, rng: random.Random, n: int, *, delete: bool = False) -> None:
        """Change (or mark deleted) n live keys; the cursor moves past every loaded value, so each change
        is a new (cursor, key) pair that the next load picks up."""
        live = [r[0] for r in self.db.execute("SELECT id FROM t WHERE deleted_at IS NULL ORDER BY id")]
        for key in rng.sample(live, min(n, len(live))):
            self.cursor += rng.randrange(1, 9)
            self.edits += 1
            self.db.execute(
                "UPDATE t SET updated_at = ?, v = ?, deleted_at = ? WHERE id = ?",
                (_ts(self.cursor), f"v{key}.{self.edits}", _ts(self.cursor) if delete else None, key),
            )

    def change(self, rng: random.Random) -> None:
        """One batch of edits between loads: mostly new keys, plus updates and deletes of loaded ones."""
        self.insert(rng, rng.randrange(0, 12))
        self.update(rng, rng.randrange(0, 6))
        self.update(rng, rng.randrange(0, 3), delete=True)

    def snapshot(self) -> frozenset[Row]:
        return frozenset(self.db.execute(f"SELECT {', '.join(DATA_COLUMNS)} FROM t"))


def _ts(seconds: int) -> str:
    return f"2024-01-01 {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- the expected target ------------------------------------------------------------------------------------
def expected_rows(disposition: str, loads: list[tuple[str, frozenset[Row]]]) -> list[Row]:
    """The target after clean loads of the source snapshots ``loads`` ((load time, rows) in order)."""
    if not loads:
        return []
    if disposition == "append":  # every version ever loaded, once
        return _sorted(set().union(*(rows for _, rows in loads)))
    if disposition == "merge":  # the latest version of each key, deleted keys gone
        return _sorted(r for r in loads[-1][1] if r[3] is None)
    return _expected_scd2(loads)


def _expected_scd2(loads: list[tuple[str, frozenset[Row]]]) -> list[Row]:
    """Versions (data columns + _valid_from, _valid_to, _is_current) per docs/dispositions.md, scd2 with
    full_snapshot false: a changed key closes its current version at the load time and opens one; a
    deleted key only closes; keys absent from a load are left alone."""
    versions: list[list[Any]] = []
    current: dict[int, list[Any]] = {}
    previous: frozenset[Row] = frozenset()
    for load_time, rows in loads:
        for row in sorted(rows - previous, key=repr):  # the rows this load reads: new (cursor, key) pairs
            key, deleted = row[0], row[3] is not None
            open_version = current.get(key)
            if open_version is not None and (deleted or _payload(open_version) != _payload(row)):
                open_version[-2:] = [load_time, False]
                del current[key]
            if not deleted and key not in current:
                version = [*row, load_time, None, True]
                versions.append(version)
                current[key] = version
        previous = rows
    return _sorted(tuple(v) for v in versions)


def _payload(row: Row | list[Any]) -> tuple[Any, ...]:
    """What the row hash covers: every input column but the key and the hard_delete column."""
    return (row[1], row[2], row[4])


def _sorted(rows: Any) -> list[Row]:
    return sorted(rows, key=repr)


def _digest(rows: list[Row]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def sink_config(sink: str, disposition: str, table: str, load_time: str) -> dict[str, Any]:
    """The sink step's config: merge and scd2 on key `id`, `deleted_at` marks deletes; scd2 versions are
    stamped with ``load_time``."""
    by_sink: dict[str, dict[str, Any]] = {
        "sqlite": {"database": "dst.db", "table": table},
        "postgres": {"url": PG_URL, "table": table},
        "duckdb": {"database": "dst.duckdb", "table": table},
        "parquet": {"path": "out/dataset"},
        "parquet_partitioned": {"path": "out/dataset", "partition_by": ["grp"]},
    }
    cfg = by_sink[sink]
    cfg["write_disposition"] = disposition
    if disposition == "merge":
        cfg.update(primary_key=["id"], merge={"hard_delete": "deleted_at"})
    elif disposition == "scd2":
        options = {"hard_delete": "deleted_at", "full_snapshot": False, "load_time": load_time}
        cfg.update(primary_key=["id"], scd2=options)
    return cfg


# -- kills ------------------------------------------------------------------------------------------------------
@dataclass
class Kill:
    """One killed (or, for a timed kill, possibly finished) run, as the failure messages tell it."""

    outcome: str  # killed | finished
    point: str | None = None  # a hook point's name
    delay: float = 0.0  # a timed kill: the drawn delay, the clean run's duration D, when the signal went
    duration: float = 0.0
    at: float = 0.0
    phase: str | None = None

    def __str__(self) -> str:
        if self.point is not None:
            return f"hook {self.point}: {self.outcome}"
        return (
            f"timed kill at {self.delay:.3f}s (D {self.duration:.3f}s, sent at {self.at:.3f}s): "
            f"{self.outcome} in {self.phase}"
        )


# -- one pipeline and its target ------------------------------------------------------------------------------
class Setup:
    """A folder with the source, a pipeline `source -> sink` with one disposition, and its state store."""

    def __init__(self, folder: Path, sink: str, disposition: str) -> None:
        self.folder = folder
        self.sink = sink
        self.disposition = disposition
        self.table = f"crash_{os.getpid()}_{random.randrange(10**9)}"
        # the pipeline is named after its table: SQL sinks keep one marker per (pipeline, step) in the
        # database's `_oxi_loads` and prune the others, so two tests loading PostgreSQL at once under one
        # pipeline name would delete each other's markers
        self.name = self.table
        self.source = Source(folder / "src.db")
        self.state = folder / "state.db"
        self.pipeline = folder / "p.yaml"
        self.loads: list[tuple[str, frozenset[Row]]] = []  # (load time, source rows) of each successful load
        self.write_pipeline()

    # the pipeline
    def load_time(self) -> str:
        """scd2 stamps versions with a fixed load time per load, so a crashed load and its rerun agree."""
        return str(dt.datetime(2024, 2, 1) + dt.timedelta(days=len(self.loads)))

    def write_pipeline(self) -> None:
        source = {
            "database": "src.db",
            "table": "t",
            "incremental": {"cursor": "updated_at", "primary_key": "id", "lag": "30s"},
        }
        steps = [
            {"name": "read_sqlite", "config": source},
            {
                "name": SINK_OXI[self.sink],
                "config": sink_config(self.sink, self.disposition, self.table, self.load_time()),
            },
        ]
        # JSON is YAML
        self.pipeline.write_text(json.dumps({"metadata": {"name": self.name}, "pipeline": steps}), encoding="utf-8")

    # the runs
    def run_clean(self) -> None:
        """A successful load; the source as it is now is what the target must hold."""
        with open_store(str(self.state)) as store:
            result = run_plan(load_pipeline(self.pipeline), RunOptions(state=store))
        assert result.status == "ok", result.error
        self.record_load()

    def run_clean_timed(self) -> float:
        """A successful load in a process of its own, as the timed kills run it; its duration in seconds."""
        started = time.monotonic()
        proc = subprocess.run(
            self.command(), cwd=self.folder, env=self.env(), capture_output=True, text=True, timeout=120
        )
        took = time.monotonic() - started
        assert proc.returncode == 0, f"the clean run failed: {proc.returncode} {proc.stderr}"
        self.record_load()
        return took

    def command(self) -> list[str]:
        return [sys.executable, "-m", "oxiflow.cli.main", "run", str(self.pipeline), "-q"]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "OXIFLOW_TEST_CRASH_AT"}
        return {**env, "OXIFLOW_STATE_URL": str(self.state), **extra}

    def run_crashing(self, point: str) -> Kill:
        proc = subprocess.run(
            self.command(),
            cwd=self.folder,
            env=self.env(OXIFLOW_TEST_CRASH_AT=point),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -9, f"the run was not killed at {point}: {proc.returncode} {proc.stderr}"
        return Kill(point=point, outcome="killed")

    def run_timed(self, delay: float, duration: float) -> Kill:
        """Start the run and SIGKILL its process group after ``delay`` seconds (unless it ended first). A run
        that ended first is a successful load, recorded as such; a killed one is reported with the phase it
        was killed in. Nothing here waits for a phase: where the kill lands is up to the clock."""
        before = self._load_ids()
        log = self.folder / "timed-run.log"
        with log.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                self.command(),
                cwd=self.folder,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the kill reaches any child it starts
            )
            started = time.monotonic()
            try:
                code = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                # the group leader is not reaped yet, so its pid still names this group
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait(timeout=120)
            at = time.monotonic() - started
        kill = Kill(delay=delay, duration=duration, at=at, outcome="killed" if code == -signal.SIGKILL else "finished")
        if code == 0:
            kill.phase = FINISHED
            self.record_load()
        elif code == -signal.SIGKILL:
            kill.phase = self.phase_after_kill(before)
        else:
            text = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise AssertionError(f"{kill}: the run failed with exit code {code}: {text}")
        return kill

    def record_load(self) -> None:
        """A load that succeeded (outside run_clean): the source as it is now is what it loaded."""
        self.loads.append((self.load_time(), self.source.snapshot()))
        self.write_pipeline()

    # where a killed run was
    def _load_ids(self) -> set[str]:
        if not self.state.exists():  # not created before the first run: that run may be killed creating it
            return set()
        with open_store(str(self.state)) as store:
            return {load.load_id for load in store.loads(self.name)}

    def phase_after_kill(self, before: set[str]) -> str:
        """How far the killed run got, from what it left: its load in the state store (none, pending with or
        without a staged cursor, committed) and the sink's marker of that load. Reads only."""
        if not self.state.exists():
            return STARTUP
        with open_store(str(self.state)) as store:
            new = [load for load in store.loads(self.name) if load.load_id not in before]
            if not new:
                return STARTUP
            (load,) = new
            if load.status == "committed":
                return STATE_COMMITTED
            staged = any(c.key == "staged" and c.load_id == load.load_id for c in store.cursors(self.name))
        if self.sink_marked(load.load_id):
            return SINK_COMMITTED
        return SINK_COMMIT if staged else STREAMING

    def sink_marked(self, load_id: str) -> bool:
        """Whether the sink's marker of ``load_id`` is there (its rows committed / its files published)."""
        sql = "SELECT count(*) FROM _oxi_loads WHERE load_id = ?"
        if self.sink == "postgres":
            with psycopg.connect(PG_URL) as pg:
                row = pg.execute("SELECT to_regclass('_oxi_loads')").fetchone()
                if not row or row[0] is None:
                    return False
                row = pg.execute(sql.replace("?", "%s"), (load_id,)).fetchone()
                return bool(row and row[0])
        if self.sink == "sqlite":
            path = self.folder / "dst.db"
            if not path.exists():
                return False
            con = sqlite3.connect(path)
            try:
                return bool(con.execute(sql, (load_id,)).fetchone()[0])
            except sqlite3.OperationalError:  # no marker table yet
                return False
            finally:
                con.close()
        if self.sink == "duckdb":
            import duckdb

            path = self.folder / "dst.duckdb"
            if not path.exists():
                return False
            dcon = duckdb.connect(str(path), read_only=True)
            try:
                fetched = dcon.execute(sql, [load_id]).fetchone()
                return bool(fetched and fetched[0])
            except duckdb.CatalogException:
                return False
            finally:
                dcon.close()
        return (self.folder / "out" / ".oxiflow-loads" / f".dataset.{load_id}").is_file()

    # the target
    def target(self) -> tuple[list[str], list[Row]]:
        """(column names, rows) of the target as stored."""
        if self.sink == "postgres":
            with psycopg.connect(PG_URL) as pg:
                exists = pg.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
                if not exists or exists[0] is None:
                    return [], []
                cur = pg.execute(f'SELECT * FROM "{self.table}"')
                return [d.name for d in cur.description or []], cur.fetchall()
        if self.sink == "sqlite":
            con = sqlite3.connect(self.folder / "dst.db")
            try:
                rows = con.execute(f'SELECT * FROM "{self.table}"')
                return [d[0] for d in rows.description], rows.fetchall()
            except sqlite3.OperationalError:  # no table yet
                return [], []
            finally:
                con.close()
        return self._duckdb_target()

    def _duckdb_target(self) -> tuple[list[str], list[Row]]:
        import duckdb

        if self.sink == "duckdb":
            path = self.folder / "dst.duckdb"
            if not path.exists():
                return [], []
            con = duckdb.connect(str(path), read_only=True)
            sql = f'SELECT * FROM "{self.table}"'
        else:
            files = sorted(str(p) for p in (self.folder / "out" / "dataset").rglob("*.parquet"))
            if not files:
                return [], []
            con = duckdb.connect()
            hive = self.sink == "parquet_partitioned"
            sql = f"SELECT * FROM read_parquet({files!r}, union_by_name = true, hive_partitioning = {hive})"
        try:
            cur = con.execute(sql)
            return [d[0] for d in cur.description or []], cur.fetchall()
        finally:
            con.close()

    def check(self) -> None:
        """The target holds exactly the rows of the clean loads, and no load is left pending."""
        wanted = DATA_COLUMNS + (SCD2_COLUMNS if self.disposition == "scd2" else ())
        names, stored = self.target()
        extra = set(names) - set(wanted) - SYSTEM_COLUMNS
        assert not extra, f"unexpected columns in the target: {extra}"
        got = _sorted(tuple(_normal(c, row[names.index(c)]) for c in wanted) for row in stored)
        expected = expected_rows(self.disposition, self.loads)
        self._check_keys(got)
        assert got == expected, _difference(got, expected)
        assert _digest(got) == _digest(expected)
        with open_store(str(self.state)) as store:
            assert not store.pending_loads(self.name)
            allowed = {load.load_id for load in store.loads(self.name, status="committed")}
            if self.sink == "parquet_partitioned" and self.disposition == "scd2":
                # documented (docs/dispositions.md, crash safety): a killed partition-by-partition scd2 swap
                # is rolled back and reapplied, and the versions it had opened stay, with its load id
                allowed |= {load.load_id for load in store.loads(self.name, status="rolled_back")}
        if stored:
            # every row, in every sink (Parquet datasets too), names the load that wrote it, and that load
            # committed: a row of a rolled-back (killed) load left behind would name a load not allowed here
            assert "_oxi_load_id" in names, f"no _oxi_load_id column in the {self.sink} target"
            tags = {row[names.index("_oxi_load_id")] for row in stored}
            assert None not in tags and tags <= allowed, f"rows of loads that did not commit: {tags - allowed}"
        if self.sink.startswith("parquet"):
            leftovers = [p.name for p in (self.folder / "out").glob(".dataset.oxitmp-*")]
            assert not leftovers, f"temporary folders of killed runs were not removed: {leftovers}"

    def _check_keys(self, rows: list[Row]) -> None:
        if self.disposition == "append":  # one row per version: (key, cursor)
            twice = [k for k, n in Counter((r[0], r[1]) for r in rows).items() if n > 1]
        elif self.disposition == "merge":
            twice = [k for k, n in Counter(r[0] for r in rows).items() if n > 1]
        else:
            twice = [k for k, n in Counter(r[0] for r in rows if r[-1]).items() if n > 1]
            assert all((r[-2] is None) == r[-1] for r in rows), "_is_current disagrees with _valid_to"
        assert not twice, f"key(s) loaded twice ({self.disposition}): {twice[:10]}"

    def drop(self) -> None:
        self.source.db.close()
        if self.sink == "postgres":
            with psycopg.connect(PG_URL, autocommit=True) as pg:
                pg.execute(f'DROP TABLE IF EXISTS "{self.table}"')


def _normal(column: str, value: Any) -> Any:
    """A stored value in the source's terms: timestamps as 'YYYY-MM-DD HH:MM:SS' text, flags as bool."""
    if value is None:
        return None
    if column in TIMESTAMP_COLUMNS:
        return str(value).replace("T", " ")
    if column == "_is_current":
        return bool(value)
    if column in ("id", "grp"):
        return int(value)
    return value


def _difference(got: list[Row], expected: list[Row]) -> str:
    missing = sorted(set(expected) - set(got), key=repr)
    unexpected = sorted(set(got) - set(expected), key=repr)
    return f"{len(got)} rows, {len(expected)} expected; missing {missing[:5]}; unexpected {unexpected[:5]}"


# -- the tests -------------------------------------------------------------------------------------------------
def _point_cases() -> list[Any]:
    full = bool(os.environ.get("OXIFLOW_SOAK_TRIALS"))
    cases = []
    for sink, disposition in supported_pairs():
        first = sink == DISPOSITION_SINKS[disposition][0]
        for point in crash_points(sink, disposition):
            if not (full or first or point in SINK_POINTS):
                continue
            bug = KNOWN_BUGS.get((sink, disposition, point))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            cases.append(pytest.param(sink, disposition, point, marks=marks, id=f"{sink}-{disposition}-{point}"))
    return cases


@pytest.mark.parametrize(("sink", "disposition", "point"), _point_cases())
def test_kill_at_each_point_then_rerun(tmp_path: Path, sink: str, disposition: str, point: str) -> None:
    rng = random.Random(f"{sink}-{disposition}-{point}")
    s = Setup(tmp_path, sink, disposition)
    try:
        s.source.insert(rng, 20)
        s.run_clean()
        s.source.insert(rng, 10)
        s.source.update(rng, 6)
        s.source.update(rng, 2, delete=True)
        s.run_crashing(point)
        s.run_clean()
        s.check()
        # the scenario itself: the rerun's load changed existing keys (scd2: closed versions)
        changed = [r for r in expected_rows(disposition, s.loads) if "." in r[2] or r[3] is not None]
        assert changed and (disposition != "scd2" or any(not r[-1] for r in expected_rows("scd2", s.loads)))
    finally:
        s.drop()


def test_kill_while_postgres_commit_is_in_flight(tmp_path: Path) -> None:
    """Regression: a run killed after its client sent COMMIT, while the server is still committing. The server
    finishes the commit (marker and rows) after the client is gone; recovery used to look for the marker
    before that, find none, roll the load back and load its rows a second time. Now the marker lookup waits
    for the transaction (an advisory lock it holds until it ends). Here the commit is held open on purpose
    by a deferred trigger on the marker that sleeps 2 s (as a synchronous standby or a slow disk would)."""
    rng = random.Random("commit-in-flight")
    s = Setup(tmp_path, "postgres", "append")
    trigger = f"slow_commit_{s.table}"
    try:
        s.source.insert(rng, 20)
        s.run_clean()  # creates the target and the marker table
        s.source.insert(rng, 10)
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            pg.execute(
                "CREATE OR REPLACE FUNCTION oxiflow_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$"
            )
            pg.execute(
                f'CREATE CONSTRAINT TRIGGER "{trigger}" AFTER INSERT ON _oxi_loads DEFERRABLE INITIALLY DEFERRED '
                f"FOR EACH ROW WHEN (NEW.pipeline = '{s.name}') EXECUTE FUNCTION oxiflow_test_slow_commit()"
            )
            proc = subprocess.Popen(
                s.command(), cwd=s.folder, env=s.env(), stdout=subprocess.DEVNULL, start_new_session=True
            )
            committing = None
            deadline = time.monotonic() + 60
            while committing is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
                row = pg.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query ILIKE 'commit%'"
                ).fetchone()
                committing = row[0] if row else None
            assert committing is not None, "the run never reached its COMMIT"
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
            s.run_clean()  # settles the killed load while its COMMIT is still running on the server
            while pg.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (committing,)).fetchone():
                time.sleep(0.05)  # the killed run's session ends once its commit is done
        s.check()
        with open_store(str(s.state)) as store:
            assert len(store.loads(s.name, status="committed")) == 3  # the first, the killed one, the rerun
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            pg.execute(f'DROP TRIGGER IF EXISTS "{trigger}" ON _oxi_loads')
        s.drop()


def trial_pairs(trials: int, seed: int) -> list[tuple[str, str]]:
    """The (sink, disposition) of each trial: FAST_PAIRS for `make test`, else every supported pair in turn
    (a seeded order, repeated), so that 100 trials cover each pair six or seven times."""
    if not os.environ.get("OXIFLOW_SOAK_TRIALS"):
        return [FAST_PAIRS[t % len(FAST_PAIRS)] for t in range(trials)]
    order = supported_pairs()
    random.Random(seed).shuffle(order)
    return [order[t % len(order)] for t in range(trials)]


def clean_duration(folder: Path, sink: str, disposition: str) -> float:
    """D: the duration of one clean `oxiflow run` of the pair's pipeline (a first load of 20 rows, in a folder
    of its own, so that a trial's own first load can be killed too)."""
    folder.mkdir()
    s = Setup(folder, sink, disposition)
    try:
        s.source.insert(random.Random(0), 20)
        return s.run_clean_timed()
    finally:
        s.drop()


def test_randomized_crash_loop(tmp_path: Path) -> None:
    """Random edits and kills, each kill a hook point or a timed kill (the first kill of a trial is timed); a
    load may be killed several times before it succeeds (a kill of the recovery of a kill). Between a kill
    and the rerun the source may change too, where the expected target does not depend on whether the
    killed load committed: any edit for merge, new keys for append, none for scd2 (its versions carry the
    load time). The draws (pairs, edits, points, delays as a share of D) depend on the seed only; where a
    timed kill lands depends on the clock, and no assertion does, except the soak's check that the timed
    kills as a whole reached REQUIRED_PHASES."""
    soak = bool(os.environ.get("OXIFLOW_SOAK_TRIALS"))
    trials = int(os.environ.get("OXIFLOW_SOAK_TRIALS") or len(FAST_PAIRS))
    seed = int(os.environ.get("OXIFLOW_SOAK_SEED", "7"))
    durations: dict[tuple[str, str], float] = {}  # D per pair: a clean run, then the last finished timed run
    phases: Counter[str] = Counter()
    hooks: Counter[str] = Counter()
    for trial, (sink, disposition) in enumerate(trial_pairs(trials, seed)):
        rng = random.Random(seed * 1000 + trial)
        points = [p for p in crash_points(sink, disposition) if (sink, disposition, p) not in KNOWN_BUGS]
        if (sink, disposition) not in durations:
            durations[sink, disposition] = clean_duration(tmp_path / f"d-{sink}-{disposition}", sink, disposition)
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        s = Setup(folder, sink, disposition)
        kills: list[Kill] = []
        try:
            for load in range(rng.randrange(1, 5)):
                s.source.change(rng)
                while (load == 0 and not kills) or rng.random() < 0.5:
                    if not kills or rng.random() < TIMED_SHARE:
                        d = durations[sink, disposition]
                        kill = s.run_timed(rng.uniform(0, KILL_WINDOW * d), d)
                        if kill.outcome == "finished":
                            durations[sink, disposition] = kill.at
                        phases[kill.phase or "?"] += 1
                    else:
                        kill = s.run_crashing(rng.choice(points))
                        hooks[kill.point or "?"] += 1
                    kills.append(kill)
                    if disposition == "merge" and rng.random() < 0.5:
                        s.source.change(rng)
                    elif disposition == "append" and rng.random() < 0.5:
                        s.source.insert(rng, rng.randrange(1, 6))
                s.run_clean()
            s.check()
        except AssertionError as exc:
            told = "; ".join(f"load {n}: {k}" for n, k in enumerate(kills)) or "none"
            raise AssertionError(f"trial {trial} (seed {seed}, {sink} {disposition}; kills: {told}): {exc}") from exc
        finally:
            s.drop()
    timed = sum(phases.values())
    summary = ", ".join(f"{phase} {phases[phase]}" for phase in PHASES if phases[phase])
    hooked = f"{sum(hooks.values())} hook kills {dict(hooks)}"
    print(f"{trials} trials (seed {seed}); {timed} timed kills: {summary}; {hooked}")
    if soak and trials >= SOAK_MIN_TRIALS:
        for group in REQUIRED_PHASES:
            assert any(phases[p] for p in group), f"no timed kill landed in {' or '.join(group)}: {summary}"


def test_disposition_support_is_current() -> None:
    """A sink missing from DISPOSITION_SINKS must still refuse that disposition: once it accepts it, add it
    there so the crash suite covers it."""
    from oxiflow.registry import default_registry

    registry = default_registry()
    for disposition, sinks in DISPOSITION_SINKS.items():
        for sink, oxi in SINK_OXI.items():
            if sink in sinks:
                continue
            try:
                registry.get(oxi).config.model_validate(sink_config(sink, disposition, "t", "2024-02-01"))
            except ValueError:
                continue
            pytest.fail(f"{oxi} now accepts write_disposition {disposition}: add {sink!r} to DISPOSITION_SINKS")
