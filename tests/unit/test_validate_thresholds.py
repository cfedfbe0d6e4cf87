"""The `validate` step's defaults and contract-derived rules against independent oracles: max_invalid_ratio's
0.05 default at its edge, the null-rate anomaly against a robust z-score computed here, a contract's required /
unique / enum / pattern as row rules (DuckDB SQL decides which rows are bad)."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.state.dlq import DlqTable
from oxiflow.state.store import StateStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with open_store(str(tmp_path / "state.db")) as s:
        yield s


def run(tmp_path: Path, text: str, store: StateStore | None) -> RunResult:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return run_plan(load_pipeline(path), RunOptions(state=store))


def conserved(result: RunResult, dlq_rows: int) -> None:
    for s in result.steps:
        if s.kind != "source" and s.status == "ok":
            assert s.rows_in == s.rows_out + s.rows_rejected + s.rows_filtered, s
    assert sum(s.rows_rejected for s in result.steps) == dlq_rows


RATIO = """
settings: {batch_size: 30}
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: validate
    config:
      rules: [{column: id, not_null: true}]
  - name: write_parquet
    config: {path: out.parquet}
"""


@pytest.mark.parametrize(("nulls", "passes"), [(5, True), (6, False)])
def test_default_max_invalid_ratio_is_five_percent(tmp_path: Path, store: StateStore, nulls: int, passes: bool) -> None:
    duckdb.sql(f"COPY (SELECT CASE WHEN i < {nulls} THEN NULL ELSE i END AS id FROM range(100) t(i)) "
               f"TO '{tmp_path / 'in.parquet'}'")  # fmt: skip
    before = b"the previous good file"
    (tmp_path / "out.parquet").write_bytes(before)
    result = run(tmp_path, RATIO, store)
    records = DlqTable(store).records(run_id=result.run_id)
    assert len(records) == nulls  # the rejects are kept for inspection either way
    checks = {c["name"]: c for c in result.metadata["validate"]["validate"]["checks"]}
    assert checks["max_invalid_ratio"]["measured"] == nulls / 100
    if passes:
        assert result.status == "ok", result.error
        conserved(result, nulls)
        assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == list(range(nulls, 100))
    else:
        assert result.status == "failed"
        assert "6 of 100 rows invalid (6.00%) > max_invalid_ratio 5.00%" in str(result.error)
        assert (tmp_path / "out.parquet").read_bytes() == before  # nothing committed
        assert checks["max_invalid_ratio"]["status"] == "failed"


NULL_RATE = """
metadata: {name: nulls}
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: validate
    config:
      rules: [{column: id, not_null: true}]
      anomalies:
        null_rate: {column: email, z: 3.5, runs: 10, min_runs: 5, severity: error}
  - name: write_parquet
    config: {path: out.parquet}
"""


def _with_nulls(tmp_path: Path, every: int) -> None:
    duckdb.sql(f"COPY (SELECT i AS id, CASE WHEN i % {every} = 0 THEN NULL ELSE 'e' || i END AS email "
               f"FROM range(200) t(i)) TO '{tmp_path / 'in.parquet'}'")  # fmt: skip


def test_null_rate_anomaly_against_the_history(tmp_path: Path, store: StateStore) -> None:
    history = []
    for i, every in enumerate([10, 9, 11, 10, 8, 12]):
        _with_nulls(tmp_path, every)
        result = run(tmp_path, NULL_RATE, store)
        assert result.status == "ok", result.error
        check = next(c for c in result.metadata["validate"]["validate"]["checks"] if c["kind"] == "anomaly_null_rate")
        assert check["status"] == ("skipped" if i < 5 else "passed"), check
        history.append(len(range(0, 200, every)) / 200)
    _with_nulls(tmp_path, 2)  # half the emails missing
    x = 100 / 200
    median = statistics.median(history)
    mad = statistics.median(abs(h - median) for h in history)
    z = 0.6745 * (x - median) / mad
    (tmp_path / "out.parquet").unlink()
    result = run(tmp_path, NULL_RATE, store)
    assert result.status == "failed" and "anomaly null_rate(email)" in str(result.error)
    assert not (tmp_path / "out.parquet").exists()
    check = next(c for c in result.metadata["validate"]["validate"]["checks"] if c["kind"] == "anomaly_null_rate")
    assert check["measured"]["value"] == pytest.approx(x)
    assert check["measured"]["z"] == pytest.approx(z, abs=1e-3)
    assert len(DlqTable(store).stats_history("nulls.validate", 50)) == 6  # the failed run adds nothing


CONTRACT = """
apiVersion: v3.0.2
kind: DataContract
id: c
version: 1.0.0
status: active
schema:
  - name: items
    properties:
      - {name: rn, logicalType: integer}
      - {name: id, logicalType: integer, required: true, unique: true}
      - {name: status, logicalType: string, enum: [new, paid]}
      - {name: code, logicalType: string, logicalTypeOptions: {pattern: '^[A-Z]{2}-[0-9]+$'}}
