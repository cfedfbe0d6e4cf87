"""`contract test` against the datacontract-cli fixtures, with the verdicts upstream asserts
(_oracles/datacontract-cli.expected.md), plus checks whose counts DuckDB computes independently."""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import pytest

from oxiflow.contracts import load_contract
from oxiflow.contracts.checks import (
    Check,
    _few_values,
    _increasing_keys,
    _per_value_parts,
    _proven,
    compile_checks,
    evaluate,
)
from oxiflow.contracts.model import Dataset
from oxiflow.contracts.runner import render_junit, run_contract

FIX = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "datacontract-cli" / "fixtures"
TYPES = [
    "timestamp",
    "timestamp_ntz",
    "decimal",
    "array",
    "bigint",
    "binary",
    "boolean",
    "date",
    "double",
    "float",
    "integer",
    "map",
    "string",
    "struct",
]

PASSING = [
    ("parquet/datacontract.yaml", "parquet/data/combined.parquet"),
    *[(f"parquet/datacontract_{t}.yaml", f"parquet/data/{'blob' if t == 'binary' else t}.parquet") for t in TYPES],
    ("parquet/datacontract_number_no_precision.odcs.yaml", "parquet/data/decimal.parquet"),
    *[
        ("schema-evolution/odcs-datacontract-cities-version-2.yaml", f"schema-evolution/{d}")
        for d in ("cities-version-2.csv", "cities-version-2.parquet", "*.csv", "*.parquet")
    ],
    ("local-json-nd/datacontract.yaml", "local-json-nd/data/flights-100.json"),
    ("local-json/datacontract.yaml", "local-json/data/verbraucherpreisindex.json"),
    ("csv/data/datacontract.yaml", "csv/data/sample_data.csv"),
]
# (contract, data, the ids of the checks that must fail: exactly these)
FAILING = [
    (
        "parquet/datacontract_invalid_logical_types_example.yaml",
        "parquet/data/nested_type_structures.parquet",
        {"nested_data.values.type", "nested_data.metadata.type"},
    ),
    *[
        (
            "schema-evolution/odcs-datacontract-cities-version-2.yaml",
            f"schema-evolution/{d}",
            {"cities.population.present"},
        )
        for d in ("cities-version-1.csv", "cities-version-1.parquet")
    ],
    *[
        (
            "schema-evolution/odcs-datacontract-cities-version-2.yaml",
            f"schema-evolution/invalid/{d}",
            {"cities.population.minimum"},
        )
        for d in ("cities-version-2-invalid.csv", "cities-version-2-invalid.parquet")
    ],
    *[
        (
            "schema-evolution/odcs-datacontract-cities-version-3.yaml",
            f"schema-evolution/{d}",
            {"cities.population.present"},
        )
        for d in ("cities-version-1.csv", "cities-version-1.parquet")
    ],
]


@pytest.mark.parametrize(("contract", "data"), PASSING)
def test_valid_fixture_passes(contract: str, data: str) -> None:
    report = run_contract(load_contract(str(FIX / contract)), str(FIX / data))
    assert report.passed, [(r.check.id, r.reason) for r in report.failed]
    assert report.results and all(r.status == "passed" for r in report.results)


@pytest.mark.parametrize(("contract", "data", "failing"), FAILING)
def test_invalid_fixture_fails_on_the_right_check(contract: str, data: str, failing: set[str]) -> None:
    report = run_contract(load_contract(str(FIX / contract)), str(FIX / data))
    assert not report.passed
    assert {r.check.id for r in report.failed} == failing


def test_invalid_logical_type_reason_matches_upstream() -> None:
    report = run_contract(
        load_contract(str(FIX / "parquet/datacontract_invalid_logical_types_example.yaml")),
        str(FIX / "parquet/data/nested_type_structures.parquet"),
    )
    assert "field '[]': expected type 'string' but got 'integer'" in [r.reason for r in report.failed]


def test_combined_parquet_checks_every_field() -> None:
    report = run_contract(
        load_contract(str(FIX / "parquet/datacontract.yaml")), str(FIX / "parquet/data/combined.parquet")
    )
    # presence + type for each of the 13 fields (upstream counts 24 checks of its own kinds)
    assert len(report.results) == 26


