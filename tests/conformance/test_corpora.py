"""Corpus read tests: oxiflow reads what the reference readers read (same rows) and rejects the
rest with an OxiflowError, never a crash or hang. Oracles: ../shared/testdata/_oracles/ (pyarrow,
DuckDB, fastavro results recorded per file) and the corpora's own expected outputs."""

from __future__ import annotations

import json

import duckdb
import pytest

from _corpus import TESTDATA, live_duckdb_rows
from oxiflow.errors import OxiflowError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.arrow_ipc import ReadArrow, ReadArrowConfig
from oxiflow.oxis.files.avro import ReadAvro, ReadAvroConfig
from oxiflow.oxis.files.csv import ReadCsv, ReadCsvConfig
from oxiflow.oxis.files.json import ReadJson, ReadJsonConfig
from oxiflow.oxis.files.parquet import ReadParquet, ReadParquetConfig

if not TESTDATA.is_dir():
    raise RuntimeError(f"conformance corpora missing: {TESTDATA} (see docs/contributing.md)")

pytestmark = pytest.mark.timeout(20)
ORACLES = TESTDATA / "_oracles"


def oracle(name: str, key: str) -> list[tuple[str, int | str]]:
    rows = [json.loads(line) for line in (ORACLES / name).read_text().splitlines() if line.strip()]
    return [(r["file"], r[key]) for r in rows]


def ctx() -> StepContext:
    return StepContext("conformance", "read", "t", base_dir=TESTDATA)


def rows_or_error(oxi: object) -> int | OxiflowError:
    try:
        return oxi.read(ctx()).read_all().num_rows  # type: ignore[attr-defined]
    except OxiflowError as exc:
        assert str(exc).strip()
        return exc


def check(got: int | OxiflowError, expected: int | str) -> None:
    if isinstance(expected, int):
        assert got == expected, f"reference reader read {expected} rows, oxiflow: {got}"
    else:
        assert isinstance(got, OxiflowError), f"reference reader failed ({expected}); oxiflow read {got} rows"


# -- JSON: JSONTestSuite ------------------------------------------------------------------------
JSON_DIR = TESTDATA / "json-test-suite" / "test_parsing"
EMPTY_INPUT = {"n_single_space.json", "n_structure_no_data.json", "n_structure_UTF8_BOM_no_data.json"}


@pytest.mark.parametrize("name", sorted(p.name for p in JSON_DIR.glob("[yn]_*.json")))
def test_json_test_suite(name: str) -> None:
    path = JSON_DIR / name
    got = rows_or_error(ReadJson(ReadJsonConfig(path=str(path))))
    if name in EMPTY_INPUT:
        # documented: a file with no JSON value is an empty record stream, not an error
        assert got == 0
    elif name.startswith("n_"):
        assert isinstance(got, OxiflowError), f"invalid JSON accepted: {path.read_bytes()[:60]!r}"
    else:
        try:
            expected: int | str = len(duckdb.sql(f"select * from read_json('{path}')").fetchall())
        except duckdb.Error as exc:
            expected = str(exc)
        check(got, expected)


# -- CSV: csv-spectrum ----------------------------------------------------------------------------
SPECTRUM = TESTDATA / "csv-spectrum"


@pytest.mark.parametrize("name", sorted(p.stem for p in (SPECTRUM / "csvs").glob("*.csv")))
def test_csv_spectrum(name: str) -> None:
    cfg = ReadCsvConfig(path=str(SPECTRUM / "csvs" / f"{name}.csv"), all_varchar=True, header=True, delimiter=",")
    got = ReadCsv(cfg).read(ctx()).read_all().to_pylist()
    if name == "location_coordinates":  # upstream expected JSON is wrong: only "lenient, no crash"
        return
    expected = json.loads((SPECTRUM / "json" / f"{name}.json").read_text(encoding="utf-8"))
    got = [{k: ("" if v is None else v) for k, v in row.items()} for row in got]
    assert got == expected


@pytest.mark.parametrize("name", sorted(p.stem for p in (SPECTRUM / "csvs").glob("*.csv")))
def test_csv_spectrum_with_default_sniffing(name: str) -> None:
    """No header, delimiter or all_varchar given: the dialect and the types are sniffed. Same header
    and rows; values compare as text, or as numbers where a column was sniffed numeric (08123 -> 8123)."""
    if name == "location_coordinates":  # upstream expected JSON is wrong (see above)
        return
    got = ReadCsv(ReadCsvConfig(path=str(SPECTRUM / "csvs" / f"{name}.csv"))).read(ctx()).read_all()
    expected = json.loads((SPECTRUM / "json" / f"{name}.json").read_text(encoding="utf-8"))
    assert got.column_names == list(expected[0])
    rows = got.to_pylist()
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        for key, value in want.items():
            assert _same(row[key], value), f"{name}: {key}: {row[key]!r} != {value!r}"


