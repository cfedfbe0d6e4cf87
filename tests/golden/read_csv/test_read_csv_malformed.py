"""read_csv on malformed files, with default sniffing: DuckDB's sniffer settles on a degenerate dialect
when a bad row is in its sample (one column holding whole lines; no quoting). read_csv must not trust
it: `on_error: fail` names file, line and column; skip/dlq set aside exactly the bad lines and read the
rest as a correct CSV reader would. Expected rows are hand-checked; clean files are compared with
DuckDB's own read_csv (the oracle), so the repair never changes what a good file reads as."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.csv import ReadCsv, ReadCsvConfig

EXTRA_FIELD = "id,name,amount\n" + "".join(f"{i},n{i},{i}.5\n" for i in range(4)) + "99,x,1,extra\n"
EXTRA_FIELD += "".join(f"{i},n{i},{i}.5\n" for i in range(4, 20))
QUOTED_AND_EXTRA = 'id,name,amount\n1,"a, b",2.5\n2,bob,x\n4,dan,5,extra\n5,eve,6\n'
UNTERMINATED = 'id,name\n1,"abc\n2,x\n'
MIXED = 'skip me\nid,name,amount\n1,"a, b",2.5\n2,bob,x\n3,"unterminated,4\n4,dan,5,extra\n5,eve,6\n'


def ctx(tmp_path: Path) -> StepContext:
    return StepContext("r", "read_csv", "t", base_dir=tmp_path)


def read(tmp_path: Path, text: str, **cfg: object) -> tuple[list[dict], StepContext]:
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    c = ctx(tmp_path)
    table = ReadCsv(ReadCsvConfig(path="in.csv", **cfg)).read(c).read_all()  # type: ignore[arg-type]
    return table.to_pylist(), c


def fail(tmp_path: Path, text: str, **cfg: object) -> DataError:
    with pytest.raises(DataError) as err:
        read(tmp_path, text, **cfg)
    return err.value


# -- on_error: fail -------------------------------------------------------------------------------
def test_an_extra_field_in_the_sample_fails_with_its_line_instead_of_one_column(tmp_path: Path) -> None:
    err = fail(tmp_path, EXTRA_FIELD)
    assert Path(err.context["file"]).name == "in.csv"
    assert err.context["line"] == 6  # the header is line 1; 99,x,1,extra is line 6
    assert err.context["column"] == 4  # the first field beyond the header's three
    assert "expected 3 fields, found 4" in err.message and "99,x,1,extra" in err.message
    assert "on_error: skip" in (err.hint or "")


def test_an_unterminated_quote_fails_naming_line_and_column(tmp_path: Path) -> None:
    err = fail(tmp_path, UNTERMINATED)
    assert (err.context["line"], err.context["column"]) == (2, "name")
    assert "never closed" in err.message
    assert "quote: ''" in (err.hint or "")  # for files whose quotes are part of the values


def test_explicit_options_fail_with_a_line_not_a_sniffer_dump(tmp_path: Path) -> None:
    err = fail(tmp_path, QUOTED_AND_EXTRA, delimiter=",")
    assert err.context["line"] == 4
    assert "Possible fixes" not in str(err) and "sniffing" not in str(err)
    err = fail(tmp_path, MIXED, skip_rows=1, header=True, delimiter=",", quote='"')
    assert (err.context["line"], err.context["column"]) == (5, "name")


def test_a_conversion_error_names_the_column_and_says_the_type_was_sniffed(tmp_path: Path) -> None:
    text = "id,amount\n" + "".join(f"{i},{i}\n" for i in range(30_000)) + "x,1\n"
    err = fail(tmp_path, text)
    assert (err.context["line"], err.context["column"]) == (30_002, "id")
    assert "sample_size" in (err.hint or "")
    err = fail(tmp_path, text, columns={"id": "BIGINT", "amount": "BIGINT"})
    assert "sample_size" not in (err.hint or "")  # the type is the config's


def test_lines_are_file_lines_after_values_that_span_lines(tmp_path: Path) -> None:
    # DuckDB numbers records (the quoted value spans lines 2-3): the error names the file line
    text = 'id,name\n1,"multi\nline"\n2,ok\n3,x,extra\n'
    err = fail(tmp_path, text)
    assert err.context["line"] == 5


def test_the_pushed_down_path_fails_the_same_and_leaves_no_output(tmp_path: Path, write_pipeline) -> None:
    (tmp_path / "in.csv").write_text(EXTRA_FIELD, encoding="utf-8")
    path = write_pipeline(
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: write_csv
            config: {path: out.csv}
        """
    )
    plan = load_pipeline(path)
    assert plan.pushdowns  # read_csv -> write_csv is one COPY statement
    result = run_plan(plan)
    assert result.status == "failed"
    assert isinstance(result.error, DataError) and result.error.context["line"] == 6
    assert not (tmp_path / "out.csv").exists()


# -- on_error: skip / dlq -----------------------------------------------------------------------------
def test_skip_sets_aside_only_the_bad_line(tmp_path: Path) -> None:
    rows, c = read(tmp_path, EXTRA_FIELD, on_error="skip")
    assert rows == [{"id": i, "name": f"n{i}", "amount": i + 0.5} for i in range(20)]
    assert c.rows_rejected == 1


def test_skip_keeps_good_quoted_rows(tmp_path: Path) -> None:
    rows, c = read(tmp_path, QUOTED_AND_EXTRA, on_error="skip")
    assert rows == [
        {"id": 1, "name": "a, b", "amount": "2.5"},
        {"id": 2, "name": "bob", "amount": "x"},
        {"id": 5, "name": "eve", "amount": "6"},
    ]
    assert c.rows_rejected == 1


