"""read_avro / write_avro: schema mapping, logical types, batching, corrupt input (oracle: fastavro)."""

import datetime as dt
import decimal
import uuid
from pathlib import Path

import fastavro
import pyarrow as pa
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.avro import ReadAvro, ReadAvroConfig, WriteAvro, WriteAvroConfig

SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "color", "type": {"type": "enum", "name": "C", "symbols": ["RED", "BLUE"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "inner", "type": {"type": "record", "name": "I", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    ],
}
U = uuid.UUID(int=7)


def record(i: int) -> dict:
    return {
        "id": i,
        "name": None if i % 2 else f"n{i}",
        "color": "RED" if i % 2 else "BLUE",
        "tags": ["a"] * (i % 3),
        "inner": {"x": i},
        "day": dt.date(2024, 1, 1) + dt.timedelta(days=i),
        "ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
        "amount": decimal.Decimal(i) / 100,
        "uid": U,
    }


def ctx(tmp_path: Path) -> StepContext:
    return StepContext("s", "avro", "t", base_dir=tmp_path, batch_size=4)


def test_schema_mapping_and_batches(tmp_path: Path) -> None:
    with open(tmp_path / "x.avro", "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(SCHEMA), [record(i) for i in range(10)], codec="deflate")
    data = ReadAvro(ReadAvroConfig(path="x.avro")).read(ctx(tmp_path))
    s = data.schema
    assert s.field("name").nullable and not s.field("id").nullable
    assert s.field("inner").type == pa.struct([pa.field("x", pa.int32(), nullable=False)])
    assert s.field("day").type == pa.date32() and s.field("ts").type == pa.timestamp("us", tz="UTC")
    assert s.field("amount").type == pa.decimal128(9, 2) and s.field("color").type == pa.string()
    batches = list(data)
    assert [b.num_rows for b in batches] == [4, 4, 2]
    got = pa.Table.from_batches(batches).to_pylist()
    expected = [{**record(i), "uid": str(U)} for i in range(10)]
    assert got == expected


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "s": pa.array(["a", None, "c"]),
            "l": pa.array([[1], [], None], pa.list_(pa.int32())),
            "st": pa.array([{"k": 1.5}, {"k": None}, None]),
            "ts": pa.array([0, 1000, None], pa.timestamp("ms", tz="UTC")),
            "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.50")], pa.decimal128(6, 2)),
        }
    )
    WriteAvro(WriteAvroConfig(path="x.avro", codec="zstandard")).write(OxiData.from_table(table), ctx(tmp_path))
    with open(tmp_path / "x.avro", "rb") as fh:
        oracle = list(fastavro.reader(fh))
    assert [r["id"] for r in oracle] == [1, 2, 3] and oracle[1]["s"] is None
    got = ReadAvro(ReadAvroConfig(path="x.avro")).read(ctx(tmp_path)).read_all()
    assert got.to_pylist() == table.to_pylist()


def test_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    with open(tmp_path / "x.avro", "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(SCHEMA), [record(i) for i in range(50)], codec="null")
    raw = (tmp_path / "x.avro").read_bytes()
    (tmp_path / "cut.avro").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(DataError) as err:
        ReadAvro(ReadAvroConfig(path="cut.avro")).read(ctx(tmp_path)).read_all()
    assert err.value.context["file"].endswith("cut.avro")
