"""The pipe protocol in-process: read_pipe / write_pipe over a real OS pipe, format detection,
the abort marker, tail's bounded memory and the terminal table."""

from __future__ import annotations

import gzip
import io
import os
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.pipe.stdio import ABORT_MESSAGE, ReadPipe, ReadPipeConfig, WritePipe, WritePipeConfig, detect
from oxiflow.pipe.table import display_width, render_stream
from oxiflow.pipe.tail import LastRows, Tail, TailConfig


def ctx() -> StepContext:
    return StepContext("t", "t", "test")


def pipe_bytes(payload: bytes, **config: object) -> OxiData:
    """``payload`` written into a real pipe by a thread, read back by read_pipe."""
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as fh:
            fh.write(payload)

    threading.Thread(target=feed, daemon=True).start()
    try:
        return OxiData.from_table(ReadPipe(ReadPipeConfig(path=f"/dev/fd/{r}", **config)).read(ctx()).read_all())
    finally:
        os.close(r)


def through_pipe(table: pa.Table, fmt: str = "arrow") -> pa.Table:
    """``table`` written by write_pipe into a real pipe and read back by read_pipe."""
    r, w = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            WritePipe(WritePipeConfig(path=f"/dev/fd/{w}", format=fmt)).write(OxiData.from_table(table), ctx())  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(w)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        got = ReadPipe(ReadPipeConfig(path=f"/dev/fd/{r}")).read(ctx()).read_all()
    finally:
        os.close(r)
        t.join()
    assert not errors, errors
    return got


def sample() -> pa.Table:
    field_meta = {b"description": b"order id", b"pii": b"false"}
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False, metadata=field_meta),
            pa.field("amount", pa.decimal128(10, 2)),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("where", pa.struct([("city", pa.string()), ("zip", pa.int32())])),
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("kind", pa.dictionary(pa.int8(), pa.string())),
            pa.field("ratio", pa.float64()),
        ],
        metadata={b"source": b"unit test"},
    )
    rows = 5000
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "amount": pa.array([None if i % 7 == 0 else i * 0.01 for i in range(rows)]).cast(pa.decimal128(10, 2)),
            "tags": pa.array([[f"t{i % 3}"] * (i % 4) if i % 5 else None for i in range(rows)]),
            "where": pa.array([{"city": f"c{i % 9}", "zip": i} if i % 11 else None for i in range(rows)]),
            "at": pa.array([i * 1_000_000 for i in range(rows)], pa.timestamp("us", tz="UTC")),
            "kind": pa.array([["a", "b", None][i % 3] for i in range(rows)])
            .dictionary_encode()
            .cast(pa.dictionary(pa.int8(), pa.string())),
            "ratio": pa.array([float("nan") if i % 13 == 0 else i / 3 for i in range(rows)]),
        },
        schema=schema,
    )


def test_arrow_round_trip_keeps_types_metadata_and_values() -> None:
    table = sample()
    got = through_pipe(table)
    assert got.schema.equals(table.schema, check_metadata=True)
    # NaN != NaN in Arrow's equality: compare the NaN positions, then the rest
    assert got.drop_columns(["ratio"]).equals(table.drop_columns(["ratio"]))
    assert got.column("ratio").to_pylist()[1:13] == table.column("ratio").to_pylist()[1:13]
    assert [x != x for x in got.column("ratio").to_pylist()] == [x != x for x in table.column("ratio").to_pylist()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_other_formats_round_trip_through_detection(fmt: str) -> None:
    table = pa.table({"id": pa.array(range(3000), pa.int64()), "name": [f"n{i}" for i in range(3000)]})
    got = through_pipe(table, fmt)
    assert got.column_names == ["id", "name"]
    assert got.column("id").to_pylist() == list(range(3000))
    assert got.column("name").to_pylist() == [f"n{i}" for i in range(3000)]


def test_detect_by_first_bytes(tmp_path: Path) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), sink)
    assert detect(sink.getvalue()) == "parquet"
    assert detect(b"\xff\xff\xff\xff\x10\x00\x00\x00") == "arrow"
    assert detect(b"ARROW1\x00\x00") == "arrow_file"
    assert detect(b'\xef\xbb\xbf  {"a": 1}\n') == "jsonl"
    assert detect(b"[{}]") == "json"
    assert detect(b"a;b\n1;2\n") == "csv"
    assert detect(gzip.compress(b"a\n")) == "gzip"


def test_gzip_csv_with_sniffed_delimiter() -> None:
    got = pipe_bytes(gzip.compress(b"a;b\n1;x\n2;y\n")).read_all()
    assert got.to_pydict() == {"a": [1, 2], "b": ["x", "y"]}


def test_json_array_document_is_spooled_and_read_like_a_file() -> None:
    got = pipe_bytes(b'[{"a": 1, "b": "x"}, {"a": 2, "b": null}]').read_all()
    expected = duckdb.sql("select * from (values (1, 'x'), (2, null)) t(a, b)").arrow()
    assert got.to_pylist() == expected.read_all().to_pylist()


def test_aborted_stream_fails_the_reader() -> None:
    table = pa.table({"a": [1, 2, 3]})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    truncated = sink.getvalue()[:-8] + ABORT_MESSAGE  # the end-of-stream marker replaced
    with pytest.raises(DataError, match="Arrow IPC stream is broken"):
        pipe_bytes(truncated)


def test_empty_input_is_an_error_naming_the_pipe() -> None:
    with pytest.raises(DataError, match="no data"):
        pipe_bytes(b"")


def test_last_rows_keeps_n_rows_plus_one_batch() -> None:
    last = LastRows(25)
    most = 0
    for start in range(0, 1000, 10):
        last.add(pa.record_batch({"x": pa.array(range(start, start + 10))}))
        most = max(most, last.rows)
    assert most <= 25 + 10
    assert pa.Table.from_batches(last.result()).column("x").to_pylist() == list(range(975, 1000))


def test_tail_oxi_counts_the_rest_as_filtered() -> None:
    c = ctx()
    data = OxiData.from_table(pa.table({"x": list(range(100))}).combine_chunks())
    out = Tail(TailConfig(n=3)).transform([data], c).read_all()
    assert out.column("x").to_pylist() == [97, 98, 99]
    assert c.rows_filtered == 97


def test_table_shows_types_count_and_hides_what_does_not_fit() -> None:
    table = pa.table({"id": list(range(50)), "name": [f"名前{i}" for i in range(50)], "wide": ["x" * 80] * 50})
    text, rows = render_stream(OxiData.from_table(table), width=40, max_rows=6)
    lines = text.splitlines()
    assert rows == 50
    assert lines[0].split() == ["id", "name"] and lines[1].split() == ["int64", "string"]
    assert all(display_width(line) <= 40 for line in lines[:-1])
    assert "…" in lines[6]  # first 3, ellipsis row, last 3
    assert lines[3].split() == ["0", "名前0"] and lines[-3].split() == ["49", "名前49"]
    assert "50 rows × 3 columns" in lines[-2]
    assert lines[-1] == "1 more column(s): wide"