@pytest.fixture(scope="module")
def postgres_tables() -> dict[str, str]:
    """The quality fixture's valid and invalid tables, loaded into the real PostgreSQL (own schemas)."""
    import psycopg

    url = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    tables = {}
    with psycopg.connect(url, autocommit=True) as con:
        for kind in ("valid", "invalid"):
            schema = f"oxi_contract_{kind}_{uuid.uuid4().hex[:8]}"
            sql = (FIX / f"quality/data/data.{kind}.sql").read_text().replace("public.", f"{schema}.")
            con.execute(f"CREATE SCHEMA {schema}")
            con.execute(sql)  # type: ignore[arg-type]
            tables[kind] = f"{url}::{schema}.my_table"
    yield tables
    with psycopg.connect(url, autocommit=True) as con:
        for spec in tables.values():
            con.execute(f"DROP SCHEMA {spec.rpartition('::')[2].split('.')[0]} CASCADE")  # type: ignore[arg-type]


def test_quality_fixture_against_postgres(postgres_tables: dict[str, str]) -> None:
    contract = load_contract(str(FIX / "quality/datacontract.yaml"))
    valid = run_contract(contract, postgres_tables["valid"])
    assert valid.passed and len(valid.results) == 18
    invalid = run_contract(contract, postgres_tables["invalid"])
    failed = {r.check.name for r in invalid.failed}
    assert "rowCount must be greater than 0" in failed  # upstream: row_count > 9 failed (9 rows)
    assert {r.measured for r in invalid.failed if r.check.name == "rowCount must be greater than 0"} == {9}


def _orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.parquet"
    # duckdb.sql, not execute(): an execute() result left unfetched blocks the shared default connection
    duckdb.sql(
        f"""COPY (SELECT i AS id, CASE WHEN i % 7 = 0 THEN NULL ELSE 'c' || (i % 13) END AS customer,
                (i % 500) - 3 AS amount, ['new','paid','shipped','bogus'][1 + i % 4] AS status,
                CASE WHEN i % 11 = 0 THEN 'X' || i ELSE 'OR-' || lpad(i::VARCHAR, 6, '0') END AS ref,
                i % 900 AS dup
              FROM range(1, 5001) t(i)) TO '{path}' (FORMAT parquet)"""
    )
    return path


