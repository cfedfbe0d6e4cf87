"""One writer per pipeline: a lock that a killed process cannot leave behind.

- SQLite store: ``flock(LOCK_EX)`` on ``<folder of state.db>/locks/<pipeline>.lock``. The kernel drops
  the lock when the holder's process ends, however it ends (SIGKILL included). The file stays (deleting
  a flock'ed file races with the next locker); it holds the holder's pid, host and run id as JSON.
- PostgreSQL store: a session-level ``pg_advisory_lock`` on a connection of its own; it dies with the
  connection, so with the process.

Either way a row in the ``locks`` table says who holds it (for ``worker list`` and error messages); a
row whose lock is no longer held is stale and ``state repair`` / ``state unlock`` remove it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from oxiflow.state.store import LockRow, PostgresStore, SQLiteStore, StateError, StateStore, advisory_key, now_iso

POLL_SECONDS = 0.1  # how often a waiting run retries the lock


class PipelineLocked(StateError):
    """Another run of the pipeline holds the lock. Exit code 75 (EX_TEMPFAIL: try again later)."""

    exit_code = 75


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` running on this machine (a zombie, already exited, is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _lock_file(store: SQLiteStore, pipeline: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", pipeline)
    if safe != pipeline:  # keep names that differ only in odd characters apart
        safe += "-" + hashlib.sha256(pipeline.encode()).hexdigest()[:8]
    return store.path.parent / "locks" / f"{safe}.lock"


def _pg_key(store: PostgresStore, pipeline: str) -> int:
    return advisory_key(f"lock:{store.schema or ''}:{pipeline}")


class RunLock:
    """The lock of one pipeline for one run. ``acquire()`` then ``release()`` (or use ``with``)."""

    def __init__(self, store: StateStore, pipeline: str, run_id: str) -> None:
        self.store = store
        self.pipeline = pipeline
        self.run_id = run_id
        self._fd: int | None = None
        self._pg: Any = None

    def acquire(
        self, *, wait: bool = False, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
    ) -> None:
        """Take the lock; without ``wait`` fail at once with :class:`PipelineLocked` when it is held,
        with ``wait`` retry until it is free (or ``timeout`` seconds have passed). ``on_wait`` is told
        once who holds it, when waiting starts."""
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while not self._try():
            if wait and not told and on_wait is not None:
                on_wait(self._holder_text())
                told = True
            if not wait:
                raise PipelineLocked(
                    f"pipeline {self.pipeline!r} is already running ({self._holder_text()})",
                    hint="pass --wait to wait for it, or see `oxiflow worker list`",
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise PipelineLocked(
                    f"gave up waiting {timeout:g}s for pipeline {self.pipeline!r} ({self._holder_text()})",
                    hint="raise --wait-timeout, or see `oxiflow worker list`",
                )
            time.sleep(POLL_SECONDS)
        row = LockRow(self.pipeline, self.run_id, os.getpid(), hostname(), now_iso(), now_iso())
        try:
            if self._fd is not None:
                data = json.dumps(asdict(row)).encode()
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, data, 0)
            self.store.put_lock_row(row)
        except BaseException:
            self.release()
            raise

    def _try(self) -> bool:
        if isinstance(self.store, SQLiteStore):
            path = _lock_file(self.store, self.pipeline)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True
        if isinstance(self.store, PostgresStore):
            import psycopg

            if self._pg is None:
                self._pg = psycopg.connect(self.store.conninfo, autocommit=True, connect_timeout=10)
            row = self._pg.execute("SELECT pg_try_advisory_lock(%s)", (_pg_key(self.store, self.pipeline),)).fetchone()
            return bool(row and row[0])
        raise StateError(f"no lock for a {self.store.backend} store")

    def _holder_text(self) -> str:
        holder = holder_of(self.store, self.pipeline)
        if holder is None:
            return "held by another process"
        return f"run {holder.run_id}, pid {holder.pid} on {holder.host}, since {holder.acquired_at}"

    def release(self) -> None:
        """Drop the row, then the lock (so a row never outlives a lock we released)."""
        try:
            if self._fd is not None or self._pg is not None:
                self.store.delete_lock_row(self.pipeline, self.run_id)
        finally:
            if self._fd is not None:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
            if self._pg is not None:
                try:
                    # unlock first: closing the session drops the lock too, but only once the server has
                    # seen the connection go, so a run started right after this one could still be refused
                    assert isinstance(self.store, PostgresStore)
                    self._pg.execute("SELECT pg_advisory_unlock(%s)", (_pg_key(self.store, self.pipeline),))
                except Exception:  # the session is gone already: so is its lock
                    pass
                self._pg.close()  # ends the session: the advisory lock goes with it
                self._pg = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_of(store: StateStore, pipeline: str) -> LockRow | None:
    """Who holds the pipeline's lock, per the lock file (SQLite) or the lock row."""
    if isinstance(store, SQLiteStore):
        try:
            data = json.loads(_lock_file(store, pipeline).read_text() or "null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            try:
                return LockRow(**data)
            except TypeError:
                pass
    rows = store.lock_rows(pipeline)
    return rows[0] if rows else None


def is_held(store: StateStore, pipeline: str) -> bool:
    """Is the pipeline's lock held right now by some process?"""
    if isinstance(store, PostgresStore):
        return bool(_pg_holders(store, pipeline))
    if isinstance(store, SQLiteStore):
        holder = holder_of(store, pipeline)
        if holder is not None and holder.host == hostname() and not pid_alive(holder.pid):
            return False  # its process is gone, so the kernel has dropped its lock
        path = _lock_file(store, pipeline)
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: probes never block each other
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock
        return False
    return False


def _pg_holders(store: PostgresStore, pipeline: str) -> list[int]:
    """Backend pids holding the advisory lock (pg_locks splits the 64-bit key in two oids)."""
    key = _pg_key(store, pipeline) & 0xFFFF_FFFF_FFFF_FFFF
    rows = store._read(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid::bigint = ? AND objid::bigint = ?",
        (key >> 32, key & 0xFFFF_FFFF),
    )
    return [int(r[0]) for r in rows]


class LiveHolder(StateError):
    """``state unlock --force`` was asked to take the lock from a process that runs on this machine."""


def local_lock_holders(path: Path) -> list[int]:
    """Pids of the processes on this machine that hold a ``flock`` on ``path`` (from ``/proc/locks``, which
    lists every lock the kernel holds, with the holder's pid and the file's device and inode); [] when
    nobody does or there is no ``/proc``. A holder on another host (NFS) is not listed."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1474578 0 EOF"; waiters have "->" before the type
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where and fields[4].lstrip("-").isdigit():
            pids.append(int(fields[4]))
    return pids


def live_local_holder(store: StateStore, pipeline: str) -> int | None:
    """The pid of a live process on this machine that holds the pipeline's lock, if there is one."""
    holder = holder_of(store, pipeline)
    if holder is not None and holder.host == hostname() and pid_alive(holder.pid) and is_held(store, pipeline):
        return holder.pid
    if isinstance(store, SQLiteStore):
        live = [pid for pid in local_lock_holders(_lock_file(store, pipeline)) if pid > 0 and pid_alive(pid)]
        return live[0] if live else None
    return None


def break_lock(store: StateStore, pipeline: str) -> str:
    """Take a lock away from a holder that is not a live process of this machine (``state unlock --force``:
    a run on another host that hangs, or whose NFS lock never expires); says what it did. A live local
    holder is refused (LiveHolder): it would go on writing while the next run gets the lock, two writers.
    Stop it with ``oxiflow worker stop`` (its SIGKILL with ``--force``), which the kernel or the server
    answers by dropping the lock."""
    pid = live_local_holder(store, pipeline)
    if pid is not None:
        raise LiveHolder(
            f"pipeline {pipeline!r} is locked by pid {pid}, which runs on this machine ({hostname()}): "
            "unlocking it would let a second run write at the same time",
            hint="stop it with `oxiflow worker stop` (--force kills it); the lock goes with the process",
        )
    if isinstance(store, PostgresStore):
        pids = _pg_holders(store, pipeline)
        for backend in pids:
            store._read("SELECT pg_terminate_backend(?)", (backend,))
        return f"terminated the PostgreSQL session(s) {', '.join(map(str, pids))} holding the lock"
    if isinstance(store, SQLiteStore):
        # The holder keeps its lock on the old file; the next run locks a new file. No process of this
        # machine holds it (checked above), so the holder is on another host (NFS) and must be gone there.
        path = _lock_file(store, pipeline)
        path.unlink(missing_ok=True)
        return f"removed the lock file {path}"
    return "nothing to do"
