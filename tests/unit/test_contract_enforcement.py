"""A contract enforced in pipelines: on a sink (the validate implementation, required columns NOT NULL, integers
under `number`), modes declared in the contract and on the validate step, PII masked by every DLQ writer, drift
tracked for every sink, unsupported parts reported. Oracles: DuckDB over the input, `contract test`, hashlib."""

from __future__ import annotations

import hashlib
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.contracts import load_contract
from oxiflow.contracts.gate import SchemaChangeBlocked, check
from oxiflow.contracts.runner import run_contract
from oxiflow.data import OxiData
from oxiflow.engine.dlq import DeadLetterQueue
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.oxi import StepContext
from oxiflow.state.approvals import Registry
from oxiflow.state.dlq import DlqTable
from oxiflow.state.store import StateStore, open_store

CONTRACT = """
apiVersion: v3.0.2
kind: DataContract
id: orders
version: 1.0.0
status: active
schema:
  - name: orders
    properties:
      - {name: id, logicalType: integer, required: true}
      - {name: amount, logicalType: number, logicalTypeOptions: {minimum: 0}}
      - {name: status, logicalType: string, logicalTypeOptions: {pattern: '^[a-z]+$'}, enum: [new, paid, bogus1]}
      - {name: email, logicalType: string, classification: pii}
"""
# 100 rows: 4 null ids, 3 negative amounts, 3 bad statuses (none overlap): 10 % invalid
ROWS = """
SELECT CASE WHEN i % 25 = 3 THEN NULL ELSE i END AS id,
       CASE WHEN i % 33 = 10 THEN -5 ELSE i * 1.5 END AS amount,
       CASE WHEN i % 40 = 17 THEN 'bogus' ELSE ['new', 'paid'][1 + i % 2] END AS status,
       'user' || i || '@example.com' AS email
FROM range(100) t(i)
"""
# the contract's rules, written independently (NULL passes, as in contracts)
VALID = "id IS NOT NULL AND (amount IS NULL OR amount >= 0) AND (status IS NULL OR status IN ('new', 'paid'))"
SINK = """
metadata: {name: orders}
pipeline:
  - name: read_csv
    config: {path: in.csv}
  - name: write_parquet
    config: {path: out.parquet}
    contract: c.yaml
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with open_store(str(tmp_path / "state.db")) as s:
        yield s


def run(tmp_path: Path, text: str, store: StateStore | None, name: str = "p.yaml") -> RunResult:
    return run_plan(load_pipeline(_write(tmp_path / name, text)), RunOptions(state=store))


def conserved(result: RunResult, records: list[Any]) -> None:
    """rows in = rows out + rows in the DLQ + rows filtered, per step and for the run's DLQ records (records of
    nulled values excepted: their rows were written)."""
    rejected = 0
    for s in result.steps:
        if s.kind != "source" and s.status == "ok":
            assert s.rows_in == s.rows_out + s.rows_rejected + s.rows_filtered, s
        rejected += s.rows_rejected
    assert rejected == sum(1 for r in records if r.rule != "schema_contract:discard_value")


def _csv(tmp_path: Path, sql: str = ROWS) -> Path:
    path = tmp_path / "in.csv"
    duckdb.sql(f"COPY ({sql}) TO '{path}' (HEADER)")
    return path


def test_a_sink_contract_enforces_the_rows_as_validate_does(tmp_path: Path, store: StateStore) -> None:
    src = _csv(tmp_path)
    _write(tmp_path / "c.yaml", CONTRACT.replace("bogus1", "shipped"))
    before = b"an older file"
    (tmp_path / "out.parquet").write_bytes(before)
    # 10 % invalid > the default max_invalid_ratio 0.05: the step fails and the sink commits nothing
    failed = run(tmp_path, SINK, store)
    assert failed.status == "failed" and "max_invalid_ratio" in str(failed.error)
    assert "10 of 100 rows invalid" in str(failed.error)
    assert (tmp_path / "out.parquet").read_bytes() == before
    assert store.latest_schema("out.parquet") is None  # nothing written, nothing registered

    # the contract's own threshold lets it through
    _write(tmp_path / "c.yaml", CONTRACT.replace("bogus1", "shipped") + textwrap.dedent("""
        customProperties:
          - {property: oxiflowMaxInvalidRatio, value: 0.1}
    """))  # fmt: skip
    result = run(tmp_path, SINK, store)
    assert result.status == "ok", result.error
    records = DlqTable(store).records(run_id=result.run_id)
    conserved(result, records)
    expected = duckdb.sql(f"SELECT * FROM read_csv('{src}') WHERE {VALID} ORDER BY id").to_arrow_table()
    got = pq.read_table(tmp_path / "out.parquet").sort_by("id")
    assert got.to_pylist() == expected.to_pylist()
    # every rule's DLQ count is the count `contract test` gives for the input
    report = run_contract(load_contract(str(tmp_path / "c.yaml")), str(src))
    failing = {r.check.id: r.measured for r in report.results if r.status == "failed"}
    by_rule: dict[str, int] = {}
    for r in records:
        by_rule[r.rule or ""] = by_rule.get(r.rule or "", 0) + 1
    assert by_rule == failing == {"orders.id.required": 4, "orders.amount.minimum": 3, "orders.status.enum": 3}
    # readable reasons, the offending values, PII masked
    negative = next(r for r in records if r.rule == "orders.amount.minimum")
    assert negative.reason == f"amount = {negative.raw['amount']} must be >= 0" and negative.values == {"amount": -5}
    bad_status = next(r for r in records if r.rule == "orders.status.enum")
    assert bad_status.reason == "status = 'bogus' must be one of ['new', 'paid', 'shipped']"
    null_id = next(r for r in records if r.rule == "orders.id.required")
    assert null_id.reason == "id = NULL must not be null (required)"
    assert all(r.masked == ["email"] and r.raw["email"].startswith("sha256:") for r in records)
    # the required column stays NOT NULL in the registry: its nulls were rejected rows, not a schema change
    v1 = store.latest_schema("out.parquet")
    assert v1 is not None and v1.version == 1
    assert not v1.schema.field("id").nullable and v1.schema.field("amount").type == pa.float64()
    assert result.metadata["write_parquet"]["validate"]["rows_invalid"] == 10
    # and the written data passes the contract
    assert run_contract(load_contract(str(tmp_path / "c.yaml")), str(tmp_path / "out.parquet")).passed


def test_dataset_checks_of_a_sink_contract_run_before_it_commits(tmp_path: Path, store: StateStore) -> None:
    _csv(tmp_path, "SELECT i AS id, i * 1.0 AS amount, 'new' AS status, 'x' AS email FROM range(10) t(i)")
    rule = "    quality:\n      - {type: library, metric: rowCount, mustBeGreaterThan: 50}\n"
    _write(tmp_path / "c.yaml", CONTRACT.replace("    properties:\n", rule + "    properties:\n"))
    result = run(tmp_path, SINK, store)
    assert result.status == "failed" and "orders.quality[0]" in str(result.error)
    assert not (tmp_path / "out.parquet").exists()


def test_integers_are_numbers(tmp_path: Path, store: StateStore) -> None:
    """CSV integers for a `number` field: accepted and written as double, as `contract test` accepts them."""
    src = _csv(tmp_path, "SELECT i AS id, i * 10 AS amount, 'new' AS status, 'a@b.c' AS email FROM range(5) t(i)")
    _write(tmp_path / "c.yaml", CONTRACT)
    assert run_contract(load_contract(str(tmp_path / "c.yaml")), str(src)).passed
    for _ in range(2):
        result = run(tmp_path, SINK, store)
        assert result.status == "ok", result.error
        assert result.dlq_count == 0
    assert Registry(store).approvals("out.parquet") == []
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.schema.field("amount").type == pa.float64()
    assert got.column("amount").to_pylist() == [float(i * 10) for i in range(5)]
    versions = store.schema_versions("out.parquet")
    assert len(versions) == 1 and versions[0].schema.field("amount").type == pa.float64()
    # doubles later (1.5) fit the same version
    _csv(tmp_path, "SELECT i AS id, i * 1.5 AS amount, 'new' AS status, 'a@b.c' AS email FROM range(5) t(i)")
    assert run(tmp_path, SINK, store).status == "ok"
    assert len(store.schema_versions("out.parquet")) == 1


def test_int64_beyond_double_goes_to_the_dlq(tmp_path: Path, store: StateStore) -> None:
    big = 2**53 + 1  # not a double
    (tmp_path / "in.csv").write_text(f"id,amount,status,email\n1,7,new,a\n2,{big},new,b\n", encoding="utf-8")
    _write(tmp_path / "c.yaml", CONTRACT + "customProperties:\n  - {property: oxiflowMaxInvalidRatio, value: 1}\n")
    result = run(tmp_path, SINK, store)
    assert result.status == "ok", result.error
    (record,) = DlqTable(store).records(run_id=result.run_id)
    assert record.rule == "schema_contract" and record.values == {"amount": big}
    assert "column amount: value does not fit the registered type double" in record.reason
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [
        {"id": 1, "amount": 7.0, "status": "new", "email": "a"}
    ]


def _ctx(tmp_path: Path) -> StepContext:
    dlq = DeadLetterQueue(tmp_path / "dlq.jsonl", "run-1", "p")
    return StepContext(step_id="out", oxi_name="write_parquet", run_id="run-1", base_dir=tmp_path, dlq=dlq)


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dlq.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


GATE = """
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: write_parquet
    id: out
    config: {path: out.parquet}
    dataset: ds
