"""The validate fast path: `read_parquet -> validate -> sink` measures every rule and check in one aggregate pass
over the source, and when nothing fails, the chain runs pushed down (one DuckDB COPY/INSERT) with the report
streaming would have given; anything failing streams exactly as before. Every test compares the two paths with
a forced streaming run (`settings: {pushdown: false}`) on the same data."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.state.dlq import DlqTable
from oxiflow.state.store import StateStore, open_store

# `rn` keeps the input order. id: a permutation (not increasing: count(DISTINCT)), seq: increasing (the lag
# shortcut), uid: unique with NULLs, (part_a, part_b): a composite key whose rows with a NULL part repeat (they
# pass the streaming rule: a NULL anywhere in the key passes), note: NULLs for null_rate.
CLEAN = """
SELECT i AS rn,
       (i * 7919) % {n} AS id,
       i AS seq,
       CASE WHEN i % 11 = 0 THEN NULL ELSE i END AS uid,
       CASE WHEN i % 13 = 0 THEN NULL ELSE i % 1000 END AS part_a,
       CASE WHEN i % 13 = 0 THEN 7 ELSE i // 1000 END AS part_b,
       CASE WHEN i % 17 = 0 THEN NULL ELSE (i % 100) * 1.0 END AS amount,
       (i % 7)::INTEGER AS qty,
       ['new', 'paid', 'shipped'][1 + i % 3] AS status,
       'user' || (i % 500) || '@example.com' AS email,
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'n' || i END AS note,
       (now() - INTERVAL (i) MINUTE)::TIMESTAMP AS created
FROM range({n}) t(i)
"""

RULES = """\
        - {column: id, not_null: true}
        - {column: amount, range: {min: 0, max: 100}}
        - {column: qty, range: {min: 0, max: 50}}
        - {column: status, enum: [new, paid, shipped]}
        - {column: email, pattern: '^[a-z0-9]+@example\\.com$'}
        - {column: id, unique: true}
        - {column: seq, unique: true}
        - {column: uid, unique: true}
        - {column: [part_a, part_b], unique: true}
        - {name: qty_fits, sql: "qty <= amount + 10"}
        - {column: note, pattern: '^n', severity: warn}
"""

CHECKS = """\
      row_count: {min: 1}
      null_rate: {max: 0.5, columns: [note]}
      unique: {columns: [id]}
      freshness: {column: created, max_age: 30d}
      sql: [{name: no_negative, query: "select * from data where qty < 0"}]
      references: [{column: status, dataset: statuses.csv}]
      anomalies:
        row_count: {z: 3.5, runs: 10, min_runs: 3, severity: error}
        null_rate: {column: note, min_runs: 3, z: 1000}
        mean: {column: qty, min_runs: 3, z: 1000}
"""

PIPE = """\
metadata: {name: fast}
settings: {batch_size: 700, pushdown: %(pushdown)s}
pipeline:
  - name: read_parquet
    id: orders
    config: {path: in.parquet}
  - name: validate
    id: v
    config:
      max_invalid_ratio: 0.5
%(config)s
  - name: %(sink)s
    id: out
    config: %(sink_config)s
"""

PARQUET_SINK = ("write_parquet", "{path: out.parquet}")


def pipe(config: str, sink: tuple[str, str] = PARQUET_SINK) -> str:
    return PIPE % {"pushdown": "%(pushdown)s", "config": config, "sink": sink[0], "sink_config": sink[1]}


def rules(text: str = RULES) -> str:
    return "      rules:\n" + text


def write(path: Path, query: str, *, writer: str = "pyarrow") -> Path:
    """pyarrow writes statistics that leave NaN out (the hard case for DuckDB's scan), DuckDB its own."""
    if writer == "pyarrow":
        pq.write_table(duckdb.sql(query).to_arrow_table(), path, row_group_size=1000)
    else:
        duckdb.sql(f"COPY ({query}) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 1000)")
    return path


def clean(n: int = 5000) -> str:
    return CLEAN.format(n=n)


def dirty(changes: str, n: int = 5000) -> str:
    return f"SELECT * REPLACE ({changes}) FROM ({clean(n)})"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[StateStore, StateStore]]:
    """One state store per path, so each path's anomaly history is its own."""
    with open_store(str(tmp_path / "fast.db")) as a, open_store(str(tmp_path / "streamed.db")) as b:
        yield a, b


