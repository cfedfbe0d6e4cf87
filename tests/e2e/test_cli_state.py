"""`oxiflow run` records runs and holds a per-pipeline lock; `runs`, `state`, `worker` read and manage them.

Blocking runs read standard input from a pipe the test holds: a run is "going" until the test writes its
input and closes the pipe, so nothing here waits for time to pass.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from _cli import oxiflow, write

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CSV = "id,name,amount\n1,a,1.5\n2,b,\n3,c,7.25\n4,d,0.5\n"
PIPELINE = """
pipeline:
  - name: read_csv
    id: src
    config: {path: in.csv}
  - name: filter
    config: {expr: "id > 1"}
  - name: write_parquet
    id: out
    config: {path: out/x.parquet}
"""
BLOCKING = """
pipeline:
  - name: read_stdin
  - name: parse_csv
  - name: write_parquet
    config: {path: out/b.parquet}
"""
INPUT = "a,b\n1,2\n3,4\n"


@pytest.fixture(autouse=True)
def _no_state_url_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXIFLOW_STATE_URL", raising=False)  # the subprocesses inherit os.environ


def _setup(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(CSV, encoding="utf-8")
    write(tmp_path / "p.yaml", PIPELINE)
    write(tmp_path / "blk.yaml", BLOCKING)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_args(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """No option (the default .oxiflow/state.db), or --state-url to a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield []
        return
    schema = f"oxistate_{uuid.uuid4().hex[:12]}"
    yield ["--state-url", f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def runs_json(tmp_path: Path, state_args: list[str], *extra: str) -> list[dict]:
    r = oxiflow("runs", "--json", *extra, *state_args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "oxiflow.cli.main", "run", "blk.yaml", *args],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def poll(condition: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        assert time.monotonic() < deadline, "timed out polling"
        time.sleep(0.02)  # polling interval


def going(tmp_path: Path, state_args: list[str], proc: subprocess.Popen[str]) -> dict:
    """Wait until the blocking run holds its lock (it is listed as a running worker); return that worker."""
    found: list[dict] = []

    def listed() -> bool:
        r = oxiflow("worker", "list", "--json", *state_args, cwd=tmp_path)
        found[:] = [w for w in json.loads(r.stdout or "[]") if w["state"] == "running"]
        return bool(found)

    poll(listed, proc)
    return found[0]


def test_two_runs_are_recorded_with_their_step_figures(tmp_path: Path, state_args: list[str]) -> None:
    _setup(tmp_path)
    results = []
    for _ in range(2):
        r = oxiflow("run", "p.yaml", "--json", *state_args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout))
    runs = runs_json(tmp_path, state_args)
    assert [x["run_id"] for x in runs] == [results[1]["run_id"], results[0]["run_id"]]  # newest first
    for res in results:
        show = oxiflow("runs", "show", res["run_id"], "--json", *state_args, cwd=tmp_path)
        assert show.returncode == 0, show.stderr
        rec = json.loads(show.stdout)
        assert (rec["pipeline"], rec["status"], rec["exit_code"]) == ("p", "ok", 0)
        assert rec["seconds"] == pytest.approx(res["seconds"], abs=0.001)
        keys = ["step_id", "oxi", "kind", "status", "rows_in", "rows_out", "rows_rejected", "rows_filtered"]
        keys += ["bytes_in", "bytes_out", "attempts", "error", "fused", "pushdown", "balanced"]
        assert [{k: s[k] for k in keys} for s in rec["steps"]] == [{k: s[k] for k in keys} for s in res["steps"]]
        assert [s["seconds"] for s in rec["steps"]] == pytest.approx([s["seconds"] for s in res["steps"]])
        # the run's totals, against the data itself: 4 rows read, 3 kept (id > 1), 1 filtered
        written = pq.read_table(tmp_path / "out/x.parquet").num_rows
        assert (rec["rows_read"], rec["rows_written"], rec["rows_filtered"]) == (4, written, 4 - written)
    assert runs_json(tmp_path, state_args, "--limit", "1")[0]["run_id"] == results[1]["run_id"]
    assert runs_json(tmp_path, state_args, "--pipeline", "other") == []
    listed = oxiflow("state", "list", "--json", *state_args, cwd=tmp_path)
    assert [(p["pipeline"], p["runs"]) for p in json.loads(listed.stdout)] == [("p", 2)]


def test_a_failed_run_is_recorded_failed(tmp_path: Path) -> None:
    write(
        tmp_path / "bad.yaml",
        "pipeline:\n  - name: read_csv\n    config: {path: missing.csv}\n"
        "  - name: write_csv\n    config: {path: o.csv}\n",
    )
    r = oxiflow("run", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    (run,) = runs_json(tmp_path, [])
    assert run["status"] == "failed" and "missing.csv" in run["error"] and run["exit_code"] == 1


def test_second_run_fails_fast_and_wait_waits(tmp_path: Path, state_args: list[str]) -> None:
    _setup(tmp_path)
    first = start(tmp_path, *state_args)
    procs = [first]
    try:
        worker = going(tmp_path, state_args, first)
        assert worker["pid"] == first.pid and worker["pipeline"] == "blk"

        second = oxiflow("run", "blk.yaml", *state_args, cwd=tmp_path)
        assert second.returncode == 75
        assert f"pipeline 'blk' is already running (run {worker['run_id']}, pid {first.pid}" in second.stderr
        assert "--wait" in second.stderr
        gave_up = oxiflow("run", "blk.yaml", "--wait-timeout", "0.2", *state_args, cwd=tmp_path)
        assert gave_up.returncode == 75 and "gave up waiting 0.2s for pipeline 'blk'" in gave_up.stderr
        assert [r["run_id"] for r in runs_json(tmp_path, state_args)] == [worker["run_id"]]  # no row for those

        waiter = start(tmp_path, "--wait", *state_args)
        procs.append(waiter)
        assert waiter.stderr is not None
        line = waiter.stderr.readline()  # blocks until the waiter reports that it waits
        assert line.startswith(f"waiting for the running blk (run {worker['run_id']}")
        _, err = first.communicate(INPUT, timeout=60)
        assert first.returncode == 0, err
        _, err = waiter.communicate(INPUT, timeout=60)
        assert waiter.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    later, earlier = runs_json(tmp_path, state_args)
    assert earlier["run_id"] == worker["run_id"] and (earlier["status"], later["status"]) == ("ok", "ok")
    assert later["started_at"] >= earlier["ended_at"]  # the waiter ran only after the first had finished
    assert oxiflow("worker", "list", "--json", *state_args, cwd=tmp_path).stdout.strip() == "[]"


def test_sigkill_leaves_no_stuck_lock_and_repair_marks_the_run_crashed(tmp_path: Path, state_args: list[str]) -> None:
    _setup(tmp_path)
    proc = start(tmp_path, *state_args)
    try:
        worker = going(tmp_path, state_args, proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    listed = json.loads(oxiflow("worker", "list", "--json", *state_args, cwd=tmp_path).stdout)
    assert [(w["run_id"], w["state"]) for w in listed] == [(worker["run_id"], "stale")]
    check = oxiflow("state", "validate", *state_args, cwd=tmp_path)
    assert check.returncode == 1
    assert f"run {worker['run_id']} of blk is marked running but no process runs it" in check.stderr

    rerun = subprocess.run(
        [sys.executable, "-m", "oxiflow.cli.main", "run", "blk.yaml", "-q", *state_args],
        cwd=tmp_path, input=INPUT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr  # the dead run's lock did not stay behind

    repair = oxiflow("state", "repair", "--json", *state_args, cwd=tmp_path)
    assert repair.returncode == 0, repair.stderr
    assert json.loads(repair.stdout)["crashed_runs"] == [worker["run_id"]]
    statuses = {r["run_id"]: r["status"] for r in runs_json(tmp_path, state_args)}
    assert statuses[worker["run_id"]] == "crashed" and sorted(statuses.values()) == ["crashed", "ok"]
    assert oxiflow("state", "validate", *state_args, cwd=tmp_path).returncode == 0


def test_worker_list_show_and_stop(tmp_path: Path, state_args: list[str]) -> None:
    _setup(tmp_path)
    proc = start(tmp_path, *state_args)
    try:
        worker = going(tmp_path, state_args, proc)
        show = oxiflow("worker", "show", "blk", "--json", *state_args, cwd=tmp_path)
        assert show.returncode == 0, show.stderr
        shown = json.loads(show.stdout)
        assert (shown["run_id"], shown["pid"]) == (worker["run_id"], proc.pid)
        assert [s["step_id"] for s in shown["steps"]] == ["read_stdin", "parse_csv", "write_parquet"]
        stop = oxiflow("worker", "stop", worker["run_id"], *state_args, cwd=tmp_path)
        assert stop.returncode == 0, stop.stderr
        assert f"run {worker['run_id']} stopped" in stop.stderr
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    assert "error: stopped by SIGTERM" in stderr and "Ctrl-C" not in stderr
    (run,) = runs_json(tmp_path, state_args)
    assert (run["status"], run["error"], run["exit_code"]) == ("cancelled", "stopped by SIGTERM", 143)
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []  # neither a target nor a temporary file
    assert oxiflow("worker", "list", "--json", *state_args, cwd=tmp_path).stdout.strip() == "[]"
    again = oxiflow("worker", "stop", "blk", *state_args, cwd=tmp_path)
    assert again.returncode == 1 and "no running worker 'blk'" in again.stderr


def test_dry_run_and_no_state_write_no_state(tmp_path: Path) -> None:
    _setup(tmp_path)
    assert oxiflow("run", "p.yaml", "--dry-run", cwd=tmp_path).returncode == 0
    r = oxiflow("run", "p.yaml", "--no-state", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / ".oxiflow" / "state.db").exists()
    listed = oxiflow("runs", cwd=tmp_path)
    assert (listed.returncode, listed.stdout) == (0, "")
    assert "no runs recorded" in listed.stderr


def test_an_unusable_store_fails_the_run_clearly(tmp_path: Path) -> None:
    _setup(tmp_path)
    r = oxiflow("run", "p.yaml", "--state-url", "postgresql://me:hunter2@127.0.0.1:1/x", cwd=tmp_path)
    assert r.returncode == 1
    assert "cannot connect to the state store postgresql://me:***@127.0.0.1:1/x" in r.stderr
    assert "hunter2" not in r.stderr and "--no-state" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_state_url_from_the_project_and_the_environment(tmp_path: Path) -> None:
    _setup(tmp_path)
    write(tmp_path / "oxiflow.yaml", "project: {name: demo}\nsettings: {state_url: var/state.sqlite}\n")
    assert oxiflow("run", "p.yaml", "-q", cwd=tmp_path).returncode == 0
    assert (tmp_path / "var" / "state.sqlite").is_file() and not (tmp_path / ".oxiflow" / "state.db").exists()
    sub = tmp_path / "sub"
    sub.mkdir()
    assert len(runs_json(sub, [])) == 1  # found through the project from a subfolder
    env = {"OXIFLOW_STATE_URL": str(tmp_path / "env.db")}
    assert oxiflow("run", "p.yaml", "-q", cwd=tmp_path, env=env).returncode == 0
    assert len(runs_json(tmp_path, ["--state-url", str(tmp_path / "env.db")])) == 1


def test_show_export_import_backup_restore_cleanup(tmp_path: Path) -> None:
    _setup(tmp_path)
    assert oxiflow("run", "p.yaml", "-q", cwd=tmp_path).returncode == 0
    (run,) = runs_json(tmp_path, [])
    show = json.loads(oxiflow("state", "show", "p", "--json", cwd=tmp_path).stdout)
    assert (show["lock"]["held"], [r["run_id"] for r in show["runs"]]) == (False, [run["run_id"]])
    missing = oxiflow("state", "show", "pp", cwd=tmp_path)
    assert missing.returncode == 1 and "did you mean 'p'?" in missing.stderr

    export = oxiflow("state", "export", cwd=tmp_path)
    doc = json.loads(export.stdout)
    assert [r["run_id"] for r in doc["tables"]["runs"]] == [run["run_id"]]
    (tmp_path / "state.json").write_text(export.stdout, encoding="utf-8")
    other = ["--state-url", str(tmp_path / "other.db")]
    assert oxiflow("state", "import", "state.json", *other, cwd=tmp_path).returncode == 0
    assert json.loads(oxiflow("state", "export", *other, cwd=tmp_path).stdout) == doc

    assert oxiflow("state", "backup", "b.db", cwd=tmp_path).returncode == 0
    assert oxiflow("state", "cleanup", "--older-than", "0s", cwd=tmp_path).returncode == 0
    assert runs_json(tmp_path, []) == []
    restore = oxiflow("state", "restore", "b.db", cwd=tmp_path)
    assert restore.returncode == 0, restore.stderr
    assert [r["run_id"] for r in runs_json(tmp_path, [])] == [run["run_id"]]
    bad = oxiflow("state", "cleanup", "--older-than", "soon", cwd=tmp_path)
    assert bad.returncode == 2 and "expected a duration like 30d" in bad.stderr


def test_unlock_refuses_a_live_lock(tmp_path: Path) -> None:
    _setup(tmp_path)
    proc = start(tmp_path)
    try:
        worker = going(tmp_path, [], proc)
        r = oxiflow("state", "unlock", "blk", cwd=tmp_path)
        assert r.returncode == 1 and f"oxiflow worker stop {worker['run_id']}" in r.stderr
        proc.communicate(INPUT, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    r = oxiflow("state", "unlock", "blk", cwd=tmp_path)
    assert r.returncode == 0 and "blk was not locked" in r.stderr


def test_unlock_force_never_unlocks_a_live_run_of_this_machine(tmp_path: Path, state_args: list[str]) -> None:
    """--force breaks the lock of a holder on another host only; a live local run keeps it, so a second run
    is still refused (docs/state.md, Maintenance)."""
    _setup(tmp_path)
    proc = start(tmp_path, *state_args)
    try:
        worker = going(tmp_path, state_args, proc)
        r = oxiflow("state", "unlock", "blk", "--force", *state_args, cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert f"locked by pid {proc.pid}, which runs on this machine" in r.stderr
        assert f"oxiflow worker stop {worker['run_id']}" in r.stderr
        second = oxiflow("run", "blk.yaml", *state_args, cwd=tmp_path)
        assert second.returncode == 75 and "is already running" in second.stderr  # still one writer
        proc.communicate(INPUT, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert pq.read_table(tmp_path / "out" / "b.parquet").num_rows == 2


# `oxiflow run` with SIGTERM blocked (the mask survives into the run): it cannot stop on `worker stop`'s SIGTERM
DEAF = (
    "import signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
    "sys.argv = ['oxiflow', 'run', *sys.argv[1:]]; from oxiflow.cli.main import main; main()"
)


def test_worker_stop_force_kills_a_run_that_does_not_stop(tmp_path: Path, state_args: list[str]) -> None:
    _setup(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", DEAF, "blk.yaml", *state_args],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker = going(tmp_path, state_args, proc)
        soft = oxiflow("worker", "stop", "blk", "--timeout", "0.2", *state_args, cwd=tmp_path)
        assert soft.returncode == 1 and "still runs after 0.2s; --force kills it" in soft.stderr
        assert proc.poll() is None  # SIGTERM is blocked: the run goes on
        hard = oxiflow("worker", "stop", "blk", "--timeout", "0.2", "--force", *state_args, cwd=tmp_path)
        assert hard.returncode == 0, hard.stderr
        assert f"sent SIGKILL to pid {proc.pid}" in hard.stderr and f"run {worker['run_id']} killed" in hard.stderr
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (run,) = runs_json(tmp_path, state_args)
    assert (run["status"], run["error"], run["exit_code"]) == ("crashed", "killed by oxiflow worker stop --force", 137)
    assert oxiflow("worker", "list", "--json", *state_args, cwd=tmp_path).stdout.strip() == "[]"
    again = subprocess.run(  # the lock went with the process: the next run takes it at once
        [sys.executable, "-m", "oxiflow.cli.main", "run", "blk.yaml", "-q", *state_args],
        cwd=tmp_path,
        input=INPUT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr


INCREMENTAL = """
metadata: {name: inc}
pipeline:
  - name: read_csv
    config: {path: "in/*.csv", incremental: {mode: files, cursor: name}}
  - name: write_sqlite
    config: {database: dst.db, table: t}
"""


def test_cleanup_prunes_settled_loads_and_the_target_keeps_one_marker(tmp_path: Path) -> None:
    write(tmp_path / "inc.yaml", INCREMENTAL)
    for i in range(3):  # three loads; the last one finds no new file (0 rows: still a load)
        if i < 2:
            write(tmp_path / "in" / f"{i}.csv", f"id\n{i}\n")
        assert oxiflow("run", "inc.yaml", "-q", cwd=tmp_path).returncode == 0
    state = sqlite3.connect(tmp_path / ".oxiflow" / "state.db")
    loads = state.execute("SELECT load_id FROM loads ORDER BY created_at").fetchall()
    cursor_load = state.execute("SELECT load_id FROM cursors WHERE pipeline = 'inc'").fetchall()
    state.close()
    assert len(loads) == 3 and cursor_load == [loads[-1]]
    dst = sqlite3.connect(tmp_path / "dst.db")
    assert dst.execute("SELECT load_id FROM _oxi_loads").fetchall() == [loads[-1]]  # one marker per step
    assert sorted(r[0] for r in dst.execute("SELECT DISTINCT _oxi_load_id FROM t")) == sorted(r[0] for r in loads[:2])
    dst.close()

    dry = oxiflow("state", "cleanup", "--older-than", "0s", "--dry-run", "--json", cwd=tmp_path)
    assert json.loads(dry.stdout)["matching_loads"] == 2 and json.loads(dry.stdout)["deleted_loads"] == 0
    done = oxiflow("state", "cleanup", "--older-than", "0s", cwd=tmp_path)
    assert done.returncode == 0 and "deleted 3 run(s) and 2 settled load(s)" in done.stderr
    state = sqlite3.connect(tmp_path / ".oxiflow" / "state.db")
    assert state.execute("SELECT load_id FROM loads").fetchall() == [loads[-1]]  # the one the cursor names
    state.close()
    write(tmp_path / "in" / "2.csv", "id\n2\n")
    assert oxiflow("run", "inc.yaml", "-q", cwd=tmp_path).returncode == 0  # the cursor still works
    dst = sqlite3.connect(tmp_path / "dst.db")
    assert [r[0] for r in dst.execute("SELECT id FROM t ORDER BY id")] == [0, 1, 2]
    dst.close()