"""


def _gate(tmp_path: Path, keys: str) -> Any:
    return load_pipeline(_write(tmp_path / "p.yaml", GATE + keys)).step("out")


def test_pii_is_masked_in_schema_gate_records(tmp_path: Path, store: StateStore) -> None:
    """The sink gate's own rejects (discard_row): raw and values masked, as validate masks its."""
    _write(tmp_path / "c.yaml", CONTRACT + "customProperties:\n  - {property: oxiflowMaxInvalidRatio, value: 1}\n")
    store.record_schema("ds", pa.schema([("id", pa.int64(), False), ("amount", pa.float64()),
                                         ("status", pa.string()), ("email", pa.string())]))  # fmt: skip
    data = pa.table({"id": [1, 2], "amount": [1.0, 2.0], "status": ["new", "paid"], "email": ["a@x.io", "b@x.io"],
                     "extra": [None, "surprise"]})  # fmt: skip
    step = _gate(tmp_path, "    contract: c.yaml\n    schema_contract: discard_row\n")
    ctx = _ctx(tmp_path)
    gate = check(step, step.config, OxiData.from_table(data), ctx, store)
    assert gate.data.read_all().column("id").to_pylist() == [1]
    ctx.dlq.close()  # type: ignore[union-attr]
    (record,) = _records(tmp_path)
    assert record["rule"] == "schema_contract" and record["values"] == {"extra": "surprise"}
    assert record["masked"] == ["email"]
    salt = ctx.dlq.step_masking["out"].salt  # type: ignore[union-attr]
    assert record["raw"]["email"] == "sha256:" + hashlib.sha256((salt + "b@x.io").encode()).hexdigest()
    assert "b@x.io" not in (tmp_path / "dlq.jsonl").read_text()


