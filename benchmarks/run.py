"""oxiflow against DuckDB, Polars and pyarrow on the same files, side by side in one run.

Every measurement is a fresh subprocess (so start-up is included, as a user would see it), timed
by wall clock; its peak RSS is the kernel's high-water mark of that process (VmHWM). Each case
repeats ``--repeat`` times; the table shows the median time and the highest peak.

    python benchmarks/run.py             # 5,000,000 rows (and 500,000 for the memory ratio)
    python benchmarks/run.py --quick     # 500,000 and 50,000 rows
    python benchmarks/run.py --only csv --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))

from generate import dirty, generate, repeated  # noqa: E402
from tools import GROUP_BY  # noqa: E402


@dataclass
class Row:
    case: str
    tool: str
    seconds: float | None = None
    peak_mb: float | None = None
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""
    mem_ratio: float | None = None  # bounded-memory case: peak at 10x rows / peak at 1x
    runs: list[float] = field(default_factory=list)


# -- measuring ---------------------------------------------------------------------------------


def _peak_kb(pid: int) -> int:
    """VmHWM: the kernel's exact high-water mark of the process's RSS so far (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_once(cmd: list[str]) -> tuple[float, float, str | None]:
    """Seconds, peak MB and an error text (None on success) of one run of cmd.

    The peak is the child's own VmHWM, read every few milliseconds until it exits; VmHWM is a
    high-water mark, so polling loses nothing but growth in the last interval. (getrusage's
    ru_maxrss would also count the RSS the child inherited from this process at fork.)
    """
    with tempfile.TemporaryFile("w+") as errf:  # a file, not a pipe: a chatty child cannot block
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True)
        peak = 0
        while True:
            peak = max(peak, _peak_kb(proc.pid))
            try:
                proc.wait(timeout=0.005)
                break
            except subprocess.TimeoutExpired:
                continue
        seconds = time.perf_counter() - t0
        errf.seek(0)
        err = errf.read()
    if proc.returncode:
        return seconds, peak / 1024, " ".join(err.strip().splitlines()[-3:]) or f"exit code {proc.returncode}"
    return seconds, peak / 1024, None


def measure(cmd: list[str], repeat: int) -> tuple[float, float, list[float], str | None]:
    """Median seconds, highest peak MB, all times, and an error text if any run failed."""
    times: list[float] = []
    peaks: list[float] = []
    for _ in range(repeat):
        seconds, peak, err = run_once(cmd)
        if err:
            return 0.0, 0.0, [], err
        times.append(seconds)
        peaks.append(peak)
    return statistics.median(times), max(peaks), times, None


def warm(*paths: Path) -> None:
    """Read the inputs once before a case: the page cache of this VM does not keep every file of the
    run, and the first tool of a case would otherwise read its input from disk alone (the first runs of
    the 800 MB group-by file took 1.9-2.8 s against 1.4 s)."""
    for path in paths:
        with path.open("rb") as fh:
            while fh.read(8 << 20):
                pass


# -- the cases ---------------------------------------------------------------------------------


def pipeline(name: str, steps: str) -> Path:
    """Write a pipeline file under out/ (absolute paths, so it runs from anywhere)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.yaml"
    path.write_text(f"metadata: {{name: bench_{name}}}\npipeline:\n{steps}")
    return path


def oxiflow_cmd(*args: str | Path) -> list[str]:
    return [str(BIN / "oxiflow"), *map(str, args)]


def tool_cmd(job: str, src: Path, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "tools.py"), job, str(src), str(out)]


def available(pipe: Path) -> str | None:
    """None when `oxiflow validate` accepts the pipeline, else why not (an oxi not written yet)."""
    proc = subprocess.run(oxiflow_cmd("validate", pipe), capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return "n/a: " + (" ".join(text[-2:])[:160] if text else f"validate exit {proc.returncode}")


def run_tool(case: str, tool: str, cmd: list[str], repeat: int, pipe: Path | None = None) -> Row:
    row = Row(case, tool)
    why = available(pipe) if pipe is not None else None
    if why:
        row.note = why
        return row
    sec, peak, runs, err = measure(cmd, repeat)
    if err:
        row.note = "error: " + err[:200]
        return row
    row.seconds, row.peak_mb, row.runs = sec, peak, runs
    print(f"  {case:<22} {tool:<10} {sec:7.2f} s {peak:7.0f} MB  runs {[round(t, 2) for t in runs]}", flush=True)
    return row


def run_tools(case: str, tools: list[tuple[str, list[str], Path | None]], repeat: int) -> list[Row]:
    """run_tool for several tools, interleaved (A B C A B C ...): the speed of a shared machine drifts
    over a minute, and running each tool's repeats back to back would hand the drift to one of them."""
    rows = [Row(case, tool) for tool, _, _ in tools]
    live: list[tuple[Row, list[str]]] = []
    for row, (_, cmd, pipe) in zip(rows, tools, strict=True):
        why = available(pipe) if pipe is not None else None
        if why:
            row.note = why
        else:
            live.append((row, cmd))
    peaks: dict[str, float] = {}
    for _ in range(repeat):
        for row, cmd in live:
            if row.note:
                continue  # failed in an earlier round
            seconds, peak, err = run_once(cmd)
            if err:
                row.note, row.runs = "error: " + err[:200], []
                continue
            row.runs.append(seconds)
            peaks[row.tool] = max(peaks.get(row.tool, 0.0), peak)
    for row, _ in live:
        if row.runs:
            row.seconds, row.peak_mb = statistics.median(row.runs), peaks[row.tool]
            print(f"  {case:<22} {row.tool:<10} {row.seconds:7.2f} s {row.peak_mb:7.0f} MB  runs "
                  f"{[round(t, 2) for t in row.runs]}", flush=True)  # fmt: skip
    return rows


