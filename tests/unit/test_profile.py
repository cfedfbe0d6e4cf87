"""`oxiflow.explore.profile`: every statistic checked against pyarrow.compute on generated data
(nulls, strings, timestamps with and without zone, floats with NaN/inf, decimals, nested)."""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from oxiflow.errors import DataError
from oxiflow.explore.profile import ProfileOptions, plain, profile_input
from oxiflow.explore.profile_html import render_html

N = 4000
NESTED = {"nested", "lst"}


def _maybe(rng: random.Random, value: Any, p: float = 0.1) -> Any:
    return None if rng.random() < p else value


def _table() -> pa.Table:
    rng = random.Random(7)
    start = dt.datetime(2024, 1, 1)
    utc = dt.UTC
    return pa.table(
        {
            "i": [_maybe(rng, rng.randint(-50, 50)) for _ in range(N)],
            "big": [_maybe(rng, rng.randint(0, 10**12)) for _ in range(N)],
            "f": [_maybe(rng, rng.gauss(10, 3)) for _ in range(N)],
            "s": [_maybe(rng, rng.choice(["alpha", "beta", "gamma", "δέλτα", ""])) for _ in range(N)],
            'odd "name" <b>': [_maybe(rng, "<b>x</b>" if i % 3 else "[bold]y") for i in range(N)],
            "ts": pa.array(
                [_maybe(rng, start + dt.timedelta(seconds=rng.randint(0, 10**7))) for _ in range(N)], pa.timestamp("us")
            ),
            "tz": pa.array(
                [_maybe(rng, start.replace(tzinfo=utc) + dt.timedelta(hours=rng.randint(0, 500))) for _ in range(N)],
                pa.timestamp("us", tz="UTC"),
            ),
            "d": pa.array([_maybe(rng, dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 30))) for _ in range(N)]),
            "b": [_maybe(rng, rng.random() < 0.3) for _ in range(N)],
            "dec": pa.array(
                [_maybe(rng, Decimal(rng.randint(0, 10000)) / 100) for _ in range(N)], pa.decimal128(10, 2)
            ),
            "nested": [_maybe(rng, {"a": i, "tags": ["x"] * (i % 3)}) for i in range(N)],
            "lst": [_maybe(rng, [i, i + 1]) for i in range(N)],
            "allnull": pa.array([None] * N, pa.int64()),
            "bin": [_maybe(rng, bytes([i % 7]) * (i % 5)) for i in range(N)],
            "nan": [math.nan if i % 100 == 0 else (math.inf if i % 101 == 0 else float(i % 977)) for i in range(N)],
        }
    )


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _table()


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory: pytest.TempPathFactory, table: pa.Table) -> Path:
    path = tmp_path_factory.mktemp("profile") / "data.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def doc(parquet_file: Path) -> dict[str, Any]:
    return profile_input(str(parquet_file))


def _col(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["columns"] if c["name"] == name)


def _oracle_value(value: Any) -> Any:
    return plain(value.as_py() if isinstance(value, pa.Scalar) else value)


def test_rows_nulls_and_counts(doc: dict[str, Any], table: pa.Table) -> None:
    assert doc["rows"] == table.num_rows
    assert [c["name"] for c in doc["columns"]] == table.column_names
    for name in table.column_names:
        col = _col(doc, name)
        assert col["nulls"] == table[name].null_count, name
        assert col["count"] == table.num_rows - table[name].null_count, name
        assert col["null_pct"] == pytest.approx(100 * table[name].null_count / table.num_rows, abs=1e-4)


def test_distinct_exact_under_the_limit(doc: dict[str, Any], table: pa.Table) -> None:
    for name in table.column_names:
        col = _col(doc, name)
        if name in NESTED:
            assert (col["distinct"], col["distinct_exact"]) == (None, None)
            continue
        assert col["distinct_exact"] is True, name
        assert col["distinct"] == pc.count_distinct(table[name], mode="only_valid").as_py(), name


