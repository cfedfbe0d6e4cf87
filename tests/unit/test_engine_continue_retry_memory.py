"""The local engine: continue_on_error passes on the step's input (also what the step had consumed before
failing), retry delays carry jitter within their bounds, and the pipeline-wide memory watchdog stops a run.
No test waits for time to pass: the retry wait and the RSS reading are injected."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_oxis import PROBES, probe

from oxiflow.config.load import load_pipeline
from oxiflow.engine import local
from oxiflow.engine.local import LocalEngine, run_plan
from oxiflow.errors import OxiflowError


@pytest.fixture(autouse=True)
def _clean_probes() -> Iterator[None]:
    PROBES.clear()
    yield
    for pr in PROBES.values():
        if "event" in pr:
            pr["event"].set()
    PROBES.clear()


def step(result, step_id: str):  # type: ignore[no-untyped-def]
    return next(s for s in result.steps if s.step_id == step_id)


# -- continue_on_error -----------------------------------------------------------------------------
def test_a_failing_sql_step_passes_on_all_of_its_input(write_pipeline) -> None:
    # DuckDB reads the whole input before the cast fails: those rows must go on, not be lost
    result = run_plan(
        load_pipeline(
            write_pipeline(
                """
                pipeline:
                  - name: t_count
                    id: src
                    config: {batches: 10, rows: 10}
                  - name: sql
                    id: bad
                    continue_on_error: true
                    config: {query: "select cast('zz' as int) as b, * from src"}
                  - name: t_collect
                    id: sink
                    config: {probe: out}
                """
            )
        )
    )
    assert result.status == "ok", result.error
    bad = step(result, "bad")
    assert bad.status == "continued" and "Could not convert string 'zz'" in (bad.error or "")
    assert probe("out")["ids"] == list(range(100))  # every row of the input, in order
    assert (bad.rows_in, bad.rows_out, bad.rows_rejected) == (100, 100, 0)
    assert step(result, "sink").rows_in == 100 and result.balanced


def test_a_transform_failing_before_passing_anything_on_passes_everything_on(write_pipeline) -> None:
    result = run_plan(
        load_pipeline(
            write_pipeline(
                """
                pipeline:
                  - name: t_count
                    id: src
                    config: {batches: 5, rows: 4}
                  - name: t_fail_after
                    id: mid
                    config: {ok_batches: 0}
                    continue_on_error: true
                  - name: t_collect
                    config: {probe: out}
                """
            )
        )
    )
    assert result.status == "ok", result.error
    assert probe("out")["ids"] == list(range(20))
    mid = step(result, "mid")
    assert (mid.status, mid.rows_in, mid.rows_out, mid.rows_rejected) == ("continued", 20, 20, 0)


def test_the_copy_of_the_input_is_removed(write_pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load_pipeline(
        write_pipeline(
            """
            pipeline:
              - name: t_count
                config: {batches: 3, rows: 2}
              - name: t_fail_after
                config: {ok_batches: 5}
                continue_on_error: true
              - name: t_collect
                config: {probe: out}
            """
        )
    )
    engine = LocalEngine(plan)
    spill = engine.spill_dir
    assert spill is not None  # the replay copy lives in the run's spill folder
    result = engine.run()
    assert result.status == "ok" and probe("out")["ids"] == list(range(6))
    assert not Path(spill).exists()


# -- retry jitter ------------------------------------------------------------------------------------
def retry_delays(write_pipeline, seed: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], list[float]]:
    """The delays the engine waited between 4 attempts (base 1 s), with `random` seeded; and the random
    draws it used."""
    PROBES.clear()  # t_flaky counts its attempts in a probe
    plan = load_pipeline(
        write_pipeline(
            """
            pipeline:
              - name: t_flaky
                id: src
                config: {fail_times: 3, error: connection}
                retry_attempts: 3
                retry_delay_seconds: 1
              - name: t_collect
                config: {probe: out}
            """
        )
    )
    monkeypatch.setattr(local, "random", random.Random(seed))
    engine = LocalEngine(plan)
    waited: list[float] = []

    def wait(timeout: float | None = None) -> bool:  # the backoff wait, without waiting
        waited.append(float(timeout or 0))
        return False

    monkeypatch.setattr(engine.cancel, "wait", wait)
    result = engine.run()
    assert result.status == "ok", result.error
    assert step(result, "src").attempts == 4
    draws = random.Random(seed)
    return waited, [draws.random() for _ in waited]


def test_retry_delays_double_with_jitter_within_bounds(write_pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    waited, draws = retry_delays(write_pipeline, 7, monkeypatch)
    assert len(waited) == 3
    for k, (delay, r) in enumerate(zip(waited, draws, strict=True), start=1):
        nominal = 1.0 * 2 ** (k - 1)  # retry_delay_seconds doubling each retry
        assert nominal * 0.5 <= delay < nominal * 1.5  # documented jitter: x [0.5, 1.5)
        assert delay == pytest.approx(nominal * (0.5 + r))
    factors = [d / (2 ** (k - 1)) for k, d in enumerate(waited, start=1)]
    assert len(set(factors)) == 3  # jittered: not the same multiple of the nominal delay each time
    other, _ = retry_delays(write_pipeline, 8, monkeypatch)
    assert other != waited  # two runs do not retry in lockstep


# -- the pipeline-wide memory watchdog ---------------------------------------------------------------
def watchdog_plan(write_pipeline, limit: int | None):  # type: ignore[no-untyped-def]
    settings = f"settings: {{memory_limit_mb: {limit}}}\n" if limit else ""
    return load_pipeline(
        write_pipeline(
            settings
            + """
pipeline:
  - name: t_block
    config: {how: event}
  - name: t_collect
    config: {probe: out}
"""
        )
    )


@pytest.mark.parametrize(
    ("limit", "rss", "stops"),
    [(100, 351.0, True), (100, 350.0, False), (None, 10_000.0, False)],  # threshold: 1.5 x limit + 200 MB
)
def test_check_memory_cancels_the_run_past_the_budget(
    write_pipeline, monkeypatch: pytest.MonkeyPatch, limit: int | None, rss: float, stops: bool
) -> None:
    monkeypatch.setattr(local, "current_rss_mb", lambda: rss)
    engine = LocalEngine(watchdog_plan(write_pipeline, limit))
    engine._check_memory()
    assert engine.cancel.is_set() is stops
    if stops:
        assert isinstance(engine.failure, OxiflowError)
        assert str(engine.failure) == f"memory limit exceeded: {rss:.0f} MB RSS > {limit} MB budget"
    else:
        assert engine.failure is None


def test_the_watchdog_stops_a_running_pipeline(write_pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "current_rss_mb", lambda: 5_000.0)
    result = run_plan(watchdog_plan(write_pipeline, 64))  # t_block would wait forever: the watchdog ends it
    assert result.status in ("failed", "cancelled")
    assert "memory limit exceeded: 5000 MB RSS > 64 MB budget" in str(result.error)
