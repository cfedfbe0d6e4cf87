"""oxis/files/duckscan.py: DuckDB's reader errors, produced by DuckDB itself, become DataErrors that say
what is wrong in words, with file, record number and column; an interrupt is a cancellation."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from oxiflow.errors import DataError, RunCancelled
from oxiflow.oxis.files.duckscan import translate_scan_error

PINNED = "delim=',', quote='\"', escape='\"', header=true, auto_detect=false"


def duck_error(path: Path, text: str, columns: str) -> duckdb.Error:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(duckdb.Error) as err:
        duckdb.sql(f"SELECT * FROM read_csv('{path}', {PINNED}, columns={columns})").fetchall()
    return err.value


@pytest.mark.parametrize(
    ("text", "columns", "message", "record", "column"),
    [
        (
            "a,b\n1,2\n3,4,5\n",
            "{'a': 'INT', 'b': 'INT'}",
            "malformed CSV record (expected 2 fields, found 3): 3,4,5",
            3,
            None,
        ),
        (
            "a,b\n1,2\nx,4\n",
            "{'a': 'INT', 'b': 'INT'}",
            "malformed CSV record (cannot convert 'x' to INTEGER): x,4",
            3,
            "a",
        ),
        (
            'a,b\n1,"open\n2,3\n',
            "{'a': 'INT', 'b': 'VARCHAR'}",
            'malformed CSV record (a quoted value is never closed: unterminated quote): 1,"open',
            2,
            None,
        ),
    ],
)
def test_csv_record_errors(
    tmp_path: Path, text: str, columns: str, message: str, record: int, column: str | None
) -> None:
    exc = duck_error(tmp_path / "in.csv", text, columns)
    err = translate_scan_error(exc, [str(tmp_path / "in.csv")])
    assert isinstance(err, DataError)
    assert err.message == message
    assert (err.context["record_number"], err.context.get("column")) == (record, column)
    assert err.context["file"] == str(tmp_path / "in.csv")
    assert "Possible fixes" not in str(err)


def test_a_sniffing_failure_is_said_in_words(tmp_path: Path) -> None:
    text = 'skip me\nid,name\n1,"a, b"\n3,"unterminated\n4,dan,extra\n'
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    with pytest.raises(duckdb.Error) as exc:
        duckdb.sql(f"SELECT * FROM read_csv('{tmp_path / 'in.csv'}', skip=1, delim=',', quote='\"')").fetchall()
    err = translate_scan_error(exc.value, [str(tmp_path / "in.csv")])
    assert isinstance(err, DataError) and "Delimiter Candidates" not in str(err)
    assert "could not be decoded as CSV at all" in (err.hint or "")


def test_an_interrupt_arriving_through_arrow_is_a_cancellation() -> None:
    err = translate_scan_error(pa.ArrowInvalid("INTERRUPT Error: Interrupted!"), ["x.csv"])
    assert isinstance(err, RunCancelled)
