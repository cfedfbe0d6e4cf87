"""Pipeline locks on both backends: one holder, waiting with a timeout, and no lock outliving its process."""

from __future__ import annotations

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

from oxiflow.state.lock import PipelineLocked, RunLock, holder_of, is_held, pid_alive
from oxiflow.state.store import StateStore, open_store

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