def test_after_an_unterminated_quote_the_next_lines_are_read(tmp_path: Path) -> None:
    rows, c = read(tmp_path, MIXED, skip_rows=1, header=True, delimiter=",", quote='"', on_error="skip")
    # line 5 opens a quote it never closes, line 6 has an extra field: both set aside, line 7 is read
    assert rows == [
        {"id": 1, "name": "a, b", "amount": "2.5"},
        {"id": 2, "name": "bob", "amount": "x"},
        {"id": 5, "name": "eve", "amount": "6"},
    ]
    assert c.rows_rejected == 2
    rows, c = read(tmp_path, UNTERMINATED, on_error="skip")
    assert rows == [{"id": 2, "name": "x"}] and c.rows_rejected == 1


def test_dlq_records_are_exactly_the_bad_lines(tmp_path: Path, write_pipeline) -> None:
    import zstandard

    for name, data in (
        ("bad.csv", MIXED.encode()),
        ("bad.csv.gz", gzip.compress(MIXED.encode())),
        ("bad.csv.zst", zstandard.ZstdCompressor().compress(MIXED.encode())),
    ):
        (tmp_path / name).write_bytes(data)
    path = write_pipeline(
        """
        settings: {dlq_dir: dlq}
        pipeline:
          - name: read_csv
            config:
              path: "bad.csv*"
              skip_rows: 1
              header: true
              on_error: dlq
              columns: {id: INTEGER, name: VARCHAR, amount: DOUBLE}
          - name: write_parquet
            config: {path: out.parquet}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out.parquet").to_pylist()
    # per file: line 3 ("a, b" quoted) and line 7 are good; 4 (x is no DOUBLE), 5 (unterminated), 6 (extra)
    assert (
        sorted(got, key=lambda r: r["id"])
        == [{"id": 1, "name": "a, b", "amount": 2.5}] * 3 + [{"id": 5, "name": "eve", "amount": 6.0}] * 3
    )
    dead = [json.loads(x) for x in Path(str(result.dlq_path)).read_text().splitlines()]
    by_file: dict[str, list[tuple[int, str]]] = {}
    for d in dead:
        by_file.setdefault(Path(d["file"]).name, []).append((d["line"], d["raw"]))
    expected = [(4, "2,bob,x"), (5, '3,"unterminated,4'), (6, "4,dan,5,extra")]
    assert {f: sorted(v) for f, v in by_file.items()} == {f: expected for f in ("bad.csv", "bad.csv.gz", "bad.csv.zst")}
    assert result.steps[0].rows_rejected == 9 and result.balanced


def test_dlq_lines_are_file_lines_after_values_that_span_lines(tmp_path: Path, write_pipeline) -> None:
    (tmp_path / "in.csv").write_text('id,name\n1,"multi\nline"\n2,ok\n3,x,extra\n4,y\n', encoding="utf-8")
    path = write_pipeline(
        """
        settings: {dlq_dir: dlq}
        pipeline:
          - name: read_csv
            config: {path: in.csv, on_error: dlq}
          - name: write_json
            config: {path: out.jsonl}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    (dead,) = [json.loads(x) for x in Path(str(result.dlq_path)).read_text().splitlines()]
    assert (dead["line"], dead["raw"]) == (5, "3,x,extra")
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows == [{"id": 1, "name": "multi\nline"}, {"id": 2, "name": "ok"}, {"id": 4, "name": "y"}]


# -- good files read exactly as DuckDB reads them ----------------------------------------------------
CLEAN = {
    "plain": "id,name,amount\n1,a,1.5\n2,b,2.5\n",
    "dates": "d,t\n2024-01-02,2024-01-02 10:00:00\n2024-02-03,2024-02-03 11:30:00\n",
    "day_first": "d,t\n02/01/2024,02/01/2024 10:00\n15/01/2024,15/01/2024 11:00\n",
    "comment": "# exported 2024\na,b\n1,2\n",
    "crlf": "a,b\r\n1,2\r\n3,4\r\n",
    "quoted_newline": 'a,b\n1,"two\nlines"\n3,"say ""hi"""\n',
    "no_header": "1,2\n3,4\n",
    "semicolon": "a;b\n1;x\n2;y\n",
    "tab": "a\tb\n1\tx\n",
    "single_quote": "a,b\n1,'x, y'\n2,z\n",
    "stray_quote": 'id,size\n1,5" screen\n2,7" screen\n',
    "one_column": "name\nann\nbob\n",
    "mostly_multiline": 'a,b,c\n1,"x\ny",3\n2,"p\nq",4\n5,"r\ns",6\n',
    "preamble": "exported by the shop, 2024\n\nid,name,amount\n1,a,1.5\n2,b,2.5\n3,c,3.5\n",
}


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_a_good_file_reads_as_duckdb_reads_it(tmp_path: Path, name: str) -> None:
    rows, c = read(tmp_path, CLEAN[name])
    oracle = duckdb.sql(f"SELECT * FROM read_csv('{tmp_path / 'in.csv'}')")
    table = ReadCsv(ReadCsvConfig(path="in.csv")).read(ctx(tmp_path)).read_all()
    assert table.schema.names == oracle.columns
    assert [str(t) for t in table.schema.types] == [str(t) for t in oracle.arrow().read_all().schema.types]
    assert rows == oracle.arrow().read_all().to_pylist()
    assert "dialect_repaired" not in c.metadata
