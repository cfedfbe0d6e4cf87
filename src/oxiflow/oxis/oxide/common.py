"""Helpers the Oxide Flow oxis share: payload checks, line splitting, JSON-safe values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Iterable, Iterator
from typing import Any

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext

# Set by parse_json / json_select on their output: "object" when the document was a single JSON
# object (one row), so format_json writes it back as an object instead of a one-element array.
JSON_SHAPE = "json_shape"


def require_arrow(data: OxiData, ctx: StepContext, hint: str) -> None:
    """Structured-data oxis refuse raw text with a message saying which parser to add."""
    if data.kind != "arrow":
        raise DataError(
            f"{ctx.oxi_name} expects structured rows but got a {data.kind} payload", step=ctx.step_id, hint=hint
        )


def require_text(data: OxiData, ctx: StepContext) -> None:
    if data.kind == "arrow":
        raise DataError(
            f"{ctx.oxi_name} expects text (from read_file or read_stdin) but got structured rows",
            step=ctx.step_id,
            hint="remove the parser, or put a format_json/format_csv step before it",
        )


def iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Re-split text chunks into lines that keep their line ends (what ``csv.reader`` wants)."""
    rest = ""
    for chunk in chunks:
        if not chunk:
            continue
        buf = rest + chunk
        lines = buf.splitlines(keepends=True)
        # The last piece may continue in the next chunk (also a lone "\r" that may precede "\n").
        rest = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        yield from lines
    if rest:
        yield rest


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for the Python values Arrow produces."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)
