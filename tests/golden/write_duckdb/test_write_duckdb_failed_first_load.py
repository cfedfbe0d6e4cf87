"""A failed first load into a new DuckDB file leaves no (empty) database behind; a failed load into an
existing database leaves it as it was."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from oxiflow.data import OxiData
from oxiflow.oxi import StepContext
from oxiflow.oxis.databases.duckdb import WriteDuckdb, WriteDuckdbConfig

ROWS = pa.table({"id": [1, 2]})


def failing() -> OxiData:
    def batches():  # type: ignore[no-untyped-def]
        yield ROWS.to_batches()[0]
        raise RuntimeError("the input broke")

    return OxiData(ROWS.schema, batches())


def test_a_failed_first_load_leaves_no_database_file(tmp_path: Path) -> None:
    ctx = StepContext("w", "write_duckdb", "t", base_dir=tmp_path)
    with pytest.raises(Exception, match="the input broke"):
        WriteDuckdb(WriteDuckdbConfig(database="late.duckdb", table="t")).write(failing(), ctx)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_load_into_an_existing_database_keeps_it(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE TABLE keep AS SELECT 42 AS x")
    con.close()
    ctx = StepContext("w", "write_duckdb", "t", base_dir=tmp_path)
    with pytest.raises(Exception, match="the input broke"):
        WriteDuckdb(WriteDuckdbConfig(database="w.duckdb", table="t")).write(failing(), ctx)
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("SELECT x FROM keep").fetchall() == [(42,)]
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'").fetchall() == [(0,)]
    con.close()
