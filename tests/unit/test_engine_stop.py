"""A stop (Ctrl-C, or SIGTERM from `oxiflow worker stop`) that lands while the engine is still starting its
step threads: the run is cancelled cleanly, the threads already started are joined before run() returns.

Before, the KeyboardInterrupt escaped run() with those threads in DuckDB's native code, and the interpreter's
exit under them aborted the process ("terminate called after throwing an instance of '' / FATAL: exception
not rethrown", exit 134 instead of 143); a checkpointed run starts threads for every slice, so it hit that
window now and then. The stop is injected deterministically at the second thread's start.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine


def test_a_stop_while_the_threads_start_cancels_and_joins_them(
    tmp_path: Path, write_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.csv").write_text("id\n" + "\n".join(map(str, range(1000))) + "\n", encoding="utf-8")
    path = write_pipeline(
        """
        settings: {pushdown: false}
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: sql
            config: {query: "SELECT id * 2 AS id FROM input"}
          - name: write_duckdb
            config: {database: out.duckdb, table: t}
        """
    )
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("oxi-") and len(started) == 1:
            raise KeyboardInterrupt("stopped by SIGTERM")  # as cli/main.py's SIGTERM handler raises it
        real_start(thread)
        if thread.name.startswith("oxi-"):
            started.append(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    result = LocalEngine(load_pipeline(path)).run()  # no KeyboardInterrupt escapes
    monkeypatch.undo()
    assert result.status == "cancelled" and str(result.error) == "stopped by SIGTERM"
    assert len(started) == 1 and not started[0].is_alive()  # the one started thread was joined
    assert {s.step_id: s.status for s in result.steps}["write_duckdb"] != "ok"


def test_a_stop_after_a_step_failed_from_it_reports_the_stop(
    tmp_path: Path, write_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python runs a signal's handler on the main thread only: a step can fail first from what the
    signal caused (`cat` upstream in the pipe died and cut stdin short, a truncated last row). The
    run is still the user's stop (exit 130 "interrupted"), not the secondary error (exit 1)."""
    (tmp_path / "in.csv").write_text("id\n1\n2\n", encoding="utf-8")
    path = write_pipeline(
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: sql
            config: {query: "SELECT CAST('not a number' AS INTEGER) AS id FROM input"}
          - name: write_duckdb
            config: {database: out.duckdb, table: t}
        """
    )
    real_supervise = LocalEngine._supervise

    def supervise(engine: LocalEngine) -> None:
        for run in engine.runs.values():
            run.done.wait(30)  # every step ended: the sql step failed, the others were cancelled
        assert engine.failure is not None and "not a number" in str(engine.failure)
        raise KeyboardInterrupt  # the SIGINT's handler runs only now

    monkeypatch.setattr(LocalEngine, "_supervise", supervise)
    result = LocalEngine(load_pipeline(path)).run()
    monkeypatch.setattr(LocalEngine, "_supervise", real_supervise)
    assert result.status == "cancelled" and result.exit_code == 130
    assert str(result.error) == "interrupted (Ctrl-C)"
    steps = {s.step_id: s for s in result.steps}
    assert steps["sql"].status == "failed" and "not a number" in (steps["sql"].error or "")