@pytest.fixture(autouse=True)
def statuses(tmp_path: Path) -> None:
    (tmp_path / "statuses.csv").write_text("status\nnew\npaid\nshipped\nbogus_but_known\n", encoding="utf-8")


def run(tmp_path: Path, text: str, *, pushdown: bool, store: StateStore | None = None) -> RunResult:
    path = tmp_path / ("fast.yaml" if pushdown else "streamed.yaml")
    path.write_text(text % {"pushdown": str(pushdown).lower()}, encoding="utf-8")
    return run_plan(load_pipeline(path), RunOptions(state=store))


def figures(result: RunResult) -> list[tuple[Any, ...]]:
    return [(s.step_id, s.status, s.rows_in, s.rows_out, s.rows_rejected, s.rows_filtered) for s in result.steps]


def conserved(result: RunResult) -> None:
    for s in result.steps:
        if s.kind != "source" and s.status == "ok":
            assert s.rows_in == s.rows_out + s.rows_rejected + s.rows_filtered, s


def report(result: RunResult) -> dict[str, Any]:
    """The validate step's metadata, without the fast path's own note."""
    return {k: v for k, v in result.metadata.get("v", {}).items() if k != "pushdown_declined"}


def table(path: Path) -> pa.Table:
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()


def dlq(store: StateStore, result: RunResult) -> list[tuple[Any, ...]]:
    records = DlqTable(store).records(run_id=result.run_id)
    return sorted((r.raw["rn"], r.step, r.rule, r.reason, r.values, r.column) for r in records)


def both(
    tmp_path: Path, text: str, stores: tuple[StateStore, StateStore] | None = None
) -> tuple[RunResult, pa.Table | None, RunResult, pa.Table | None]:
    fast_store, streamed_store = stores or (None, None)
    out = tmp_path / "out.parquet"
    fast = run(tmp_path, text, pushdown=True, store=fast_store)
    got = table(out) if out.exists() and fast.status == "ok" else None
    if out.exists():
        out.unlink()
    streamed = run(tmp_path, text, pushdown=False, store=streamed_store)
    expected = table(out) if out.exists() and streamed.status == "ok" else None
    if out.exists():
        out.unlink()
    return fast, got, streamed, expected


def test_clean_data_takes_the_fast_path_with_the_streaming_report(
    tmp_path: Path, stores: tuple[StateStore, StateStore]
) -> None:
    text = pipe(rules() + CHECKS)
    # runs of varying size build each path's history: the anomaly checks are skipped, then run
    for i, n in enumerate([5000, 5100, 4900, 5200, 4800]):
        write(tmp_path / "in.parquet", clean(n))
        fast, got, streamed, expected = both(tmp_path, text, stores)
        assert fast.status == "ok", fast.error
        assert streamed.status == "ok", streamed.error
        assert [s.pushdown for s in fast.steps] == [True, True, True], fast.metadata["v"].get("pushdown_declined")
        assert not any(s.pushdown for s in streamed.steps)
        assert figures(fast) == figures(streamed) == [
            ("orders", "ok", n, n, 0, 0), ("v", "ok", n, n, 0, 0), ("out", "ok", n, n, 0, 0)
        ]  # fmt: skip
        conserved(fast)
        assert got is not None and expected is not None and got.equals(expected)  # same rows, same order
        assert report(fast) == report(streamed)
        assert "pushdown_declined" not in fast.metadata["v"]
        checks = {c["name"]: c["status"] for c in fast.metadata["v"]["validate"]["checks"]}
        assert checks["anomaly row_count"] == ("skipped" if i < 3 else "passed")
        assert checks["references(status -> statuses.csv.status)"] == "passed"
        assert fast.metadata["v"]["validate"]["warnings"] == {}  # every note starts with n
        assert fast.dlq_count == streamed.dlq_count == 0
    # the history each path recorded: the same figures (a float column's mean up to the order of additions)
    history = [DlqTable(s).stats_history("fast.v", 10) for s in stores]
    assert len(history[0]) == len(history[1]) == 5
    for a, b in zip(*history, strict=True):
        assert a["row_count"] == b["row_count"] and a["null_rate"] == b["null_rate"]
        assert a["means"].keys() == b["means"].keys()
        for col, mean in a["means"].items():
            other = b["means"][col]
            assert (mean is None and other is None) or math.isclose(mean, other, rel_tol=1e-12), col
            if col in ("qty", "id", "seq"):  # integers: exact
                assert mean == other