def _same(value: object, text: str) -> bool:
    if value is None:
        return text == ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(text) == float(value)
    return str(value) == text


# -- Parquet: parquet-testing + arrow-testing fuzzing (DuckDB is the reader oxiflow uses) ---------
@pytest.mark.parametrize(("file", "expected"), oracle("parquet.readers.jsonl", "duckdb"))
def test_parquet(file: str, expected: int | str) -> None:
    if file.endswith("large_string_map.brotli.parquet"):
        # > 2 GiB of strings in one batch: DuckDB fetches it, its Arrow export (regular strings) cannot
        got = rows_or_error(ReadParquet(ReadParquetConfig(path=str(TESTDATA / file))))
        assert isinstance(got, OxiflowError) and "string" in str(got)
        return
    got = rows_or_error(ReadParquet(ReadParquetConfig(path=str(TESTDATA / file))))
    if isinstance(expected, int) and isinstance(got, OxiflowError):
        # the oracle was recorded with another DuckDB: the installed one may refuse the file
        # (2.0.1 refuses out-of-range INT96 timestamps that 2.0.0 wrapped around)
        expected = live_duckdb_rows(TESTDATA / file)
    check(got, expected)


@pytest.mark.parametrize(
    "file", sorted(str(p.relative_to(TESTDATA)) for p in (TESTDATA / "parquet-testing/bad_data").iterdir())
)
def test_parquet_bad_data(file: str) -> None:
    expected = live_duckdb_rows(TESTDATA / file)
    check(rows_or_error(ReadParquet(ReadParquetConfig(path=str(TESTDATA / file)))), expected)


ALL_PARQUET = sorted(
    str(p.relative_to(TESTDATA / "parquet-testing"))
    for folder in ("bad_data", "data")
    for p in (TESTDATA / "parquet-testing" / folder).glob("*.parquet")
    # a 2 GiB string map: the streamed reader's memory cap refuses it, the pushed-down INSERT loads it
    if p.name != "large_string_map.brotli.parquet"
)


@pytest.mark.parametrize("name", ALL_PARQUET)
def test_parquet_pushed_down_fails_as_streamed(write_pipeline, name: str) -> None:
    """read_parquet -> sql -> write_duckdb as one DuckDB statement ends as the streamed chain does: a file
    that loads loads either way; a corrupt one fails with the same error, owned by the source (not
    "write_duckdb failed")."""
    from oxiflow.config.load import load_pipeline
    from oxiflow.engine.local import run_plan

    path = TESTDATA / "parquet-testing" / name
    outcomes = []
    for pushdown in ("true", "false"):
        pipeline = write_pipeline(
            f"settings: {{pushdown: {pushdown}}}\npipeline:\n"
            f"  - {{name: read_parquet, id: src, config: {{path: '{path}'}}}}\n"
            "  - {name: sql, config: {query: 'select * from src'}}\n"
            f"  - {{name: write_duckdb, id: wh, config: {{database: wh_{pushdown}.duckdb, table: t}}}}\n"
        )
        plan = load_pipeline(pipeline)
        assert bool(plan.pushdowns) is (pushdown == "true")  # type: ignore[attr-defined]
        result = run_plan(plan)
        failed = [s.step_id for s in result.steps if s.status == "failed"]
        rows = None
        if result.status == "ok":  # the same rows either way (repr: NaN equals NaN, maps stay comparable)
            con = duckdb.connect(str(pipeline.parent / f"wh_{pushdown}.duckdb"))
            rows = sorted(map(repr, con.sql("SELECT * EXCLUDE (_oxi_load_id) FROM t").fetchall()))
            con.close()
        outcomes.append((result.status, failed, str(result.error) if result.error else None, rows))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] != "ok":
        assert outcomes[0][1][0] == "src" and str(path) in str(outcomes[0][2])


READABLE_PARQUET = [
    n
    for n in ALL_PARQUET
    if n.startswith("data/") and isinstance(live_duckdb_rows(TESTDATA / "parquet-testing" / n), int)
]
FILE_SINKS = {"parquet": "write_parquet", "arrow": "write_arrow", "json": "write_json", "csv": "write_csv",
              "avro": "write_avro"}  # fmt: skip
# what a format has no place for, refused with a clear error; every other pair must write
REFUSED = {("avro", "data/nested_maps.snappy.parquet"): "Avro maps need string keys; column 'Row_a' has int32"}


