"""Pipeline locks on both backends: one holder, waiting with a timeout, and no lock outliving its process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from oxiflow.state.lock import (
    LiveHolder,
    PipelineLocked,
    RunLock,
    _lock_file,
    break_lock,
    holder_of,
    is_held,
    live_local_holder,
    local_lock_holders,
    pid_alive,
)
from oxiflow.state.store import SQLiteStore, StateStore, open_store

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "state.db")
        return
    schema = f"oxilock_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def store(url: str) -> Iterator[StateStore]:
    with open_store(url) as s:
        yield s


def test_one_holder_at_a_time(store: StateStore) -> None:
    assert not is_held(store, "p")
    with RunLock(store, "p", "run-1") as first:
        first.acquire()
        assert is_held(store, "p")
        holder = holder_of(store, "p")
        assert holder is not None and (holder.run_id, holder.pid) == ("run-1", os.getpid())
        assert [r.run_id for r in store.lock_rows()] == ["run-1"]
        with pytest.raises(PipelineLocked, match=r"pipeline 'p' is already running \(run run-1, pid") as exc:
            RunLock(store, "p", "run-2").acquire()
        assert exc.value.exit_code == 75
        with pytest.raises(PipelineLocked, match=r"gave up waiting 0\.05s"):
            RunLock(store, "p", "run-2").acquire(wait=True, timeout=0.05)
        RunLock(store, "other", "run-3").acquire()  # another pipeline is not blocked
    assert not is_held(store, "p")
    assert [r.pipeline for r in store.lock_rows()] == ["other"]  # run-3 never released: its row stays


def test_a_waiter_gets_the_lock_when_the_holder_releases(store: StateStore, url: str) -> None:
    first = RunLock(store, "p", "run-1")
    first.acquire()
    told = threading.Event()
    got: list[str] = []

    def wait_for_it() -> None:
        with open_store(url) as other:
            lock = RunLock(other, "p", "run-2")
            lock.acquire(wait=True, timeout=60, on_wait=lambda holder: told.set())
            got.append(holder_of(other, "p").run_id)  # type: ignore[union-attr]
            lock.release()

    t = threading.Thread(target=wait_for_it)
    t.start()
    assert told.wait(60)  # it is waiting, and said so
    assert got == []
    first.release()
    t.join(60)
    assert got == ["run-2"]


HOLDER = textwrap.dedent(
    """
    import sys
    from oxiflow.state.lock import RunLock
    from oxiflow.state.store import open_store
    store = open_store(sys.argv[1])
    lock = RunLock(store, "p", "doomed")  # kept referenced: a collected lock closes its connection
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold it until killed
    """
)


def test_a_killed_holder_leaves_no_lock(store: StateStore, url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        assert is_held(store, "p")
        with pytest.raises(PipelineLocked, match="run doomed"):
            RunLock(store, "p", "next").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not pid_alive(proc.pid)
    assert [r.run_id for r in store.lock_rows()] == ["doomed"]  # the row stays: `state repair` removes it
    if store.backend == "postgresql":
        # the server notices the dead connection when its socket closes; wait for that, not for time
        import time

        deadline = time.monotonic() + 30
        while is_held(store, "p") and time.monotonic() < deadline:
            time.sleep(0.02)  # polling interval
    assert not is_held(store, "p")
    lock = RunLock(store, "p", "next")
    lock.acquire()  # taken at once: nothing is stuck
    holder = holder_of(store, "p")
    assert holder is not None and holder.run_id == "next"
    lock.release()


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_break_lock_refuses_a_live_holder_of_this_machine(store: StateStore, url: str) -> None:
    """`state unlock --force` must never hand the lock of a live local run to a second writer."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        assert live_local_holder(store, "p") == proc.pid
        with pytest.raises(LiveHolder, match=rf"locked by pid {proc.pid}, which runs on this machine"):
            break_lock(store, "p")
        assert is_held(store, "p")  # untouched: a second run is still refused
        with pytest.raises(PipelineLocked, match="run doomed"):
            RunLock(store, "p", "second").acquire()
    finally:
        proc.kill()
        proc.wait()


def test_the_sqlite_lock_holder_is_found_by_the_kernel_even_with_a_foreign_lock_file(tmp_path: Path) -> None:
    """The lock file says another host (as an NFS holder would): /proc/locks still shows the local pid."""
    url = str(tmp_path / "state.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        with open_store(url) as store:
            assert isinstance(store, SQLiteStore)
            path = _lock_file(store, "p")
            path.write_text(json.dumps({**json.loads(path.read_text()), "host": "elsewhere"}))
            assert local_lock_holders(path) == [proc.pid]
            with pytest.raises(LiveHolder):
                break_lock(store, "p")
            assert path.exists() and is_held(store, "p")
    finally:
        proc.kill()
        proc.wait()


def test_break_lock_replaces_the_lock_file_of_a_holder_on_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the kernel of this machine cannot see (a holder on another host, over NFS) --force may break."""
    with open_store(str(tmp_path / "state.db")) as store:
        lock = RunLock(store, "p", "remote")
        lock.acquire()
        assert isinstance(store, SQLiteStore)
        path = _lock_file(store, "p")
        path.write_text(json.dumps({**json.loads(path.read_text()), "host": "elsewhere", "pid": 1}))
        monkeypatch.setattr("oxiflow.state.lock.local_lock_holders", lambda p: [])  # as if held on that host
        assert live_local_holder(store, "p") is None
        assert break_lock(store, "p") == f"removed the lock file {path}"
        assert not path.exists()
        monkeypatch.undo()
        taker = RunLock(store, "p", "next")
        taker.acquire()  # a new lock file: the next run goes on
        taker.release()
        lock.release()