def test_counts_match_duckdb(tmp_path: Path) -> None:
    data = _orders(tmp_path)
    contract = tmp_path / "c.odcs.yaml"
    contract.write_text(
        """apiVersion: v3.0.2
kind: DataContract
id: orders
version: 1.0.0
status: active
schema:
- name: orders
  properties:
  - {name: id, logicalType: integer, physicalType: bigint, required: true, primaryKey: true}
  - {name: customer, logicalType: string, required: true}
  - name: amount
    logicalType: integer
    logicalTypeOptions: {minimum: 0, maximum: 490}
  - name: status
    logicalType: string
    quality:
    - {type: library, metric: invalidValues, arguments: {validValues: [new, paid, shipped]}, mustBe: 0}
  - {name: ref, logicalType: string, logicalTypeOptions: {pattern: '^OR-[0-9]{6}$', maxLength: 8}}
  - {name: dup, logicalType: integer, unique: true}
  quality:
  - {type: sql, query: 'SELECT count(*) FROM orders WHERE amount < 0', mustBeLessThan: 10, name: few negatives}
  - {type: library, metric: rowCount, mustBeGreaterThan: 5000, severity: warning, name: volume}
"""
    )
    report = run_contract(load_contract(str(contract)), str(data))
    got = {r.check.id: r.measured for r in report.results if r.status != "passed"}
    q = lambda sql: duckdb.sql(sql.replace("FROM T", f"FROM read_parquet('{data}')", 1)).fetchall()[0][0]  # noqa: E731
    assert got == {
        "orders.customer.required": q("SELECT count_if(customer IS NULL) FROM T"),
        "orders.amount.minimum": q("SELECT count_if(amount < 0) FROM T"),
        "orders.amount.maximum": q("SELECT count_if(amount > 490) FROM T"),
        "orders.status.quality[0]": q("SELECT count_if(status NOT IN ('new','paid','shipped')) FROM T"),
        "orders.ref.pattern": q("SELECT count_if(NOT regexp_matches(ref, '^OR-[0-9]{6}$')) FROM T"),
        "orders.ref.max_length": q("SELECT count_if(length(ref) > 8) FROM T"),
        "orders.dup.unique": q("SELECT count(dup) - count(DISTINCT dup) FROM T"),
        "orders.quality[0]": q("SELECT count_if(amount < 0) FROM T"),
        "orders.quality[1]": 5000,
    }
    statuses = {r.check.id: r.status for r in report.results}
    assert statuses["orders.quality[1]"] == "warning" and statuses["orders.id.unique"] == "passed"

    junit = ET.fromstring(render_junit(report))
    suite = junit.find("testsuite")
    assert suite is not None and int(suite.get("failures", "-1")) == 8
    failed_cases = {c.get("name", "").split(":")[0] for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed_cases == set(got) - {"orders.quality[1]"}


def test_duckdb_table_spec(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE cities AS SELECT 'x' || i AS city_id, 'n' AS name, 20000 + i AS population FROM range(5) t(i)"
    )
    con.close()
    report = run_contract(
        load_contract(str(FIX / "schema-evolution/odcs-datacontract-cities-version-3.yaml")), f"{db}::cities"
    )
    assert report.passed and report.rows == 5


# -- the shortcuts of checks.evaluate give the numbers of the single scan ----------------------------

PLANTED_CONTRACT = r"""apiVersion: v3.0.2
kind: DataContract
id: planted
version: 1.0.0
status: active
schema:
- name: planted
  properties:
  - {name: seq, logicalType: integer, required: true, unique: true}
  - {name: shuffled, logicalType: integer, unique: true}
  - {name: shuffled_dups, logicalType: integer, unique: true}
  - {name: seq_dup, logicalType: integer, unique: true}
  - name: seq_null
    logicalType: integer
    required: true
    unique: true
    logicalTypeOptions: {minimum: 1, maximum: 6000}
  - name: region
    logicalType: integer
    primaryKey: true
    primaryKeyPosition: 1
    logicalTypeOptions: {exclusiveMinimum: 0}
  - {name: shop, logicalType: integer, primaryKey: true, primaryKeyPosition: 2}
  - name: currency
    logicalType: string
    required: true
    logicalTypeOptions: {pattern: '^[A-Z]{3}$', minLength: 3, maxLength: 3}
    quality:
    - {type: library, metric: invalidValues, arguments: {validValues: [EUR, USD, GBP]}, mustBe: 0}
    - {type: library, metric: nullValues, unit: percent, mustBeLessThan: 1}
    - {type: library, metric: invalidValues, arguments: {pattern: '^[A-Z]+$'}, unit: percent, mustBeLessThan: 5}
  - name: status
    logicalType: string
    enum: [placed, shipped, Done]
    logicalTypeOptions: {pattern: '^[a-z]+$'}
    quality:
    - {type: library, metric: missingValues, arguments: {missingValues: [null, '']}, mustBe: 0}
    - {type: library, metric: missingValues, unit: percent, mustBeLessThan: 2}
    - {type: library, metric: duplicateValues, mustBe: 0}
  - name: email
    logicalType: string
    logicalTypeOptions: {pattern: '^[a-z0-9]+@[a-z]+\.[a-z]+$'}
    quality:
    - {type: library, metric: duplicateValues, unit: percent, mustBeLessThan: 10}
  - {name: quantity, logicalType: integer, required: true, logicalTypeOptions: {minimum: 0, maximum: 10}}
  - {name: amount, logicalType: number, logicalTypeOptions: {minimum: 0, exclusiveMaximum: 1500}}
  - {name: score, logicalType: number, logicalTypeOptions: {maximum: 1000}}
  - {name: day, logicalType: date, logicalTypeOptions: {minimum: '2024-01-01', maximum: '2024-12-31'}}
  quality:
  - {type: library, metric: duplicateValues, arguments: {properties: [region, shop]}, mustBe: 0}
  - {type: library, metric: duplicateValues, arguments: {properties: [seq, shop]}, unit: percent, mustBe: 0}
  - {type: library, metric: rowCount, mustBeGreaterThan: 100}
  - {type: sql, query: 'SELECT count(*) FROM planted WHERE amount > quantity * 100', mustBe: 0}
"""

# planted violations: shuffled keys with and without repeats, an increasing key with one repeat
# every 50 rows, an increasing key with NULLs, a composite key with NULL members and repeats,
# low-cardinality strings with NULLs, '' and failing patterns, a high-cardinality string column,
# NaN in a float column, dates out of range
PLANTED_SQL = """SELECT i AS seq,
    (i * 7919) % 6007 AS shuffled,
    (i * 7919) % 1009 AS shuffled_dups,
    CASE WHEN i % 50 = 0 THEN i - 1 ELSE i END AS seq_dup,
    CASE WHEN i % 13 = 0 THEN NULL ELSE i END AS seq_null,
    CASE WHEN i % 101 = 0 THEN NULL ELSE i % 300 END AS region,
    CASE WHEN i % 103 = 0 THEN NULL ELSE i % 7 END AS shop,
    ['EUR', 'USD', 'usd', 'GBP', NULL, 'EURO'][1 + i % 6] AS currency,
    CASE WHEN i % 17 = 0 THEN '' WHEN i % 19 = 0 THEN NULL
         ELSE ['placed', 'shipped', 'Done', 'x1'][1 + i % 4] END AS status,
    'user' || (i % 1500) || CASE WHEN i % 23 = 0 THEN '@bad' ELSE '@mail.com' END AS email,
    i % 12 AS quantity, (i % 1100) * 1.5 AS amount,
    CASE WHEN i % 31 = 0 THEN 'nan'::DOUBLE ELSE i * 0.2 END AS score,
    DATE '2024-01-01' + (i % 400)::INTEGER AS day
  FROM range(1, 6001) r(i)"""


def _planted_oracle(source: str = PLANTED_SQL) -> dict[str, object]:
    """Every data check's measured value, computed by DuckDB from the rule's meaning, not its SQL."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE planted AS {source}")

    def q(sql: str) -> object:
        row = con.execute(sql.replace("FROM T", "FROM planted")).fetchone()
        assert row is not None
        return row[0]

    def dups(key: str) -> object:
        groups = f"SELECT count(*) AS n FROM T WHERE {key} IS NOT NULL GROUP BY {key}"
        return q(f"SELECT coalesce(sum(n - 1), 0)::BIGINT FROM ({groups})")

    def pct(count_sql: str) -> object:
        return q(f"SELECT 100.0 * ({count_sql}) / count(*) FROM T")

    return {
        "planted.seq.required": q("SELECT count(*) - count(seq) FROM T"),
        "planted.seq.unique": dups("seq"),
        "planted.shuffled.unique": dups("shuffled"),
        "planted.shuffled_dups.unique": dups("shuffled_dups"),
        "planted.seq_dup.unique": dups("seq_dup"),
        "planted.seq_null.required": q("SELECT count(*) FROM T WHERE seq_null IS NULL"),
        "planted.seq_null.minimum": q("SELECT count(*) FROM T WHERE seq_null < 1"),
        "planted.seq_null.maximum": q("SELECT count(*) FROM T WHERE seq_null > 6000"),
        "planted.seq_null.unique": dups("seq_null"),
        "planted.region.exclusive_minimum": q("SELECT count(*) FROM T WHERE region <= 0"),
        "planted.currency.required": q("SELECT count(*) FROM T WHERE currency IS NULL"),
        "planted.currency.pattern": q("SELECT count(*) FROM T WHERE NOT regexp_full_match(currency, '[A-Z]{3}')"),
        "planted.currency.min_length": q("SELECT count(*) FROM T WHERE length(currency) < 3"),
        "planted.currency.max_length": q("SELECT count(*) FROM T WHERE length(currency) > 3"),
        "planted.currency.quality[0]": q("SELECT count(*) FROM T WHERE currency NOT IN ('EUR', 'USD', 'GBP')"),
        "planted.currency.quality[1]": pct("count(*) FILTER (WHERE currency IS NULL)"),
        "planted.currency.quality[2]": pct("count(*) FILTER (WHERE NOT regexp_full_match(currency, '[A-Z]+'))"),
        "planted.status.enum": q("SELECT count(*) FROM T WHERE status NOT IN ('placed', 'shipped', 'Done')"),
        "planted.status.pattern": q("SELECT count(*) FROM T WHERE NOT regexp_full_match(status, '[a-z]+')"),
        "planted.status.quality[0]": q("SELECT count(*) FROM T WHERE status IS NULL OR status = ''"),
        "planted.status.quality[1]": pct("count(*) FILTER (WHERE status IS NULL OR status = '')"),
        "planted.status.quality[2]": dups("status"),
        "planted.email.pattern": q(
            "SELECT count(*) FROM T WHERE NOT regexp_full_match(email, '[a-z0-9]+@[a-z]+[.][a-z]+')"
        ),
        "planted.email.quality[0]": pct(f"SELECT {dups('email')}"),
        "planted.quantity.required": q("SELECT count(*) FROM T WHERE quantity IS NULL"),
        "planted.quantity.minimum": q("SELECT count(*) FROM T WHERE quantity < 0"),
        "planted.quantity.maximum": q("SELECT count(*) FROM T WHERE quantity > 10"),
        "planted.amount.minimum": q("SELECT count(*) FROM T WHERE amount < 0"),
        "planted.amount.exclusive_maximum": q("SELECT count(*) FROM T WHERE amount >= 1500"),
        "planted.score.maximum": q("SELECT count(*) FROM T WHERE score > 1000"),  # NaN sorts above all
        "planted.day.minimum": q("SELECT count(*) FROM T WHERE day < DATE '2024-01-01'"),
        "planted.day.maximum": q("SELECT count(*) FROM T WHERE day > DATE '2024-12-31'"),
        # DISTINCT on tuples: NULL members are values like any other
        "planted.primary_key": q("SELECT count(*) - count(DISTINCT (region, shop)) FROM T"),
        "planted.quality[0]": q("SELECT count(*) - count(DISTINCT (region, shop)) FROM T"),
        "planted.quality[1]": pct("SELECT count(*) - count(DISTINCT (seq, shop)) FROM T"),
        "planted.quality[2]": q("SELECT count(*) FROM T"),
        "planted.quality[3]": q("SELECT count(*) FROM T WHERE amount > quantity * 100"),
    }


def _write_planted(tmp_path: Path, kind: str) -> str:
    """The planted data as ``kind`` (parquet, csv, duckdb table, arrow), and the path to test."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE planted AS {PLANTED_SQL}")
    if kind == "parquet":  # small row groups: several per file, as in real files
        con.execute(f"COPY planted TO '{tmp_path / 'p.parquet'}' (FORMAT parquet, ROW_GROUP_SIZE 2048)")
        return str(tmp_path / "p.parquet")
    if kind == "csv":
        con.execute(f"COPY planted TO '{tmp_path / 'p.csv'}' (HEADER)")
        return str(tmp_path / "p.csv")
    if kind == "arrow":  # no DuckDB scan: spooled into a DuckDB table
        import pyarrow.feather as feather

        feather.write_feather(con.sql("SELECT * FROM planted").to_arrow_table(), str(tmp_path / "p.arrow"))
        return str(tmp_path / "p.arrow")
    con.execute(f"ATTACH '{tmp_path / 'w.duckdb'}' AS w")
    con.execute("CREATE TABLE w.planted AS SELECT * FROM planted")
    con.close()
    return f"{tmp_path / 'w.duckdb'}::planted"


