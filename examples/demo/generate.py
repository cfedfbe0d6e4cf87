"""Generate the demo's input data deterministically (same bytes on every machine).

orders.csv (20,000 rows, with a few deliberately malformed lines), customers.jsonl (500 rows,
one broken JSON line), products.csv (40 rows). Run from anywhere: writes next to this file.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "US", "GB", "JP"]
STATUSES = ["placed", "shipped", "completed", "completed", "completed", "returned", "cancelled"]
CATEGORIES = ["books", "games", "garden", "kitchen", "music", "toys", "tools", "sports"]


def main() -> None:
    rng = random.Random(20261122)
    DATA.mkdir(exist_ok=True)

    products = []
    for pid in range(1, 41):
        products.append((pid, f"product-{pid:03d}", CATEGORIES[pid % len(CATEGORIES)], round(rng.uniform(2, 250), 2)))
    with (DATA / "products.csv").open("w", encoding="utf-8", newline="") as fh:
        fh.write("product_id,name,category,unit_price\n")
        for p in products:
            fh.write(f"{p[0]},{p[1]},{p[2]},{p[3]:.2f}\n")

    with (DATA / "customers.jsonl").open("w", encoding="utf-8") as fh:
        for cid in range(1, 501):
            record = {
                "customer_id": cid,
                "name": f"Customer {cid}",
                "country": COUNTRIES[rng.randrange(len(COUNTRIES))],
                "signup": {
                    "date": f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "channel": rng.choice(["web", "store", "partner"]),
                },
                "tags": rng.sample(["vip", "newsletter", "b2b", "student"], k=rng.randint(0, 2)),
            }
            if cid == 250:
                fh.write('{"customer_id": 250, "name": "Broken \n')  # malformed on purpose
                continue
            fh.write(json.dumps(record) + "\n")

    start = datetime(2025, 1, 1)
    with (DATA / "orders.csv").open("w", encoding="utf-8", newline="") as fh:
        fh.write("order_id,customer_id,product_id,quantity,discount,status,ordered_at\n")
        for oid in range(1, 20_001):
            ordered = start + timedelta(minutes=rng.randrange(0, 180 * 24 * 60))
            qty = rng.randint(1, 5)
            discount = "" if rng.random() < 0.7 else f"{rng.choice([0.05, 0.1, 0.2]):.2f}"
            line = (
                f"{oid},{rng.randint(1, 500)},{rng.randint(1, 40)},{qty},{discount},"
                f"{rng.choice(STATUSES)},{ordered:%Y-%m-%d %H:%M:%S}"
            )
            if oid in (137, 9_001):
                line = f"{oid},{rng.randint(1, 500)},{rng.randint(1, 40)},many,,placed,{ordered:%Y-%m-%d %H:%M:%S}"
            if oid == 15_555:
                line = f"{oid},42,7,1,,completed,not-a-date"
            fh.write(line + "\n")
            if oid % 5_000 == 0:  # a re-sent order: same id, later line (dedupe keeps the last)
                fh.write(line.replace(",placed,", ",shipped,") + "\n")
    print(f"demo data written to {DATA}")


if __name__ == "__main__":
    main()