def test_every_dlq_writer_masks_the_runs_pii(tmp_path: Path, store: StateStore) -> None:
    """A reader's rejected line and a cast's rejected row hold the email too: masked through the same path."""
    (tmp_path / "in.csv").write_text(
        "id,amount,status,email\n1,5,new,a@x.io\n2,oops,new,b@x.io\n3,4,new,c@x.io,extra\n4,4,new,d@x.io\n",
        encoding="utf-8",
    )
    _write(tmp_path / "c.yaml", CONTRACT)
    pipe = """
    metadata: {name: orders}
    pipeline:
      - name: read_csv
        config: {path: in.csv, on_error: dlq, all_varchar: true}
      - name: cast
        config: {columns: {amount: DOUBLE}, on_error: dlq}
      - name: validate
        config: {contract: c.yaml, max_invalid_ratio: 1, dlq: {salt: pepper}}
      - name: write_parquet
        config: {path: out.parquet}
    """
    result = run(tmp_path, textwrap.dedent(pipe), store)
    assert result.status == "ok", result.error
    records = DlqTable(store).records(run_id=result.run_id)
    conserved(result, records)
    by_step = {r.step: r for r in records}
    assert set(by_step) == {"read_csv", "cast"}
    reader, cast = by_step["read_csv"], by_step["cast"]
    assert reader.rule == "parse" and reader.masked == ["*"] and reader.line == 4
    assert reader.raw == "sha256:" + hashlib.sha256(b"pepper3,4,new,c@x.io,extra").hexdigest()
    assert cast.rule == "cast" and cast.masked == ["email"]
    assert cast.raw["email"] == "sha256:" + hashlib.sha256(b"pepperb@x.io").hexdigest()
    dumped = json.dumps([r.to_dict() for r in records]) + Path(result.dlq_path or "").read_text()
    assert "@x.io" not in dumped