def test_contract_rules_and_aggregates_on_the_fast_path(tmp_path: Path, stores: tuple[StateStore, StateStore]) -> None:
    (tmp_path / "c.yaml").write_text(
        """
apiVersion: v3.0.2
kind: DataContract
id: c
version: 1.0.0
status: active
schema:
  - name: orders
    properties:
      - {name: rn, logicalType: integer, required: true, primaryKey: true}
      - {name: id, logicalType: integer, required: true, unique: true}
      - {name: amount, logicalType: number, logicalTypeOptions: {minimum: 0, maximum: 100}}
      - name: status
        logicalType: string
        quality:
          - {type: library, metric: invalidValues, arguments: {validValues: [new, paid, shipped]}, mustBe: 0}
      - {name: email, logicalType: string, logicalTypeOptions: {pattern: '@example'}}
      - name: note
        logicalType: string
        quality: [{type: library, metric: nullValues, mustBeLessThan: 50, unit: percent}]
    quality:
      - {type: library, metric: rowCount, mustBeGreaterThan: 10}
      - {type: sql, query: "SELECT count(*) FROM orders WHERE qty > 6", mustBe: 0}
    relationships: [{from: orders.id, to: other.id}]
""",
        encoding="utf-8",
    )
    write(tmp_path / "in.parquet", clean(), writer="duckdb")
    fast, got, streamed, expected = both(tmp_path, pipe("      contract: c.yaml"), stores)
    assert fast.status == "ok", fast.error
    assert [s.pushdown for s in fast.steps] == [True, True, True]
    assert figures(fast) == figures(streamed)
    assert got is not None and expected is not None and got.equals(expected)
    assert report(fast) == report(streamed)
    assert fast.metadata["v"]["contract_unsupported"]  # the relationship is reported on both paths
    kinds = {c["kind"] for c in fast.metadata["v"]["validate"]["checks"]}
    assert "quality" in kinds  # the contract's aggregate rules ran over the rows in place

    # a contract rule failing: streams, with the streaming DLQ
    write(tmp_path / "in.parquet", dirty("CASE WHEN rn = 10 THEN -5 ELSE amount END AS amount"))
    fast, got, streamed, expected = both(tmp_path, pipe("      contract: c.yaml"), stores)
    assert fast.status == streamed.status == "ok"
    assert not any(s.pushdown for s in fast.steps)
    assert "orders.amount.minimum" in fast.metadata["v"]["pushdown_declined"]
    assert dlq(stores[0], fast) == dlq(stores[1], streamed) and len(dlq(stores[0], fast)) == 1
    assert got is not None and expected is not None and got.equals(expected)


# One planted violation of each kind, and the rule the pass names: the chain streams, and everything is as
# streaming (the dataset checks would see some of these too: the pass names the first failing rule).
DIRT = {
    "not_null": ("CASE WHEN rn IN (100, 2100) THEN NULL ELSE id END AS id", "2 row(s) fail not_null(id)"),
    "range": ("CASE WHEN rn = 200 THEN -1.0 WHEN rn = 201 THEN 1000.5 ELSE amount END AS amount", "range(amount)"),
    "enum": ("CASE WHEN rn % 997 = 5 THEN 'bogus' ELSE status END AS status", "6 row(s) fail enum(status)"),
    "pattern": ("CASE WHEN rn = 400 THEN 'Not An Email' ELSE email END AS email", "pattern(email)"),
    "unique": ("CASE WHEN rn IN (500, 3500) THEN (501 * 7919) % 5000 ELSE id END AS id", "2 row(s) fail unique(id)"),
    "unique, increasing key repeated": ("CASE WHEN rn = 4000 THEN 10 ELSE seq END AS seq", "unique(seq)"),
    "composite unique": ("CASE WHEN rn = 600 THEN 601 % 1000 ELSE part_a END AS part_a", "unique(part_a, part_b)"),
    "sql rule": ("CASE WHEN rn = 700 THEN 40 ELSE qty END::INTEGER AS qty", "qty_fits"),  # amount is 0.0 there
    "warn rule": ("CASE WHEN rn = 801 THEN 'x' ELSE note END AS note", "1 row(s) fail pattern(note)"),
    "one percent": ("CASE WHEN rn % 100 = 3 THEN -1.0 ELSE amount END AS amount", "50 row(s) fail range(amount)"),
}


