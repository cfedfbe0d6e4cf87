"""Shell manners of the verbs, `oxi profile` and `oxi diff`, as a user meets them: real processes
and real pipes. A process that exits while a native (Arrow) thread still calls into Python aborts
(exit 134); Ctrl-C exits 130 and leaves no temporary file; a closed stdout exits 141; stdout carries
data only; shell completion gives one line per candidate.

Nothing here waits for time: a test waits for a temporary file, for bytes taken from a pipe, or
for a process to end.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import duckdb
import pyarrow.ipc as ipc
import pytest

OXI = str(Path(sys.executable).with_name("oxi"))
OXIFLOW = str(Path(sys.executable).with_name("oxiflow"))
pytestmark = pytest.mark.timeout(120)
NATIVE_ABORT = ("terminate called", "Fatal Python error")


def sh(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """A shell pipeline with `oxi` on the PATH; `echo ${PIPESTATUS[@]}` shows every exit code."""
    full = {**os.environ, "PATH": f"{Path(OXI).parent}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=full, capture_output=True, timeout=120)


def no_native_abort(stderr: bytes) -> bool:
    text = stderr.decode(errors="replace")
    return not any(marker in text for marker in NATIVE_ABORT) and "Traceback" not in text


def poll(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, "finished before it could be interrupted: make the input bigger"
        assert time.monotonic() < deadline, "timed out polling"
        time.sleep(0.01)  # polling for a file to appear, not waiting for time


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("manners")
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT range AS id, 'row ' || range AS txt, range * 0.5 AS x, range % 1000 AS g "
        "FROM range(4000000)"
    )
    con.execute(f"COPY (SELECT * FROM t WHERE id < 1000000) TO '{folder}/m1.csv' (HEADER)")
    con.execute(f"COPY (SELECT * FROM t WHERE id < 5000) TO '{folder}/small.csv' (HEADER)")
    con.execute(f"COPY (SELECT * FROM t WHERE id < 5000) TO '{folder}/small.parquet'")
    con.execute(f"COPY t TO '{folder}/big.csv' (HEADER)")
    con.execute(f"COPY t TO '{folder}/big.parquet'")
    return folder


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> dict[str, str]:
    """A $TMPDIR of the test's own, to see every temporary file a run leaves behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return {**os.environ, "TMPDIR": str(folder)}


def leftovers(env: dict[str, str]) -> list[str]:
    """Temporary files and folders under $TMPDIR (DuckDB's shared spill folder may stay, empty)."""
    found = glob.glob(os.path.join(env["TMPDIR"], "*"))
    spill = os.path.join(env["TMPDIR"], "oxiflow-duckdb-spill")
    return [f for f in found if f != spill] + glob.glob(os.path.join(spill, "*"))


# -- bug: a native abort at exit (exit 134) -------------------------------------------------------
def test_text_from_an_oxi_producer_never_aborts_the_consumer(data: Path) -> None:
    # Arrow's CSV reader read stdin on its own thread through a Python file: a read, or a Python
    # buffer it held, still around at exit aborted `oxi count` about one time in three
    for _ in range(8):
        res = sh("oxi head -n 50 small.csv -f csv | oxi count; echo ${PIPESTATUS[@]} >&2", data)
        assert res.stdout == b"50\n"
        assert res.stderr.decode().split() == ["0", "0"], res.stderr


def test_a_verb_that_stops_early_on_text_input_exits_cleanly(data: Path) -> None:
    # `oxi head` stops reading while Arrow still reads ahead: that aborted it every time
    expected = duckdb.sql(f"SELECT * FROM '{data}/m1.csv' LIMIT 3").fetchall()
    for _ in range(3):
        res = sh("oxi cat m1.csv -f csv | oxi head -n 3 -f csv; echo ${PIPESTATUS[@]} >&2", data)
        assert res.stderr.decode().split() in (["0", "0"], ["141", "0"]), res.stderr
        lines = res.stdout.decode().splitlines()
        assert lines[0] == "id,txt,x,g" and len(lines) == 4
        assert [tuple(line.split(",")) for line in lines[1:]] == [tuple(map(str, r)) for r in expected]


PIPE_PIPELINE = """
metadata: {name: stdin_stop}
pipeline:
  - name: read_pipe
    config: {block_size: 16777216}
  - name: sql
    config: {query: "select g, count(*) n from input group by g"}
  - name: write_parquet
    config: {path: out/agg.parquet}
"""


