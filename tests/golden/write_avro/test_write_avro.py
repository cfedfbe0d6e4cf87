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
