"""Local engine failure handling with real steps: timeouts, retries, continue_on_error, cancellation."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_oxis import PROBES, probe

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.errors import StepTimeout


@pytest.fixture(autouse=True)
def _clean_probes() -> Iterator[None]:
    PROBES.clear()
    yield
    for pr in PROBES.values():  # free any thread a test abandoned
        if "event" in pr:
            pr["event"].set()
    PROBES.clear()


@pytest.fixture
def run(write_pipeline):
    def go(text: str) -> tuple[RunResult, float]:
        plan = load_pipeline(write_pipeline(text))
        t0 = time.monotonic()
        result = run_plan(plan)
        return result, time.monotonic() - t0

    return go


def step(result: RunResult, step_id: str):
    return next(s for s in result.steps if s.step_id == step_id)


@pytest.mark.parametrize("how", ["socket", "event"])
def test_timeout_stops_a_step_blocked_in_io(run, how: str) -> None:
    result, seconds = run(
        f"""
        pipeline:
          - name: t_block
            id: src
            config: {{how: {how}}}
            timeout_seconds: 0.3
          - name: t_collect
            config: {{probe: out}}
        """
    )
    assert result.status == "failed"
    assert isinstance(result.error, StepTimeout), result.error
    assert result.error.context["step"] == "src"
    assert probe("block")["blocked"] is True
    if how == "socket":
        assert probe("block")["woke"] == b""  # the recv returned because the socket was shut down
    assert seconds < 2.5  # well before the 3 s grace after which a thread is abandoned
    assert step(result, "src").status == "failed"
    assert probe("out").get("ids", []) == []


def test_timeout_interrupts_a_long_duckdb_query(run) -> None:
    result, seconds = run(
        """
        pipeline:
          - name: t_duck_slow
            id: slow
            timeout_seconds: 0.5
          - name: t_collect
            config: {probe: out}
        """
    )
    assert result.status == "failed"
    assert isinstance(result.error, StepTimeout), result.error
    assert "timed out after 0.5s" in str(result.error)
    assert seconds < 2.5  # interrupted, not abandoned after the grace period (the query needs minutes)


def test_timeout_abandons_a_step_that_ignores_interrupts(run) -> None:
    result, seconds = run(
        """
        pipeline:
          - name: t_block
            id: stubborn
            config: {how: stubborn}
            timeout_seconds: 0.2
          - name: t_collect
            config: {probe: out}
        """
    )
    assert result.status == "failed"
    assert isinstance(result.error, StepTimeout)
    assert "did not stop" in str(result.error)
    assert seconds < 8


def test_timeout_is_per_attempt_and_retried(run) -> None:
    result, _ = run(
        """
        pipeline:
          - name: t_block
            id: src
            config: {how: socket}
            timeout_seconds: 0.2
            retry_attempts: 2
            retry_delay_seconds: 0.01
          - name: t_collect
            config: {probe: out}
        """
    )
    assert isinstance(result.error, StepTimeout)
    assert step(result, "src").attempts == 3


def test_retry_with_exponential_backoff(run) -> None:
    base = 0.02
    result, seconds = run(
        f"""
        pipeline:
          - name: t_flaky
            id: src
            config: {{fail_times: 4, error: connection}}
            retry_attempts: 5
            retry_delay_seconds: {base}
          - name: t_collect
            config: {{probe: out}}
        """
    )
    assert result.status == "ok", result.error
    assert step(result, "src").attempts == 5
    times = probe("flaky")["times"]
    assert len(times) == 5
    delays = [b - a for a, b in itertools.pairwise(times)]
    # delay k is base * 2**(k-1) * jitter in [0.5, 1.5): check the lower bounds, which grow
    for k, d in enumerate(delays, start=1):
        assert d >= base * 2 ** (k - 1) * 0.5 * 0.95, delays
    assert delays[-1] > delays[0]
    assert seconds < 10
    assert probe("out")["ids"] == [0, 1, 2, 3, 4]
    assert result.balanced


def test_retries_run_out(run) -> None:
    result, _ = run(
        """
        pipeline:
          - name: t_flaky
            id: src
            config: {fail_times: 10, error: connection}
            retry_attempts: 2
            retry_delay_seconds: 0.01
          - name: t_collect
            config: {probe: out}
        """
    )
    assert result.status == "failed"
    assert step(result, "src").attempts == 3
    assert "attempt 3: connection reset" in str(result.error)


def test_non_retryable_error_is_not_retried(run) -> None:
    result, _ = run(
        """
        pipeline:
          - name: t_flaky
            id: src
            config: {fail_times: 1, error: value}
            retry_attempts: 3
            retry_delay_seconds: 0.01
          - name: t_collect
            config: {probe: out}
        """
    )
    assert result.status == "failed"
    assert step(result, "src").attempts == 1
    assert len(probe("flaky")["times"]) == 1
    assert "ValueError: attempt 1: bad value" in str(result.error)
    assert "step src" in str(result.error)


def test_continue_on_error_passes_input_on_and_balances(run) -> None:
    result, _ = run(
        """
        pipeline:
          - name: t_count
            id: src
            config: {batches: 10, rows: 10}
          - name: t_fail_after
            id: mid
            config: {ok_batches: 2}
            continue_on_error: true
          - name: t_collect
            id: sink
            config: {probe: out}
        """
    )
    assert result.status == "ok", result.error
    mid = step(result, "mid")
    assert mid.status == "continued"
    assert "transform broke on batch 2" in (mid.error or "")
    # batches 0-1 passed through, batch 2 was consumed and lost, batches 3-9 passed on unchanged
    expected = list(range(20)) + list(range(30, 100))
    assert probe("out")["ids"] == expected
    assert (mid.rows_in, mid.rows_out, mid.rows_rejected) == (100, 90, 10)
    assert step(result, "sink").rows_in == 90
    assert result.balanced


def test_continue_on_error_in_a_sink(run) -> None:
    result, _ = run(
        """
        pipeline:
          - name: t_count
            id: src
            config: {batches: 4, rows: 5}
          - name: t_collect
            id: sink
            config: {probe: out, fail: true}
            continue_on_error: true
        """
    )
    assert result.status == "ok", result.error
    sink = step(result, "sink")
    assert sink.status == "continued"
    assert sink.rows_in == 20
    assert sink.rows_in == sink.rows_out + sink.rows_rejected + sink.rows_filtered
    assert result.balanced


def test_a_failing_step_cancels_the_others(run) -> None:
    result, seconds = run(
        """
        pipeline:
          - name: t_block
            id: waiting
            config: {how: event}
          - name: t_collect
            id: sink_a
            config: {probe: a}
          - name: t_flaky
            id: broken
            config: {fail_times: 1, error: value}
          - name: t_collect
            id: sink_b
            config: {probe: b}
        """
    )
    assert result.status == "failed"
    assert "bad value" in str(result.error)
    assert step(result, "broken").status == "failed"
    assert step(result, "waiting").status == "cancelled"
    assert step(result, "sink_a").status == "cancelled"
    assert seconds < 5


def test_a_failing_sink_stops_its_source(run) -> None:
    result, seconds = run(
        """
        pipeline:
          - name: t_count
            id: src
            config: {batches: 100000, rows: 1}
          - name: t_collect
            id: sink
            config: {probe: out, fail: true}
        """
    )
    assert result.status == "failed"
    assert "sink broke" in str(result.error)
    assert step(result, "src").status == "cancelled"
    assert step(result, "src").rows_out < 100000
    assert seconds < 5


def test_step_reference_to_unknown_key_fails_clearly(run, tmp_path: Path) -> None:
    result, _ = run(
        """
        pipeline:
          - name: t_count
            id: src
          - name: write_parquet
            config: {path: "${steps.src.metadata.nope}"}
        """
    )
    assert result.status == "failed"
    assert "nope" in str(result.error)
    assert list(tmp_path.glob("*.parquet")) == []