@pytest.mark.parametrize("kind", list(DIRT))
def test_dirty_data_streams_exactly_as_before(tmp_path: Path, stores: tuple[StateStore, StateStore], kind: str) -> None:
    change, why = DIRT[kind]
    write(tmp_path / "in.parquet", dirty(change))
    fast, got, streamed, expected = both(tmp_path, pipe(rules() + CHECKS), stores)
    assert fast.status == streamed.status == "ok", (fast.error, streamed.error)
    assert not any(s.pushdown for s in fast.steps)  # declined before anything was written
    assert why in fast.metadata["v"]["pushdown_declined"]
    assert figures(fast) == figures(streamed)
    conserved(fast)
    assert dlq(stores[0], fast) == dlq(stores[1], streamed)
    assert fast.dlq_count == streamed.dlq_count
    v = next(s for s in fast.steps if s.step_id == "v")
    if kind == "warn rule":
        assert v.rows_rejected == 0 and fast.metadata["v"]["validate"]["warnings"] == {"pattern(note)": 1}
    else:
        assert v.rows_rejected == fast.dlq_count > 0
    assert got is not None and expected is not None and got.equals(expected)
    assert report(fast) == report(streamed)


def test_null_keys_alone_keep_the_fast_path(tmp_path: Path) -> None:
    """NULL keys pass the streaming unique rule, repeated or not, whole or in part: the pass counts repeats as the
    rule does, so they do not send the chain to streaming."""
    write(tmp_path / "in.parquet", clean())  # uid: NULL every 11th row; (NULL, 7) every 13th row
    text = pipe(rules("        - {column: uid, unique: true}\n        - {column: [part_a, part_b], unique: true}\n"))
    fast, got, streamed, expected = both(tmp_path, text)
    assert fast.status == "ok", fast.error
    assert [s.pushdown for s in fast.steps] == [True, True, True]
    assert got is not None and expected is not None and got.equals(expected) and got.num_rows == 5000
    assert report(fast) == report(streamed)


@pytest.mark.parametrize("writer", ["pyarrow", "duckdb"])
def test_nan_streams(tmp_path: Path, stores: tuple[StateStore, StateStore], writer: str) -> None:
    """A NaN fails a range in Arrow (the streaming test) but is DuckDB's largest value, and pyarrow's Parquet
    statistics leave it out, so DuckDB's scan folds predicates as if there were none: a semantic the pass cannot
    match. It streams, and the NaN row is rejected as before."""
    nan = dirty("CASE WHEN rn = 3333 THEN 'nan'::DOUBLE ELSE amount END AS amount")
    write(tmp_path / "in.parquet", nan, writer=writer)
    fast, got, streamed, expected = both(tmp_path, pipe(rules()), stores)
    assert fast.status == streamed.status == "ok"
    assert "NaN" in fast.metadata["v"]["pushdown_declined"]
    assert not any(s.pushdown for s in fast.steps)
    assert [r[0] for r in dlq(stores[0], fast)] == [3333]
    assert dlq(stores[0], fast) == dlq(stores[1], streamed)
    assert got is not None and expected is not None and got.equals(expected)


def test_what_the_pass_cannot_stand_in_for_streams(tmp_path: Path) -> None:
    """Rows whose schema schema_contract conforms (NOT NULL of required fields, casts), nested floats, a broken
    SQL rule: the chain streams, and whatever streaming reports (here: the rule's error) is reported as always."""
    contract = (
        "apiVersion: v3.0.2\nkind: DataContract\nid: c\nversion: 1.0.0\nstatus: active\nschema:\n"
        "  - name: orders\n    properties:\n      - {name: rn, logicalType: integer%s}\n"
        "      - {name: qty, logicalType: integer}\n"
    )
    write(tmp_path / "in.parquet", "SELECT i AS rn, i % 7 AS qty FROM range(500) t(i)")
    # a schema the modes leave as it is: checked in place
    (tmp_path / "c.yaml").write_text(contract % "", encoding="utf-8")
    fast, got, streamed, expected = both(tmp_path, pipe("      contract: c.yaml\n      schema_contract: evolve"))
    assert fast.status == "ok" and all(s.pushdown for s in fast.steps), fast.metadata["v"]
    assert report(fast) == report(streamed)
    assert got is not None and expected is not None and got.equals(expected)
    # a required field: the conformed stream declares it NOT NULL
    (tmp_path / "c.yaml").write_text(contract % ", required: true", encoding="utf-8")
    cases = {
        "      contract: c.yaml\n      schema_contract: evolve": "schema_contract",
        rules("        - {name: broken, sql: 'qty >>> 3'}"): ">>>",
    }
    for config, why in cases.items():
        fast, got, streamed, expected = both(tmp_path, pipe(config))
        assert fast.status == streamed.status, (fast.error, streamed.error)
        assert not any(s.pushdown for s in fast.steps), config
        assert why in fast.metadata["v"]["pushdown_declined"]
        assert str(fast.error) == str(streamed.error)  # the broken rule: named by streaming's check, as always
        assert figures(fast) == figures(streamed)
        assert report(fast) == report(streamed)
        assert (got is None and expected is None) or (got is not None and expected is not None and got.equals(expected))
    write(tmp_path / "in.parquet", "SELECT i AS rn, [i * 0.5::DOUBLE] AS xs FROM range(100) t(i)")
    fast, got, streamed, expected = both(tmp_path, pipe(rules("        - {column: rn, not_null: true}\n")))
    assert fast.status == "ok" and not any(s.pushdown for s in fast.steps)
    assert "nested" in fast.metadata["v"]["pushdown_declined"]
    assert got is not None and expected is not None and got.equals(expected)