def test_min_max_mean_stddev(doc: dict[str, Any], table: pa.Table) -> None:
    for name in ("i", "big", "f", "dec", "ts", "tz", "d", "s"):
        col = _col(doc, name)
        mm = pc.min_max(table[name])
        assert col["min"] == _oracle_value(mm["min"]), name
        assert col["max"] == _oracle_value(mm["max"]), name
    for name in ("i", "big", "f", "dec"):
        values = table[name].cast(pa.float64())
        col = _col(doc, name)
        assert col["mean"] == pytest.approx(pc.mean(values).as_py(), rel=1e-9)
        assert col["stddev"] == pytest.approx(pc.stddev(values, ddof=1).as_py(), rel=1e-9)  # = stddev_samp
    assert _col(doc, "tz")["min"].endswith("+00:00")


def test_string_and_binary_lengths(doc: dict[str, Any], table: pa.Table) -> None:
    for name, lengths in (("s", pc.utf8_length(table["s"])), ("bin", pc.binary_length(table["bin"]))):
        col = _col(doc, name)
        assert col["min_length"] == pc.min(lengths).as_py()
        assert col["max_length"] == pc.max(lengths).as_py()
        assert col["mean"] is None and col["histogram"] is None


def _expected_top(array: pa.ChunkedArray, n: int) -> list[tuple[Any, int]]:
    counts = pc.value_counts(array.drop_null())
    values, tallies = counts.field("values"), counts.field("counts").to_pylist()
    pairs = [(_oracle_value(v), c) for v, c in zip(values, tallies, strict=True)]
    return sorted(pairs, key=lambda p: -p[1])[:n]


def test_top_values_exact(doc: dict[str, Any], table: pa.Table) -> None:
    for name in ("i", "s", "b", "d", 'odd "name" <b>', "tz"):
        col = _col(doc, name)
        assert col["top_exact"] is True
        got = [(t["value"], t["count"]) for t in col["top"]]
        want = _expected_top(table[name], 5)
        # equal counts may come in another order: compare the counts, and each value's count
        assert [c for _, c in got] == [c for _, c in want], name
        oracle = dict(_expected_top(table[name], 10**6))
        assert all(oracle[v] == c for v, c in got), name


def _in_bin(array: pa.ChunkedArray, lower: Any, upper: Any, first: bool) -> int:
    above = pc.greater_equal(array, lower) if first else pc.greater(array, lower)
    return pc.sum(pc.and_(above, pc.less_equal(array, upper))).as_py() or 0


def test_histograms_match_their_edges_and_sum_to_the_values(doc: dict[str, Any], table: pa.Table) -> None:
    for name in ("i", "big", "f", "dec", "ts", "d", "nan"):
        col = _col(doc, name)
        bins = col["histogram"]
        assert bins, name
        array = table[name]
        if name == "dec":
            array = array.cast(pa.float64())
        finite = col["count"] - (col["non_finite"] or 0)
        assert sum(b["count"] for b in bins) == finite, name
        for k, b in enumerate(bins):
            lower, upper = b["lower"], b["upper"]
            if name in ("ts", "d"):
                typ = array.type
                lower = pa.scalar(dt.datetime.fromisoformat(lower), pa.timestamp("us")).cast(typ)
                upper = pa.scalar(dt.datetime.fromisoformat(upper), pa.timestamp("us")).cast(typ)
            assert b["count"] == _in_bin(array, lower, upper, k == 0), (name, b)
    assert _col(doc, "nan")["non_finite"] == sum(1 for i in range(N) if i % 100 == 0 or i % 101 == 0)


def test_nested_and_empty_columns(doc: dict[str, Any]) -> None:
    for name in NESTED:
        col = _col(doc, name)
        assert col["kind"] == "nested"
        assert col["type"].startswith(("struct<", "list<"))
        assert all(col[k] is None for k in ("min", "max", "distinct", "top", "histogram")), name
    allnull = _col(doc, "allnull")
    assert (allnull["count"], allnull["distinct"], allnull["min"], allnull["histogram"]) == (0, 0, None, None)


def test_over_the_limit_distinct_is_estimated_and_top_counts_exact(parquet_file: Path, table: pa.Table) -> None:
    doc = profile_input(str(parquet_file), options=ProfileOptions(exact_distinct_limit=50))
    big = _col(doc, "big")
    true_distinct = pc.count_distinct(table["big"], mode="only_valid").as_py()
    assert big["distinct_exact"] is False
    assert big["distinct"] == pytest.approx(true_distinct, rel=0.05)  # HyperLogLog: a few % off at most
    # 'i' has 101 values: over the limit, its top candidates are still counted exactly
    col = _col(doc, "i")
    assert (col["distinct_exact"], col["top_exact"]) == (False, False)
    oracle = dict(_expected_top(table["i"], 10**6))
    assert col["top"] and all(oracle[t["value"]] == t["count"] for t in col["top"])
    assert _col(doc, "b")["distinct_exact"] is True  # 2 values: still exact


