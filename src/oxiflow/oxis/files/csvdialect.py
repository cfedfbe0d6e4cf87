"""The CSV dialect a scan uses: DuckDB's sniffer, checked against the file, repaired where it is wrong.

DuckDB's sniffer picks the dialect (delimiter, quoting, header) under which the sampled rows parse
consistently. A malformed row in the sample makes the right dialect "fail", so the sniffer settles
on a degenerate one and the read *succeeds* with wrong data: one column holding whole lines (`|` as
delimiter: `id,name,amount` becomes a single column), or no quoting (an unterminated quote is read
as literal text, and under skip/dlq good quoted rows are rejected). With some options given it
gives up instead, with a dump of its search space and no line number.

:func:`check_dialect` sniffs the first file once (``sniff_csv``, with the options the scan will use)
and compares the answer with the file's first lines. It does not trust the answer when

- it has one column while the header line holds a common delimiter (`,` `;` tab `|`) outside quotes,
- it has no quote character while a field in the sample starts with `"`, or
- there is no answer (the sniffer gave up) and the file is text.

Then the dialect is pinned: the delimiter of the header line (or the config), RFC 4180 quoting (`"`,
doubled to escape) unless configured, and column types sniffed with ``ignore_errors`` so the bad rows
do not count. The scan runs with ``auto_detect = false`` and ``strict_mode``: under ``on_error: fail``
the first bad record stops it with its line; under skip/dlq exactly the bad records are set aside.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oxiflow.engine.duck import literal, options
from oxiflow.oxis.files.jsonlines import open_binary

if TYPE_CHECKING:
    from oxiflow.oxis.files.csv import ReadCsvConfig

log = logging.getLogger("oxiflow.oxis.read_csv")

DELIMITERS = (",", ";", "\t", "|")  # the ones DuckDB's sniffer tries, in its order of preference
HEAD_BYTES = 64 * 1024  # decoded text looked at to check the sniffer's answer
# Mapping DuckDB's record numbers to file lines reads the file up to the record in Python; past this
# size the record number is reported as it is (they differ only after values spanning lines).
LINE_MAP_MAX_BYTES = 256 * 2**20
SNIFF_FAILED = ("Error when sniffing file", "detect the CSV parsing dialect")


@dataclass
class Dialect:
    """How to read a file: what DuckDB sniffed, or what :func:`check_dialect` pinned instead."""

    delimiter: str
    quote: str  # "" for no quoting
    escape: str
    header: bool
    columns: dict[str, str]
    skip: int = 0
    comment: str = ""
    dateformat: str | None = None
    timestampformat: str | None = None
    pinned: bool = False  # the scan must read with exactly this dialect (the sniffer's own was wrong)
    reason: str | None = None  # why it was pinned
    notes: list[str] = field(default_factory=list)

    def scan_options(self, cfg: ReadCsvConfig) -> list[tuple[str, Any]]:
        """read_csv options that read with this dialect, without sniffing again."""
        columns = {n: "VARCHAR" for n in self.columns} if cfg.all_varchar else self.columns
        return [
            ("auto_detect", False),
            ("delim", self.delimiter),
            ("quote", self.quote),
            ("escape", self.escape),
            ("header", self.header),
            ("skip", self.skip or None),
            ("comment", self.comment),
            ("columns", dict(cfg.columns) if cfg.columns else columns),
            ("dateformat", self.dateformat),
            ("timestampformat", self.timestampformat),
            ("strict_mode", True),
            ("null_padding", False),
            ("encoding", cfg.encoding if cfg.encoding != "utf-8" else None),
            ("compression", cfg.compression if cfg.compression != "auto" else None),
            ("nullstr", cfg.null_values),
            ("filename", cfg.filename or None),
        ]


def check_dialect(con: Any, path: str, cfg: ReadCsvConfig, sniff_opts: list[tuple[str, Any]]) -> Dialect | None:
    """The dialect to read ``path`` with: DuckDB's (``pinned`` false) when it holds up, a pinned one when
    it does not. None when the file cannot be sniffed and is not text either (the scan then reports
    DuckDB's own error)."""
    import duckdb

    head = head_lines(path, cfg)
    # the user's column types are not needed to check the dialect (and sniff_csv refuses types that
    # differ from the ones it would pick, where read_csv takes them)
    sniff_opts = [(k, v) for k, v in sniff_opts if k != "columns"]
    try:
        sniffed: Dialect | None = _sniff(con, path, sniff_opts)
    except duckdb.Error as exc:
        if not any(s in str(exc) for s in SNIFF_FAILED):
            return None  # something else is wrong with the file: the scan reports it
        sniffed = None
    if head is None:  # not text in this encoding (or unreadable): nothing to check against
        return sniffed
    reason = None
    delimiter = cfg.delimiter
    if sniffed is None:
        reason = "no dialect parses the sampled rows consistently"
    else:
        if delimiter is None and len(sniffed.columns) == 1 and head:
            found = header_delimiter(head[0])
            if found is not None:
                delimiter = found
                reason = f"the header line is delimited by {found!r} but the sniffer found one column"
        if reason is None and cfg.quote is None and sniffed.quote == "" and quoted_field(head, sniffed.delimiter):
            delimiter = delimiter or sniffed.delimiter
            reason = 'values start with a quote (") but the sniffer found no quoting'
        if reason is None and head and len(sniffed.columns) > 1 and not cfg.columns:
            # the sniffer fitted a few lines (skipping the rest as a "preamble"): most lines say otherwise
            # (lines with an odd number of quotes start or end a value spanning lines: not counted)
            balanced = [line for line in head[:1000] if not sniffed.quote or line.count(sniffed.quote) % 2 == 0]
            widths = Counter(len(split_line(line, sniffed.delimiter, sniffed.quote)) for line in balanced or head[:1])
            common, count = widths.most_common(1)[0]
            if common >= 2 and common != len(sniffed.columns) and count > widths.get(len(sniffed.columns), 0):
                delimiter = delimiter or sniffed.delimiter
                reason = f"most lines have {common} fields but the sniffer found {len(sniffed.columns)} columns"
    if reason is None:
        return sniffed
    if delimiter is None:
        delimiter = (header_delimiter(head[0]) if head else None) or (sniffed.delimiter if sniffed else None)
    if delimiter is None:
        return sniffed
    quote = cfg.quote if cfg.quote is not None else '"'
    escape = cfg.escape if cfg.escape is not None else quote
    pinned = _resniff(con, path, cfg, sniff_opts, delimiter, quote, escape, head)
    pinned.pinned, pinned.reason = True, reason
    log.info("read_csv %s: %s; reading with delimiter %r, quote %r", path, reason, delimiter, quote)
    return pinned


def _sniff(con: Any, path: str, opts: list[tuple[str, Any]]) -> Dialect:
    cur = con.execute(f"SELECT * FROM sniff_csv({literal(path)}, {options(opts)})")
    names = [d[0] for d in cur.description or []]
    row = dict(zip(names, cur.fetchone() or (), strict=False))

    def text(key: str) -> str:
        value = row.get(key)
        return "" if value in (None, "(empty)") else str(value)

    return Dialect(
        delimiter=text("Delimiter"),
        quote=text("Quote"),
        escape=text("Escape"),
        header=bool(row.get("HasHeader")),
        columns={c["name"]: c["type"] for c in row.get("Columns") or []},
        skip=int(row.get("SkipRows") or 0),
        comment=text("Comment"),
        dateformat=text("DateFormat") or None,
        timestampformat=text("TimestampFormat") or None,
    )


def _resniff(
    con: Any,
    path: str,
    cfg: ReadCsvConfig,
    sniff_opts: list[tuple[str, Any]],
    delimiter: str,
    quote: str,
    escape: str,
    head: list[str],
) -> Dialect:
    """Types and header under the repaired dialect, the bad rows ignored; names from the header line
    (columns read as text) when even that does not sniff."""
    # skip given too: left to itself the sniffer may "skip" the lines before a bad one as a preamble
    pinned = {"delim": delimiter, "quote": quote, "escape": escape, "ignore_errors": True, "skip": cfg.skip_rows}
    opts = [(k, v) for k, v in sniff_opts if k not in pinned and k != "store_rejects"] + list(pinned.items())
    found = _try_sniff(con, path, opts)
    if found is None or not _plausible(found, cfg, head):
        # a quote that never closes defeats even a sniffer told to ignore bad rows: sniff the types on
        # the first sample_size lines with the unbalanced ones (and so the broken records) left out
        found = _sniff_balanced(con, path, cfg, opts, quote, head)
    if found is not None and _plausible(found, cfg, head):
        found.delimiter, found.quote, found.escape, found.skip = delimiter, quote, escape, cfg.skip_rows
        if cfg.columns:
            found.columns = dict(cfg.columns)
        return found
    fields = split_line(head[0], delimiter, quote) if head else []
    header = cfg.header if cfg.header is not None else not any(_is_number(f) for f in fields)
    if cfg.columns:
        columns = dict(cfg.columns)
    elif header:
        columns = {name: "VARCHAR" for name in unique_names(fields)}
    else:
        columns = {f"column{i}": "VARCHAR" for i in range(len(fields))}
    notes = [] if cfg.columns or cfg.all_varchar else ["column types could not be sniffed: every column is text"]
    return Dialect(delimiter, quote, escape, header, columns, skip=cfg.skip_rows, notes=notes)


def _try_sniff(con: Any, path: str, opts: list[tuple[str, Any]]) -> Dialect | None:
    import duckdb

    try:
        return _sniff(con, path, opts)
    except duckdb.Error:
        return None


def _plausible(found: Dialect, cfg: ReadCsvConfig, head: list[str]) -> bool:
    """The re-sniffed columns are as many as the header line's fields (or the config's)."""
    if cfg.columns:
        return True
    width = len(split_line(head[0], found.delimiter or ",", found.quote)) if head else 0
    return bool(found.columns) and (not head or len(found.columns) == width or width <= 1)


def _sniff_balanced(
    con: Any, path: str, cfg: ReadCsvConfig, opts: list[tuple[str, Any]], quote: str, head: list[str]
) -> Dialect | None:
    import shutil
    import tempfile

    if not quote or not head:
        return None
    limit = cfg.sample_size if cfg.sample_size > 0 else 200_000
    scratch = tempfile.mkdtemp(prefix="oxiflow-csv-sniff-")
    try:
        sample = f"{scratch}/sample.csv"
        with open_text(path, cfg) as src, open(sample, "w", encoding="utf-8", newline="") as out:
            kept = 0
            for number, line in enumerate(src, start=1):
                if number <= cfg.skip_rows:
                    continue
                if line.count(quote) % 2 == 0:
                    out.write(line)
                    kept += 1
                if kept > limit:
                    break
        plain = [(k, v) for k, v in opts if k not in ("skip", "encoding", "compression")] + [("skip", 0)]
        return _try_sniff(con, sample, plain)
    except OSError:
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- looking at the file itself ------------------------------------------------------------------
@contextmanager
def open_text(path: str, cfg: ReadCsvConfig) -> Iterator[io.TextIOBase]:
    """The (decompressed, decoded) file as text lines that keep their line ends."""
    raw = open_binary(path, cfg.compression)
    try:
        yield io.TextIOWrapper(raw, encoding=_codec(cfg.encoding), errors="replace", newline="")
    finally:
        raw.close()


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding == "utf-8" else encoding


def head_lines(path: str, cfg: ReadCsvConfig) -> list[str] | None:
    """The first lines after ``skip_rows`` (without line ends), or None when the start of the file is
    not text in the configured encoding."""
    try:
        with open_binary(path, cfg.compression) as fh:
            data = fh.read(HEAD_BYTES)
    except Exception:  # unreadable or a broken compressed stream: DuckDB reports it
        return None
    if b"\x00" in data and cfg.encoding == "utf-8":
        return None
    try:
        text = codecs.getincrementaldecoder(_codec(cfg.encoding))().decode(data, final=False)
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    if len(data) == HEAD_BYTES and lines:
        lines.pop()  # cut off mid-line
    return [line for line in lines[cfg.skip_rows :] if line.strip()]


def header_delimiter(line: str) -> str | None:
    """The most frequent common delimiter outside quotes in a line (ties: DuckDB's order)."""
    counts = {d: 0 for d in DELIMITERS}
    inside = False
    for ch in line:
        if ch == '"':
            inside = not inside
        elif not inside and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def quoted_field(lines: list[str], delimiter: str) -> bool:
    """Whether any field of the sample starts with a double quote."""
    return any(line.startswith('"') or (delimiter and f'{delimiter}"' in line) for line in lines)


def split_line(line: str, delimiter: str, quote: str) -> list[str]:
    if not quote:
        return line.split(delimiter)
    try:
        return next(csv.reader([line], delimiter=delimiter, quotechar=quote), [])
    except csv.Error:
        return line.split(delimiter)


def unique_names(fields: list[str]) -> list[str]:
    """Blank names become `columnN` (0-based, as DuckDB's), repeats get `_1`, `_2` ..."""
    out: list[str] = []
    for i, name in enumerate(fields):
        base = name.strip() or f"column{i}"
        candidate, n = base, 0
        while candidate in out:
            n += 1
            candidate = f"{base}_{n}"
        out.append(candidate)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def field_index(line: str, delimiter: str, quote: str) -> int:
    """0-based index of the field in which ``line`` opens a quote it never closes."""
    index, inside = 0, False
    for ch in line:
        if quote and ch == quote:
            inside = not inside
        elif ch == delimiter and not inside:
            index += 1
    return index


def file_lines(path: str, cfg: ReadCsvConfig, quote: str, records: list[int]) -> dict[int, int]:
    """The file line on which each of DuckDB's record numbers (1 = the first line, skipped lines
    included) starts; they differ once a quoted value has spanned lines."""
    import os

    wanted = sorted(set(records))
    out = {r: r for r in wanted}
    if not wanted or not quote:
        return out
    try:
        if os.path.getsize(path) > LINE_MAP_MAX_BYTES:
            return out
        with open_text(path, cfg) as fh:
            record, inside, pending = 0, False, iter(wanted)
            target = next(pending)
            for line_no, line in enumerate(fh, start=1):
                if not inside:
                    record += 1
                    while record == target:
                        out[target] = line_no
                        target = next(pending, -1)
                    if target < 0:
                        break
                inside ^= line.count(quote) % 2 == 1
    except (OSError, ValueError):
        pass
    return out