def rate(rows: list[Row], target_ratio: float, *, beat: tuple[str, ...] = (), max_mb: float | None = None) -> None:
    """Fill ratios vs DuckDB and the pass/fail of the oxiflow row of one case."""
    by_tool = {r.tool: r for r in rows}
    duck = by_tool.get("duckdb")
    for r in rows:
        if duck and duck.seconds and r.seconds:
            r.ratio = r.seconds / duck.seconds
    ox = by_tool.get("oxiflow")
    if ox is None:
        return
    parts = [f"<= {target_ratio}x DuckDB"] + [f"< {b}" for b in beat] + ([f"<= {max_mb:.0f} MB"] if max_mb else [])
    ox.target = ", ".join(parts)
    if ox.seconds is None or ox.ratio is None:
        return
    ok = ox.ratio <= target_ratio
    for b in beat:
        other = by_tool.get(b)
        if other and other.seconds:
            ok = ok and ox.seconds < other.seconds
    if max_mb is not None and ox.peak_mb is not None:
        ok = ok and ox.peak_mb <= max_mb
    ox.passed = ok


def case_csv(files: dict[str, Path], repeat: int, *, rated: bool = True) -> list[Row]:
    warm(files["csv"])
    case = f"CSV -> Parquet ({_rows(files)})"
    pipe = pipeline(
        f"csv_{_n(files)}",
        f"  - name: read_csv\n    config: {{path: '{files['csv']}'}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'oxiflow_csv.parquet'}', overwrite: true}}\n",
    )
    rows = run_tools(
        case,
        [
            ("oxiflow", oxiflow_cmd("run", pipe), pipe),
            ("duckdb", tool_cmd("duckdb_csv", files["csv"], OUT / "duckdb_csv.parquet"), None),
            ("duckdb (capped)", tool_cmd("duckdb_csv_tuned", files["csv"], OUT / "duckdb_t.parquet"), None),
            ("polars", tool_cmd("polars_csv", files["csv"], OUT / "polars_csv.parquet"), None),
            ("pyarrow", tool_cmd("pyarrow_csv", files["csv"], OUT / "pyarrow_csv.parquet"), None),
        ],
        repeat,
    )
    if rated:
        rate(rows, 1.2, beat=("polars", "pyarrow"), max_mb=1024)
    else:
        rate(rows, 1.2)  # ratios only: the targets are about the large file
        rows[0].target = ""
        rows[0].passed = None
    return rows


def case_json(files: dict[str, Path], repeat: int) -> list[Row]:
    warm(files["jsonl"])
    case = f"JSON Lines -> Parquet ({_rows(files)})"
    pipe = pipeline(
        f"json_{_n(files)}",
        f"  - name: read_json\n    config: {{path: '{files['jsonl']}'}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'oxiflow_json.parquet'}', overwrite: true}}\n",
    )
    rows = run_tools(
        case,
        [
            ("oxiflow", oxiflow_cmd("run", pipe), pipe),
            ("duckdb", tool_cmd("duckdb_json", files["jsonl"], OUT / "duckdb_json.parquet"), None),
            ("polars", tool_cmd("polars_json", files["jsonl"], OUT / "polars_json.parquet"), None),
        ],
        repeat,
    )
    rate(rows, 1.2)
    return rows


