"""The schema registry's gate: compatibility modes (Kafka semantics), drift, each schema-contract mode on each
kind of change, approvals in a real SQLite state file and in the real PostgreSQL."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from oxiflow.contracts.gate import SchemaChangeBlocked, check, dataset_name
from oxiflow.contracts.schema_diff import compatibility_problems, diff_schemas
from oxiflow.data import OxiData
from oxiflow.engine.dlq import DeadLetterQueue
from oxiflow.errors import ConfigError
from oxiflow.oxi import StepContext
from oxiflow.state.approvals import Registry, fingerprint
from oxiflow.state.store import StateStore, open_store

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def s(*fields: tuple[str, pa.DataType] | tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(*f) for f in fields])


I32, I64, STR, F64 = pa.int32(), pa.int64(), pa.string(), pa.float64()

# (old, new) -> which modes accept new after old. Kafka/Confluent semantics: backward = new reads old data,
# forward = old reads new data, full = both.
COMPAT_CASES = [
    ("add optional field", s(("a", I64)), s(("a", I64), ("b", STR)), {"backward", "forward", "full"}),
    ("add required field", s(("a", I64)), s(("a", I64), ("b", STR, False)), {"forward"}),
    ("delete optional field", s(("a", I64), ("b", STR)), s(("a", I64)), {"backward", "forward", "full"}),
    ("delete required field", s(("a", I64), ("b", STR, False)), s(("a", I64)), {"backward"}),
    ("widen int32 -> int64", s(("a", I32)), s(("a", I64)), {"backward"}),
    ("narrow int64 -> int32", s(("a", I64)), s(("a", I32)), {"forward"}),
    ("int -> string", s(("a", I64)), s(("a", STR)), set()),
    ("string -> int", s(("a", STR)), s(("a", I64)), set()),
    ("NOT NULL relaxed", s(("a", I64, False)), s(("a", I64)), {"backward"}),
    ("NOT NULL added", s(("a", I64)), s(("a", I64, False)), {"forward"}),
    ("unchanged", s(("a", I64)), s(("a", I64)), {"backward", "forward", "full"}),
]


@pytest.mark.parametrize(("case", "old", "new", "ok"), COMPAT_CASES, ids=[c[0] for c in COMPAT_CASES])
def test_compatibility_modes(case: str, old: pa.Schema, new: pa.Schema, ok: set[str]) -> None:
    got = {m for m in ("backward", "forward", "full") if not compatibility_problems(old, new, m)}
    assert got == ok
    assert compatibility_problems(old, new, "none") == []


def test_drift_kinds() -> None:
    old = s(("id", I64, False), ("a", I32), ("b", STR), ("c", I64), ("gone", STR))
    new = s(("id", I64), ("a", I64), ("b", I64), ("c", I32), ("extra", F64))
    got = [(d.column, d.kind, d.entity) for d in diff_schemas(old, new)]
    assert got == [
        ("id", "nullable", "data_type"),
        ("a", "type_widened", "data_type"),
        ("b", "type_changed", "data_type"),
        ("c", "type_narrowed", "data_type"),
        ("gone", "column_removed", "columns"),
        ("extra", "column_added", "columns"),
    ]


# -- the gate on each kind of change, in each mode --------------------------------------------------

# change -> (registered schema, incoming table)
CHANGES: dict[str, tuple[pa.Schema, pa.Table]] = {
    "new_column": (s(("id", I64)), pa.table({"id": pa.array([1, 2], I64), "extra": pa.array(["a", None])})),
    "removed_column": (s(("id", I64), ("gone", STR)), pa.table({"id": pa.array([1, 2], I64)})),
    "widened_type": (s(("v", I32)), pa.table({"v": pa.array([1, 2**40], I64)})),
    "narrowed_type": (s(("v", I64)), pa.table({"v": pa.array([1, 2], I32)})),
    "nullability": (s(("v", I64, False)), pa.table({"v": pa.array([1, None], I64)})),
    "string_to_int": (s(("v", I64)), pa.table({"v": pa.array(["1", "x"])})),
    "float_to_int": (s(("v", I64)), pa.table({"v": pa.array([1.0, 2.5])})),
}
BLOCKED = "blocked"
# (change, mode) -> BLOCKED, or (rows written as a table, rows dead-lettered, values nulled, version after)
EXPECTED: dict[tuple[str, str], Any] = {
    ("new_column", "evolve"): (pa.table({"id": pa.array([1, 2], I64), "extra": pa.array(["a", None])}), 0, {}, 2),
    ("new_column", "freeze"): BLOCKED,
    ("new_column", "discard_row"): (pa.table({"id": pa.array([2], I64)}), 1, {}, 1),
    ("new_column", "discard_value"): (pa.table({"id": pa.array([1, 2], I64)}), 0, {"extra": 1}, 1),
    ("removed_column", "evolve"): (pa.table({"id": pa.array([1, 2], I64)}), 0, {}, 2),
    ("removed_column", "freeze"): BLOCKED,
    ("removed_column", "discard_row"): (
        pa.table({"id": pa.array([1, 2], I64), "gone": pa.array([None, None], STR)}), 0, {}, 1),
    ("removed_column", "discard_value"): (
        pa.table({"id": pa.array([1, 2], I64), "gone": pa.array([None, None], STR)}), 0, {}, 1),
    ("widened_type", "evolve"): (pa.table({"v": pa.array([1, 2**40], I64)}), 0, {}, 2),
    ("widened_type", "freeze"): BLOCKED,
    ("widened_type", "discard_row"): (pa.table({"v": pa.array([1], I32)}), 1, {}, 1),
    ("widened_type", "discard_value"): (pa.table({"v": pa.array([1, None], I32)}), 0, {"v": 1}, 1),
    ("string_to_int", "evolve"): BLOCKED,  # int64 -> string is not backward compatible
    ("string_to_int", "freeze"): BLOCKED,
    ("string_to_int", "discard_row"): (pa.table({"v": pa.array([1], I64)}), 1, {}, 1),
    ("string_to_int", "discard_value"): (pa.table({"v": pa.array([1, None], I64)}), 0, {"v": 1}, 1),
    ("float_to_int", "evolve"): BLOCKED,
    ("float_to_int", "freeze"): BLOCKED,
    ("float_to_int", "discard_row"): (pa.table({"v": pa.array([1], I64)}), 1, {}, 1),  # 2.5 is not an integer
    ("float_to_int", "discard_value"): (pa.table({"v": pa.array([1, None], I64)}), 0, {"v": 1}, 1),
}  # fmt: skip
for _mode in ("evolve", "freeze", "discard_row", "discard_value"):
    # narrower data is cast up to the registered type in every mode: the dataset's schema does not change
    EXPECTED[("narrowed_type", _mode)] = (pa.table({"v": pa.array([1, 2], I64)}), 0, {}, 1)
EXPECTED[("nullability", "evolve")] = (pa.table({"v": pa.array([1, None], I64)}), 0, {}, 2)
EXPECTED[("nullability", "freeze")] = BLOCKED
for _mode in ("discard_row", "discard_value"):  # a null cannot go into a NOT NULL column: the row goes
    EXPECTED[("nullability", _mode)] = (pa.Table.from_pydict({"v": [1]}, schema=s(("v", I64, False))), 1, {}, 1)

SINK = """
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: write_parquet
    id: out
    config: {path: out.parquet}
    dataset: ds
    schema_contract: MODE
