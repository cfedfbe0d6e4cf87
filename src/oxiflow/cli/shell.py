"""Shell manners of the commands that print their own results (`oxi profile`, `diff`, `count`,
`schema`): Ctrl-C exits 130 with ``oxi VERB: interrupted``, a reader of stdout that went away
(``| head``) exits 141 quietly. Verbs that stream through the engine get the same from the engine.

Ctrl-C during a DuckDB query on the main thread does not arrive as KeyboardInterrupt: DuckDB
interrupts the query and raises its own error ("Query interrupted"), which the reader code may
wrap again. So the SIGINT handler also records the signal, and an error after it is an interrupt.
And a KeyboardInterrupt raised while DuckDB's extension module initialises aborts the process
("Critical nanobind error"), so DuckDB is imported first, with the signal held until it is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import typer

INTERRUPTED = 130
OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`


class Manners:
    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.signal: int | None = None  # the SIGINT/SIGTERM that arrived, if one did
        self.held = False  # a signal now is acted on later (see the module docstring)

    def check(self) -> None:
        """Call before reporting an error: when a signal is why the work failed, stop as it asks."""
        if self.signal is not None:
            self.stop()

    def stop(self) -> NoReturn:
        if self.signal == signal.SIGTERM:
            raise KeyboardInterrupt("stopped by SIGTERM")  # cli/main.py reports it (exit 143)
        sys.stderr.write(f"oxi {self.verb}: interrupted\n")
        raise typer.Exit(INTERRUPTED)


def console(**kwargs: Any) -> Any:
    """A rich Console on stdout whose closed pipe is ours to handle: rich's own handler exits 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(32, "the reader of stdout went away")

    return _Console(file=sys.stdout, **kwargs)


def _quiet_stdout() -> None:
    """Point fd 1 at /dev/null: the interpreter's own flush at exit must not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def manners(verb: str) -> Iterator[Manners]:
    """Run a command's work with Ctrl-C (and SIGTERM) and a closed stdout handled as above."""
    from oxiflow.pipe.stdio import OutputClosed

    state = Manners(verb)
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        state.signal = state.signal or signum
        if state.held:
            return
        handler = previous.get(signum)
        if callable(handler) and signum == signal.SIGTERM:
            handler(signum, frame)  # cli/main.py's: it records the stop, then raises KeyboardInterrupt
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            previous[stop_signal] = signal.signal(stop_signal, on_signal)
    try:
        state.held = True
        try:
            import duckdb  # noqa: F401  (every command here runs DuckDB)
        finally:
            state.held = False
        if state.signal is not None:
            raise KeyboardInterrupt
        yield state
        sys.stdout.flush()  # here, not at exit: a closed pipe must be seen while we can handle it
    except KeyboardInterrupt:
        state.signal = state.signal or int(signal.SIGINT)
        state.stop()
    except (BrokenPipeError, OutputClosed):
        _quiet_stdout()
        raise typer.Exit(OUTPUT_CLOSED) from None
    except typer.Exit:
        raise
    except Exception:
        state.check()
        raise
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)