def case_groupby(files: dict[str, Path], repeat: int) -> list[Row]:
    """The filter + group-by into a DuckDB table, beside DuckDB alone and the floor of a CLI on typer,
    pydantic and yaml (DuckDB's job after importing them); then the same over the file ten times over,
    where the work outweighs the start-up (informational: the target is on the file itself)."""
    rows = _groupby(f"Parquet filter+group-by -> DuckDB ({_rows(files)})", files["parquet"], repeat, floor=True)
    rate(rows, 1.2)
    times = 10
    big = _groupby(
        f"Parquet filter+group-by -> DuckDB ({_rows(files)} x{times})", repeated(files["parquet"], times), repeat
    )
    rate(big, 1.2)
    big[0].target, big[0].passed = "(scale: the target is on the file above)", None
    return rows + big


def _groupby(case: str, parquet: Path, repeat: int, *, floor: bool = False) -> list[Row]:
    warm(parquet)
    db = OUT / f"oxiflow_{parquet.stem}.duckdb"
    query = GROUP_BY.format(src="orders").strip().replace("\n", "\n        ")
    pipe = pipeline(
        f"groupby_{parquet.stem}",
        f"  - name: read_parquet\n    id: orders\n    config: {{path: '{parquet}'}}\n"
        f"  - name: sql\n    config:\n      query: |\n        {query}\n"
        f"  - name: write_duckdb\n    config: {{database: '{db}', table: daily}}\n",
    )
    duck_db = OUT / f"duckdb_{parquet.stem}.duckdb"
    for stale in (db, duck_db):
        stale.unlink(missing_ok=True)
    tools = [
        ("oxiflow", oxiflow_cmd("run", pipe), pipe),
        ("duckdb", tool_cmd("duckdb_groupby", parquet, duck_db), None),
    ]
    if floor:
        tools.append(("duckdb after typer+pydantic+yaml", tool_cmd("duckdb_groupby_floor", parquet, duck_db), None))
    return run_tools(case, tools, repeat)


def case_json_duckdb(files: dict[str, Path], repeat: int) -> list[Row]:
    """JSON Lines into a DuckDB table (issue 4): DuckDB alone, dlt fed Arrow batches, dlt fed rows.

    dlt's row path needs minutes and gigabytes at 5M rows, so it runs on the first 100,000 lines and
    its time is scaled linearly (marked as extrapolated)."""
    warm(files["jsonl"])
    case = f"JSON Lines -> DuckDB table ({_rows(files)})"
    db = OUT / "oxiflow_json.duckdb"
    pipe = pipeline(
        f"json_duckdb_{_n(files)}",
        f"  - name: read_json\n    config: {{path: '{files['jsonl']}'}}\n"
        f"  - name: write_duckdb\n    config: {{database: '{db}', table: orders, write_disposition: replace}}\n",
    )
    for stale in OUT.glob("*json*.duckdb*"):
        if stale.is_file():
            stale.unlink()
    rows = run_tools(  # interleaved: the two rated side by side see the same drift of the machine
        case,
        [
            ("oxiflow", oxiflow_cmd("run", pipe), pipe),
            ("duckdb", tool_cmd("duckdb_json_table", files["jsonl"], OUT / "duckdb_json.duckdb"), None),
        ],
        repeat,
    )
    rows.append(
        run_tool(case, "dlt (Arrow batches)", tool_cmd("dlt_json_arrow", files["jsonl"], OUT / "dlt_json_a.duckdb"), 1)
    )
    sample = OUT / "sample_100k.jsonl"
    with files["jsonl"].open() as src, sample.open("w") as dst:
        for _, line in zip(range(100_000), src, strict=False):
            dst.write(line)
    dlt_rows = run_tool(case, "dlt (rows)", tool_cmd("dlt_json_rows", sample, OUT / "dlt_json_r.duckdb"), 1)
    if dlt_rows.seconds is not None:
        dlt_rows.seconds *= _n(files) / 100_000
        dlt_rows.note = f"extrapolated linearly from 100,000 rows (peak {dlt_rows.peak_mb:.0f} MB at 100k)"
        dlt_rows.peak_mb = None
    rows.append(dlt_rows)
    rate(rows, 1.2, beat=("dlt (Arrow batches)",), max_mb=1024)
    ox = rows[0]
    if ox.seconds and dlt_rows.seconds:
        speedup = dlt_rows.seconds / ox.seconds
        ox.target += ", >= 15x faster than dlt (rows)"
        ox.passed = bool(ox.passed) and speedup >= 15
        ox.note = f"{speedup:.0f}x faster than dlt fed rows"
    return rows


