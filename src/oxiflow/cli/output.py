"""Everything the CLI prints: logs, errors, plans, run summaries, progress. All on stderr,
except what a command is asked to produce (JSON with --json, data)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from oxiflow.engine.metrics import RunResult
    from oxiflow.plan.build import Plan


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail_usage(message: str) -> NoReturn:
    err(f"error: {message}")
    raise typer.Exit(2)


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("step", "run_id", "event", "rows"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        return json.dumps(data, default=str)


def setup_logging(fmt: str = "text", quiet: bool = False) -> None:
    if fmt not in ("text", "json"):
        fail_usage(f"--log-format must be text or json, got {fmt!r}")
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("oxiflow")
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR if quiet else logging.WARNING)
    root.propagate = False
    # progress messages (batch checkpoints) are shown like the progress display: unless --quiet
    logging.getLogger("oxiflow.progress").setLevel(logging.ERROR if quiet else logging.INFO)


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """On a terminal, a log line first clears the progress line it would otherwise run into."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = self.stream
        if getattr(stream, "isatty", lambda: False)():
            stream.write("\r\x1b[2K")
        super().emit(record)


def load_or_exit(
    target: str,
    variables: dict[str, str],
    project_file: Path | None,
    *,
    json_out: bool = False,
    log_format: str = "text",
) -> Plan:
    """The plan, or exit 2 with every configuration error: as JSON on stdout with --json, as one JSON
    log record on stderr with --log-format json, as text on stderr otherwise."""
    from oxiflow.config.load import find_project, load_pipeline, load_project, resolve_pipeline_path
    from oxiflow.errors import ConfigError

    try:
        project = load_project(project_file) if project_file else find_project()
        path = resolve_pipeline_path(target, project)
        return load_pipeline(path, variables=variables, project=project if project_file else None)
    except ConfigError as exc:
        if json_out:
            print_json({"valid": False, **exc.to_dict()})
        elif log_format == "json":
            err(json.dumps({**_log_head("error"), "event": "config_error", **exc.to_dict()}, default=str))
        else:
            err(f"error: {exc}")
        raise typer.Exit(2) from None


def _log_head(level: str) -> dict[str, Any]:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return {"time": stamp, "level": level, "logger": "oxiflow.cli"}


def stdout_steps(plan: Plan) -> list[str]:
    """The steps that write to standard output (write_stdout; write_pipe to `-`)."""
    out = []
    for s in plan.steps:
        if s.spec.name == "write_stdout" or (s.spec.name == "write_pipe" and getattr(s.config, "path", "-") == "-"):
            out.append(s.id)
    return out


def refuse_json_with_stdout_steps(plan: Plan) -> None:
    """`run --json` prints the run summary on stdout: a step printing its data there would make it
    unparseable, so the combination is refused (exit 2) before anything runs."""
    steps = stdout_steps(plan)
    if steps:
        fail_usage(
            f"--json prints the run summary on stdout, where step {', '.join(steps)} writes its data; "
            "use --log-format json (the summary as a JSON record on stderr) instead"
        )