MIXED = [
    # (schema_contract, rows written, rows rejected, values nulled): new column `extra` + `v` int64 -> int32
    ("{columns: discard_value, data_type: discard_row}", [{"id": 1, "v": 1}, {"id": 3, "v": 3}], 1, {"extra": 2}),
    # rows 1 and 3 have a value in the new column: to the DLQ; row 2's v does not fit int32: nulled
    ("{columns: discard_row, data_type: discard_value}", [{"id": 2, "v": None}], 2, {"v": 1}),
    ("{columns: evolve, data_type: discard_row}",
     [{"id": 1, "v": 1, "extra": "a"}, {"id": 3, "v": 3, "extra": "c"}], 1, {}),
]  # fmt: skip


@pytest.mark.parametrize(("modes", "rows", "rejected", "nulled"), MIXED, ids=["cols-value", "cols-row", "evolve"])
def test_mixed_modes_per_entity(
    tmp_path: Path, store: StateStore, modes: str, rows: list[dict[str, Any]], rejected: int, nulled: dict[str, int]
) -> None:
    store.record_schema("ds", pa.schema([("id", pa.int64()), ("v", pa.int32())]))
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "v": pa.array([1, 2**40, 3], pa.int64()),
                     "extra": ["a", None, "c"]})  # fmt: skip
    step = _gate(tmp_path, f"    schema_contract: {modes}\n    compatibility: none\n")
    ctx = _ctx(tmp_path)
    gate = check(step, step.config, OxiData.from_table(data), ctx, store)
    written = gate.data.read_all()
    gate.commit()
    assert written.to_pylist() == rows
    assert ctx.rows_rejected == rejected and written.num_rows + rejected == data.num_rows
    assert ctx.metadata.get("schema_values_nulled", {}) == nulled


@pytest.mark.parametrize(
    ("compat", "change", "blocked"),
    [
        ("forward", "add_required", False), ("forward", "widen", True), ("forward", "drop_required", True),
        ("full", "add_optional", False), ("full", "widen", True), ("full", "add_required", True),
        ("none", "string", False), ("backward", "add_required", True), ("backward", "widen", False),
    ],
)  # fmt: skip
def test_compatibility_modes_through_the_gate(
    tmp_path: Path, store: StateStore, compat: str, change: str, blocked: bool
) -> None:
    registered = pa.schema([pa.field("id", pa.int64(), False), pa.field("v", pa.int32())])
    incoming = {
        "add_required": pa.schema([pa.field("id", pa.int64(), False), pa.field("v", pa.int32()),
                                   pa.field("k", pa.int64(), False)]),
        "add_optional": pa.schema([pa.field("id", pa.int64(), False), pa.field("v", pa.int32()),
                                   pa.field("k", pa.int64())]),
        "widen": pa.schema([pa.field("id", pa.int64(), False), pa.field("v", pa.int64())]),
        "drop_required": pa.schema([pa.field("v", pa.int32())]),
        "string": pa.schema([pa.field("id", pa.int64(), False), pa.field("v", pa.string())]),
    }[change]  # fmt: skip
    store.record_schema("ds", registered)
    table = pa.Table.from_pylist([{n: (1 if not pa.types.is_string(f.type) else "x") for n, f in
                                   zip(incoming.names, incoming, strict=True)}], schema=incoming)  # fmt: skip
    step = _gate(tmp_path, f"    schema_contract: evolve\n    compatibility: {compat}\n")
    if blocked:
        with pytest.raises(SchemaChangeBlocked, match=f"compatibility: {compat}"):
            check(step, step.config, OxiData.from_table(table), _ctx(tmp_path), store)
        assert len(Registry(store).approvals("ds", pending_only=True)) == 1
        return
    gate = check(step, step.config, OxiData.from_table(table), _ctx(tmp_path), store)
    assert gate.data.read_all().num_rows == 1
    gate.commit()
    latest = store.latest_schema("ds")
    assert latest is not None and latest.version == 2 and latest.schema.equals(incoming)


