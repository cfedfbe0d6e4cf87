"""Every Arrow type of the corpora survives the pipe: `oxi cat F | oxi write out.arrow` gives the
schema (field and schema metadata included) and the values the reference reader gives.

In-process, every readable Arrow IPC and Parquet file of arrow-testing / parquet-testing goes
through write_pipe -> a real OS pipe -> read_pipe. Through real processes, a set of files that
together holds every type found in the corpora (chosen from the schemas, so the test follows the
corpora) goes through `oxi cat | oxi write`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import OxiflowError
from oxiflow.oxi import StepContext
from oxiflow.pipe.inputs import open_input
from oxiflow.pipe.stdio import ReadPipe, ReadPipeConfig, WritePipe, WritePipeConfig

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"  # shared/ sits next to the repo
if not TESTDATA.is_dir():
    raise RuntimeError(f"conformance corpora missing: {TESTDATA} (see docs/contributing.md)")
ORACLES = TESTDATA / "_oracles"
OXI = str(Path(sys.executable).with_name("oxi"))
pytestmark = pytest.mark.timeout(120)


def _oracle(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (ORACLES / name).read_text().splitlines() if line.strip()]


@cache
def corpus() -> dict[str, str]:
    """File (relative to TESTDATA) -> its format, for the files the reference readers read."""
    out = {}
    for r in _oracle("arrow-ipc.pyarrow.jsonl"):
        if isinstance(r["pyarrow_26.0.1_rows_or_error"], int):
            out[str(r["file"])] = "arrow"
    for r in _oracle("parquet.readers.jsonl"):
        # pyarrow reads it, and so does DuckDB (read_parquet's engine): a file oxiflow can cat
        if isinstance(r["pyarrow"], int) and isinstance(r["duckdb"], int):
            out[str(r["file"])] = "parquet"
    return out


@cache
def engine_rejects(file: str) -> str | None:
    """DuckDB's error when the installed DuckDB refuses a Parquet file the recorded oracle read
    (2.0.1 refuses out-of-range INT96 timestamps that 2.0.0 wrapped around), else None."""
    if corpus()[file] != "parquet":
        return None
    try:
        duckdb.sql(f"SELECT * FROM read_parquet('{TESTDATA / file}')").arrow().read_all()
    except duckdb.Error as exc:
        return str(exc)
    return None


def reference(file: str) -> pa.Table:
    """The file as the reader oxiflow uses reads it: pyarrow for Arrow IPC, DuckDB for Parquet."""
    path = TESTDATA / file
    if corpus()[file] == "arrow":
        with open(path, "rb") as fh:
            magic = fh.read(6)
        reader = ipc.open_file(path) if magic == b"ARROW1" else ipc.open_stream(path)
        return reader.read_all()
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}')").arrow().read_all()


def same(got: pa.Table, expected: pa.Table) -> None:
    assert got.schema.equals(expected.schema, check_metadata=True), f"{got.schema}\n!=\n{expected.schema}"
    assert got.num_rows == expected.num_rows
    for name, a, b in zip(got.column_names, got.columns, expected.columns, strict=True):
        if not a.equals(b):  # NaN != NaN in Arrow's equality: compare the Python values
            left, right = a.to_pylist(), b.to_pylist()
            assert json.dumps(left, default=repr) == json.dumps(right, default=repr), name


def _kinds(t: pa.DataType, out: set[str]) -> None:
    if isinstance(t, pa.BaseExtensionType):
        out.add("ext:" + t.extension_name)
        _kinds(t.storage_type, out)
    elif pa.types.is_dictionary(t):
        out.add("dictionary")
        _kinds(t.value_type, out)
    else:
        out.add(str(t).split("[")[0].split("(")[0].split("<")[0])
        for i in range(t.num_fields):
            _kinds(t.field(i).type, out)


def kinds(schema: pa.Schema) -> set[str]:
    out: set[str] = set()
    for f in schema:
        _kinds(f.type, out)
    if any(f.metadata for f in schema):
        out.add("field metadata")
    if schema.metadata:
        out.add("schema metadata")
    return out


@cache
def covering_files() -> list[str]:
    """A few files that together hold every type kind of the corpora (greedy set cover)."""
    found = {f: kinds(reference(f).schema) for f in sorted(corpus()) if engine_rejects(f) is None}
    chosen, left = [], set().union(*found.values())
    while left:
        best = max(found, key=lambda f: (len(found[f] & left), -(TESTDATA / f).stat().st_size))
        chosen.append(best)
        left -= found[best]
    return chosen


def through_pipe(data: OxiData) -> pa.Table:
    r, w = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            WritePipe(WritePipeConfig(path=f"/dev/fd/{w}", format="arrow")).write(data, StepContext("w", "w", "t"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(w)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        got = ReadPipe(ReadPipeConfig(path=f"/dev/fd/{r}")).read(StepContext("r", "r", "t")).read_all()
    finally:
        os.close(r)
        t.join()
    assert not errors, errors
    return got


@pytest.mark.parametrize("file", sorted(corpus()))
def test_protocol_round_trip_of_every_readable_file(file: str) -> None:
    source = open_input(str(TESTDATA / file), corpus()[file])
    rejected = engine_rejects(file)
    if rejected is not None:  # the engine refuses the file: oxiflow says so, it does not crash
        with pytest.raises(OxiflowError):
            through_pipe(source.data())
        return
    same(through_pipe(source.data()), reference(file))


@pytest.mark.parametrize("file", covering_files())
def test_every_type_survives_oxi_cat_pipe_oxi_write(file: str, tmp_path: Path) -> None:
    fmt = corpus()[file]
    producer = subprocess.Popen(
        [OXI, "cat", "-F", fmt, str(TESTDATA / file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    consumer = subprocess.run(
        [OXI, "write", "out.arrow"], stdin=producer.stdout, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert producer.stdout is not None
    producer.stdout.close()
    _, producer_err = producer.communicate(timeout=60)
    assert producer.returncode == 0, producer_err
    assert consumer.returncode == 0, consumer.stderr
    same(ipc.open_file(tmp_path / "out.arrow").read_all(), reference(file))