def case_postgres(files: dict[str, Path], repeat: int) -> list[Row]:
    """Parquet into PostgreSQL against psql \\copy of the same rows as CSV, and back out to Parquet
    against connectorx (rates: the ratio is other tool's time / oxiflow's, target >= 0.7)."""
    import tools

    url = tools.PG_URL
    load = f"Parquet -> PostgreSQL ({_rows(files)})"
    pipe_in = pipeline(
        f"pg_load_{_n(files)}",
        f"  - name: read_parquet\n    config: {{path: '{files['parquet']}'}}\n"
        f"  - name: write_postgres\n    config: {{url: '{url}', table: bench_orders, write_disposition: replace}}\n",
    )
    ox_in = run_tool(load, "oxiflow", oxiflow_cmd("run", pipe_in, "--no-state"), repeat, pipe_in)
    psql = run_tool(load, "psql \\copy (CSV)", tool_cmd("psql_copy", files["csv"], Path("bench_orders_psql")), repeat)
    back = f"PostgreSQL -> Parquet ({_rows(files)})"
    pipe_out = pipeline(
        f"pg_read_{_n(files)}",
        f"  - name: read_postgres\n    config: {{url: '{url}', table: bench_orders}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'pg_back.parquet'}'}}\n",
    )
    ox_out = run_tool(back, "oxiflow", oxiflow_cmd("run", pipe_out, "--no-state"), repeat, pipe_out)
    cx = run_tool(back, "connectorx", tool_cmd("connectorx_read", Path("bench_orders"), OUT / "cx.parquet"), repeat)
    for ours, theirs in ((ox_in, psql), (ox_out, cx)):
        ours.target = f">= 0.7x the speed of {theirs.tool}, <= 1024 MB"
        if ours.seconds and theirs.seconds:
            speed = theirs.seconds / ours.seconds
            ours.note = f"{speed:.2f}x the speed of {theirs.tool}"
            ours.passed = speed >= 0.7 and (ours.peak_mb or 0) <= 1024
    return [ox_in, psql, ox_out, cx]


def run_fresh(
    case: str, tool: str, cmd: list[str], repeat: int, restore: Callable[[], object], pipe: Path | None = None
) -> Row:
    """run_tool for a job that changes its target: ``restore()`` (untimed) before each run."""
    row = Row(case, tool)
    why = available(pipe) if pipe is not None else None
    if why:
        row.note = why
        return row
    times: list[float] = []
    peaks: list[float] = []
    for _ in range(repeat):
        restore()
        seconds, peak, err = run_once(cmd)
        if err:
            row.note = "error: " + err[:200]
            return row
        times.append(seconds)
        peaks.append(peak)
    row.seconds, row.peak_mb, row.runs = statistics.median(times), max(peaks), times
    print(f"  {case:<22} {tool:<10} {row.seconds:7.2f} s {row.peak_mb:7.0f} MB  runs {[round(t, 2) for t in times]}")
    return row