def test_stopping_a_run_that_reads_stdin_exits_143_without_abort(tmp_path: Path) -> None:
    """`oxiflow worker stop` sends SIGTERM: the run stopped, then aborted at exit (exit 134) when
    Arrow's reader thread was still reading stdin. Same cause as above."""
    (tmp_path / "p.yaml").write_text(PIPE_PIPELINE, encoding="utf-8")
    chunk = b"".join(b"%d,row %d,%d.5,%d\n" % (i, i, i, i % 100) for i in range(20000))
    for _ in range(2):
        proc = subprocess.Popen(
            [OXIFLOW, "run", "p.yaml", "--no-state"],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stderr is not None
        going = threading.Event()

        def produce(stdin: object = proc.stdin, ready: threading.Event = going) -> None:
            written = 0
            try:
                stdin.write(b"id,txt,x,g\n")  # type: ignore[attr-defined]
                while True:  # endless: the run is stopped, never done
                    stdin.write(chunk)  # type: ignore[attr-defined]
                    written += len(chunk)
                    if written > 64 << 20:  # far more than the pipe holds: the run is reading
                        ready.set()
            except (OSError, ValueError):
                ready.set()

        feeder = threading.Thread(target=produce, daemon=True)
        feeder.start()
        assert going.wait(60)
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        proc.wait(60)
        feeder.join(10)
        assert proc.returncode == 143, err
        assert no_native_abort(err), err


# -- Ctrl-C -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "marker"),
    [
        (["profile", "big.csv", "--json"], "oxiflow-profile-*"),
        (["diff", "big.csv", "big.parquet", "--key", "id"], "oxiflow-diff-*"),
    ],
)
def test_ctrl_c_of_profile_and_diff(data: Path, tmpdir_env: dict[str, str], args: list[str], marker: str) -> None:
    # DuckDB turns Ctrl-C during a query into its own RuntimeError("Query interrupted"): it was a
    # traceback (diff) or "error: ... Query interrupted" (profile), exit 1
    proc = subprocess.Popen([OXI, *args], cwd=data, env=tmpdir_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    poll(lambda: bool(glob.glob(os.path.join(tmpdir_env["TMPDIR"], marker))), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == f"oxi {args[0]}: interrupted\n".encode() and out == b""
    assert leftovers(tmpdir_env) == []


def _feed_then_hold(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write ``data`` (more than a pipe holds, so the reader has started) and keep stdin open."""
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()


@pytest.mark.parametrize("verb", ["count", "schema", "cat"])
def test_ctrl_c_while_waiting_for_stdin(data: Path, verb: str) -> None:
    # a read waiting for the next bytes of stdin ended only when data came: `(sleep 3) | oxi schema`
    # sat out the engine's grace period, then exited 1 (count and schema turned failures into 1)
    proc = subprocess.Popen(
        [OXI, verb], cwd=data, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    head = (data / "m1.csv").read_bytes()[: 3 << 20]  # 3 MiB: the reader waits for the rest of its block
    writer = threading.Thread(target=_feed_then_hold, args=(proc, head), daemon=True)
    writer.start()
    writer.join(60)  # returned: the pipe took 3 MiB, so `oxi` is reading it
    assert not writer.is_alive()
    proc.send_signal(signal.SIGINT)
    # stdin stays open until oxi is gone: communicate() would close it at once, and an EOF racing
    # the signal handler made the truncated last row a parse error (exit 1) on a busy CI host
    proc.wait(timeout=30)
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert err == f"oxi {verb}: interrupted\n".encode()


def test_ctrl_c_of_a_pipe_of_three_verbs(data: Path, tmpdir_env: dict[str, str]) -> None:
    """The terminal sends SIGINT to every process of the pipe: each one exits 130 and nothing
    temporary is left (the sink's .oxitmp file, stdin spools)."""
    out = data / "ctrl_c_out.parquet"
    cat = subprocess.Popen(
        [OXI, "cat", "big.csv"],
        cwd=data,
        env=tmpdir_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
    )
    group = cat.pid
    filt = subprocess.Popen(
        [OXI, "filter", "x >= 0"],
        cwd=data,
        env=tmpdir_env,
        stdin=cat.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=group,
    )
    write = subprocess.Popen(
        [OXI, "write", out.name],
        cwd=data,
        env=tmpdir_env,
        stdin=filt.stdout,
        stderr=subprocess.PIPE,
        process_group=group,
    )
    assert cat.stdout is not None and filt.stdout is not None
    cat.stdout.close()
    filt.stdout.close()
    poll(lambda: bool(glob.glob(str(data / f".{out.name}.oxitmp-*"))), write)
    os.killpg(group, signal.SIGINT)
    errors = {}
    for name, proc in (("cat", cat), ("filter", filt), ("write", write)):
        _, err = proc.communicate(timeout=60)
        errors[name] = (proc.returncode, err)
    assert errors == {name: (130, f"oxi {name}: interrupted\n".encode()) for name in errors}
    assert not glob.glob(str(data / ".*oxitmp*")) and not out.exists()
    assert leftovers(tmpdir_env) == []


# -- a closed stdout --------------------------------------------------------------------------------
def _run_into_closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader is already gone: the first write fails (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([OXI, *args], cwd=cwd, stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "small.parquet"],
        ["profile", "small.parquet", "--json"],
        ["diff", "small.csv", "small.parquet", "--key", "id"],
        ["diff", "small.csv", "small.parquet", "--key", "id", "--json"],
        ["count", "small.csv"],
        ["count", "small.parquet", "--format", "csv"],
        ["schema", "small.parquet", "--json"],
        ["schema", "small.parquet"],
    ],
)
def test_printed_results_into_a_closed_pipe_exit_141(data: Path, args: list[str]) -> None:
    # Click's own EPIPE handling turned these into exit 1
    res = _run_into_closed_pipe(args, data)
    assert (res.returncode, res.stderr) == (141, b"")


def test_sigpipe_on_the_default_arrow_output_and_mid_pipe(data: Path) -> None:
    alone = sh("oxi cat big.parquet | head -c 1000 > /dev/null; echo ${PIPESTATUS[@]} >&2", data)
    assert alone.stderr.decode().split() == ["141", "0"], alone.stderr
    # the middle verb's reader goes away: it stops at once (141), then so does the one feeding it
    middle = sh("oxi cat big.csv | oxi filter 'x >= 0' | head -c 1000 > /dev/null; echo ${PIPESTATUS[@]} >&2", data)
    assert middle.stderr.decode().split() == ["141", "141", "0"], middle.stderr


def test_a_pipe_cut_short_by_oxi_head_is_still_arrow_intact(data: Path) -> None:
    res = sh("oxi cat big.parquet | oxi head -n 7", data)
    assert res.returncode == 0, res.stderr
    got = ipc.open_stream(res.stdout).read_all()
    expected = duckdb.sql(f"SELECT * FROM '{data}/big.parquet' LIMIT 7").arrow().read_all()
    assert got.to_pylist() == expected.to_pylist()


# -- stdout is data only ----------------------------------------------------------------------------
@pytest.mark.parametrize("stream", ["None", "'read'", "'write'"])
def test_duckdb_progress_bar_is_off_on_every_connection(stream: str) -> None:
    # DuckDB draws it on stdout for queries over 2 s (corrupting `oxi profile --json > f`); a
    # session setting, so connect() sets it. Checked in a process of its own: under pytest DuckDB
    # starts with the bar off anyway, in a command it starts with it on.
    code = (
        "from oxiflow.engine.duck import connect\n"
        f"con = connect(None, stream={stream})\n"
        "print(con.execute(\"SELECT current_setting('enable_progress_bar')\").fetchone()[0])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert (res.returncode, res.stdout) == (0, b"False\n"), res.stderr


# -- shell completion -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shell", "env", "separator"),
    [
        ("fish", {"_TYPER_COMPLETE_FISH_ACTION": "get-args"}, "\t"),
        ("powershell", {"_TYPER_COMPLETE_WORD_TO_COMPLETE": "-"}, ":::"),
    ],
)
def test_completion_gives_one_line_per_candidate(shell: str, env: dict[str, str], separator: str) -> None:
    # typer wrapped help at 80 columns: fish took `else arrow).` for a candidate
    from oxiflow.cli.verbs import FormatOpt, InputFormatOpt, OptOpt

    res = subprocess.run(
        [OXI],
        env={**os.environ, "_OXI_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "oxi head -", **env},
        capture_output=True,
        timeout=30,
    )
    lines = res.stdout.decode().splitlines()
    assert lines and all(separator in line and line.startswith("-") for line in lines), lines
    candidates = dict(line.split(separator, 1) for line in lines)
    assert {"-n", "--rows", "--format", "-f", "--input-format", "-F", "--opt", "-o", "--verbose"} <= set(candidates)
    for option, annotated in (("--format", FormatOpt), ("--input-format", InputFormatOpt), ("--opt", OptOpt)):
        assert candidates[option] == get_args(annotated)[1].help  # the whole help, on its one line


def test_zsh_descriptions_have_no_line_break() -> None:
    res = subprocess.run(
        [OXI],
        env={**os.environ, "_OXI_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "oxi head -"},
        capture_output=True,
        timeout=30,
    )
    entries = res.stdout.decode().strip().removeprefix("_arguments '*: :((").removesuffix("))'").splitlines()
    assert entries and all(e.startswith('"-') and e.endswith('"') for e in entries), entries
