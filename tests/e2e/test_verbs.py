"""The shell verbs as a user runs them: real `oxi` processes joined by real pipes, checked against
DuckDB computing the same thing; the terminal table under a pseudo-terminal; SIGPIPE; Ctrl-C."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

OXI = str(Path(sys.executable).with_name("oxi"))
pytestmark = pytest.mark.timeout(60)


def sh(command: str, cwd: Path, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """Run a shell pipeline with `oxi` on the PATH (pipefail: any failing stage fails it)."""
    env = {**os.environ, "PATH": f"{Path(OXI).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, timeout=60, **kw
    )  # type: ignore[call-overload]


def oxi(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OXI, *args], cwd=cwd, input=stdin, capture_output=True, timeout=60)


def rows(query: str) -> list[tuple[object, ...]]:
    return duckdb.sql(query).fetchall()


def arrow(data: bytes) -> pa.Table:
    return ipc.open_stream(data).read_all()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verbs")
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE orders AS SELECT range AS order_id, (range % 50) AS customer_id, "
        "round(range * 0.37 % 500, 2)::DECIMAL(10,2) AS amount, "
        "CASE WHEN range % 10 = 0 THEN NULL ELSE ['placed','paid','cancelled'][range % 3 + 1] END AS status, "
        "TIMESTAMP '2024-01-01' + INTERVAL (range) MINUTE AS created_at FROM range(20000)"
    )
    con.execute("COPY orders TO '" + str(folder / "orders.csv") + "' (HEADER)")
    con.execute("COPY orders TO '" + str(folder / "orders.parquet") + "'")
    con.execute(
        "COPY (SELECT range AS customer_id, 'country-' || (range % 4) AS country FROM range(50)) TO '"
        + str(folder / "customers.jsonl")
        + "' (FORMAT json)"
    )
    return folder


def test_three_verb_pipe_matches_duckdb(data: Path) -> None:
    res = sh(
        "oxi cat orders.csv | oxi filter \"amount > 100 and status = 'paid'\" | oxi select order_id,amount "
        "| oxi write out.parquet",
        data,
    )
    assert res.returncode == 0, res.stderr
    got = pq.read_table(data / "out.parquet")
    assert got.column_names == ["order_id", "amount"]
    expected = rows(
        f"SELECT order_id, amount FROM read_csv('{data}/orders.csv') WHERE amount > 100 AND status = 'paid' "
        "ORDER BY order_id"
    )
    assert list(zip(*[got.column(c).to_pylist() for c in got.column_names], strict=True)) == expected
    assert res.stdout == b"" and res.stderr == b""


def test_verbs_chain_sort_derive_rename_cast_dedupe(data: Path) -> None:
    res = sh(
        "oxi cat orders.parquet | oxi dedupe --keys customer_id --keep last --order-by order_id "
        "| oxi derive 'big=amount > 250' | oxi rename customer_id=cid | oxi cast 'amount=DOUBLE' "
        "| oxi sort 'amount desc,cid'",
        data,
    )
    assert res.returncode == 0, res.stderr
    got = arrow(res.stdout)
    assert got.schema.field("amount").type == pa.float64()
    assert got.column_names == ["order_id", "cid", "amount", "status", "created_at", "big"]
    expected = rows(
        f"SELECT order_id, customer_id, amount::DOUBLE, amount > 250 FROM '{data}/orders.parquet' "
        "QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY order_id DESC) = 1 "
        "ORDER BY amount DESC, customer_id"
    )
    assert (
        list(zip(*[got.column(c).to_pylist() for c in ("order_id", "cid", "amount", "big")], strict=True)) == expected
    )


def test_sql_with_named_inputs_of_two_formats(data: Path) -> None:
    query = (
        "select c.country, count(*) as n, sum(o.amount) as total from o join c using (customer_id) "
        "group by 1 order by 1"
    )
    res = oxi("sql", "-i", "o=orders.csv", "-i", "c=customers.jsonl", query, "-f", "jsonl", cwd=data)
    assert res.returncode == 0, res.stderr
    got = [json.loads(line) for line in res.stdout.decode().splitlines()]
    expected = rows(
        f"select c.country, count(*), sum(o.amount) from read_csv('{data}/orders.csv') o "
        f"join read_json('{data}/customers.jsonl') c using (customer_id) group by 1 order by 1"
    )
    # sums of doubles in another order differ in the last bits
    assert [(r["country"], r["n"], round(r["total"], 2)) for r in got] == [(a, b, round(c, 2)) for a, b, c in expected]


def test_text_on_stdin_head_tail_count(data: Path) -> None:
    csv_bytes = (data / "orders.csv").read_bytes()
    head = oxi("head", "-n", "3", cwd=data, stdin=csv_bytes)
    tail = oxi("tail", "-n", "2", "-f", "csv", cwd=data, stdin=csv_bytes)
    count = oxi("count", cwd=data, stdin=csv_bytes)
    assert head.returncode == tail.returncode == count.returncode == 0, (head.stderr, tail.stderr, count.stderr)
    assert arrow(head.stdout).column("order_id").to_pylist() == [0, 1, 2]
    assert tail.stdout.decode().splitlines()[1:] == csv_bytes.decode().splitlines()[-2:]
    assert int(count.stdout) == rows(f"select count(*) from read_csv('{data}/orders.csv')")[0][0]


def test_count_parquet_reads_the_footer(data: Path) -> None:
    res = oxi("count", "orders.parquet", "--json", cwd=data)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"rows": pq.ParquetFile(data / "orders.parquet").metadata.num_rows}


def test_schema_json_and_arrow(data: Path) -> None:
    res = oxi("schema", "orders.parquet", "--json", cwd=data)
    assert res.returncode == 0, res.stderr
    expected = duckdb.sql(f"SELECT * FROM '{data}/orders.parquet' LIMIT 0").arrow().schema  # the reader is DuckDB
    got = json.loads(res.stdout)["fields"]
    assert [(f["name"], f["type"], f["nullable"]) for f in got] == [(f.name, str(f.type), f.nullable) for f in expected]


def test_convert_and_write_formats_agree(data: Path) -> None:
    conv = oxi("convert", "orders.csv", "conv.jsonl", cwd=data)
    assert conv.returncode == 0, conv.stderr
    piped = sh("oxi cat conv.jsonl | oxi write piped.parquet", data)
    assert piped.returncode == 0, piped.stderr
    expected = rows(f"select count(*), sum(amount), count(status) from read_csv('{data}/orders.csv')")
    assert rows(f"select count(*), sum(amount), count(status) from '{data}/piped.parquet'") == expected


def test_generic_step_runs_any_transform(data: Path) -> None:
    res = sh('oxi cat orders.parquet | oxi step limit --config \'{"n": 4, "offset": 2}\'', data)
    assert res.returncode == 0, res.stderr
    assert arrow(res.stdout).column("order_id").to_pylist() == [2, 3, 4, 5]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["filter", "nope > 1", "orders.csv"], 1, b"oxi filter: error: step filter"),
        (["cat", "missing.csv"], 1, b"missing.csv"),
        (["cat", "orders.xyz"], 2, b"oxi cat: error: orders.xyz"),
        (["step", "filter", "--config", '{"exprr": 1}', "orders.csv"], 2, b"did you mean 'expr'?"),
        (["head", "-f", "xml", "orders.csv"], 2, b"unknown --format"),
        (["cat", "orders.csv", "-o", "delimitr=;"], 2, b"did you mean 'delimiter'?"),
    ],
)
def test_errors_name_the_verb_and_exit_codes(data: Path, args: list[str], code: int, needle: bytes) -> None:
    res = oxi(*args, cwd=data)
    assert res.returncode == code, res.stderr
    assert needle in res.stderr and b"Traceback" not in res.stderr
    assert res.stdout == b""


def test_bad_text_on_stdin_names_the_position(data: Path) -> None:
    res = oxi("cat", "-o", "block_size=16", cwd=data, stdin=b"a,b\n1,2\n3,4\n5,6\n7,8\nx,9\n")
    assert res.returncode == 1
    assert b"oxi cat: error: <stdin>" in res.stderr and b"column" in res.stderr


def test_failing_producer_fails_the_next_process(data: Path) -> None:
    res = sh("oxi cat orders.csv | oxi filter 'amount / 0 > cast(status as int)' | oxi count", data)
    assert res.returncode == 1
    assert b"oxi filter: error" in res.stderr and b"oxi count: error" in res.stderr


def test_sigpipe_ends_quietly(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    duckdb.sql(f"COPY (SELECT range AS id, 'row ' || range AS txt FROM range(3000000)) TO '{big}' (HEADER)")
    started = time.monotonic()
    res = sh("oxi cat big.csv -f csv | head -1; echo ${PIPESTATUS[0]} >&2", tmp_path)
    elapsed = time.monotonic() - started
    assert res.stdout == b"id,txt\n"
    assert res.stderr.decode().strip() == "141" and b"Traceback" not in res.stderr
    assert elapsed < 10  # the whole file (~50 MB of CSV) would take longer than stopping at once


def test_ctrl_c_leaves_no_temporary_files(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    duckdb.sql(f"COPY (SELECT range AS id, 'row ' || range AS txt, range * 0.5 AS x FROM range(4000000)) TO '{big}'")
    proc = subprocess.Popen([OXI, "convert", "big.csv", "out.parquet"], cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not glob.glob(str(tmp_path / ".out.parquet.oxitmp-*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling for the temporary file, not waiting for time
    assert proc.poll() is None, "finished before it could be interrupted: make the file bigger"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"oxi convert: interrupted" in err and b"Traceback" not in err
    assert not glob.glob(str(tmp_path / ".*oxitmp*")) and not (tmp_path / "out.parquet").exists()


def test_terminal_table_under_a_pty(data: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout is the pseudo-terminal, 200 columns wide
        os.chdir(data)
        os.environ.pop("COLUMNS", None)
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
        os.execv(OXI, [OXI, "head", "-n", "3", "orders.parquet"])
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    lines = out.decode().replace("\r\n", "\n").splitlines()
    expected = duckdb.sql(f"SELECT * FROM '{data}/orders.parquet' LIMIT 3").arrow().read_all()
    # aligned: every name, type and value sits inside its column's rule segment
    segments = [(m.start(), m.end()) for m in re.finditer("─+", lines[2])]
    assert len(segments) == 5
    for i, (start, end) in enumerate(segments):
        field = expected.schema.field(i)
        assert lines[0][start:end].strip() == field.name
        assert lines[1][start:end].strip() == str(field.type)
        values = [lines[3 + r][start:end].strip() for r in range(3)]
        assert values == [str(v) if v is not None else "null" for v in expected.column(i).to_pylist()]
    assert lines[6] == "3 rows × 5 columns"


def test_help_of_every_verb_has_an_example() -> None:
    from typer.testing import CliRunner

    from oxiflow.cli import commands
    from oxiflow.cli.main import app
    from oxiflow.cli.verbs import VERBS

    if not any(c.name == "cat" for c in app.registered_commands):
        commands.register(app)
    runner = CliRunner()
    for verb in VERBS:
        res = runner.invoke(app, [verb, "--help"])
        assert res.exit_code == 0, res.output
        assert "Example: oxi " in res.output, verb


def test_shell_completion(tmp_path: Path) -> None:
    env = {**os.environ, "_OXI_COMPLETE": "complete_bash", "COMP_WORDS": "oxi fil", "COMP_CWORD": "1"}
    res = subprocess.run([OXI], env=env, capture_output=True, timeout=30)
    assert res.stdout.decode().split() == ["filter"]
    script = sh("oxi --show-completion", tmp_path)  # bash is the shell running it
    assert script.returncode == 0
    assert b"complete -o default -F _oxi_completion oxi" in script.stdout


@pytest.mark.parametrize(
    ("shell", "script_marker", "env", "completion"),
    [
        ("zsh", "compdef _oxi_completion oxi", {"_TYPER_COMPLETE_ARGS": "oxi fil"}, '"filter":'),
        (
            "fish",
            "complete --command oxi",
            {"_TYPER_COMPLETE_ARGS": "oxi fil", "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
            "filter\tKeep the rows",
        ),
    ],
)
def test_zsh_and_fish_completion(shell: str, script_marker: str, env: dict[str, str], completion: str) -> None:
    # the script for a named shell (what `oxi --show-completion` prints when run from that shell)
    script = subprocess.run(
        [OXI, "--show-completion", shell],
        env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
        capture_output=True,
        timeout=30,
    )
    assert script.returncode == 0 and script_marker in script.stdout.decode()
    # and the answers that script asks oxi for
    res = subprocess.run(
        [OXI], env={**os.environ, "_OXI_COMPLETE": f"complete_{shell}", **env}, capture_output=True, timeout=30
    )
    assert completion in res.stdout.decode()


# -- `input` of `oxi sql` with -i inputs (docs/shell.md#inputs-of-oxi-sql-and-oxi-step) ------------
def test_sql_with_named_inputs_reads_piped_stdin_as_input(data: Path) -> None:
    # stdin used to be ignored: `input` was the lone -i input under another name (a silent wrong count)
    count = sh("oxi cat orders.parquet | oxi sql -i c=customers.jsonl 'select count(*) n from input' -f csv", data)
    assert count.returncode == 0, count.stderr
    assert count.stdout.decode().split() == ["n", str(rows(f"select count(*) from '{data}/orders.parquet'")[0][0])]
    # and `input` joined to the named input: it failed, "RecordBatchReader has already been consumed"
    query = "select c.country, count(*) n from input join c using (customer_id) group by 1 order by 1"
    joined = sh(f"oxi cat orders.parquet | oxi sql -i c=customers.jsonl '{query}' -f jsonl", data)
    assert joined.returncode == 0, joined.stderr
    expected = rows(
        f"select c.country, count(*) from '{data}/orders.parquet' o join read_json('{data}/customers.jsonl') c "
        "using (customer_id) group by 1 order by 1"
    )
    assert [(r["country"], r["n"]) for r in map(json.loads, joined.stdout.decode().splitlines())] == expected


def test_sql_with_named_inputs_leaves_an_unused_stdin_alone(data: Path) -> None:
    # stdin is a pipe held open and never written: a verb that read it would wait for ever
    proc = subprocess.Popen(
        [OXI, "sql", "-i", "c=customers.jsonl", "select count(*) n from c", "-f", "csv"],
        cwd=data,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        code = proc.wait(timeout=60)  # the output is a few bytes: no pipe fills up
        assert code == 0, proc.stderr.read()
        assert proc.stdout.read().decode().split() == ["n", "50"]
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()


def test_sql_input_without_stdin_is_an_error_not_the_named_input(data: Path) -> None:
    res = oxi("sql", "-i", "c=customers.jsonl", "select count(*) n from input", "-f", "csv", cwd=data, stdin=b"")
    assert res.returncode == 1 and res.stdout == b""
    assert b"oxi sql: error: <stdin>" in res.stderr and b"no data on standard input" in res.stderr


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_sql_reads_an_input_twice(data: Path, source: str) -> None:
    query = "select count(*) n, sum(a.amount) total from input a join input b using (order_id)"
    cmd = (
        f"oxi cat orders.csv | oxi sql '{query}' -f csv"
        if source == "stdin"
        else f"oxi sql '{query}' orders.csv -f csv"
    )
    res = sh(cmd, data)
    assert res.returncode == 0, res.stderr
    n, total = res.stdout.decode().splitlines()[1].split(",")
    expected = rows(
        f"select count(*), sum(a.amount) from read_csv('{data}/orders.csv') a "
        f"join read_csv('{data}/orders.csv') b using (order_id)"
    )[0]
    assert (int(n), round(float(total), 2)) == (expected[0], round(float(expected[1]), 2))


def test_select_columns_and_exclude_together(data: Path) -> None:
    # COLUMNS was taken for a FILE as soon as --exclude was given
    res = oxi("select", "order_id,amount,status", "-x", "amount", "orders.parquet", cwd=data)
    assert res.returncode == 0, res.stderr
    got = arrow(res.stdout)
    assert got.column_names == ["order_id", "status"]
    assert (
        got.to_pylist()
        == duckdb.sql(f"select order_id, status from '{data}/orders.parquet'").arrow().read_all().to_pylist()
    )
    only_x = oxi("select", "-x", "amount,status", "orders.parquet", cwd=data)  # no COLUMNS: all FILEs
    assert only_x.returncode == 0, only_x.stderr
    assert arrow(only_x.stdout).column_names == ["order_id", "customer_id", "created_at"]


def test_count_takes_format(data: Path) -> None:
    n = rows(f"select count(*) from '{data}/orders.parquet'")[0][0]
    as_csv = oxi("count", "orders.csv", "--format", "csv", cwd=data)
    as_arrow = oxi("count", "orders.parquet", "-f", "arrow", cwd=data)
    assert (as_csv.returncode, as_arrow.returncode) == (0, 0), (as_csv.stderr, as_arrow.stderr)
    assert as_csv.stdout.decode().split() == ["rows", str(n)]
    assert arrow(as_arrow.stdout).to_pylist() == [{"rows": n}]
    both = oxi("count", "orders.csv", "--json", "-f", "csv", cwd=data)
    assert both.returncode == 2 and b"--json or --format" in both.stderr


def test_count_parquet_reads_no_data_page(tmp_path: Path) -> None:
    """The footers say how many rows there are: a file whose data pages are garbage still counts,
    while reading its rows fails (so a count that scanned would fail too)."""
    path = tmp_path / "broken.parquet"
    table = pa.table({"id": list(range(50_000)), "txt": [f"row {i}" for i in range(50_000)]})
    pq.write_table(table, path, compression="zstd", row_group_size=10_000)
    meta = pq.read_metadata(path)
    blob = bytearray(path.read_bytes())
    footer_start = len(blob) - 8 - int.from_bytes(blob[-8:-4], "little")
    first_page = min(meta.row_group(0).column(0).data_page_offset, meta.row_group(0).column(1).data_page_offset)
    blob[first_page:footer_start] = bytes([0x5A]) * (footer_start - first_page)  # every page and page header
    path.write_bytes(bytes(blob))
    assert pq.read_metadata(path).num_rows == 50_000  # the footer is intact
    with pytest.raises(Exception):  # noqa: B017 - any reader error will do: the pages are garbage
        pq.read_table(path)
    res = oxi("count", "broken.parquet", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"rows": 50_000}
    scan = oxi("cat", "broken.parquet", "-f", "csv", cwd=tmp_path)
    assert scan.returncode == 1 and b"oxi cat: error" in scan.stderr


def test_step_runs_a_third_party_oxi(tmp_path: Path) -> None:
    """A transform from a plugin package (installed like test_third_party_plugin.py installs it) is a
    verb through `oxi step`, on a real pipe."""
    from test_third_party_plugin import build_wheel

    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    install = subprocess.run(
        [*pip, str(build_wheel(tmp_path))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    (tmp_path / "in.csv").write_text("id,amount\n1,1.5\n2,-2\n3,10\n", encoding="utf-8")
    plugin = f"export PYTHONPATH={site}${{PYTHONPATH:+:$PYTHONPATH}}; "
    config = '{"column": "amount", "factor": 3}'
    res = sh(plugin + f"oxi cat in.csv | oxi step scale_column --config '{config}' | oxi write out.parquet", tmp_path)
    assert res.returncode == 0, res.stderr
    source = pcsv.read_csv(tmp_path / "in.csv")  # the oracle: pyarrow does the same multiplication
    expected = source.set_column(1, "amount", pc.multiply(source.column("amount").cast(pa.float64()), 3.0))
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == expected.to_pylist()
    unknown = sh(plugin + "oxi cat in.csv | oxi step scale_colum", tmp_path)
    assert unknown.returncode == 2 and b"(see `oxi plugins list`)" in unknown.stderr


def test_a_missing_file_hint_speaks_of_the_current_folder(data: Path) -> None:
    res = oxi("cat", "nope.csv", cwd=data)
    assert res.returncode == 1
    assert b"file not found: nope.csv" in res.stderr and b"pipeline file" not in res.stderr
