"""Local engine data flow with real steps: fan-out, fan-in, backpressure, step references, memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_engine_oxis import PROBES, probe

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.engine.metrics import RunResult


@pytest.fixture(autouse=True)
def _clean_probes() -> Iterator[None]:
    PROBES.clear()
    yield
    PROBES.clear()


@pytest.fixture
def run(write_pipeline):
    def go(text: str) -> RunResult:
        return run_plan(load_pipeline(write_pipeline(text)))

    return go


def ids(path: Path) -> list[int]:
    return sorted(pq.read_table(path).column("id").to_pylist())


def test_fan_out_one_source_two_sinks(run, tmp_path: Path) -> None:
    result = run(
        """
        pipeline:
          - name: t_count
            id: src
            config: {batches: 7, rows: 13}
          - name: write_parquet
            id: a
            inputs: [src]
            config: {path: a.parquet}
          - name: write_parquet
            id: b
            inputs: [src]
            config: {path: b.parquet}
        """
    )
    assert result.status == "ok", result.error
    assert ids(tmp_path / "a.parquet") == list(range(91))
    assert ids(tmp_path / "b.parquet") == list(range(91))
    assert [(s.step_id, s.rows_in, s.rows_out) for s in result.steps] == [
        ("src", 91, 91),
        ("a", 91, 91),
        ("b", 91, 91),
    ]
    assert result.metadata["a"]["path"] == str(tmp_path / "a.parquet")
    assert result.balanced


def test_fan_in_two_sources_into_one_transform(run, tmp_path: Path) -> None:
    result = run(
        """
        pipeline:
          - name: t_count
            id: low
            config: {batches: 5, rows: 10, start: 0}
          - name: t_count
            id: high
            config: {batches: 3, rows: 7, start: 1000}
          - name: t_union
            id: both
            inputs: [low, high]
          - name: write_parquet
            config: {path: out/u.parquet}
        """
    )
    assert result.status == "ok", result.error
    assert ids(tmp_path / "out/u.parquet") == list(range(50)) + list(range(1000, 1021))
    both = next(s for s in result.steps if s.step_id == "both")
    assert (both.rows_in, both.rows_out) == (71, 71)
    assert result.balanced


def test_a_step_reading_a_sink_reads_what_the_sink_read(run, tmp_path: Path) -> None:
    result = run(
        """
        pipeline:
          - name: t_count
            config: {batches: 2, rows: 4}
          - name: write_parquet
            id: first
            config: {path: first.parquet}
          - name: write_parquet
            id: second
            config: {path: second.parquet}
        """
    )
    assert result.status == "ok", result.error
    assert ids(tmp_path / "first.parquet") == ids(tmp_path / "second.parquet") == list(range(8))


@pytest.mark.parametrize("queue_size", [1, 4])
def test_backpressure_bounds_buffered_batches(run, queue_size: int) -> None:
    batches = 120
    result = run(
        f"""
        settings: {{queue_size: {queue_size}}}
        pipeline:
          - name: t_count
            config: {{batches: {batches}, rows: 1, probe: bp}}
          - name: t_collect
            config: {{probe: bp, delay: 0.002}}
        """
    )
    assert result.status == "ok", result.error
    assert probe("bp")["ids"] == list(range(batches))
    # the queue, the batch the sink holds, the one being produced (and one between the queue's
    # get and the sink's counter): never the whole stream
    ahead = probe("bp")["ahead"]
    assert ahead <= queue_size + 3, ahead
    assert ahead >= queue_size  # the fast source really did fill the queue


def test_step_metadata_references(run, tmp_path: Path) -> None:
    result = run(
        """
        pipeline:
          - name: t_count
            id: src
            config: {batches: 2, rows: 3, report: {target: "from_src.parquet"}}
          - name: write_parquet
            id: w1
            config: {path: "${steps.src.metadata.target}"}
          - name: t_count
            id: later
            config: {batches: 1, rows: 1, report: {written: "${steps.w1.metadata.path}"}}
          - name: write_parquet
            id: w2
            config: {path: "later-${steps.w1.metadata.rows}.parquet"}
        """
    )
    assert result.status == "ok", result.error
    assert ids(tmp_path / "from_src.parquet") == list(range(6))
    # `later` is not downstream of w1: it waited for w1 to finish before resolving its config
    assert result.metadata["later"]["written"] == str(tmp_path / "from_src.parquet")
    assert result.metadata["w1"]["rows"] == 6  # filled in by the engine for sinks that do not report it
    assert ids(tmp_path / "later-6.parquet") == [0]


def _memory_limit(con: duckdb.DuckDBPyConnection) -> str:
    """The memory_limit a connection reports (it is closed)."""
    try:
        row = con.execute("SELECT current_setting('memory_limit')").fetchone()
        assert row is not None
        return str(row[0])
    finally:
        con.close()


def _duckdb_shows(limit: str) -> str:
    """The oracle: what DuckDB itself reports for a memory_limit setting."""
    return _memory_limit(duckdb.connect(config={"memory_limit": limit}))


def test_memory_limits_reach_duckdb(run) -> None:
    result = run(
        """
        settings: {memory_limit_mb: 300}
        pipeline:
          - name: t_setting
            id: own
            max_memory_mb: 123
          - name: t_collect
            id: c1
            config: {probe: a}
          - name: t_setting
            id: inherited
          - name: t_collect
            id: c2
            config: {probe: b}
        """
    )
    assert result.status == "ok", result.error
    assert result.metadata["own"]["value"] == _duckdb_shows("123MB")
    assert result.metadata["inherited"]["value"] == _duckdb_shows("300MB")
    assert _duckdb_shows("123MB") != _duckdb_shows("300MB")


def test_rows_written_match_duckdb(run, tmp_path: Path) -> None:
    """An end-to-end accounting check against DuckDB counting the same file."""
    con = duckdb.connect()
    con.execute(f"COPY (SELECT range AS id FROM range(50000)) TO '{tmp_path / 'in.csv'}' (HEADER)")
    result = run(
        """
        settings: {batch_size: 4096, queue_size: 2}
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: write_parquet
            config: {path: out.parquet}
        """
    )
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.num_rows == 50000
    assert sorted(got.column("id").to_pylist()) == list(range(50000))
    assert [s.rows_out for s in result.steps] == [50000, 50000]
    assert pc.sum(got.column("id")).as_py() == con.execute("SELECT sum(range) FROM range(50000)").fetchone()[0]


def test_diamond_does_not_stall_and_spills_within_bounds(write_pipeline, tmp_path: Path) -> None:
    # src feeds the join directly and through sort, which needs all of src before it emits: with a
    # 2-batch queue on the direct edge src would block forever if the join read `sorted` first
    from oxiflow.engine.local import LocalEngine

    (tmp_path / "in.csv").write_text("id,x\n" + "".join(f"{i},{i % 97}\n" for i in range(20_000)))
    path = write_pipeline(
        """
        settings: {batch_size: 500, queue_size: 2}
        pipeline:
          - {name: read_csv, id: src, config: {path: in.csv}}
          - {name: sort, id: sorted, inputs: [src], config: {by: [x, id]}}
          - name: sql
            id: j
            inputs: [sorted, src]
            config: {query: "select s.id, s.x from sorted s join src using (id) order by s.x, s.id"}
          - {name: write_parquet, config: {path: out/j.parquet}}
        """
    )
    engine = LocalEngine(load_pipeline(path))
    result = engine.run()
    assert result.status == "ok", result.error
    expected = duckdb.sql(f"select id, x from read_csv('{tmp_path / 'in.csv'}') order by x, id").fetchall()
    assert duckdb.sql(f"select id, x from '{tmp_path / 'out/j.parquet'}'").fetchall() == expected
    assert engine.spill_dir is not None and not engine.spill_dir.exists()  # spilled, then cleaned up
    figures = {s.step_id: (s.rows_in, s.rows_out) for s in result.steps}
    assert figures["j"] == (40_000, 20_000) and result.balanced


def test_a_scan_without_a_budget_gets_the_scan_cap() -> None:
    """Streamed scans and pushed-down COPYs are capped per core (bounded memory at any input size);
    other connections keep DuckDB's default (80% of RAM). A step's own budget: the test above."""
    import os

    from oxiflow.engine.duck import SCAN_MB_PER_CORE, connect

    cap = f"{SCAN_MB_PER_CORE * max(2, os.cpu_count() or 1)}MB"
    assert _memory_limit(connect(stream="read")) == _duckdb_shows(cap)
    assert _memory_limit(connect()) == _memory_limit(duckdb.connect())
    assert _memory_limit(connect()) != _duckdb_shows(cap)