"""


def _sink(tmp_path: Path, yaml_text: str) -> Any:
    from oxiflow.config.load import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(yaml_text).lstrip(), encoding="utf-8")
    return load_pipeline(path).step("out")


def _dlq_records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dlq.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ctx(tmp_path: Path) -> StepContext:
    dlq = DeadLetterQueue(tmp_path / "dlq.jsonl", "run-1", "p")
    return StepContext(
        step_id="out", oxi_name="write_parquet", run_id="run-1", base_dir=tmp_path, dlq=dlq, pipeline="p"
    )


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[StateStore]:
    with open_store(str(tmp_path / "state.db")) as store:
        yield store


@pytest.mark.parametrize(("change", "mode"), sorted(EXPECTED), ids=[f"{c}-{m}" for c, m in sorted(EXPECTED)])
def test_mode_on_change(tmp_path: Path, sqlite_store: StateStore, change: str, mode: str) -> None:
    registered, incoming = CHANGES[change]
    step = _sink(tmp_path, SINK.replace("MODE", mode))
    assert sqlite_store.record_schema("ds", registered) == 1
    ctx = _ctx(tmp_path)
    expected = EXPECTED[(change, mode)]
    if expected == BLOCKED:
        with pytest.raises(SchemaChangeBlocked) as info:
            check(step, step.config, OxiData.from_table(incoming), ctx, sqlite_store)
        assert "oxiflow approve ds" in str(info.value)
        pending = Registry(sqlite_store).approvals("ds", pending_only=True)
        assert len(pending) == 1 and pending[0].base_version == 1
        assert sqlite_store.latest_schema("ds").version == 1  # type: ignore[union-attr]
        return
    table, rejected, nulled, version = expected
    gate = check(step, step.config, OxiData.from_table(incoming), ctx, sqlite_store)
    written = gate.data.read_all()
    gate.commit()
    assert written.schema.equals(table.schema), (written.schema, table.schema)
    assert written.to_pylist() == table.to_pylist()
    ctx.dlq.close()  # type: ignore[union-attr]
    records = _dlq_records(tmp_path)
    assert ctx.rows_rejected == rejected == sum(r["rule"] == "schema_contract" for r in records)
    assert written.num_rows + rejected == incoming.num_rows
    assert ctx.metadata.get("schema_values_nulled", {}) == nulled
    # discard_value records which values it dropped: one DLQ record per written row, the values as they came in
    dropped = [r for r in records if r["rule"] == "schema_contract:discard_value"]
    assert {c: sum(c in r["values"] for r in dropped) for c in nulled} == nulled
    for r in dropped:
        assert all(r["raw"][c] == v and v is not None for c, v in r["values"].items())
    assert ctx.metadata["schema_version"] == version
    latest = sqlite_store.latest_schema("ds")
    assert latest is not None and latest.version == version and latest.schema.equals(table.schema)
    assert [d["kind"] for d in ctx.metadata["schema_drift"]] == [
        d.kind for d in diff_schemas(registered, incoming.schema)
    ]


def test_gate_is_a_no_op_without_schema_keys(tmp_path: Path) -> None:
    step = _sink(
        tmp_path, "\n".join(line for line in SINK.splitlines() if "dataset" not in line and "MODE" not in line)
    )
    data = OxiData.from_table(pa.table({"a": [1]}))
    assert check(step, step.config, data, _ctx(tmp_path), None).data is data


def test_gate_needs_the_state_store(tmp_path: Path) -> None:
    step = _sink(tmp_path, SINK.replace("MODE", "evolve"))
    with pytest.raises(ConfigError, match="--no-state"):
        check(step, step.config, OxiData.from_table(pa.table({"a": [1]})), _ctx(tmp_path), None)


def test_new_dataset_under_tables_modes(tmp_path: Path, sqlite_store: StateStore) -> None:
    data = pa.table({"a": pa.array([1, 2], I64)})
    step = _sink(tmp_path, SINK.replace("MODE", "{tables: discard_row}"))
    ctx = _ctx(tmp_path)
    gate = check(step, step.config, OxiData.from_table(data), ctx, sqlite_store)
    assert gate.data.read_all().num_rows == 0 and ctx.rows_rejected == 2
    gate.commit()
    assert sqlite_store.latest_schema("ds") is None  # nothing registered for a dataset that was refused
    step = _sink(tmp_path, SINK.replace("MODE", "{tables: freeze}"))
    with pytest.raises(SchemaChangeBlocked, match="no registered schema"):
        check(step, step.config, OxiData.from_table(data), _ctx(tmp_path), sqlite_store)


def test_contract_is_the_baseline_of_a_new_dataset(tmp_path: Path, sqlite_store: StateStore) -> None:
    (tmp_path / "c.yaml").write_text(
        textwrap.dedent("""
        apiVersion: v3.0.0
        kind: DataContract
        id: orders
        version: 1.0.0
        status: active
        schema:
          - name: orders
            properties:
              - {name: id, logicalType: integer, physicalType: bigint, required: true}
              - {name: amount, logicalType: number, physicalType: double}
        """),
        encoding="utf-8",
    )
    step = _sink(
        tmp_path, SINK.replace("schema_contract: MODE", "contract: c.yaml\n    schema_contract: discard_value")
    )
    data = pa.table({"id": pa.array([1, 2], I32), "amount": pa.array(["1.5", "n/a"])})
    ctx = _ctx(tmp_path)
    gate = check(step, step.config, OxiData.from_table(data), ctx, sqlite_store)
    got = gate.data.read_all()
    gate.commit()
    assert got.schema.equals(s(("id", I64, False), ("amount", F64)))
    assert got.to_pylist() == [{"id": 1, "amount": 1.5}, {"id": 2, "amount": None}]
    assert sqlite_store.latest_schema("ds").version == 1  # type: ignore[union-attr]


def test_dataset_names(tmp_path: Path) -> None:
    step = _sink(tmp_path, SINK.replace("    dataset: ds\n", "").replace("MODE", "evolve"))
    assert dataset_name(step) == "out.parquet"
    duck_yaml = SINK.replace("name: write_parquet", "name: write_duckdb").replace("    dataset: ds\n", "")
    duck = _sink(
        tmp_path,
        duck_yaml.replace("{path: out.parquet}", "{database: w.duckdb, table: orders}").replace("MODE", "evolve"),
    )
    assert dataset_name(duck) == "w.duckdb:orders"


def test_schema_keys_only_on_sinks(tmp_path: Path) -> None:
    text = SINK.replace("config: {path: in.parquet}", "config: {path: in.parquet}\n    compatibility: full")
    with pytest.raises(ConfigError) as info:
        _sink(tmp_path, text.replace("MODE", "evolve"))
    assert [i.message for i in info.value.issues] == [
        "`compatibility` is only allowed on sink steps; read_parquet is a source"
    ]
    with pytest.raises(ConfigError, match="contract"):
        _sink(tmp_path, SINK.replace("schema_contract: MODE", "contract: missing.yaml"))
    with pytest.raises(ConfigError, match="schema_contract"):
        _sink(tmp_path, SINK.replace("MODE", "evolv"))


# -- approvals in the store -------------------------------------------------------------------------


def _approval_flow(store: StateStore) -> None:
    reg = Registry(store)
    v1, v2, v3 = s(("a", I64)), s(("a", STR)), s(("a", F64))
    a = reg.request("ds", fingerprint(v2), ["change 2"], base_version=1, pipeline="p", step="out", run_id="r2")
    again = reg.request("ds", fingerprint(v2), ["change 2"], base_version=1, pipeline="p", step="out", run_id="r3")
    assert again.id == a.id and again.status == "pending"  # a rerun does not pile up requests
    assert reg.approved("ds", fingerprint(v2)) is None
    ok = reg.approve("ds", by="alice", reason="ticket 7")
    assert (ok.id, ok.status, ok.approved_by, ok.reason) == (a.id, "approved", "alice", "ticket 7")
    assert ok.approved_at is not None and ok.approved_at >= a.requested_at
    assert reg.approved("ds", fingerprint(v2)) is not None
    assert reg.approved("ds", fingerprint(v3)) is None  # an approval is for one exact schema
    reg.mark_applied(a.id, 2, "r4")
    done = reg.approvals("ds")[0]
    assert (done.status, done.applied_version, done.applied_run) == ("applied", 2, "r4")
    b = reg.request("ds", fingerprint(v3), ["change 3"], base_version=2, pipeline="p", step="out", run_id="r5")
    c = reg.request("ds", fingerprint(v1), ["change 1"], base_version=2, pipeline="p", step="out", run_id="r6")
    statuses = {x.id: x.status for x in reg.approvals("ds")}
    assert statuses == {a.id: "applied", b.id: "superseded", c.id: "pending"}
    with pytest.raises(Exception, match="no pending approval"):
        reg.approve("other", by="bob", reason=None)
    reg.save_settings("ds", compatibility="full", schema_contract={"tables": "evolve"}, contract=None,
                      pipeline="p", step="out")  # fmt: skip
    settings = reg.settings("ds")
    assert settings is not None and settings.compatibility == "full"
    reg.save_drift("ds", 2, [{"column": "a", "kind": "type_changed"}], "r4")
    assert reg.drift("ds", 2) == [{"column": "a", "kind": "type_changed"}]
    assert reg.datasets() == ["ds"]


def test_approvals_sqlite(sqlite_store: StateStore) -> None:
    _approval_flow(sqlite_store)


def test_approvals_postgresql() -> None:
    schema = f"oxigate_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    try:
        with open_store(url) as store:
            _approval_flow(store)
            Registry(store)  # a second registry on the same store: tables already there
        with open_store(url) as store:  # a fresh connection sees the tables and rows
            assert Registry(store).approvals("ds", pending_only=True)[0].changes == ["change 1"]
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