def test_modes_declared_in_the_contract(tmp_path: Path, store: StateStore) -> None:
    """oxiflowSchemaContract on the schema object (wins over the contract-level one); the step's key wins over both."""
    dataset_level = "    customProperties:\n      - {property: oxiflowSchemaContract, value: {columns: freeze}}\n"
    contract_level = (
        "customProperties:\n  - {property: oxiflowSchemaContract, value: discard_row}\n"
        "  - {property: oxiflowCompatibility, value: none}\n"
    )
    text = CONTRACT.replace("    properties:\n", dataset_level + "    properties:\n") + contract_level
    _write(tmp_path / "c.yaml", text)
    contract = load_contract(str(tmp_path / "c.yaml"))
    assert contract.datasets[0].properties == {"oxiflowSchemaContract": {"columns": "freeze"}}
    store.record_schema("ds", pa.schema([("id", pa.int64(), False), ("amount", pa.float64()), ("status", pa.string()),
                                         ("email", pa.string())]))  # fmt: skip
    data = pa.table({"id": [1], "amount": [1.0], "status": ["new"], "email": ["e"], "extra": [1]})
    step = _gate(tmp_path, "    contract: c.yaml\n")
    with pytest.raises(SchemaChangeBlocked, match=r"columns=freeze"):
        check(step, step.config, OxiData.from_table(data), _ctx(tmp_path), store)
    step = _gate(tmp_path, "    contract: c.yaml\n    schema_contract: {columns: discard_value}\n")
    gate = check(step, step.config, OxiData.from_table(data), _ctx(tmp_path), store)
    assert gate.data.read_all().column_names == ["id", "amount", "status", "email"]


def test_a_bad_declared_mode_is_a_contract_error(tmp_path: Path, store: StateStore) -> None:
    from oxiflow.contracts.model import ContractError

    _write(tmp_path / "c.yaml", CONTRACT + "customProperties:\n  - {property: oxiflowSchemaContract, value: melt}\n")
    step = _gate(tmp_path, "    contract: c.yaml\n")
    with pytest.raises(ContractError, match="oxiflowSchemaContract of the contract: 'melt'"):
        check(step, step.config, OxiData.from_table(pa.table({"id": [1]})), _ctx(tmp_path), store)


VALIDATE = """
pipeline:
  - name: read_parquet
    config: {path: in.parquet}
  - name: validate
    config: {contract: c.yaml, max_invalid_ratio: 1%s}
  - name: write_parquet
    config: {path: out.parquet}
"""


