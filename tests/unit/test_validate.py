"""The `validate` step: row rules against a DuckDB oracle, the DLQ (file and state-store table),
conservation, max_invalid_ratio, dataset checks, anomaly checks with a run history."""

from __future__ import annotations

import json
import os
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.state.dlq import DlqTable
from oxiflow.state.store import StateStore, open_store

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

RULES = """
        - {column: id, not_null: true}
        - {column: amount, range: {min: 0, max: 100}}
        - {column: status, enum: [new, paid, shipped]}
        - {column: email, pattern: '^[a-z0-9]+@example\\.com$'}
        - {column: id, unique: true}
        - {name: qty_vs_amount, sql: "qty <= amount"}
"""
# the same rules written independently for the oracle (NULL passes, as in the step)
ORACLE_OK = (
    "id IS NOT NULL AND (amount IS NULL OR amount BETWEEN 0 AND 100) AND (status IS NULL OR status IN "
    "('new', 'paid', 'shipped')) AND (email IS NULL OR regexp_matches(email, '^[a-z0-9]+@example\\.com$')) "
    "AND coalesce(qty <= amount, true)"
)

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"  # shared/ sits next to the repo


def make_data(path: Path, n: int = 5000, seed: int = 7) -> Path:
    """Rows with every kind of defect spread over several batches; `rn` keeps the input order."""
    duckdb.sql(f"""
        COPY (SELECT i AS rn,
            CASE WHEN i % 97 = 0 THEN NULL ELSE (i * {seed}) % {n - 300} END AS id,
            CASE WHEN i % 89 = 0 THEN -1.5 WHEN i % 83 = 0 THEN NULL ELSE (i % 100) * 1.0 END AS amount,
            CASE WHEN i % 79 = 0 THEN 'bogus' ELSE ['new', 'paid', 'shipped'][1 + i % 3] END AS status,
            CASE WHEN i % 73 = 0 THEN 'Not An Email' ELSE 'user' || (i % 500) || '@example.com' END AS email,
            CASE WHEN i % 71 = 0 THEN 1000 ELSE i % 5 END AS qty
        FROM range({n}) t(i)) TO '{path}' (FORMAT parquet)""")
    return path


def oracle_valid(path: Path) -> pa.Table:
    """Valid rows: all predicates, then the first occurrence of each id among those (input order)."""
    return duckdb.sql(
        f"SELECT * FROM read_parquet('{path}') WHERE {ORACLE_OK} "
        "QUALIFY row_number() OVER (PARTITION BY id ORDER BY rn) = 1 ORDER BY rn"
    ).to_arrow_table()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with open_store(str(tmp_path / "state.db")) as s:
        yield s


def run(tmp_path: Path, text: str, store: StateStore | None = None, name: str = "p.yaml") -> RunResult:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return run_plan(load_pipeline(path), RunOptions(state=store))


def conserved(result: RunResult) -> None:
    """rows in = rows out + rows in the DLQ + rows filtered, for every step and the run."""
    for s in result.steps:
        if not s.reshapes and s.kind != "source" and s.status == "ok":
            assert s.rows_in == s.rows_out + s.rows_rejected + s.rows_filtered, s
    validate = [s for s in result.steps if s.oxi == "validate"]
    if validate and result.status == "ok":
        assert validate[0].rows_rejected == result.dlq_count - sum(s.rows_rejected for s in result.steps[:1])


PIPE = """
settings: {batch_size: 700}
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: validate
    config:
      max_invalid_ratio: 0.5
      rules:
%s
  - name: write_parquet
    config: {path: out.parquet}
"""