@pytest.mark.parametrize("kind", ["parquet", "csv", "duckdb", "arrow"])
def test_planted_counts_match_duckdb(tmp_path: Path, kind: str) -> None:
    data = _write_planted(tmp_path, kind)
    contract = tmp_path / "planted.odcs.yaml"
    contract.write_text(PLANTED_CONTRACT)
    report = run_contract(load_contract(str(contract)), data)
    # CSV keeps no '' apart from NULL (DuckDB reads both as NULL): the oracle reads the same file
    oracle = _planted_oracle(f"SELECT * FROM read_csv('{data}')" if kind == "csv" else PLANTED_SQL)
    measured = {r.check.id: r.measured for r in report.results if r.measured is not None}
    assert measured == oracle
    assert all(type(measured[k]) is type(v) for k, v in oracle.items())  # ints stay ints, % floats
    assert report.rows == 6000
    failing = {r.check.id for r in report.failed}
    assert "planted.seq.unique" not in failing and "planted.seq_null.unique" not in failing
    assert {"planted.seq_dup.unique", "planted.shuffled_dups.unique", "planted.primary_key"} <= failing


def _relation(tmp_path: Path) -> tuple[duckdb.DuckDBPyConnection, list[Check], Dataset]:
    from oxiflow.contracts.runner import shape_of

    path = _write_planted(tmp_path, "parquet")
    contract = tmp_path / "planted.odcs.yaml"
    contract.write_text(PLANTED_CONTRACT)
    ds = load_contract(str(contract)).dataset(None)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW oxiflow_data AS SELECT * FROM read_parquet('{path}')")
    con.execute("CREATE VIEW planted AS SELECT * FROM oxiflow_data")
    return con, compile_checks(ds, shape_of(con, "oxiflow_data", False), None), ds


