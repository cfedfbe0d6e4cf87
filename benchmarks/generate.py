"""Generate the benchmark orders data: deterministic, 8 columns, as CSV, JSON Lines and Parquet.

DuckDB computes every value from ``hash(row, k)``, so the same row count gives byte-identical
files on every machine and run. Files already present with the right row count are kept.

    python benchmarks/generate.py                 # 5,000,000 and 500,000 rows
    python benchmarks/generate.py --rows 200000 --rows 20000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb

DATA = Path(__file__).resolve().parent / "data"
FORMATS = {"csv": "(FORMAT csv, HEADER)", "jsonl": "(FORMAT json)", "parquet": "(FORMAT parquet, COMPRESSION zstd)"}

# ints, nullable ints, nullable floats, strings, a timestamp: the mix of a typical orders extract.
ORDERS = """
SELECT i AS order_id,
       (hash(i, 1) % 100000)::BIGINT AS customer_id,
       (hash(i, 2) % 5000)::INTEGER AS product_id,
       CASE WHEN hash(i, 3) % 50 = 0 THEN NULL ELSE (hash(i, 4) % 10 + 1)::INTEGER END AS quantity,
       CASE WHEN hash(i, 5) % 40 = 0 THEN NULL ELSE round((hash(i, 6) % 100000) / 100.0, 2) END AS amount,
       ['EUR', 'USD', 'GBP', 'JPY'][(hash(i, 7) % 4)::INTEGER + 1] AS currency,
       ['placed', 'shipped', 'completed', 'returned', 'cancelled'][(hash(i, 8) % 5)::INTEGER + 1] AS status,
       TIMESTAMP '2024-01-01' + to_seconds((hash(i, 9) % 31536000)::BIGINT) AS created_at
FROM range({rows}) t(i)
"""


def path_for(rows: int, fmt: str) -> Path:
    return DATA / f"orders_{rows}.{fmt}"


def _rows_in(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> int:
    if fmt == "csv":
        return sum(1 for _ in path.open("rb")) - 1
    if fmt == "jsonl":
        return sum(1 for _ in path.open("rb"))
    return int(con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])


def generate(rows: int, *, force: bool = False) -> dict[str, Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    out: dict[str, Path] = {}
    for fmt, opts in FORMATS.items():
        path = path_for(rows, fmt)
        out[fmt] = path
        if path.exists() and not force and _rows_in(con, path, fmt) == rows:
            continue
        t0 = time.perf_counter()
        tmp = path.with_suffix(path.suffix + ".tmp")
        con.execute(f"COPY ({ORDERS.format(rows=int(rows))}) TO '{tmp}' {opts}")
        tmp.replace(path)
        print(f"wrote {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    con.close()
    return out


# 1% of the rows break one rule each, chosen by a hash of order_id (so every run picks the same rows): a
# negative amount, an unknown status, a lower-case currency (enum and pattern), a repeated order_id.
DIRTY = """
SELECT * REPLACE (
    CASE WHEN hash(order_id, 11) % 400 = 0 THEN -1.0 ELSE amount END AS amount,
    CASE WHEN hash(order_id, 11) % 400 = 1 THEN 'lost' ELSE status END AS status,
    CASE WHEN hash(order_id, 11) % 400 = 2 THEN lower(currency) ELSE currency END AS currency,
    CASE WHEN hash(order_id, 11) % 400 = 3 AND order_id > 0 THEN order_id - 1 ELSE order_id END AS order_id)
FROM read_parquet('{clean}')
"""


def dirty(clean: Path) -> Path:
    """``orders_N_dirty.parquet``: the clean Parquet file with 1% of its rows invalid (validate's fallback case).
    Kept when it is newer than the clean file."""
    path = clean.with_name(clean.stem + "_dirty.parquet")
    if path.exists() and path.stat().st_mtime >= clean.stat().st_mtime:
        return path
    t0 = time.perf_counter()
    tmp = path.with_suffix(".parquet.tmp")
    con = duckdb.connect()
    con.execute(f"COPY ({DIRTY.format(clean=clean)}) TO '{tmp}' {FORMATS['parquet']}")
    con.close()
    tmp.replace(path)
    print(f"wrote {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    return path


def repeated(clean: Path, times: int) -> Path:
    """``orders_N_xT.parquet``: the clean Parquet file ``times`` times over (the group-by at scale).
    Kept when it is newer than the clean file."""
    path = clean.with_name(f"{clean.stem}_x{times}.parquet")
    if path.exists() and path.stat().st_mtime >= clean.stat().st_mtime:
        return path
    t0 = time.perf_counter()
    tmp = path.with_suffix(".parquet.tmp")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    scans = " UNION ALL ".join([f"SELECT * FROM read_parquet('{clean}')"] * times)
    con.execute(f"COPY ({scans}) TO '{tmp}' {FORMATS['parquet']}")
    con.close()
    tmp.replace(path)
    print(f"wrote {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="row count (repeatable)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the files exist")
    args = ap.parse_args()
    for rows in args.rows or [5_000_000, 500_000]:
        generate(rows, force=args.force)


if __name__ == "__main__":
    main()
