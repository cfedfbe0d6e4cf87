"""Line-level JSON checks shared by read_json: open (de)compressed files, validate records, locate errors.

DuckDB's JSON reader is fast but lenient (trailing commas, NaN) and reports broken NDJSON lines
as rows of nulls under ``ignore_errors``. These helpers give read_json strict, line-numbered
verdicts where it needs them, streaming one line at a time.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from oxiflow.errors import DataError

# Whole JSON documents up to this size are checked with a strict parser before DuckDB reads them;
# bigger ones are left to DuckDB's (lenient, streaming) parser to keep memory bounded.
STRICT_DOCUMENT_MAX_BYTES = 16 * 2**20


def _loads() -> Callable[[bytes], Any]:
    try:
        import orjson

        return orjson.loads
    except ImportError:  # pragma: no cover - orjson is optional
        import json

        def loads(raw: bytes) -> Any:
            return json.loads(raw, parse_constant=_reject_constant)

        return loads


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def compression_of(path: str, compression: str) -> str:
    if compression != "auto":
        return compression
    name = path.lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return "none"


def open_binary(path: str, compression: str) -> IO[bytes]:
    """Open ``path`` for reading, decompressing gzip/zstd as a stream."""
    kind = compression_of(path, compression)
    if kind == "gzip":
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(
                "reading zstd JSON line by line needs the 'zstandard' package",
                file=path,
                hint="pip install zstandard, or use on_error: fail",
            ) from None
        raw = open(path, "rb")  # noqa: SIM115 - closed with the wrapper below
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def first_char(path: str, compression: str) -> str:
    """The first non-blank character of the (decompressed) file, or '' for an empty file."""
    try:
        with open_binary(path, compression) as fh:
            while True:
                chunk = fh.read(4096)
                if not chunk:
                    return ""
                text = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")
                if text:
                    return chr(text[0])
    except OSError as exc:
        raise DataError(f"cannot read: {exc}", file=path) from None


def is_single_line(path: str, compression: str) -> bool:
    """True when everything after the first line is blank (a one-line document, not NDJSON)."""
    with open_binary(path, compression) as fh:
        seen_line = False
        for raw in fh:
            if not raw.strip():
                continue
            if seen_line:
                return False
            seen_line = True
    return True


def check_document(path: str, compression: str, on_error: str = "fail") -> None:
    """Parse a whole JSON document strictly; raise a DataError naming line and column (and, under
    ``on_error: skip|dlq``, why that cannot set anything aside: a document is one record set)."""
    import json

    with open_binary(path, compression) as fh:
        data = fh.read(STRICT_DOCUMENT_MAX_BYTES + 1)
    if len(data) > STRICT_DOCUMENT_MAX_BYTES:
        return
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return  # an empty file holds no records
    try:
        _loads()(data)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON: {exc.msg}",
            file=path,
            line=exc.lineno,
            column=exc.colno,
            hint=(
                "fix the document (read_json reads a JSON array of objects, one object, or JSON Lines)"
                if on_error == "fail"
                else f"fix the document: on_error: {on_error} sets aside bad lines of JSON Lines, but a "
                "malformed JSON array or object cannot be split into records (or write it as JSON Lines)"
            ),
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"malformed JSON: {exc}", file=path, hint="fix the document") from None


def iter_lines(path: str, compression: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line without newline) for every non-blank line."""
    with open_binary(path, compression) as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                yield number, raw.rstrip(b"\r\n")


_POSITION = re.compile(r":? line 1 column (\d+) \(char \d+\)$")


def check_line(raw: bytes, loads: Callable[[bytes], Any]) -> tuple[str, int | None] | None:
    """None when ``raw`` is one JSON object, else the reason it is not and the column (1-based, within
    the line) where the parser stopped."""
    try:
        value = loads(raw)
    except (ValueError, RecursionError) as exc:
        # the parser counts lines and columns within the record (always line 1 of one line): keep the
        # column, drop its "line 1", so messages say the file's line
        text = str(exc).splitlines()[0]
        m = _POSITION.search(text)
        return f"malformed JSON: {text[: m.start()] if m else text}", int(m.group(1)) if m else None
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}", None
    return None


def at(reason: str, line: int, column: int | None) -> str:
    """``malformed JSON: X`` as ``malformed JSON at line 3, column 13: X`` (a place in the file)."""
    place = f"line {line}" + (f", column {column}" if column is not None else "")
    head, sep, rest = reason.partition(": ")
    return f"{head} at {place}: {rest}" if sep else f"{reason} (at {place})"


def first_bad_line(path: str, compression: str) -> tuple[int, str, str, int | None] | None:
    """(line, reason, raw, column) of the first line that is not a JSON object, if any."""
    loads = _loads()
    for number, raw in iter_lines(path, compression):
        found = check_line(raw, loads)
        if found is not None:
            return number, found[0], raw.decode("utf-8", "replace"), found[1]
    return None


def filter_lines(path: str, compression: str, out: Path, on_bad: Callable[[int, str, str], None]) -> tuple[int, int]:
    """Copy the valid NDJSON records of ``path`` to ``out``; report each bad one. Returns (good, bad)."""
    loads = _loads()
    good = bad = 0
    with out.open("wb") as sink:
        for number, raw in iter_lines(path, compression):
            found = check_line(raw, loads)
            if found is None:
                sink.write(raw)
                sink.write(b"\n")
                good += 1
            else:
                bad += 1
                on_bad(number, at(found[0], number, found[1]), raw.decode("utf-8", "replace"))
    return good, bad
