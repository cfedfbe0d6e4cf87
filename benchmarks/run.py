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
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))

from generate import generate  # noqa: E402
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
    case = f"CSV -> Parquet ({_rows(files)})"
    pipe = pipeline(
        f"csv_{_n(files)}",
        f"  - name: read_csv\n    config: {{path: '{files['csv']}'}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'oxiflow_csv.parquet'}', overwrite: true}}\n",
    )
    rows = [
        run_tool(case, "oxiflow", oxiflow_cmd("run", pipe), repeat, pipe),
        run_tool(case, "duckdb", tool_cmd("duckdb_csv", files["csv"], OUT / "duckdb_csv.parquet"), repeat),
        run_tool(case, "duckdb (capped)", tool_cmd("duckdb_csv_tuned", files["csv"], OUT / "duckdb_t.parquet"), repeat),
        run_tool(case, "polars", tool_cmd("polars_csv", files["csv"], OUT / "polars_csv.parquet"), repeat),
        run_tool(case, "pyarrow", tool_cmd("pyarrow_csv", files["csv"], OUT / "pyarrow_csv.parquet"), repeat),
    ]
    if rated:
        rate(rows, 1.2, beat=("polars", "pyarrow"), max_mb=1024)
    else:
        rate(rows, 1.2)  # ratios only: the targets are about the large file
        rows[0].target = ""
        rows[0].passed = None
    return rows


def case_json(files: dict[str, Path], repeat: int) -> list[Row]:
    case = f"JSON Lines -> Parquet ({_rows(files)})"
    pipe = pipeline(
        f"json_{_n(files)}",
        f"  - name: read_json\n    config: {{path: '{files['jsonl']}'}}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'oxiflow_json.parquet'}', overwrite: true}}\n",
    )
    rows = [
        run_tool(case, "oxiflow", oxiflow_cmd("run", pipe), repeat, pipe),
        run_tool(case, "duckdb", tool_cmd("duckdb_json", files["jsonl"], OUT / "duckdb_json.parquet"), repeat),
        run_tool(case, "polars", tool_cmd("polars_json", files["jsonl"], OUT / "polars_json.parquet"), repeat),
    ]
    rate(rows, 1.2)
    return rows


def case_groupby(files: dict[str, Path], repeat: int) -> list[Row]:
    case = f"Parquet filter+group-by -> DuckDB ({_rows(files)})"
    db = OUT / "oxiflow_groupby.duckdb"
    query = GROUP_BY.format(src="orders").strip().replace("\n", "\n        ")
    pipe = pipeline(
        f"groupby_{_n(files)}",
        f"  - name: read_parquet\n    id: orders\n    config: {{path: '{files['parquet']}'}}\n"
        f"  - name: sql\n    config:\n      query: |\n        {query}\n"
        f"  - name: write_duckdb\n    config: {{database: '{db}', table: daily}}\n",
    )
    for stale in (db, OUT / "duckdb_groupby.duckdb"):
        stale.unlink(missing_ok=True)
    rows = [
        run_tool(case, "oxiflow", oxiflow_cmd("run", pipe), repeat, pipe),
        run_tool(case, "duckdb", tool_cmd("duckdb_groupby", files["parquet"], OUT / "duckdb_groupby.duckdb"), repeat),
    ]
    rate(rows, 1.2)
    return rows


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
    ap.add_argument("--only", action="append", choices=["csv", "json", "groupby", "memory", "startup"])
    args = ap.parse_args()
    big_n = args.rows or (500_000 if args.quick else 5_000_000)
    small_n = big_n // 10
    only = set(args.only or ["csv", "json", "groupby", "memory", "startup"])

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
    if "memory" in only:
        small_csv = case_csv(small, args.repeat, rated=False)
        rows += [r for r in small_csv if r.tool.startswith(("oxiflow", "duckdb"))]
        rows += case_memory(big_csv, small_csv)
    if "startup" in only:
        rows += case_startup(small, args.startup_repeat)

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


if __name__ == "__main__":
    main()