def test_modes_on_the_validate_step(tmp_path: Path, store: StateStore) -> None:
    _write(tmp_path / "c.yaml", CONTRACT)
    pq.write_table(pa.table({"id": [1, 2, 3], "amount": ["1.5", "x", "3"], "status": ["new"] * 3,
                             "email": ["e"] * 3, "extra": [None, "y", None]}), tmp_path / "in.parquet")  # fmt: skip
    # freeze: the extra column is a change the contract does not allow; the step fails before any row moves
    frozen = run(tmp_path, VALIDATE % ", schema_contract: freeze", store)
    assert frozen.status == "failed" and "column extra" in str(frozen.error)
    assert not (tmp_path / "out.parquet").exists()
    # discard_row on columns, discard_value on types: the row with `extra` goes, "x" becomes null (recorded)
    modes = ", schema_contract: {columns: discard_row, data_type: discard_value}"
    result = run(tmp_path, VALIDATE % modes, store)
    assert result.status == "ok", result.error
    records = DlqTable(store).records(run_id=result.run_id)
    conserved(result, records)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [
        {"id": 1, "amount": 1.5, "status": "new", "email": "e"},
        {"id": 3, "amount": 3.0, "status": "new", "email": "e"},
    ]
    assert [(r.rule, r.values) for r in records] == [("schema_contract", {"extra": "y"})]
    # without modes validate checks values only: the text amounts are cast-checked by the contract's type rule
    plain = run(tmp_path, VALIDATE % "", store, "p2.yaml")
    assert plain.status == "ok", plain.error
    assert {r.rule for r in DlqTable(store).records(run_id=plain.run_id)} == {"orders.amount.type"}


def test_unsupported_contract_parts_are_reported(
    tmp_path: Path, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    text = CONTRACT + textwrap.dedent("""
        slaProperties:
          - {property: retention, value: 3, unit: y}
    """)  # fmt: skip
    text = text.replace(
        "      - {name: email,",
        "      - {name: cust, logicalType: integer, relationships: [{to: customers.id}]}\n"
        "      - {name: email, quality: [{type: custom, engine: soda, implementation: 'x > 0'}],",
    )
    _write(tmp_path / "c.yaml", text)
    pq.write_table(pa.table({"id": [1], "amount": [1.0], "status": ["new"], "email": ["e"], "cust": [1]}),
                   tmp_path / "in.parquet")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="oxiflow.validate"):
        result = run(tmp_path, VALIDATE % "", store)
    assert result.status == "ok", result.error
    reported = result.metadata["validate"]["contract_unsupported"]
    assert reported == load_contract(str(tmp_path / "c.yaml")).unsupported
    joined = " | ".join(reported)
    assert "relationships" in joined and "soda" in joined and "retention" in joined
    assert any("does not check" in r.message and "retention" in r.message for r in caplog.records)


def test_every_sink_dataset_is_tracked(tmp_path: Path, store: StateStore) -> None:
    """No gate keys: drift reported and versions recorded on every run; nothing blocked."""
    pipe = "settings: {pushdown: false}\npipeline:\n  - name: read_parquet\n    config: {path: in.parquet}\n" \
           "  - name: write_parquet\n    config: {path: out.parquet}\n"  # fmt: skip
    pq.write_table(pa.table({"a": pa.array([1], pa.int32()), "b": ["x"]}), tmp_path / "in.parquet")
    first = run(tmp_path, pipe, store)
    assert first.status == "ok" and first.metadata["write_parquet"]["schema_version"] == 1
    assert run(tmp_path, pipe, store).metadata["write_parquet"]["schema_version"] == 1  # unchanged: no version
    pq.write_table(pa.table({"a": ["now text"], "c": [1.5]}), tmp_path / "in.parquet")
    third = run(tmp_path, pipe, store)
    assert third.status == "ok", third.error  # no contract, no gate: a type change is reported, not blocked
    meta = third.metadata["write_parquet"]
    assert meta["schema_version"] == 2 and meta["dataset"] == "out.parquet"
    assert [(d["column"], d["kind"]) for d in meta["schema_drift"]] == [
        ("a", "type_changed"),
        ("b", "column_removed"),
        ("c", "column_added"),
    ]
    assert [(d["column"], d["kind"]) for d in Registry(store).drift("out.parquet", 2) or []] == [
        ("a", "type_changed"),
        ("b", "column_removed"),
        ("c", "column_added"),
    ]
    assert Registry(store).approvals() == []
    # --no-state: nothing to track in, and the run is not refused
    assert run(tmp_path, pipe, None).status == "ok"