def case_merge_duckdb(files: dict[str, Path], repeat: int) -> list[Row]:
    """Merge updates (1/5 of the rows: half existing keys, half new) into a DuckDB table of all the
    rows (issue 4): oxiflow's merge vs the faster of DuckDB's MERGE INTO (no index) and INSERT OR
    REPLACE (primary key), and dlt's merge fed Arrow batches."""
    import shutil

    case = f"merge into DuckDB ({_rows(files)} + {_n(files) // 5:,})"
    work = OUT / "merge"
    subprocess.run(tool_cmd("merge_inputs", files["parquet"], work), check=True)
    updates, db = work / "updates.parquet", work / "target.duckdb"
    # dlt merges into its own table (its schema, its state): built once by a dlt merge of all rows
    dlt_db = work / "dlt.duckdb"
    for stale in (dlt_db, Path(f"{dlt_db}.dlt"), work / "dlt_base.duckdb", work / "dlt_base.dlt"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    subprocess.run(tool_cmd("dlt_merge_arrow", files["parquet"], dlt_db), check=True)
    shutil.copy(dlt_db, work / "dlt_base.duckdb")
    shutil.copytree(f"{dlt_db}.dlt", work / "dlt_base.dlt")

    def restore_dlt() -> None:
        shutil.copy(work / "dlt_base.duckdb", dlt_db)
        shutil.rmtree(f"{dlt_db}.dlt")
        shutil.copytree(work / "dlt_base.dlt", f"{dlt_db}.dlt")

    pipe = pipeline(
        f"merge_duckdb_{_n(files)}",
        f"  - name: read_parquet\n    config: {{path: '{updates}'}}\n"
        f"  - name: write_duckdb\n    config: {{database: '{db}', table: orders, write_disposition: merge, "
        "primary_key: [order_id]}\n",
    )

    def base() -> object:
        return shutil.copy(work / "base.duckdb", db)

    def base_oxi() -> object:
        # the table as oxiflow's earlier loads left it, with its `_oxi_load_id` column: a first merge
        # into a foreign table adds that column once (ALTER TABLE, ~0.3 s on 5M rows, not counted)
        return shutil.copy(work / "base_oxi.duckdb", db)

    rows = [
        run_fresh(case, "oxiflow", oxiflow_cmd("run", pipe), repeat, base_oxi, pipe),
        run_fresh(case, "duckdb MERGE INTO", tool_cmd("duckdb_merge_into", updates, db), repeat, base),
        run_fresh(
            case,
            "duckdb INSERT OR REPLACE",
            tool_cmd("duckdb_insert_or_replace", updates, db),
            repeat,
            lambda: shutil.copy(work / "base_pk.duckdb", db),
        ),
        run_fresh(case, "dlt (Arrow batches)", tool_cmd("dlt_merge_arrow", updates, dlt_db), repeat, restore_dlt),
    ]
    # the target is the fastest hand-written statement: that one is rated as "duckdb"
    hand = [r for r in rows[1:3] if r.seconds]
    if hand:
        best = min(hand, key=lambda r: r.seconds or 0.0)
        best.note = f"{best.tool} (the faster by hand)"
        best.tool = "duckdb"
    rate(rows, 1.2, beat=("dlt (Arrow batches)",), max_mb=1024)
    return rows


# -- validate: 10 typical rules, with and without, against pandera -------------------------------

# The same 10 rules three ways: a validate step, an ODCS contract, a pandera schema.
VALIDATE_RULES = """\
        - {column: order_id, not_null: true}
        - {column: customer_id, not_null: true}
        - {column: quantity, range: {min: 1, max: 10}}
        - {column: amount, range: {min: 0, max: 1000}}
        - {column: currency, enum: [EUR, USD, GBP, JPY]}
        - {column: status, enum: [placed, shipped, completed, returned, cancelled]}
        - {column: currency, pattern: '^[A-Z]{3}$'}
        - {column: status, pattern: '^[a-z]+$'}
        - {column: order_id, unique: true}
        - {name: amount_fits_quantity, sql: 'amount <= quantity * 1000'}
"""

VALIDATE_CONTRACT = """\
apiVersion: v3.0.2
kind: DataContract
id: bench_orders
version: 1.0.0
status: active
schema:
- name: orders
  properties:
  - {name: order_id, logicalType: integer, required: true, unique: true}
  - {name: customer_id, logicalType: integer, required: true}
  - {name: quantity, logicalType: integer, logicalTypeOptions: {minimum: 1, maximum: 10}}
  - {name: amount, logicalType: number, logicalTypeOptions: {minimum: 0, maximum: 1000}}
  - name: currency
    logicalType: string
    logicalTypeOptions: {pattern: '^[A-Z]{3}$'}
    quality:
    - {type: library, metric: invalidValues, arguments: {validValues: [EUR, USD, GBP, JPY]}, mustBe: 0}
  - name: status
    logicalType: string
    logicalTypeOptions: {pattern: '^[a-z]+$'}
    quality:
    - type: library
      metric: invalidValues
      arguments: {validValues: [placed, shipped, completed, returned, cancelled]}
      mustBe: 0
  quality:
  - {type: sql, query: 'SELECT count(*) FROM orders WHERE amount > quantity * 1000', mustBe: 0}
"""

# What a pandera user would write for the same rules (pandas reads the Parquet file). It runs in
# benchmarks/.venv-pandera: pandas and numpy stay out of oxiflow's venv. Writes its phase times.
PANDERA_SCRIPT = """\
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
import pandera.pandas as pa
t1 = time.perf_counter()
df = pd.read_parquet(sys.argv[1])
t2 = time.perf_counter()
schema = pa.DataFrameSchema(
    {
        "order_id": pa.Column(nullable=False, unique=True),
        "customer_id": pa.Column(nullable=False),
        "quantity": pa.Column(nullable=True, checks=pa.Check.in_range(1, 10)),
        "amount": pa.Column(nullable=True, checks=pa.Check.in_range(0, 1000)),
        "currency": pa.Column(nullable=True, checks=[pa.Check.isin(["EUR", "USD", "GBP", "JPY"]),
                                                   pa.Check.str_matches(r"^[A-Z]{3}$")]),
        "status": pa.Column(nullable=True, checks=[
            pa.Check.isin(["placed", "shipped", "completed", "returned", "cancelled"]),
            pa.Check.str_matches(r"^[a-z]+$")]),
    },
    checks=[pa.Check(lambda d: d["amount"].isna() | d["quantity"].isna() | (d["amount"] <= d["quantity"] * 1000),
                     name="amount_fits_quantity")],
)
schema.validate(df, lazy=True)  # all failures at once, as validate and contract test report them
t3 = time.perf_counter()
with open(sys.argv[2], "w") as f:
    json.dump({"import": t1 - t0, "read": t2 - t1, "check": t3 - t2}, f)
"""

PANDERA_VENV = HERE / ".venv-pandera"


def _pandera_python() -> tuple[Path | None, str]:
    """The side venv's python with pandera importable, or None and how to make it."""
    py = PANDERA_VENV / "bin" / "python"
    make = f"python3 -m venv {PANDERA_VENV} && {PANDERA_VENV}/bin/pip install pandera pandas pyarrow"
    if not py.exists():
        return None, f"n/a: no {PANDERA_VENV.name} ({make})"
    probe = subprocess.run([str(py), "-c", "import pandera.pandas"], capture_output=True, text=True)
    if probe.returncode:
        return None, "n/a: pandera does not import: " + " ".join(probe.stderr.strip().splitlines()[-1:])[:160]
    return py, ""


def case_validate(files: dict[str, Path], repeat: int) -> list[Row]:
    """Issue: 10 typical rules (not null x2, range x2, enum x2, pattern x2, unique key, a cross-column
    SQL rule) add <= 25% to read_parquet -> write_parquet, and checking them is >= 3x faster than
    pandera. Runs are interleaved (A B C A B C ...) so drift on a shared machine hits all alike.

    On clean data validate checks the file in one aggregate pass and the chain is pushed down (one COPY). The
    same rules on a copy with 1% of the rows invalid show the other side: the pass finds them, the chain
    streams, and the pass is what it costs over the same pipeline streamed from the start."""
    n = _n(files)
    case = f"validate 10 rules ({_rows(files)})"
    src = files["parquet"]
    read = f"  - name: read_parquet\n    config: {{path: '{src}'}}\n"
    rules = "  - name: validate\n    config:\n      rules:\n" + VALIDATE_RULES
    bad = dirty(src)
    warm(src, bad)
    read_bad = f"  - name: read_parquet\n    config: {{path: '{bad}'}}\n"

    def write(name: str) -> str:
        return f"  - name: write_parquet\n    config: {{path: '{OUT / name}', overwrite: true}}\n"

    plain = pipeline(f"validate_none_{n}", read + write("validate_none.parquet"))
    streamed = pipeline(f"validate_streamed_{n}", read + write("validate_streamed.parquet"))
    streamed.write_text("settings: {pushdown: false}\n" + streamed.read_text())
    checked = pipeline(f"validate_{n}", read + rules + write("validate.parquet"))
    # the dirty runs dead-letter 1% of the rows (50k at 5M): into a state store and a DLQ folder of their own,
    # emptied here, so the DLQ table a run appends to does not grow from one invocation of run.py to the next
    dirty_state, dirty_dlq = OUT / "validate_dirty_state.db", OUT / "validate_dirty_dlq"
    dirty_state.unlink(missing_ok=True)
    shutil.rmtree(dirty_dlq, ignore_errors=True)
    dirty_settings = f"dlq_dir: '{dirty_dlq}'"
    checked_bad = pipeline(f"validate_dirty_{n}", read_bad + rules + write("validate_dirty.parquet"))
    checked_bad.write_text(f"settings: {{{dirty_settings}}}\n" + checked_bad.read_text())
    streamed_bad = pipeline(f"validate_dirty_streamed_{n}", read_bad + rules + write("validate_dirty_s.parquet"))
    streamed_bad.write_text(f"settings: {{pushdown: false, {dirty_settings}}}\n" + streamed_bad.read_text())
    contract = OUT / "validate_orders.odcs.yaml"
    contract.write_text(VALIDATE_CONTRACT)
    script = OUT / "pandera_check.py"
    script.write_text(PANDERA_SCRIPT)
    phases = OUT / "pandera_phases.json"
    pandera_py, why_not = _pandera_python()
    cmds: dict[str, list[str]] = {
        "oxiflow, no validate": oxiflow_cmd("run", plain),
        "oxiflow, no validate (streamed)": oxiflow_cmd("run", streamed),
        "oxiflow + validate": oxiflow_cmd("run", checked),
        "oxiflow contract test": oxiflow_cmd("contract", "test", contract, src),
        "oxiflow + validate, 1% invalid": oxiflow_cmd("run", checked_bad, "--state-url", dirty_state),
        "oxiflow + validate, 1% invalid (streamed)": oxiflow_cmd("run", streamed_bad, "--state-url", dirty_state),
    }
    if pandera_py is not None:
        cmds["pandera"] = [str(pandera_py), str(script), str(src), str(phases)]
    rows = {tool: Row(case, tool) for tool in [*cmds, *([] if pandera_py else ["pandera"])]}
    if why_not:
        rows["pandera"].note = why_not
    for pipe in (plain, streamed, checked, checked_bad, streamed_bad):
        if why := available(pipe):
            raise SystemExit(f"validate case: {pipe.name}: {why}")
    checks: list[float] = []
    for _ in range(repeat):
        for tool, cmd in cmds.items():
            seconds, peak, err = run_once(cmd)
            if err:
                raise SystemExit(f"validate case: {tool} failed: {err}")
            rows[tool].runs.append(seconds)
            rows[tool].peak_mb = max(rows[tool].peak_mb or 0.0, peak)
            if tool == "pandera":
                checks.append(json.loads(phases.read_text())["check"])
    for r in rows.values():
        if r.runs:
            r.seconds = statistics.median(r.runs)
            print(f"  {case:<22} {r.tool:<32} {r.seconds:7.2f} s {r.peak_mb:7.0f} MB  runs "
                  f"{[round(t, 2) for t in r.runs]}", flush=True)  # fmt: skip
    _rate_validate(rows, statistics.median(checks) if checks else None)
    return list(rows.values())


def _rate_validate(rows: dict[str, Row], pandera_check: float | None) -> None:
    base, streamed = rows["oxiflow, no validate"], rows["oxiflow, no validate (streamed)"]
    ox, contract, pandera = rows["oxiflow + validate"], rows["oxiflow contract test"], rows["pandera"]
    if ox.seconds and base.seconds:
        ratio = ox.seconds / base.seconds  # in the note: the table's ratio column is against DuckDB
        ox.target = "<= 1.25x the pipeline without validate"
        ox.passed = ratio <= 1.25
        ox.note = f"{ratio:.2f}x the pipeline without validate (checked in one pass, then one DuckDB COPY)"
        if streamed.seconds:
            ox.note += f", {ox.seconds / streamed.seconds:.2f}x it streamed (settings.pushdown: false)"
    bad, bad_streamed = rows["oxiflow + validate, 1% invalid"], rows["oxiflow + validate, 1% invalid (streamed)"]
    if bad.seconds and bad_streamed.seconds:
        # the fallback's price: the pass finds the invalid rows, then the chain streams as it would have anyway
        bad.note = (
            f"{bad.seconds / bad_streamed.seconds:.2f}x the same pipeline streamed from the start "
            "(the pass, then streaming, 1% of the rows to the DLQ)"
        )
        if base.seconds:
            bad.note += f"; {bad.seconds / base.seconds:.2f}x the clean pipeline without validate"
    if pandera.seconds and pandera_check is not None:
        pandera.note = f"whole process; the check alone (schema.validate) {pandera_check:.2f} s"
    for r in (contract, ox):
        if r.seconds and pandera.seconds:
            speed = pandera.seconds / r.seconds
            text = f"pandera takes {speed:.1f}x as long (whole process)"
            r.note = f"{r.note}; {text}" if r.note else text
            if r is contract:
                r.target = ">= 3x faster than pandera"
                r.passed = speed >= 3


def case_memory(big: list[Row], small: list[Row]) -> list[Row]:
    """Peak RSS at 10x the rows over peak RSS at 1x: bounded memory means close to 1."""
    rows = []
    for tool in ("oxiflow", "duckdb", "duckdb (capped)"):
        b = next((r for r in big if r.tool == tool), None)
        s = next((r for r in small if r.tool == tool), None)
        row = Row("Bounded memory (peak RSS 10x rows / 1x rows)", tool)
        if b and s and b.peak_mb and s.peak_mb:
            row.peak_mb = b.peak_mb
            row.mem_ratio = b.peak_mb / s.peak_mb
            row.note = f"peak ratio {row.mem_ratio:.2f} = {b.peak_mb:.0f} MB / {s.peak_mb:.0f} MB"
        else:
            row.note = "n/a"
        if tool == "oxiflow":
            row.target = "ratio <= 1.5"
            row.passed = row.mem_ratio is not None and row.mem_ratio <= 1.5
        rows.append(row)
    return rows


def case_startup(files: dict[str, Path], repeat: int) -> list[Row]:
    pipe = pipeline(
        "startup",
        f"  - name: read_csv\n    config: {{path: '{files['csv']}'}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'startup.parquet'}', overwrite: true}}\n",
    )
    rows = [
        run_tool("Start-up", "oxi --help", [str(BIN / "oxi"), "--help"], repeat),
        run_tool("Start-up", "oxiflow validate", oxiflow_cmd("validate", pipe), repeat),
        run_tool("Start-up", "python (bare)", tool_cmd("noop", pipe, pipe), repeat),
    ]
    # The fixed cost of a whole run, which the timed cases above include: 1,000 rows end to end.
    tiny_csv = OUT / "tiny.csv"
    with files["csv"].open() as src:
        tiny_csv.write_text("".join(line for _, line in zip(range(1001), src, strict=False)))
    tiny = pipeline(
        "tiny",
        f"  - name: read_csv\n    config: {{path: '{tiny_csv}'}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'tiny.parquet'}', overwrite: true}}\n",
    )
    fixed = [
        run_tool("Fixed cost: CSV -> Parquet, 1k rows", "oxiflow", oxiflow_cmd("run", tiny), repeat),
        run_tool(
            "Fixed cost: CSV -> Parquet, 1k rows", "duckdb", tool_cmd("duckdb_csv", tiny_csv, OUT / "t.parquet"), repeat
        ),
    ]
    rate(fixed, float("inf"))
    fixed[0].target, fixed[0].passed = "", None
    for r in rows[:2]:
        r.target = "< 0.3 s"
        r.passed = r.seconds is not None and r.seconds < 0.3
    return rows + fixed


def _n(files: dict[str, Path]) -> int:
    return int(files["csv"].stem.split("_")[-1])


def _rows(files: dict[str, Path]) -> str:
    n = _n(files)
    return f"{n / 1e6:g}M rows" if n >= 1_000_000 else f"{n // 1000}k rows"


# -- report ------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    py = platform.python_version()
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}){mem}, Python {py}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("oxiflow", "duckdb", "pyarrow", "polars"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def table(rows: list[Row]) -> str:
    lines = [
        "| case | tool | seconds | peak MB | ratio vs DuckDB | target | result |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        sec = f"{r.seconds:.2f}" if r.seconds is not None else "n/a"
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "n/a"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        result = {True: "pass", False: "FAIL", None: ""}[r.passed]
        if r.note:
            result = (result + " " if result else "") + f"({r.note})"
        lines.append(f"| {r.case} | {r.tool} | {sec} | {peak} | {ratio} | {r.target} | {result} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500k rows (and 50k for the memory ratio)")
    ap.add_argument("--rows", type=int, help="rows of the main files (default 5,000,000; quick 500,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and case (median time)")
    ap.add_argument("--startup-repeat", type=int, default=10, help="runs per start-up command")
    cases = [
        "csv",
        "json",
        "groupby",
        "memory",
        "startup",
        "pipe",
        "head",
        "profile",
        "json_duckdb",
        "postgres",
        "merge_duckdb",
        "validate",
    ]
    ap.add_argument("--only", action="append", choices=cases)
    args = ap.parse_args()
    big_n = args.rows or (500_000 if args.quick else 5_000_000)
    small_n = big_n // 10
    only = set(args.only or cases)

    compile_bytecode()
    big = generate(big_n)
    small = generate(small_n) if "memory" in only else big
    print(f"{machine()}\n{versions()}\n", flush=True)
    rows: list[Row] = []
    big_csv: list[Row] = []
    if "csv" in only or "memory" in only:
        big_csv = case_csv(big, args.repeat)
        rows += big_csv
    if "json" in only:
        rows += case_json(big, args.repeat)
    if "groupby" in only:
        rows += case_groupby(big, args.repeat)
    if "json_duckdb" in only:
        rows += case_json_duckdb(big, args.repeat)
    if "postgres" in only:
        rows += case_postgres(big, args.repeat)
    if "merge_duckdb" in only:
        rows += case_merge_duckdb(big, args.repeat)
    if "validate" in only:
        rows += case_validate(big, args.repeat)
    if "memory" in only:
        small_csv = case_csv(small, args.repeat, rated=False)
        rows += [r for r in small_csv if r.tool.startswith(("oxiflow", "duckdb"))]
        rows += case_memory(big_csv, small_csv)
    if "startup" in only:
        rows += case_startup(small, args.startup_repeat)
    if only & {"pipe", "head", "profile"}:
        import shell_cases

        if "pipe" in only:
            rows += shell_cases.case_pipe(big, args.repeat) + shell_cases.case_pipe_rate(big, args.repeat)
        if "head" in only:
            rows += shell_cases.case_head_count(big, args.startup_repeat)
        if "profile" in only:
            rows += shell_cases.case_profile(big, args.repeat)

    md = table(rows)
    header = (
        f"# oxiflow benchmarks\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  \n"
        f"{machine()}  \n{versions()}  \n"
        f"median of {args.repeat} runs (start-up: {args.startup_repeat}); peak RSS is the highest of the runs\n\n"
    )
    print("\n" + md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(header + md + "\n")
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {"machine": machine(), "versions": versions(), "repeat": args.repeat, "rows": [asdict(r) for r in rows]},
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS / 'latest.md'} and latest.json")


def compile_bytecode() -> None:
    """Compile oxiflow's modules to bytecode once, as `pip install` does for users.

    A checkout run with PYTHONDONTWRITEBYTECODE=1 (set on some machines) would compile every module
    from source at each start, about 0.1 s that no installed copy pays."""
    import compileall

    import oxiflow

    compileall.compile_dir(str(Path(oxiflow.__file__).parent), quiet=1)


if __name__ == "__main__":
    main()
