"""format_json / format_csv: structured rows back to text, streamed batch by batch."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import AliasChoices, Field

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import OxiConfig, StepContext, Transform, oxi
from oxiflow.oxis.oxide.common import JSON_SHAPE, json_default, require_arrow


def iter_rows(data: OxiData) -> Iterator[dict[str, Any]]:
    for batch in data:
        yield from batch.to_pylist()


def _dumps(value: Any, indent: int | None, sort_keys: bool, compact: bool) -> str:
    seps = (",", ":") if compact else ((",", ": ") if indent is not None else (", ", ": "))
    return json.dumps(
        value, indent=indent, sort_keys=sort_keys, separators=seps, default=json_default, ensure_ascii=False
    )


def json_chunks(data: OxiData, *, indent: int | None, sort_keys: bool, compact: bool) -> Iterator[str]:
    """One JSON document: an array of the rows (streamed), or the single object/value the input
    was parsed from (``json_shape`` metadata set by parse_json/json_select)."""
    if compact:
        indent = None
    shape = data.metadata.get(JSON_SHAPE, "array")
    rows = iter_rows(data)
    if shape in ("object", "value"):
        first = next(rows, None)
        if next(rows, None) is None:  # still a single row: write it as the document it was
            doc = first.get("value") if (shape == "value" and first is not None) else first
            yield _dumps(doc, indent, sort_keys, compact) + "\n"
            return
        raise DataError(
            "format_json: the document had one object but now holds several rows", hint="use it as an array"
        )
    unwrap = shape == "values"  # an array of scalars was parsed into a `value` column
    pad = " " * indent if indent else ""
    open_sep = "[\n" if indent is not None else "["
    item_sep = ",\n" if indent is not None else ("," if compact else ", ")
    first_item = True
    for row in rows:
        text = _dumps(row.get("value") if unwrap else row, indent, sort_keys, compact)
        if indent is not None:
            text = textwrap.indent(text, pad, lambda _line: True)
        yield (open_sep if first_item else item_sep) + text
        first_item = False
    yield ("[]" if first_item else ("\n]" if indent is not None else "]")) + "\n"


def json_lines(data: OxiData, *, indent: int | None = None) -> Iterator[str]:
    for batch in data:
        out = [_dumps(row, indent, False, indent is None) + "\n" for row in batch.to_pylist()]
        if out:
            yield "".join(out)


class FormatJsonConfig(OxiConfig):
    pretty: bool = True
    """Indent nested values over several lines."""
    indent: int = Field(2, ge=0, le=16)
    """Spaces per level when pretty."""
    sort_keys: bool = False
    """Write object keys in sorted order."""
    compact: bool = False
    """No whitespace at all (wins over `pretty`)."""


@oxi(
    "format_json",
    kind="transform",
    config=FormatJsonConfig,
    summary="Rows to JSON text: an array of objects (or the single object parse_json read).",
    example="- name: format_json\n  config:\n    pretty: true\n    indent: 2",
    reshapes=True,
)
class FormatJson(Transform):
    config: FormatJsonConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        require_arrow(data, ctx, "add parse_json (or parse_csv) before format_json")
        cfg = self.config
        indent = cfg.indent if cfg.pretty else None
        meta = {k: v for k, v in data.metadata.items() if k != JSON_SHAPE}
        return OxiData.from_text(json_chunks(data, indent=indent, sort_keys=cfg.sort_keys, compact=cfg.compact), meta)


_QUOTING: dict[str, Literal[0, 1, 2, 3]] = {
    "minimal": csv.QUOTE_MINIMAL,
    "all": csv.QUOTE_ALL,
    "non_numeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE,
}
_ENDINGS = {"unix": "\n", "windows": "\r\n", "mac": "\r"}


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, int | float | str) and not isinstance(value, bool)):
        return "" if value is None else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=json_default, ensure_ascii=False)
    return json_default(value)


def csv_chunks(
    data: OxiData,
    *,
    headers: bool = True,
    delimiter: str = ",",
    quote_char: str = '"',
    escape_char: str | None = None,
    quote_style: str = "minimal",
    line_ending: str = "unix",
) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(
        buf,
        delimiter=delimiter,
        quotechar=quote_char,
        escapechar=escape_char,
        doublequote=escape_char is None,
        quoting=_QUOTING[quote_style],
        lineterminator=_ENDINGS[line_ending],
    )
    names = data.schema.names
    try:
        if headers:
            writer.writerow(names)
        for batch in data:
            for row in batch.to_pylist():
                writer.writerow([_cell(row[n]) for n in names])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    except csv.Error as exc:
        raise DataError(
            f"format_csv: {exc}", hint="with quote_style: none, set escape_char, or pick another quote_style"
        ) from None
    if buf.getvalue():
        yield buf.getvalue()


class FormatCsvConfig(OxiConfig):
    headers: bool = Field(True, validation_alias=AliasChoices("headers", "include_headers"))
    """Write a header row of column names (alias `include_headers`)."""
    delimiter: str = Field(",", min_length=1, max_length=1)
    """Field separator."""
    quote_char: str = Field('"', min_length=1, max_length=1)
    """Quote character."""
    escape_char: str | None = Field(None, min_length=1, max_length=1)
    """Escape character for quotes and delimiters; unset: quotes are doubled."""
    quote_style: Literal["minimal", "all", "non_numeric", "none"] = "minimal"
    """Which fields are quoted: only when needed, all, all but numbers, never."""
    line_ending: Literal["unix", "windows", "mac"] = "unix"
    """`\\n`, `\\r\\n` or `\\r`."""


@oxi(
    "format_csv",
    kind="transform",
    config=FormatCsvConfig,
    summary="Rows to CSV text (quote styles, line endings); nested values are written as JSON.",
    example="- name: format_csv\n  config:\n    headers: true\n    quote_style: minimal",
    reshapes=True,
)
class FormatCsv(Transform):
    config: FormatCsvConfig

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        require_arrow(data, ctx, "add parse_csv (or parse_json) before format_csv")
        c = self.config
        chunks = csv_chunks(
            data,
            headers=c.headers,
            delimiter=c.delimiter,
            quote_char=c.quote_char,
            escape_char=c.escape_char,
            quote_style=c.quote_style,
            line_ending=c.line_ending,
        )
        meta = {k: v for k, v in data.metadata.items() if k != JSON_SHAPE}
        return OxiData.from_text(chunks, meta)