@pytest.mark.parametrize(
    ("config", "status"),
    [
        ("      row_count: {min: 6000}", "failed"),
        ("      null_rate: {max: 0.1, columns: [note]}", "failed"),
        ("      null_rate: {max: 0.1, columns: [note], severity: warn}", "ok"),
        ("      unique: {columns: [part_b]}", "failed"),
        ("      unique: {columns: [part_b], severity: warn}", "ok"),
        ("      freshness: {column: created, max_age: 0s}", "failed"),
        ("      sql: [{name: big, query: 'select * from data where qty > 5'}]", "failed"),
        ("      references: [{column: status, dataset: some.csv, severity: warn}]", "ok"),
        ("      references: [{column: status, dataset: some.csv}]", "failed"),
        ("      row_count: {max: 10, severity: warn}", "ok"),
    ],
)
def test_failing_dataset_checks_stream_and_fail_as_before(tmp_path: Path, config: str, status: str) -> None:
    write(tmp_path / "in.parquet", clean())
    (tmp_path / "some.csv").write_text("status\nnew\npaid\n", encoding="utf-8")
    fast, got, streamed, expected = both(tmp_path, pipe(config))
    assert fast.status == streamed.status == status, (fast.error, streamed.error)
    assert not any(s.pushdown for s in fast.steps)
    assert str(fast.error) == str(streamed.error)
    assert figures(fast) == figures(streamed)
    if status == "failed":
        assert got is None and not (tmp_path / "out.parquet").exists()
    else:
        assert got is not None and expected is not None and got.equals(expected)
    fast_checks = fast.metadata["v"]["validate"]["checks"]
    streamed_checks = streamed.metadata["v"]["validate"]["checks"]
    if "freshness" in config:  # its reason says how old the newest row is, to the second
        fast_checks = [{**c, "reason": ""} for c in fast_checks]
        streamed_checks = [{**c, "reason": ""} for c in streamed_checks]
    assert fast_checks == streamed_checks


def test_an_anomaly_streams_and_fails_as_before(tmp_path: Path, stores: tuple[StateStore, StateStore]) -> None:
    text = pipe(rules("        - {column: id, not_null: true}\n") + CHECKS)
    for n in [5000, 5100, 4900, 5200]:
        write(tmp_path / "in.parquet", clean(n))
        fast, _, streamed, _ = both(tmp_path, text, stores)
        assert fast.status == streamed.status == "ok" and all(s.pushdown for s in fast.steps)
    write(tmp_path / "in.parquet", clean(20000))  # the row count is an anomaly (severity error)
    fast, got, streamed, _ = both(tmp_path, text, stores)
    assert fast.status == streamed.status == "failed"
    assert "anomaly row_count" in str(fast.error) and str(fast.error) == str(streamed.error)
    assert not any(s.pushdown for s in fast.steps) and got is None
    assert report(fast) == report(streamed)
    # neither path recorded the failed run
    assert [len(DlqTable(s).stats_history("fast.v", 10)) for s in stores] == [4, 4]