@pytest.mark.parametrize("sink", sorted(FILE_SINKS))
@pytest.mark.parametrize("name", READABLE_PARQUET)
def test_parquet_to_every_file_sink(write_pipeline, name: str, sink: str) -> None:
    """Every parquet-testing file DuckDB reads is written by every file sink, unless the format has no place
    for one of its types (REFUSED: a DataError of the sink step saying so); Parquet and Arrow give back the
    values DuckDB reads from the source, JSON Lines and Avro as many records."""
    from oxiflow.config.load import load_pipeline
    from oxiflow.engine.local import run_plan
    from oxiflow.errors import DataError

    path = TESTDATA / "parquet-testing" / name
    pipeline = write_pipeline(
        "pipeline:\n"
        f"  - {{name: read_parquet, id: src, config: {{path: '{path}'}}}}\n"
        f"  - {{name: {FILE_SINKS[sink]}, id: out, config: {{path: out.{sink}}}}}\n"
    )
    result = run_plan(load_pipeline(pipeline))
    if (sink, name) in REFUSED:
        assert isinstance(result.error, DataError) and result.error.context["step"] == "out"
        assert REFUSED[sink, name] in str(result.error)
        return
    assert result.status == "ok", f"{type(result.error).__name__}: {result.error}"
    out = pipeline.parent / f"out.{sink}"
    con = duckdb.connect()

    def text(relation: str) -> list[tuple[object, ...]]:  # as text: NaN equals NaN, year 10000 has a value
        return sorted(con.sql(f"SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {relation}").fetchall(), key=repr)

    if sink == "parquet":
        assert text(f"'{out}'") == text(f"read_parquet('{path}')")
    elif sink == "arrow":
        import pyarrow as pa

        with pa.memory_map(str(out)) as fh:
            con.register("written", pa.ipc.open_file(fh).read_all())
        assert text("written") == text(f"read_parquet('{path}')")
    elif sink == "json":
        assert con.sql(f"SELECT count(*) FROM read_json('{out}')").fetchall() == [(result.steps[0].rows_out,)]
    elif sink == "avro":
        import fastavro

        with out.open("rb") as fh:  # counted from the block headers (a date past 9999 has no Python value)
            assert sum(block.num_records for block in fastavro.block_reader(fh)) == result.steps[0].rows_out
    con.close()


ARROW_READABLE = [f for f, expected in oracle("arrow-ipc.pyarrow.jsonl", "pyarrow_26.0.1_rows_or_error")
                  if not str(expected).startswith("ERR")]  # fmt: skip
SINK_CONFIGS = {**{k: f"path: out.{k}" for k in FILE_SINKS}, "duckdb": "database: w.duckdb, table: t",
                "sqlite": "database: w.sqlite, table: t"}  # fmt: skip
UNCLEAR = ("Unsupported Internal Arrow Type", "KeyError", "Stack Trace", "INTERNAL Error", "FATAL Error",
           "ArrowNotImplementedError")  # fmt: skip


@pytest.mark.parametrize("sink", sorted(SINK_CONFIGS))
@pytest.mark.parametrize("file", ARROW_READABLE)
def test_arrow_ipc_to_every_sink_writes_or_says_which_column(write_pipeline, file: str, sink: str) -> None:
    """Arrow's integration files hold every Arrow type (unions, intervals, nested dictionaries, duplicate
    names): a sink writes them or fails with an error of its own step that names what to cast, never
    DuckDB's "Unsupported Internal Arrow Type" or a Python KeyError."""
    from oxiflow.config.load import load_pipeline
    from oxiflow.engine.local import run_plan

    writer = FILE_SINKS.get(sink, sink)
    pipeline = write_pipeline(
        "pipeline:\n"
        f"  - {{name: read_arrow, id: src, config: {{path: '{TESTDATA / file}'}}}}\n"
        f"  - {{name: {writer if writer.startswith('write_') else 'write_' + writer}, id: out, "
        f"config: {{{SINK_CONFIGS[sink]}}}}}\n"
    )
    result = run_plan(load_pipeline(pipeline))
    if result.status != "ok":
        assert isinstance(result.error, OxiflowError) and result.error.context["step"] == "out"
        assert not any(u in str(result.error) for u in UNCLEAR), str(result.error)


# -- Arrow IPC: integration files + fuzz cases --------------------------------------------------------
@pytest.mark.parametrize(("file", "expected"), oracle("arrow-ipc.pyarrow.jsonl", "pyarrow_26.0.1_rows_or_error"))
def test_arrow_ipc(file: str, expected: int | str) -> None:
    check(rows_or_error(ReadArrow(ReadArrowConfig(path=str(TESTDATA / file)))), expected)


# -- Avro: arrow-testing + apache/avro ------------------------------------------------------------------
@pytest.mark.parametrize(("file", "expected"), oracle("avro.readers.jsonl", "fastavro"))
def test_avro(file: str, expected: int | str) -> None:
    check(rows_or_error(ReadAvro(ReadAvroConfig(path=str(TESTDATA / file)))), expected)