def test_shortcuts_give_the_single_scans_results(tmp_path: Path) -> None:
    con, checks, ds = _relation(tmp_path)
    one_scan = evaluate(con, "oxiflow_data", ds, checks)
    shortcuts = evaluate(con, "oxiflow_data", ds, checks, narrow_scans=True, metadata_stats=True)
    assert [r.to_dict() for r in shortcuts.results] == [r.to_dict() for r in one_scan.results]
    assert shortcuts.rows == one_scan.rows == 6000


def test_increasing_key_fast_path_only_for_strictly_increasing_keys(tmp_path: Path) -> None:
    con, _, _ = _relation(tmp_path)
    keys = {'"seq"', '"seq_null"', '"seq_dup"', '"shuffled"', '("seq", "shop")', '("region", "shop")'}
    # seq_null: NULLs skipped; (seq, shop): tuples compare by their first member; a repeat, a
    # shuffled key and a tuple out of order go to count(DISTINCT)
    assert _increasing_keys(con, "oxiflow_data", keys) == {'"seq"', '"seq_null"', '("seq", "shop")'}
    con.execute("CREATE VIEW nulls AS SELECT * FROM (VALUES (1, NULL), (1, NULL), (2, 1)) v(a, b)")
    # tuples with NULL members: (1, NULL) twice is a duplicate, and the comparison sees it
    assert _increasing_keys(con, "nulls", {'("a", "b")'}) == set()