def print_plan(explained: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(explained)
        return
    lines = [f"pipeline {explained['pipeline']} ({explained.get('file')})"]
    for i, step in enumerate(explained["steps"], 1):
        inputs = f" <- {', '.join(step['inputs'])}" if step["inputs"] else ""
        lines.append(f"{i:>3}. {step['id']} [{step['oxi']}, {step['kind']}]{inputs}")
        if step.get("fused"):
            lines.append(f"       fused: {step['fused']}")
        if step.get("pushdown"):
            lines.append(f"       pushdown: {step['pushdown']}")
        schema = step.get("schema")
        if schema:
            for f in schema:
                null = "" if f["nullable"] else " not null"
                lines.append(f"       {f['name']}: {f['type']}{null}")
        elif step["kind"] == "sink":
            lines.append("       (writes; passes its input on)")
        if step.get("error"):
            lines.append(f"       error: {step['error']}")
    sys.stdout.write("\n".join(lines) + "\n")


def print_info(data: dict[str, Any]) -> None:
    meta = data["metadata"]
    lines = [f"pipeline {data['name']} ({data['file']})"]
    for key in ("description", "version", "author", "category"):
        if meta.get(key):
            lines.append(f"  {key}: {meta[key]}")
    if meta.get("tags"):
        lines.append(f"  tags: {', '.join(map(str, meta['tags']))}")
    if data["environment"]:
        lines.append("  environment (defaults): " + ", ".join(f"{k}={v}" for k, v in data["environment"].items()))
    for key, value in data["settings"].items():
        lines.append(f"  settings.{key}: {value}")
    lines.append(f"  steps ({len(data['steps'])}):")
    for i, step in enumerate(data["steps"], 1):
        inputs = f" <- {', '.join(step['inputs'])}" if step["inputs"] else ""
        fused = f" (fused with {step['fused']})" if step.get("fused") else ""
        lines.append(f"  {i:>3}. {step['id']} [{step['oxi']}, {step['kind']}]{inputs}{fused}")
        for key, value in step["config"].items():
            lines.append(f"         {key}: {json.dumps(value, default=str) if not isinstance(value, str) else value}")
        for f in step.get("schema") or []:
            lines.append(f"         -> {f['name']}: {f['type']}{'' if f['nullable'] else ' not null'}")
        if step.get("schema_error"):
            lines.append(f"         schema error: {step['schema_error']}")
    if data["tests"]:
        lines.append(f"  tests: {', '.join(data['tests'])}")
    sys.stdout.write("\n".join(lines) + "\n")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def print_result(result: RunResult, *, json_out: bool, quiet: bool, log_format: str = "text") -> None:
    if json_out:
        print_json(result.to_dict())
        return
    if log_format == "json":
        err(json.dumps({"event": "run_summary", **result.to_dict()}, default=str))
        return
    if result.error is not None:
        err(f"error: {result.error}")
    if quiet:
        return
    header = (
        f"{'step':<24} {'status':<9} {'rows in':>11} {'rows out':>11} "
        f"{'rejected':>9} {'filtered':>9} {'bytes':>9} {'sec':>7}"
    )
    out = [f"run {result.run_id} of {result.pipeline}: {result.status} in {result.seconds:.2f}s", header]
    for s in result.steps:
        name = s.step_id + (f" (+{','.join(s.fused)})" if s.fused else "")
        out.append(
            f"{name[:24]:<24} {s.status:<9} {s.rows_in:>11,} {s.rows_out:>11,} {s.rows_rejected:>9,} "
            f"{s.rows_filtered:>9,} {_human_bytes(max(s.bytes_in, s.bytes_out)):>9} {s.seconds:>7.2f}"
        )
    out.append(conservation_line(result))
    if result.dlq_path:
        out.append(f"{result.dlq_count} rejected record(s) in the dead-letter file {result.dlq_path}")
    err("\n".join(out))


def conservation_line(result: RunResult) -> str:
    """What the run summary says about rows in = out + rejected + filtered: which steps it was checked
    on, and which are exempt (steps that reshape rows; steps that did not finish)."""
    if not result.balanced:
        bad = [s.step_id for s in result.steps if not s.balanced]
        return f"WARNING: row accounting does not balance for: {', '.join(bad)}"
    reshaping = [s.step_id for s in result.steps if s.reshapes and s.status in ("ok", "continued")]
    unfinished = [s.step_id for s in result.steps if s.status not in ("ok", "continued")]
    checked = len(result.steps) - len(reshaping) - len(unfinished)
    if not reshaping and not unfinished:
        return "rows in = rows out + rejected + filtered holds for every step"
    line = f"rows in = rows out + rejected + filtered holds for {checked} step(s)"
    if reshaping:
        line += f"; not checked on {', '.join(reshaping)} (reshape rows: one in is not one out)"
    if unfinished:
        line += f"; {', '.join(unfinished)} did not finish"
    return line


class ProgressObserver:
    """Rows, rows/s and bytes per step on stderr while a run is going (terminal only)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.steps: dict[str, Any] = {}
        self.interval = interval  # seconds between redraws
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.perf_counter()
        self._lock = threading.Lock()

    def on_run_start(self, engine: Any) -> None:
        self._start = time.perf_counter()
        self.steps = {r.metrics.step_id: r.metrics for r in engine.runs.values()}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _line(self) -> str:
        elapsed = max(time.perf_counter() - self._start, 1e-6)
        parts = []
        for m in self.steps.values():
            if m.status == "running" or m.rows_out or m.rows_in:
                # what a step has handled: a sink what it consumed, the others what they produced
                rows = m.rows_out if m.kind != "sink" else m.rows_in
                size = m.bytes_out if m.kind != "sink" else max(m.bytes_in, m.bytes_out)
                parts.append(f"{m.step_id}: {rows:,} rows ({rows / elapsed:,.0f} rows/s, {_human_bytes(size)})")
        return f"[{elapsed:6.1f}s] " + " | ".join(parts[-4:])

    def _draw(self) -> None:
        with self._lock:
            sys.stderr.write("\r\x1b[2K" + self._line()[: _width()])
            sys.stderr.flush()

    def on_step_end(self, metrics: Any) -> None:
        # a step's final figures are drawn once at least, however short the run
        self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def on_run_end(self, result: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 20)).columns - 1


def progress_observer() -> ProgressObserver | None:
    return ProgressObserver() if sys.stderr.isatty() else None
