"""Error hierarchy. Every error says what the runner should do with it.

- ``Terminal``: retrying cannot help (bad config, malformed data under ``on_error: fail``).
- ``Transient``: a retry may succeed (a connection reset, a busy lock).
Errors carry structured context (file, line, column, step) so they read well to a person
and serialise well to JSON logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class OxiflowError(Exception):
    """Root of every error oxiflow raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}

    def where(self) -> str:
        """A location prefix like ``orders.csv:12:4`` or ``step 'reader'``."""
        parts = []
        file = self.context.get("file")
        if file:
            loc = str(file)
            if self.context.get("line") is not None:
                loc += f":{self.context['line']}"
                if self.context.get("column") is not None:
                    loc += f":{self.context['column']}"
            parts.append(loc)
        step = self.context.get("step")
        if step:
            parts.append(f"step {step}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint, **self.context}


class Terminal:
    """Mixin: retrying will not help."""

    retryable = False


class Transient:
    """Mixin: a retry may succeed."""

    retryable = True


@dataclass
class ConfigIssue:
    """One problem found while validating a pipeline file."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    path: tuple[Any, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        loc = self.file or "<pipeline>"
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        text = f"{loc}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "hint": self.hint,
            "path": [str(p) for p in self.path],
        }


class ConfigError(Terminal, OxiflowError):
    """The pipeline or project file is invalid. Carries every issue found, not just the first."""

    exit_code = 2

    def __init__(self, issues: list[ConfigIssue] | str, **context: Any) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(issues, file=context.get("file"))]
        self.issues = issues
        count = len(issues)
        head = f"{count} configuration error{'s' if count != 1 else ''}"
        super().__init__(head, **context)

    def __str__(self) -> str:
        return "\n".join([self.message + ":", *(f"  {issue}" for issue in self.issues)])

    def to_dict(self) -> dict[str, Any]:
        return {"error": "ConfigError", "message": self.message, "issues": [i.to_dict() for i in self.issues]}


class DataError(Terminal, OxiflowError):
    """Input data is malformed (names file, line, column and reason)."""


class StepError(OxiflowError):
    """A step failed while running; wraps the cause with the step's identity."""

    def __init__(self, message: str, *, retryable: bool = False, **context: Any) -> None:
        super().__init__(message, **context)
        self.retryable = retryable


class StepTimeout(Terminal, OxiflowError):
    """A step exceeded its ``timeout_seconds`` and was interrupted."""


class PathEscapeError(Terminal, OxiflowError):
    """A sink path (or a partition value) would write outside the configured root."""


class RunCancelled(Terminal, OxiflowError):
    """The run was stopped (Ctrl-C, a signal, or another step's failure)."""

    exit_code = 130


def is_retryable(exc: BaseException) -> bool:
    """Transient errors and common I/O hiccups are retried; everything else is not."""
    flag = getattr(exc, "retryable", None)
    if flag is not None:
        return bool(flag)
    return isinstance(exc, ConnectionError | TimeoutError | BlockingIOError)
