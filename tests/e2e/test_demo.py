"""The demo project end to end, checked against a pure-Python oracle over the raw files."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[2]


def _round2(x: Decimal) -> Decimal:
    """Round half away from zero, as SQL's round() does on DECIMAL (Python's round() is half-even)."""
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _oracle(data: Path) -> tuple[dict[tuple[str, str, str], tuple[int, int, Decimal]], int]:
    """Daily revenue by (day, country, category), and how many raw records are malformed."""
    bad = 0
    orders: dict[int, dict[str, object]] = {}
    with (data / "orders.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                parsed = {
                    "customer_id": int(row["customer_id"]),
                    "product_id": int(row["product_id"]),
                    "quantity": int(row["quantity"]),
                    "discount": Decimal(row["discount"]) if row["discount"] else Decimal(0),
                    "status": row["status"],
                    "ordered_at": datetime.strptime(row["ordered_at"], "%Y-%m-%d %H:%M:%S"),
                }
            except (ValueError, InvalidOperation):
                bad += 1
                continue
            orders.pop(int(row["order_id"]), None)
            orders[int(row["order_id"])] = parsed  # the last line of an order wins
    customers = {}
    for line in (data / "customers.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        customers[rec["customer_id"]] = rec
    products = {}
    with (data / "products.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            products[int(row["product_id"])] = row
    out: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    for o in orders.values():
        if o["status"] == "cancelled" or o["customer_id"] not in customers:
            continue
        p = products[o["product_id"]]  # type: ignore[index]
        key = (o["ordered_at"].date().isoformat(), customers[o["customer_id"]]["country"], p["category"])  # type: ignore[union-attr]
        revenue = _round2(o["quantity"] * Decimal(p["unit_price"]) * (1 - o["discount"]))  # type: ignore[operator]
        acc = out[key]
        acc[0] += 1
        acc[1] += o["quantity"]  # type: ignore[operator]
        acc[2] += revenue
    return {k: (int(v[0]), int(v[1]), v[2]) for k, v in out.items()}, bad


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("demo") / "demo"
    shutil.copytree(REPO / "examples" / "demo", root, ignore=shutil.ignore_patterns("data", "warehouse", ".oxiflow"))
    subprocess.run([sys.executable, str(root / "generate.py")], check=True, capture_output=True)
    proc = subprocess.run(
        [sys.executable, "-m", "oxiflow.cli.main", "run", "orders_daily", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return root, proc


def test_demo_runs_and_accounts_for_every_row(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ok"
    assert result["balanced"] is True
    steps = {s["step_id"]: s for s in result["steps"]}
    _, bad = _oracle(root / "data")
    assert steps["orders"]["rows_in"] == 20_004
    assert steps["orders"]["rows_rejected"] == 3
    assert steps["customers"]["rows_rejected"] == 1
    assert result["dlq_count"] == bad == 4
    dlq = [json.loads(line) for line in Path(result["dlq_path"]).read_text().splitlines()]
    assert {(d["step"], d["line"]) for d in dlq if d["step"] == "orders"} == {
        ("orders", 138),
        ("orders", 9_003),
        ("orders", 15_559),
    }


def test_demo_warehouse_matches_oracle(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    expected, _ = _oracle(root / "data")
    con = duckdb.connect(str(root / "warehouse" / "warehouse.duckdb"), read_only=True)
    rows = con.sql("select day::varchar, country, category, orders, items, revenue from daily_revenue").fetchall()
    got = {(d, c, k): (o, i, r) for d, c, k, o, i, r in rows}
    assert got.keys() == expected.keys()
    for key, (orders, items, revenue) in expected.items():
        g = got[key]
        assert (g[0], g[1]) == (orders, items), key
        assert g[2] == revenue, key  # DECIMAL end to end: exact
    fact = duckdb.sql(
        f"select count(*), count(distinct order_month) from read_parquet('{root}/warehouse/fact_orders/**/*.parquet')"
    ).fetchall()[0]
    assert fact[0] == sum(v[0] for v in expected.values())
    assert fact[1] == 6  # January to June 2025, one Hive partition each
