"""The shell figures (issue 3): verbs in a pipe against one `oxiflow run`, the pipe's rate,
`oxi head` / `oxi count` on a large Parquet file, and `oxi profile` against DuckDB's SUMMARIZE.

Imported by run.py, which owns measuring and the report; a pipe is timed as one `bash -o
pipefail -c ...` process (its peak RSS column is bash's own, so it is left out).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import run
from run import BIN, OUT, Row, measure, pipeline, run_tool, tool_cmd

METER = Path(__file__).resolve().parent / "meter.py"


def _oxi(*args: str | Path) -> str:
    return shlex.join([str(BIN / "oxi"), *map(str, args)])


def _bash(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def _shell_row(case: str, tool: str, script: str, repeat: int) -> Row:
    row = run_tool(case, tool, _bash(script), repeat)
    row.peak_mb = None
    return row


def case_pipe(files: dict[str, Path], repeat: int) -> list[Row]:
    case = f"Parquet -> filter -> Parquet ({run._rows(files)})"
    src = files["parquet"]
    pipe = pipeline(
        f"filter_{run._n(files)}",
        f"  - name: read_parquet\n    config: {{path: '{src}'}}\n"
        "  - name: filter\n    config: {expr: amount > 100}\n"
        f"  - name: write_parquet\n    config: {{path: '{OUT / 'run_filter.parquet'}'}}\n",
    )
    one = run_tool(case, "oxiflow run", run.oxiflow_cmd("run", pipe), repeat, pipe)
    verbs = _shell_row(
        case,
        "oxi cat \\| oxi filter \\| oxi write",
        f"{_oxi('cat', src)} | {_oxi('filter', 'amount > 100')} | {_oxi('write', OUT / 'pipe_filter.parquet')}",
        repeat,
    )
    if one.seconds and verbs.seconds:
        verbs.ratio = verbs.seconds / one.seconds
        verbs.target = "<= 1.5x oxiflow run"
        verbs.passed = verbs.ratio <= 1.5
        verbs.note = "ratio is vs `oxiflow run` of the same steps"
    return [one, verbs]


def case_pipe_rate(files: dict[str, Path], repeat: int) -> list[Row]:
    """Arrow bytes through a pipe of three verbs: from the first byte at the end of the pipe to
    EOF (the rate data moves between processes), and over the whole wall time (with start-up)."""
    case = f"Pipe of three verbs, Arrow IPC ({run._rows(files)})"
    stream = OUT / "orders.arrows"
    measure(_bash(f"{_oxi('cat', files['parquet'])} > {shlex.quote(str(stream))}"), 1)
    size_mb = stream.stat().st_size / 1e6
    report = OUT / "meter.txt"
    script = (
        f"{_oxi('cat', stream)} | {_oxi('filter', 'true')} | {_oxi('cat')} "
        f"| {shlex.join([sys.executable, str(METER), str(report)])}"
    )
    rates: list[float] = []
    walls: list[float] = []
    for _ in range(repeat):
        sec, _peak, _times, err = measure(_bash(script), 1)
        if err:
            return [Row(case, "oxi cat \\| oxi filter \\| oxi cat", note="error: " + err[:200])]
        walls.append(sec)
        rates.append(float(report.read_text().split()[0]))
    rates.sort()
    walls.sort()
    row = Row(case, "oxi cat \\| oxi filter \\| oxi cat", seconds=walls[len(walls) // 2], runs=walls)
    rate = rates[len(rates) // 2]
    row.target = ">= 300 MB/s"
    row.passed = rate >= 300
    row.note = (
        f"{rate:.0f} MB/s first byte to EOF; {size_mb / row.seconds:.0f} MB/s over the wall time "
        f"with start-up ({size_mb:.0f} MB of Arrow through each pipe)"
    )
    print(f"  {case:<22} {row.note}", flush=True)
    return [row]


def case_head_count(files: dict[str, Path], repeat: int) -> list[Row]:
    src = files["parquet"]
    head = run_tool(f"oxi head ({run._rows(files)} Parquet)", "oxi head", [str(BIN / "oxi"), "head", str(src)], repeat)
    head.target, head.passed = "< 0.5 s", head.seconds is not None and head.seconds < 0.5
    count = run_tool(
        f"oxi count ({run._rows(files)} Parquet)", "oxi count", [str(BIN / "oxi"), "count", str(src)], repeat
    )
    count.note = "from the Parquet footers, no scan"
    return [head, count]


def case_profile(files: dict[str, Path], repeat: int) -> list[Row]:
    rows: list[Row] = []
    for kind in ("parquet", "csv"):
        case = f"oxi profile ({run._rows(files)} {kind})"
        src = files[kind]
        ours = run_tool(case, "oxiflow", [str(BIN / "oxi"), "profile", str(src), "--json"], repeat)
        duck = run_tool(case, "duckdb", tool_cmd("duckdb_summarize", src, OUT / f"summarize_{kind}.csv"), repeat)
        run.rate([ours, duck], 2.0)
        ours.target = "<= 2x DuckDB SUMMARIZE"
        rows += [ours, duck]
    return rows