def test_options_top_and_bins(parquet_file: Path) -> None:
    doc = profile_input(str(parquet_file), options=ProfileOptions(top=2, bins=3))
    assert len(_col(doc, "s")["top"]) == 2
    assert 1 <= len(_col(doc, "i")["histogram"]) <= 4  # DuckDB rounds edges to nice values
    none = profile_input(str(parquet_file), options=ProfileOptions(top=0, bins=0))
    assert all(c["top"] is None and c["histogram"] is None for c in none["columns"])


def test_stream_spool_and_scan_give_the_same_profile(tmp_path: Path, table: pa.Table, doc: dict[str, Any]) -> None:
    """Arrow IPC has no DuckDB scan: it is streamed once into a spool table; same numbers."""
    path = tmp_path / "data.arrow"
    feather.write_feather(table, path)
    streamed = profile_input(str(path))
    assert (doc["method"], streamed["method"]) == ("scan", "spool")
    for a, b in zip(doc["columns"], streamed["columns"], strict=True):
        a = {k: v for k, v in a.items() if k != "type"}  # DuckDB names list items `l`, Arrow `item`
        b = {k: v for k, v in b.items() if k != "type"}
        if a["name"] in ("f", "nan"):  # float sums in another order may differ in the last bits
            for k in ("mean", "stddev"):
                if isinstance(a[k], float):
                    assert b[k] == pytest.approx(a[k], rel=1e-12)
                    a[k] = b[k]
        assert a == b


def test_csv_and_jsonl_profiles_agree_with_duckdb(tmp_path: Path) -> None:
    import duckdb

    rows = [f"{i},{'x' * (i % 4)},{i * 0.5 if i % 9 else ''}" for i in range(3000)]
    csv = tmp_path / "t.csv"
    csv.write_text("id,name,score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    jsonl = tmp_path / "t.jsonl"
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{csv}')) TO '{jsonl}' (FORMAT json)")
    for path, method in ((csv, "scan"), (jsonl, "scan")):
        doc = profile_input(str(path))
        assert doc["method"] == method
        want = duckdb.sql(
            f"SELECT count(score), count(DISTINCT name), min(score), max(score), stddev_samp(score), "
            f"max(length(name)) FROM '{path}'"
        ).fetchall()[0]
        score, name = _col(doc, "score"), _col(doc, "name")
        got = (score["count"], name["distinct"], score["min"], score["max"], score["stddev"], name["max_length"])
        assert got[:4] + got[5:] == want[:4] + want[5:]
        assert got[4] == pytest.approx(want[4], rel=1e-12)


def test_malformed_and_missing_input_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as info:
        profile_input(str(bad))
    assert str(bad) in str(info.value)
    with pytest.raises(DataError, match="file not found"):
        profile_input(str(tmp_path / "missing.csv"))


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for _, value in attrs:
            assert not (value or "").startswith(("http:", "https:", "//")), value

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_escaped(doc: dict[str, Any]) -> None:
    page = render_html(doc)
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    charted = sum(1 for c in doc["columns"] if c["histogram"]) + sum(1 for c in doc["columns"] if c["top"])
    assert parser.tags.count("svg") == charted + len(doc["columns"])  # + one null bar per column
    text = "".join(parser.text)
    assert 'odd "name" <b>' in text and "<b>x</b>" in text  # data shows as text, never as markup
    assert "b" not in parser.tags


def test_a_stream_failing_midway_reports_the_readers_error(tmp_path: Path) -> None:
    """The spool path: the reader's DataError raised inside DuckDB's copy reaches the caller."""
    table = pa.table({"x": list(range(100_000))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1000):
            writer.write_batch(batch)
    data = sink.getvalue().to_pybytes()
    path = tmp_path / "cut.arrows"
    path.write_bytes(data[: len(data) // 2])  # the first half of the batches, then a torn one
    with pytest.raises(DataError, match="not a readable Arrow IPC stream") as info:
        profile_input(str(path))
    assert info.value.context["file"] == str(path)