def test_rules_match_the_oracle_and_dlq_holds_the_rest(tmp_path: Path, store: StateStore) -> None:
    src = make_data(tmp_path / "in.parquet")
    result = run(tmp_path, PIPE % RULES, store)
    assert result.status == "ok", result.error
    conserved(result)
    got = pq.read_table(tmp_path / "out.parquet")
    expected = oracle_valid(src)
    assert got.column("rn").to_pylist() == expected.column("rn").to_pylist()
    assert got.equals(expected.cast(got.schema))
    n_in = pq.read_metadata(src).num_rows
    v = result.steps[1]
    assert (v.rows_in, v.rows_out, v.rows_rejected) == (n_in, expected.num_rows, n_in - expected.num_rows)
    # the DLQ table holds exactly the rejected rows: the input minus the valid ones, by rn
    records = DlqTable(store).records(run_id=result.run_id)
    assert len(records) == n_in - expected.num_rows == result.dlq_count
    all_rn = set(range(n_in))
    assert {r.raw["rn"] for r in records} == all_rn - set(expected.column("rn").to_pylist())
    assert {(r.step, r.oxi, r.pipeline) for r in records} == {("validate", "validate", "p")}
    # the JSON Lines file has the same records
    lines = [json.loads(x) for x in Path(result.dlq_path or "").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(r.id for r in records)


def test_dlq_record_names_rule_reason_values(tmp_path: Path, store: StateStore) -> None:
    src = make_data(tmp_path / "in.parquet", n=6000)
    result = run(tmp_path, PIPE % RULES, store)
    records = {r.raw["rn"]: r for r in DlqTable(store).records(run_id=result.run_id)}
    rn = 89 * 2  # amount -1.5 (89), not divisible by 97, 79, 73, 71
    r = records[rn]
    assert r.rule == "range(amount), qty_vs_amount"  # qty 3 <= -1.5 fails too
    assert r.reason == "amount = -1.5 must be >= 0 and <= 100; qty = 3, amount = -1.5 must satisfy qty <= amount"
    assert r.values == {"amount": "-1.5", "qty": 3}  # a DECIMAL: kept exact, as text
    assert r.column == "amount" and r.run_id == result.run_id
    both = records[79 * 73]  # bad status and bad email at once: both rules named
    assert both.rule is not None and both.rule.split(", ")[:2] == ["enum(status)", "pattern(email)"]
    assert {"status": "bogus", "email": "Not An Email"}.items() <= both.values.items()
    null_id = records[97 * 2]
    assert null_id.rule == "not_null(id)" and null_id.values == {"id": None}
    # a duplicate names the unique rule; the first occurrence of its key passed (it is in the output)
    dups = [x for x in records.values() if x.rule == "unique(id)"]
    assert dups
    out_ids = set(pq.read_table(tmp_path / "out.parquet").column("id").to_pylist())
    assert all(d.values["id"] in out_ids for d in dups)
    # the input schema is stored with the records, for replay
    schema = DlqTable(store).schema(r.schema_fp or "")
    assert schema is not None and schema.names == pq.read_schema(src).names


def test_pii_is_masked_in_the_dlq_unless_told_otherwise(tmp_path: Path, store: StateStore) -> None:
    make_data(tmp_path / "in.parquet", n=400)
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
      - {name: rn, logicalType: integer}
      - {name: id, logicalType: integer}
      - {name: amount, logicalType: number, logicalTypeOptions: {minimum: 0, maximum: 100}}
      - {name: status, logicalType: string}
      - {name: email, logicalType: string, classification: pii}
      - {name: qty, logicalType: integer}
""",
        encoding="utf-8",
    )
    pipe = PIPE.replace("      rules:\n%s", "      contract: c.yaml\n      dlq: {salt: s3}")
    result = run(tmp_path, pipe, store)
    assert result.status == "ok", result.error
    conserved(result)
    records = DlqTable(store).records(run_id=result.run_id)
    assert records and all(r.rule == "orders.amount.minimum" for r in records)
    expected_email = "user" + str(89 % 500) + "@example.com"
    first = next(r for r in records if r.raw["rn"] == 89)
    import hashlib

    assert first.raw["email"] == "sha256:" + hashlib.sha256(("s3" + expected_email).encode()).hexdigest()
    assert first.masked == ["email"]
    assert "example.com" not in json.dumps([r.to_dict() for r in records])
    assert "example.com" not in Path(result.dlq_path or "").read_text()
    # mask_pii: false keeps the values
    result2 = run(tmp_path, pipe.replace("{salt: s3}", "{mask_pii: false}"), store, "p2.yaml")
    r2 = next(r for r in DlqTable(store).records(run_id=result2.run_id) if r.raw["rn"] == 89)
    assert r2.raw["email"] == expected_email and r2.masked == []


@pytest.mark.parametrize("on_invalid", ["drop", "fail"])
def test_on_invalid_drop_and_fail(tmp_path: Path, on_invalid: str) -> None:
    src = make_data(tmp_path / "in.parquet")
    pipe = (PIPE % RULES).replace("max_invalid_ratio: 0.5", f"max_invalid_ratio: 0.5\n      on_invalid: {on_invalid}")
    result = run(tmp_path, pipe)
    conserved(result)
    if on_invalid == "drop":
        assert result.status == "ok" and result.dlq_count == 0
        v = result.steps[1]
        assert v.rows_filtered == v.rows_in - oracle_valid(src).num_rows and v.rows_rejected == 0
    else:
        assert result.status == "failed"
        assert "row 1 of the input fails not_null(id)" in str(result.error)  # rn 0: id NULL (0 % 97 == 0)
        assert not (tmp_path / "out.parquet").exists()


def test_max_invalid_ratio_fails_and_the_sinks_stay_untouched(tmp_path: Path, store: StateStore) -> None:
    make_data(tmp_path / "in.parquet")
    before = b"PAR1 previous content"
    (tmp_path / "out.parquet").write_bytes(before)
    duckdb.connect(str(tmp_path / "wh.duckdb")).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    pipe = (PIPE % RULES).replace("max_invalid_ratio: 0.5", "max_invalid_ratio: 0.01") + (
        "  - name: write_duckdb\n    inputs: [validate]\n"
        "    config: {database: wh.duckdb, table: t, write_disposition: replace}\n"
    )
    result = run(tmp_path, pipe, store)
    assert result.status == "failed"
    assert "max_invalid_ratio" in str(result.error) and "nothing downstream is committed" in str(result.error)
    assert (tmp_path / "out.parquet").read_bytes() == before
    assert duckdb.connect(str(tmp_path / "wh.duckdb")).sql("SELECT * FROM t").fetchall() == [(1,)]
    assert not list(tmp_path.glob("out.parquet.*"))  # no temporary left behind


DATASET = """
pipeline:
  - name: read_parquet
    id: data
    config: {path: in.parquet}
  - name: read_csv
    id: customers
    config: {path: customers.csv}
  - name: validate
    inputs: [data, customers]
    config:
%s
  - name: write_parquet
    inputs: [validate]
    config: {path: out.parquet}
"""


def _dataset_fixture(tmp_path: Path) -> None:
    duckdb.sql(f"""COPY (SELECT i AS id, i % 10 AS customer_id, CASE WHEN i % 4 = 0 THEN NULL ELSE i END AS note,
        now()::TIMESTAMP - INTERVAL (i) HOUR AS created FROM range(100) t(i)) TO '{tmp_path / "in.parquet"}'
        (FORMAT parquet)""")
    (tmp_path / "customers.csv").write_text("customer_id\n" + "\n".join(str(i) for i in range(8)) + "\n")
    (tmp_path / "all.csv").write_text("customer_id\n" + "\n".join(str(i) for i in range(10)) + "\n")


@pytest.mark.parametrize(
    ("config", "passes", "reason"),
    [
        ("row_count: {min: 100, max: 100}", True, ""),
        ("row_count: {min: 101}", False, "100 rows, expected between 101 and -"),
        ("null_rate: {max: 0.25, columns: [note]}", True, ""),
        ("null_rate: {max: 0.2, columns: [note]}", False, "25.00% of note is null > 20.00%"),
        ("null_rate: {max: 0.2, columns: [note], severity: warn}", True, ""),
        ("unique: {columns: [id]}", True, ""),
        ("unique: {columns: [customer_id]}", False, "90 duplicate key(s)"),
        ("references: [{column: customer_id, dataset: all.csv}]", True, ""),
        ("references: [{column: customer_id, dataset: customers}]", False, "20 row(s) have a customer_id not in"),
        ("freshness: {column: created, max_age: 2h}", True, ""),
        (
            "freshness: {column: created, max_age: 2h}\n      sql: [{query: 'select * from data where id < 0'}]",
            True,
            "",
        ),
        ("sql: [{name: no_big, query: 'select * from data where id > 97'}]", False, "returned 2 offending row(s)"),
    ],
)
def test_dataset_checks(tmp_path: Path, config: str, passes: bool, reason: str) -> None:
    _dataset_fixture(tmp_path)
    result = run(tmp_path, DATASET % ("      " + config))
    conserved(result)
    if passes:
        assert result.status == "ok", result.error
        assert pq.read_table(tmp_path / "out.parquet").num_rows == 100
    else:
        assert result.status == "failed"
        assert reason in str(result.error)
        assert not (tmp_path / "out.parquet").exists()


def test_stale_data_fails_freshness(tmp_path: Path) -> None:
    _dataset_fixture(tmp_path)  # the newest `created` is the time the file was written: older than 0s
    result = run(tmp_path, DATASET % "      freshness: {column: created, max_age: 0s}")
    assert result.status == "failed" and "freshness(created)" in str(result.error)
    assert not (tmp_path / "out.parquet").exists()


def test_warn_rules_count_and_pass(tmp_path: Path) -> None:
    src = make_data(tmp_path / "in.parquet")
    pipe = PIPE % "        - {column: amount, range: {min: 0, max: 100}, severity: warn}"
    result = run(tmp_path, pipe)
    assert result.status == "ok"
    conserved(result)
    n_bad = duckdb.sql(f"select count(*) from '{src}' where amount < 0 or amount > 100").fetchall()[0]
    meta = result.metadata["validate"]["validate"]
    assert meta["warnings"] == {"range(amount)": n_bad[0]} and meta["rows_invalid"] == 0
    assert pq.read_metadata(tmp_path / "out.parquet").num_rows == pq.read_metadata(src).num_rows


ANOMALY = """
metadata: {name: anomalies}
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: validate
    config:
      rules: [{column: id, not_null: true}]
      anomalies:
        row_count: {z: 3.5, runs: 10, min_runs: 5, severity: error}
        mean: {column: v, z: 3.5, runs: 10, min_runs: 5}
  - name: write_parquet
    config: {path: out.parquet}
"""


def test_anomaly_check_against_the_run_history(tmp_path: Path, store: StateStore) -> None:
    sizes = [100, 104, 98, 101, 97, 103]
    for i, n in enumerate(sizes):
        duckdb.sql(f"COPY (SELECT i AS id, i * 1.0 AS v FROM range({n}) t(i)) TO '{tmp_path / 'in.parquet'}'")
        result = run(tmp_path, ANOMALY, store)
        assert result.status == "ok", result.error
        checks = {c["name"]: c for c in result.metadata["validate"]["validate"]["checks"]}
        if i < 5:  # fewer than min_runs earlier runs: skipped with a note
            assert checks["anomaly row_count"]["status"] == "skipped"
        else:
            assert checks["anomaly row_count"]["status"] == "passed"
    history = [float(n) for n in sizes]
    x = 1000.0
    median = statistics.median(history)
    mad = statistics.median([abs(h - median) for h in history])
    z_expected = 0.6745 * (x - median) / mad
    duckdb.sql(f"COPY (SELECT i AS id, i * 1.0 AS v FROM range(1000) t(i)) TO '{tmp_path / 'in.parquet'}'")
    (tmp_path / "out.parquet").unlink()
    result = run(tmp_path, ANOMALY, store)
    assert result.status == "failed"
    assert "anomaly row_count" in str(result.error)
    assert not (tmp_path / "out.parquet").exists()
    checks = {c["name"]: c for c in result.metadata["validate"]["validate"]["checks"]}
    assert checks["anomaly row_count"]["measured"]["z"] == pytest.approx(z_expected, abs=1e-3)
    # the mean of v (499.5 vs ~50) is an anomaly too, with the default severity warn
    assert checks["anomaly mean(v)"]["status"] == "warning"
    # a failed run adds nothing to the history
    assert len(DlqTable(store).stats_history("anomalies.validate", 50)) == len(sizes)


def test_anomalies_are_skipped_without_a_state_store(tmp_path: Path) -> None:
    duckdb.sql(f"COPY (SELECT i AS id, i * 1.0 AS v FROM range(10) t(i)) TO '{tmp_path / 'in.parquet'}'")
    result = run(tmp_path, ANOMALY)
    assert result.status == "ok"
    checks = {c["name"]: c for c in result.metadata["validate"]["validate"]["checks"]}
    assert checks["anomaly row_count"]["status"] == "skipped"


def test_postgres_state_store_holds_the_dlq(tmp_path: Path) -> None:
    schema = f"oxidlq_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    try:
        with open_store(url) as pg:
            src = make_data(tmp_path / "in.parquet", n=1500)
            result = run(tmp_path, PIPE % RULES, pg)
            assert result.status == "ok", result.error
            conserved(result)
            table = DlqTable(pg)
            records = table.records(run_id=result.run_id)
            expected = oracle_valid(src)
            assert len(records) == 1500 - expected.num_rows == result.dlq_count
            assert table.summary(pipeline="p")[0]["records"] == len(records)
            assert table.mark_replayed([records[0].id], "r2") == 1
            assert table.records(pipeline="p", pending=True)[0].id != records[0].id
            assert table.purge(run_id=result.run_id) == len(records)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_bad_csv_and_json_inputs_reach_the_dlq_with_reasons(tmp_path: Path, store: StateStore) -> None:
    # csv-spectrum rows with a broken line appended: read_csv dead-letters it, validate the rest
    good = (TESTDATA / "csv-spectrum" / "csvs" / "comma_in_quotes.csv").read_text(encoding="utf-8")
    (tmp_path / "in.csv").write_text(good.rstrip("\n") + '\n"unterminated,quote,x,y,z\n', encoding="utf-8")
    cols = good.splitlines()[0].split(",")
    csv_pipe = f"""
pipeline:
  - name: read_csv
    config: {{path: in.csv, on_error: dlq}}
  - name: validate
    config:
      rules: [{{column: {cols[0]}, pattern: '^[A-Z]'}}]
      max_invalid_ratio: 1
  - name: write_parquet
    config: {{path: out.parquet}}
"""
    result = run(tmp_path, csv_pipe, store)
    assert result.status == "ok", result.error
    conserved(result)
    records = DlqTable(store).records(run_id=result.run_id)
    by_step = {r.step for r in records}
    assert "read_csv" in by_step
    assert all(r.reason for r in records)
    # JSONTestSuite: invalid documents as lines among valid objects
    bad = [p for p in sorted((TESTDATA / "json-test-suite" / "test_parsing").glob("n_object_*.json"))]
    lines = []
    for p in bad:
        text = p.read_bytes().decode("utf-8", errors="replace")
        if "\n" not in text.strip() and text.strip():
            lines.append(text.strip())
    valid = [json.dumps({"a": i, "b": "x" if i % 3 else None}) for i in range(20)]
    (tmp_path / "in.jsonl").write_text("\n".join(valid[:10] + lines + valid[10:]) + "\n", encoding="utf-8")
    json_pipe = """
pipeline:
  - name: read_json
    config: {path: in.jsonl, format: newline_delimited, on_error: dlq}
  - name: validate
    config:
      rules: [{column: b, not_null: true}]
      max_invalid_ratio: 1
  - name: write_parquet
    config: {path: out2.parquet}
"""
    result = run(tmp_path, json_pipe, store, "j.yaml")
    assert result.status == "ok", result.error
    conserved(result)
    records = DlqTable(store).records(run_id=result.run_id)
    from_reader = [r for r in records if r.step == "read_json"]
    from_validate = [r for r in records if r.step == "validate"]
    assert len(from_validate) == sum(1 for i in range(20) if i % 3 == 0)
    assert all(r.rule == "not_null(b)" and r.values == {"b": None} for r in from_validate)
    assert from_reader and all(r.reason for r in from_reader)
    assert pq.read_metadata(tmp_path / "out2.parquet").num_rows == sum(1 for i in range(20) if i % 3)


def test_config_errors_are_clear(tmp_path: Path) -> None:
    make_data(tmp_path / "in.parquet", n=10)
    result = run(tmp_path, PIPE % "        - {column: nope, not_null: true}")
    assert result.status == "failed" and "rule column(s) not in the data: nope" in str(result.error)
    result = run(tmp_path, PIPE % "        - {name: broken, sql: 'amount >>> 3'}")
    assert result.status == "failed" and "broken" in str(result.error)
    path = tmp_path / "bad.yaml"
    path.write_text((PIPE % "        - {column: id, not_null: true, unique: true}"), encoding="utf-8")
    with pytest.raises(Exception, match="exactly one of"):
        load_pipeline(path)


# Key layouts for the unique rule: each takes the fast path (increasing keys), the DuckDB lookup, or
# both in turns; the oracle is DuckDB's first occurrence per key in input order (NULL keys pass).
KEY_LAYOUTS = {
    "increasing": "rn AS k",
    "increasing, then earlier keys again": "CASE WHEN rn >= 4200 THEN rn - 4000 ELSE rn END AS k",
    "increasing with neighbours equal": "rn // 2 AS k",
    # repeats of the key just before (within a batch of 700 and across its start), late keys from batches
    # before, some taken and some not (every 7th key never comes in order), and timestamps as keys
    "mostly increasing, repeats and late keys": "CASE WHEN rn % 97 = 5 OR rn % 700 = 0 THEN rn - 1 "
    "WHEN rn % 1013 = 9 THEN (rn - 650) // 7 * 7 WHEN rn % 7 = 0 THEN NULL ELSE rn END AS k",
    "timestamps, repeats and late keys": "TIMESTAMP '2024-01-01' + to_microseconds(CASE WHEN rn % 89 = 3 THEN rn - 1 "
    "WHEN rn % 997 = 11 THEN rn - 900 ELSE rn END) AS k",
    "descending": "5000 - rn AS k",
    "wrapping, with NULLs": "CASE WHEN rn % 61 = 0 THEN NULL ELSE (rn * 7) % 3100 END AS k",
    "text": "printf('k%05d', (rn * 13) % 2900) AS k",
    "floats with NaN and -0.0": "CASE WHEN rn % 500 = 7 THEN 'NaN'::DOUBLE WHEN rn % 700 = 3 THEN -0.0 "
    "ELSE (rn % 2500) / 4 END AS k",
    "composite": "[rn % 40, (rn * 3) % 97] AS k",
}


@pytest.mark.parametrize("layout", list(KEY_LAYOUTS))
@pytest.mark.parametrize("flush_bytes", [64 << 20, 1])
def test_unique_keeps_the_first_occurrence_across_batches(
    tmp_path: Path, layout: str, flush_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import oxiflow.contracts.validate as validate

    monkeypatch.setattr(validate, "_FLUSH_BYTES", flush_bytes)  # 1: every batch's keys go to DuckDB at once
    key = KEY_LAYOUTS[layout]
    composite = layout == "composite"
    select = "rn, k[1] AS k1, k[2] AS k2" if composite else "rn, k"
    src = tmp_path / "in.parquet"
    duckdb.sql(f"COPY (SELECT {select} FROM (SELECT rn, {key} FROM range(5000) t(rn))) TO '{src}' (FORMAT parquet)")
    rule = "        - {column: [k1, k2], unique: true}" if composite else "        - {column: k, unique: true}"
    result = run(tmp_path, (PIPE % rule).replace("max_invalid_ratio: 0.5", "max_invalid_ratio: 1"))
    assert result.status == "ok", result.error
    conserved(result)
    keys = "k1, k2" if composite else "k"
    expected = duckdb.sql(
        f"SELECT rn FROM read_parquet('{src}') QUALIFY k{'1' if composite else ''} IS NULL "
        f"OR row_number() OVER (PARTITION BY {keys} ORDER BY rn) = 1 ORDER BY rn"
    ).fetchall()
    got = pq.read_table(tmp_path / "out.parquet").column("rn").to_pylist()
    assert got == [r[0] for r in expected]
    assert result.steps[1].rows_rejected == 5000 - len(expected)


def test_unique_marks_a_rejected_row_only_when_a_passing_row_took_its_key(tmp_path: Path, store: StateStore) -> None:
    """A row rejected by another rule is also `unique`-invalid when a passing row before it (earlier batch
    or the same one) has its key; a passing row far after it (another batch) does not count."""
    src = tmp_path / "in.parquet"
    # bad rows (amount -1) at rn % 100 = 50; their key: that of the passing row 10 before (taken), of the
    # passing row 3000 after (not taken: not seen yet), or a key no passing row has
    duckdb.sql(f"""COPY (SELECT rn,
            CASE WHEN rn % 100 <> 50 THEN rn WHEN rn % 300 = 50 THEN rn - 10
                 WHEN rn % 300 = 150 AND rn < 1900 THEN rn + 3000 ELSE 100000 + rn END AS k,
            CASE WHEN rn % 100 = 50 THEN -1 ELSE 1 END AS amount
        FROM range(5000) t(rn)) TO '{src}' (FORMAT parquet)""")
    rules = "        - {column: amount, range: {min: 0}}\n        - {column: k, unique: true}"
    result = run(tmp_path, PIPE % rules, store)
    assert result.status == "ok", result.error
    records = {r.raw["rn"]: r.rule for r in DlqTable(store).records(run_id=result.run_id)}
    assert set(records) == {rn for rn in range(5000) if rn % 100 == 50}
    for rn, rule in records.items():
        taken = rn % 300 == 50
        assert rule == ("range(amount), unique(k)" if taken else "range(amount)"), rn
    # the passing rows whose key a rejected row carried earlier still pass (rejected keys are not remembered)
    out = set(pq.read_table(tmp_path / "out.parquet").column("rn").to_pylist())
    assert out == {rn for rn in range(5000) if rn % 100 != 50}


def test_dataset_unique_counts_duplicates_across_batches(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    duckdb.sql(f"COPY (SELECT rn, CASE WHEN rn >= 4500 THEN rn - 4400 ELSE rn END AS k FROM range(5000) t(rn)) "
               f"TO '{src}' (FORMAT parquet)")  # fmt: skip
    pipe = PIPE.replace("      rules:\n%s", "      unique: {columns: [k], severity: warn}")
    result = run(tmp_path, pipe)
    assert result.status == "ok", result.error
    check = next(c for c in result.metadata["validate"]["validate"]["checks"] if c["kind"] == "unique")
    assert check["measured"] == 500 and check["status"] == "warning"  # rn 4500.. repeat keys 100..599
    result = run(tmp_path, pipe.replace("severity: warn", "severity: error"), name="p2.yaml")
    assert result.status == "failed" and "500 duplicate key(s)" in str(result.error)