def test_a_sink_failing_after_the_pass_leaves_nothing_written(tmp_path: Path) -> None:
    write(tmp_path / "in.parquet", clean())
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        con.execute("CREATE TABLE t (rn BIGINT, status INTEGER)")  # status text cannot go in
        con.execute("INSERT INTO t VALUES (1, 1)")
    sink = ("write_duckdb", "{database: wh.duckdb, table: t}")
    fast = run(tmp_path, pipe(rules("        - {column: id, not_null: true}\n"), sink), pushdown=True)
    assert fast.status == "failed"
    assert all(s.pushdown for s in fast.steps)  # the pass found nothing: the statement ran, and failed
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        assert con.sql("SELECT * FROM t").fetchall() == [(1, 1)]
    streamed = run(tmp_path, pipe(rules("        - {column: id, not_null: true}\n"), sink), pushdown=False)
    assert streamed.status == "failed"
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        assert con.sql("SELECT * FROM t").fetchall() == [(1, 1)]


def test_into_duckdb_same_table_as_streaming(tmp_path: Path) -> None:
    write(tmp_path / "in.parquet", clean())
    sink = ("write_duckdb", "{database: wh.duckdb, table: t, write_disposition: replace}")
    tables = []
    for pushdown in (True, False):
        result = run(tmp_path, pipe(rules(), sink), pushdown=pushdown)
        assert result.status == "ok", result.error
        assert all(s.pushdown for s in result.steps) == pushdown
        with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
            tables.append(con.sql("SELECT * EXCLUDE (_oxi_load_id) FROM t ORDER BY rn").fetchall())
    assert tables[0] == tables[1] and len(tables[0]) == 5000


def test_settings_pushdown_false_never_runs_the_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import oxiflow.contracts.validate as validate

    def boom(*_: Any) -> None:
        raise AssertionError("the pass ran")

    monkeypatch.setattr(validate._Validation, "in_place", boom)
    write(tmp_path / "in.parquet", clean(100))
    result = run(tmp_path, pipe(rules()), pushdown=False)
    assert result.status == "ok", result.error
    assert not any(s.pushdown for s in result.steps)


def test_empty_input(tmp_path: Path) -> None:
    write(tmp_path / "in.parquet", clean(0), writer="duckdb")
    fast, got, streamed, expected = both(tmp_path, pipe(rules() + "      row_count: {max: 10}\n"))
    assert fast.status == streamed.status == "ok", (fast.error, streamed.error)
    assert all(s.pushdown for s in fast.steps)
    assert report(fast) == report(streamed)
    assert got is not None and expected is not None and got.num_rows == expected.num_rows == 0


def test_explain_shows_validate_checked_first(tmp_path: Path) -> None:
    from oxiflow.plan.explain import explain_plan

    write(tmp_path / "in.parquet", clean(10))
    path = tmp_path / "p.yaml"
    path.write_text(pipe(rules()) % {"pushdown": "true"}, encoding="utf-8")
    plan = load_pipeline(path)
    steps = explain_plan(plan)["steps"]
    expected = "orders -> v -> out: one DuckDB statement, v checked first (streamed when a row or check fails)"
    assert [s.get("pushdown") for s in steps] == [expected] * 3
    path.write_text(pipe(rules()) % {"pushdown": "false"}, encoding="utf-8")
    assert all("pushdown" not in s for s in explain_plan(load_pipeline(path))["steps"])


def test_a_timeout_interrupts_the_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain's timeout reaches the pass (it runs in the validate step's context, inside the sink's thread):
    the run stops as a timeout, nothing is written, and it does not stream instead."""
    import time

    import oxiflow.contracts.validate as validate
    from oxiflow.errors import StepTimeout

    def slow(self: Any, source: Any) -> None:
        while not self.ctx.cancel.wait(0.05):  # a long pass, stopped only by its context's interrupt
            pass
        raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

    monkeypatch.setattr(validate._Validation, "in_place", slow)
    write(tmp_path / "in.parquet", clean(100))
    text = pipe(rules()).replace(
        "    config: {path: out.parquet}", "    timeout_seconds: 1\n    config: {path: out.parquet}"
    )
    t0 = time.monotonic()
    result = run(tmp_path, text, pushdown=True)
    assert time.monotonic() - t0 < 3.5  # not abandoned after the grace period (1 s + 3 s)
    assert result.status == "failed" and isinstance(result.error, StepTimeout), result.error
    assert "pushdown_declined" not in result.metadata.get("v", {})
    assert not (tmp_path / "out.parquet").exists()