"""
CONTRACT_PIPE = """
settings: {batch_size: 64}
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: validate
    config: {contract: c.yaml, max_invalid_ratio: 1}
  - name: write_parquet
    config: {path: out.parquet}
"""


def test_contract_required_unique_enum_pattern_in_validate(tmp_path: Path, store: StateStore) -> None:
    src = tmp_path / "in.parquet"
    duckdb.sql(f"""COPY (SELECT i AS rn,
            -- duplicates (i and i + 400) only among rows no other rule rejects, whose ids are their own
            CASE WHEN i % 31 = 0 THEN NULL WHEN i % 37 = 0 OR i % 41 = 0 THEN 1000 + i ELSE i % 400 END AS id,
            CASE WHEN i % 37 = 0 THEN 'lost' ELSE ['new', 'paid'][1 + i % 2] END AS status,
            CASE WHEN i % 41 = 0 THEN 'ab-1' ELSE 'AB-' || i END AS code
        FROM range(500) t(i)) TO '{src}'""")
    (tmp_path / "c.yaml").write_text(CONTRACT, encoding="utf-8")
    result = run(tmp_path, CONTRACT_PIPE, store)
    assert result.status == "ok", result.error
    records = DlqTable(store).records(run_id=result.run_id)
    conserved(result, len(records))
    # the oracle: each row's failing rules in DuckDB; unique = an earlier row passing the other rules had the id
    rows = duckdb.sql(f"""
        WITH t AS (SELECT *, id IS NOT NULL AS ok_required, status IN ('new', 'paid') AS ok_enum,
                          regexp_matches(code, '^[A-Z]{{2}}-[0-9]+$') AS ok_pattern FROM '{src}'),
        o AS (SELECT *, ok_required AND ok_enum AND ok_pattern AS ok_other FROM t)
        SELECT rn, ok_required, ok_enum, ok_pattern,
               NOT ok_other OR id IS NULL OR rn = min(rn) FILTER (WHERE ok_other) OVER (PARTITION BY id) AS ok_unique,
               ok_other
        FROM o ORDER BY rn""").fetchall()
    expected: dict[int, set[str]] = {}
    for rn, ok_required, ok_enum, ok_pattern, ok_unique, ok_other in rows:
        failed = {name for name, ok in (("items.id.required", ok_required), ("items.status.enum", ok_enum),
                                        ("items.code.pattern", ok_pattern)) if not ok}  # fmt: skip
        if ok_other and not ok_unique:
            failed.add("items.id.unique")
        if failed:
            expected[rn] = failed
    got = {r.raw["rn"]: set((r.rule or "").split(", ")) for r in records}
    assert got == expected
    rules = {"items.id.required", "items.status.enum", "items.code.pattern", "items.id.unique"}
    assert set().union(*got.values()) == rules
    by_rule = {next(iter(v)): r for r in records if len(v := set((r.rule or "").split(", "))) == 1}
    assert by_rule["items.status.enum"].reason == "status = 'lost' must be one of ['new', 'paid']"
    assert by_rule["items.code.pattern"].reason == "code = 'ab-1' must match '^[A-Z]{2}-[0-9]+$'"
    assert by_rule["items.id.required"].reason == "id = NULL must not be null (required)"
    assert by_rule["items.id.unique"].reason.endswith("must be unique (an earlier row has this value)")
    out = pq.read_table(tmp_path / "out.parquet")
    assert sorted(out.column("rn").to_pylist()) == sorted(set(range(500)) - set(expected))
