"""Exactly-once under crashes: `oxiflow run` is killed with SIGKILL at chosen points of the load protocol
(the test hook OXIFLOW_TEST_CRASH_AT, docs/incremental.md), then the next run must leave the target
exactly as one clean run would: the same rows, no key twice, the same content hash.

`make soak` runs the randomized loop with OXIFLOW_SOAK_TRIALS=100.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.state.store import open_store

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POINTS = [
    "after_begin_load",
    "after_stage",
    "before_sink_commit",
    "after_sink_commit",
    "before_state_commit",
    "after_state_commit",
]


class Setup:
    def __init__(self, folder: Path, sink: str) -> None:
        self.folder = folder
        self.sink = sink
        self.table = f"crash_{os.getpid()}_{random.randrange(10**9)}"
        self.src = sqlite3.connect(folder / "src.db", isolation_level=None)
        self.src.execute("CREATE TABLE t (id INTEGER, updated_at TIMESTAMP, v TEXT)")
        self.next_id = 0
        self.cursor = 1000
        if sink == "postgres":
            target = f"name: write_postgres\n    config: {{url: '{PG_URL}', table: {self.table}}}"
        elif sink == "duckdb":
            target = f"name: write_duckdb\n    config: {{database: dst.duckdb, table: {self.table}}}"
        else:
            target = f"name: write_sqlite\n    config: {{database: dst.db, table: {self.table}}}"
        self.pipeline = folder / "p.yaml"
        self.pipeline.write_text(
            "metadata: {name: crash}\npipeline:\n"
            "  - name: read_sqlite\n    config:\n      database: src.db\n      table: t\n"
            "      incremental: {cursor: updated_at, primary_key: id, lag: 30s}\n"
            f"  - {target}\n",
            encoding="utf-8",
        )
        self.state = folder / "state.db"

    def add(self, rng: random.Random, n: int) -> None:
        """New rows, some with a cursor equal to the last one, some late (inside the 30 s lag)."""
        rows = []
        for _ in range(n):
            kind = rng.random()
            cursor = (
                self.cursor - rng.randrange(1, 30) if kind < 0.2 else self.cursor + (kind > 0.5) * rng.randrange(1, 9)
            )
            self.cursor = max(self.cursor, cursor)
            rows.append(
                (
                    self.next_id,
                    f"2024-01-01 {cursor // 3600:02d}:{cursor // 60 % 60:02d}:{cursor % 60:02d}",
                    f"v{self.next_id}",
                )
            )
            self.next_id += 1
        self.src.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)

    def run_clean(self) -> None:
        with open_store(str(self.state)) as store:
            result = run_plan(load_pipeline(self.pipeline), RunOptions(state=store))
        assert result.status == "ok", result.error

    def run_crashing(self, point: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "oxiflow.cli.main", "run", str(self.pipeline), "-q"],
            cwd=self.folder,
            env={**os.environ, "OXIFLOW_TEST_CRASH_AT": point, "OXIFLOW_STATE_URL": str(self.state)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -9, f"the run was not killed at {point}: {proc.returncode} {proc.stderr}"

    def target(self) -> list[tuple[object, ...]]:
        sql = f"SELECT id, updated_at, v FROM {self.table}"
        if self.sink == "postgres":
            with psycopg.connect(PG_URL) as pg:
                rows = pg.execute(sql).fetchall()
            return sorted((i, str(c).replace("T", " "), v) for i, c, v in rows)
        if self.sink == "duckdb":
            import duckdb

            if not (self.folder / "dst.duckdb").exists():
                return []
            duck = duckdb.connect(str(self.folder / "dst.duckdb"), read_only=True)
            try:
                return sorted((i, str(c), v) for i, c, v in duck.execute(sql).fetchall())
            finally:
                duck.close()
        con = sqlite3.connect(self.folder / "dst.db")
        try:
            return sorted(con.execute(sql).fetchall())
        finally:
            con.close()

    def check(self) -> None:
        """The target equals one clean full load of the source (computed from the source itself)."""
        got = self.target()
        expected = sorted(self.src.execute("SELECT id, updated_at, v FROM t").fetchall())
        assert len({r[0] for r in got}) == len(got), "a key was loaded twice"
        assert got == expected
        assert _digest(got) == _digest(expected)
        with open_store(str(self.state)) as store:
            assert not store.pending_loads("crash")

    def drop(self) -> None:
        self.src.close()
        if self.sink == "postgres":
            with psycopg.connect(PG_URL, autocommit=True) as pg:
                pg.execute(f"DROP TABLE IF EXISTS {self.table}")


def _digest(rows: list[tuple[object, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "duckdb"])
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_point_then_rerun(tmp_path: Path, sink: str, point: str) -> None:
    rng = random.Random(point)
    s = Setup(tmp_path, sink)
    try:
        s.add(rng, 20)
        s.run_clean()
        s.add(rng, 15)
        s.run_crashing(point)
        s.run_clean()
        s.check()
    finally:
        s.drop()


def test_randomized_crash_loop(tmp_path: Path) -> None:
    trials = int(os.environ.get("OXIFLOW_SOAK_TRIALS", "5"))
    seed = int(os.environ.get("OXIFLOW_SOAK_SEED", "7"))
    for trial in range(trials):
        rng = random.Random(seed * 1000 + trial)
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        s = Setup(folder, rng.choice(["sqlite", "postgres", "duckdb"]))
        try:
            for _ in range(rng.randrange(1, 4)):  # a few runs, some of them killed
                s.add(rng, rng.randrange(0, 12))
                if rng.random() < 0.6:
                    s.run_crashing(rng.choice(POINTS))
                else:
                    s.run_clean()
            s.run_clean()
            s.check()
        finally:
            s.drop()
