"""write_avro: the object container file read back with fastavro (the oracle): records, schema, codec."""

from __future__ import annotations

from pathlib import Path

import fastavro
import pyarrow as pa
import pytest

from oxiflow.data import OxiData
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.avro import WriteAvro, WriteAvroConfig

ROWS = pa.table(
    {
        "id": pa.array([1, 2], pa.int64()),
        "name": pa.array(["ann", None], pa.string()),
        "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
        "score": pa.array([1.5, 2.0], pa.float64()),
        "ok": pa.array([True, False]),
    }
)


def write(tmp_path: Path, **cfg: object) -> tuple[list[dict], str, dict]:
    """The records, codec and schema of the written file, as fastavro reads them."""
    ctx = StepContext("w", "write_avro", "t", base_dir=tmp_path)
    WriteAvro(WriteAvroConfig(path="out.avro", **cfg)).write(OxiData.from_table(ROWS), ctx)  # type: ignore[arg-type]
    with (tmp_path / "out.avro").open("rb") as fh:
        reader = fastavro.reader(fh)
        return list(reader), reader.codec, reader.writer_schema  # type: ignore[return-value]


@pytest.mark.parametrize("codec", ["null", "deflate", "zstandard", "bzip2", "xz"])
def test_records_and_codec(tmp_path: Path, codec: str) -> None:
    records, written_codec, _ = write(tmp_path, codec=codec)
    assert records == [
        {"id": 1, "name": "ann", "tags": ["a", "b"], "score": 1.5, "ok": True},
        {"id": 2, "name": None, "tags": [], "score": 2.0, "ok": False},
    ]
    assert written_codec == codec


def test_schema_from_arrow(tmp_path: Path) -> None:
    _, _, schema = write(tmp_path, record_name="Order")
    assert schema["type"] == "record" and schema["name"] == "Order"
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert fields["id"] in ("long", ["null", "long"])
    assert fields["name"] == ["null", "string"]  # a nullable column is a union with null
    assert "double" in str(fields["score"]) and "boolean" in str(fields["ok"])


def test_maps_and_logical_types_at_any_depth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Maps become Avro maps (Arrow gives key/value pairs), nested in structs and lists too; dates, times
    and timestamps are written as the integers of their logical type, including values no Python
    datetime holds (year 10000 and later)."""
    far = 10_000 * 366 * 86_400  # seconds: past year 9999
    table = pa.table(
        {
            "m": pa.array([[("a", 1), ("b", None)], None, []], pa.map_(pa.string(), pa.int64())),
            "s": pa.array(
                [{"tags": [("k", "v")]}, {"tags": None}, None], pa.struct([("tags", pa.map_(pa.string(), pa.string()))])
            ),
            "l": pa.array([[[("x", 1.5)]], [], None], pa.list_(pa.map_(pa.string(), pa.float64()))),
            "ts_s": pa.array([far, 0, None], pa.timestamp("s", tz="UTC")),
            "ts_ns": pa.array([1_500, -2_000_001_000, None], pa.timestamp("ns")),
            "d": pa.array([3_000_000, -1, None], pa.date32()),
            "t": pa.array([1, 86_399_999_999, None], pa.time64("us")),
            "nested_ts": pa.array(
                [{"at": far * 1_000_000}, None, {"at": None}], pa.struct([("at", pa.timestamp("us"))])
            ),
        }
    )
    ctx = StepContext("w", "write_avro", "t", base_dir=tmp_path)
    WriteAvro(WriteAvroConfig(path="out.avro")).write(OxiData.from_table(table), ctx)
    with (tmp_path / "out.avro").open("rb") as fh:
        schema = fastavro.reader(fh).writer_schema
    # the integers as written: fastavro's decoder without its conversions of int and long logical types
    for key in [k for k in fastavro.logical_readers.LOGICAL_READERS if k.startswith(("int-", "long-"))]:
        monkeypatch.delitem(fastavro.logical_readers.LOGICAL_READERS, key)
    with (tmp_path / "out.avro").open("rb") as fh:
        records = list(fastavro.reader(fh))
    logical = {f["name"]: next(b for b in f["type"] if b != "null").get("logicalType") for f in schema["fields"][3:7]}
    assert logical == {"ts_s": "timestamp-millis", "ts_ns": "local-timestamp-micros", "d": "date", "t": "time-micros"}
    assert records == [
        {"m": {"a": 1, "b": None}, "s": {"tags": {"k": "v"}}, "l": [{"x": 1.5}], "ts_s": far * 1000, "ts_ns": 1,
         "d": 3_000_000, "t": 1, "nested_ts": {"at": far * 1_000_000}},
        {"m": None, "s": {"tags": None}, "l": [], "ts_s": 0, "ts_ns": -2_000_001, "d": -1, "t": 86_399_999_999,
         "nested_ts": None},
        {"m": {}, "s": None, "l": None, "ts_s": None, "ts_ns": None, "d": None, "t": None, "nested_ts": {"at": None}},
    ]  # fmt: skip


def test_maps_read_back_as_written(tmp_path: Path) -> None:
    from oxiflow.oxis.files.avro import ReadAvro, ReadAvroConfig

    table = pa.table(
        {
            "m": pa.array([[("a", 1), ("b", None)], None, []], pa.map_(pa.string(), pa.int64())),
            "l": pa.array([[[("x", "y")]], [], None], pa.list_(pa.map_(pa.string(), pa.string()))),
        }
    )
    ctx = StepContext("w", "write_avro", "t", base_dir=tmp_path)
    WriteAvro(WriteAvroConfig(path="out.avro")).write(OxiData.from_table(table), ctx)
    back = ReadAvro(ReadAvroConfig(path="out.avro")).read(ctx).read_all()
    assert back.to_pylist() == table.to_pylist()
