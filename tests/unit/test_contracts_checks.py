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