def test_few_values_picks_low_cardinality_strings(tmp_path: Path) -> None:
    con, checks, _ = _relation(tmp_path)
    assert _few_values(con, "oxiflow_data", ["currency", "status", "email"]) == ["currency", "status"]
    parts = _per_value_parts(con, "oxiflow_data", checks)
    assert [sorted({c.text_column for c in p.checks}) for p in parts] == [["currency"], ["status"]]


def test_metadata_proves_ranges_and_not_nulls_only_when_true(tmp_path: Path) -> None:
    con, checks, _ = _relation(tmp_path)
    proven = _proven(con, "oxiflow_data", checks)
    # seq_null has NULLs, quantity 11 > 10, score has NaN (above every bound), day runs into 2025
    assert set(proven) == {
        "planted.seq.required",
        "planted.seq_null.minimum",
        "planted.seq_null.maximum",
        "planted.quantity.required",
        "planted.quantity.minimum",
        "planted.amount.minimum",
        "planted.day.minimum",
    }
    assert set(proven.values()) == {0}


def test_empty_data_fails_no_row_check(tmp_path: Path) -> None:
    """DuckDB's count_if is NULL over no rows: that once read as 'None of 0 rows fail'."""
    path = tmp_path / "empty.parquet"
    duckdb.sql(f"COPY (SELECT * FROM ({PLANTED_SQL}) WHERE false) TO '{path}' (FORMAT parquet)")
    contract = tmp_path / "planted.odcs.yaml"
    contract.write_text(PLANTED_CONTRACT)
    report = run_contract(load_contract(str(contract)), str(path))
    assert report.rows == 0
    assert [r.check.id for r in report.failed] == ["planted.quality[2]"]  # rowCount > 100
    assert {r.measured for r in report.results if r.check.predicate is not None} == {0}


def test_nan_with_parquet_statistics_gives_the_single_scans_count(tmp_path: Path) -> None:
    """pyarrow leaves NaN out of Parquet min/max statistics, and DuckDB (2.0) trusts them both for
    max() and for the row predicate (NaN > 10 is not counted over the file, though NaN sorts above
    every number): the metadata shortcut gives the single scan's count, whatever DuckDB decides."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from oxiflow.contracts.runner import shape_of

    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"score": pa.array([1.0, float("nan"), 5.0, None, -1.0])}), path)
    contract = tmp_path / "c.odcs.yaml"
    contract.write_text(
        "apiVersion: v3.0.2\nkind: DataContract\nid: n\nversion: 1.0.0\nstatus: active\nschema:\n- name: n\n"
        "  properties:\n  - {name: score, logicalType: number, logicalTypeOptions: {minimum: 0, maximum: 10}}\n"
    )
    ds = load_contract(str(contract)).dataset(None)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW oxiflow_data AS SELECT * FROM read_parquet('{path}')")
    checks = compile_checks(ds, shape_of(con, "oxiflow_data", False), None)
    one_scan = evaluate(con, "oxiflow_data", ds, checks)
    shortcuts = evaluate(con, "oxiflow_data", ds, checks, narrow_scans=True, metadata_stats=True)
    assert [r.to_dict() for r in shortcuts.results] == [r.to_dict() for r in one_scan.results]
    counts = con.execute("SELECT count_if(score < 0), count_if(score > 10) FROM oxiflow_data").fetchone()
    assert counts is not None
    measured = {r.check.id: r.measured for r in shortcuts.results}
    assert (measured["n.score.minimum"], measured["n.score.maximum"]) == counts
    assert counts[0] == 1
