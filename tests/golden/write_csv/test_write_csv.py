"""write_csv: the bytes written for each option (hand-checked), read back with Python's csv module as
the oracle; atomic on failure."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from pathlib import Path

import pyarrow as pa
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.csv import WriteCsv, WriteCsvConfig

ROWS = pa.table(
    {
        "id": pa.array([1, 2], pa.int64()),
        "name": ['Zoë, "the" first', None],
        "amount": [2.5, -1.0],
        "day": [dt.date(2024, 1, 2), dt.date(2024, 12, 31)],
    }
)


def write(tmp_path: Path, table: pa.Table = ROWS, **cfg: object) -> bytes:
    path = str(cfg.pop("path", "out.csv"))
    ctx = StepContext("w", "write_csv", "t", base_dir=tmp_path)
    WriteCsv(WriteCsvConfig(path=path, **cfg)).write(OxiData.from_table(table), ctx)  # type: ignore[arg-type]
    assert ctx.metadata["rows"] == table.num_rows
    return (tmp_path / path).read_bytes()


def test_default_is_rfc4180_minimal_quoting(tmp_path: Path) -> None:
    out = write(tmp_path)
    assert out == b'id,name,amount,day\n1,"Zo\xc3\xab, ""the"" first",2.5,2024-01-02\n2,,-1.0,2024-12-31\n'
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows[1] == ["1", 'Zoë, "the" first', "2.5", "2024-01-02"]


def test_delimiter_and_no_header(tmp_path: Path) -> None:
    out = write(tmp_path, delimiter=";", header=False)
    assert out.decode() == '1;"Zoë, ""the"" first";2.5;2024-01-02\n2;;-1.0;2024-12-31\n'


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("all", '"id","name","amount","day"\n"1","Zoë, ""the"" first","2.5","2024-01-02"\n"2",,"-1.0","2024-12-31"\n'),
        (
            "non_numeric",
            'id,"name",amount,"day"\n1,"Zoë, ""the"" first",2.5,"2024-01-02"\n2,,-1.0,"2024-12-31"\n',
        ),
        ("none", 'id,name,amount,day\n1,Zoë, "the" first,2.5,2024-01-02\n2,,-1.0,2024-12-31\n'),
    ],
)
def test_quote_styles(tmp_path: Path, style: str, expected: str) -> None:
    assert write(tmp_path, quote_style=style).decode() == expected


def test_null_value(tmp_path: Path) -> None:
    out = write(tmp_path, null_value="NA").decode()
    assert out.splitlines()[2] == "2,NA,-1.0,2024-12-31"


@pytest.mark.parametrize(
    ("encoding", "python"), [("latin-1", "latin-1"), ("utf-16", "utf-16"), ("utf-8-sig", "utf-8-sig")]
)
def test_encodings(tmp_path: Path, encoding: str, python: str) -> None:
    out = write(tmp_path, encoding=encoding)
    utf8 = write(tmp_path, path="plain.csv")
    assert out == utf8.decode("utf-8").encode(python)  # the same CSV, in the encoding asked for
    if encoding == "utf-8-sig":
        assert out.startswith(b"\xef\xbb\xbf")


def test_an_encoding_that_cannot_hold_a_value_fails_and_writes_nothing(tmp_path: Path) -> None:
    table = pa.table({"name": ["ok", "日本"]})
    with pytest.raises(DataError) as err:
        write(tmp_path, table, encoding="latin-1")
    assert "'日本'" in err.value.message and "latin-1" in err.value.message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_gzip_by_extension(tmp_path: Path, encoding: str) -> None:
    out = write(tmp_path, path="out.csv.gz", encoding=encoding)
    assert gzip.decompress(out).decode(encoding).startswith('id,name,amount,day\n1,"Zoë')


def test_a_failing_stream_leaves_no_file(tmp_path: Path) -> None:
    def batches():  # type: ignore[no-untyped-def]
        yield ROWS.to_batches()[0]
        raise RuntimeError("the input broke")

    ctx = StepContext("w", "write_csv", "t", base_dir=tmp_path)
    with pytest.raises(Exception, match="the input broke"):
        WriteCsv(WriteCsvConfig(path="out.csv")).write(OxiData(ROWS.schema, batches()), ctx)
    assert list(tmp_path.iterdir()) == []
