"""read_pipe / write_pipe: the pipe protocol between oxiflow processes (and everything else).

Between two ``oxi`` processes data travels as an Arrow IPC *stream*: types, nullability, nested
data, dictionaries and field/schema metadata survive the pipe exactly, and the reader needs no
parsing. ``read_pipe`` also accepts what other tools write, told apart by the first bytes:

=====================  ===========================================  =============================
first bytes            format                                       read by
=====================  ===========================================  =============================
``FF FF FF FF``        Arrow IPC stream                             pyarrow, streaming
``ARROW1``             Arrow IPC file (Feather v2)                  spooled, then ``read_arrow``
``PAR1``               Parquet                                      spooled, then ``read_parquet``
``{``                  JSON Lines                                   pyarrow, streaming
``[``                  a JSON array document                        spooled, then ``read_json``
``1F 8B`` / ``28 B5``  gzip / zstd: decompressed, then detected     pyarrow
anything else          CSV (delimiter sniffed)                      pyarrow, streaming
=====================  ===========================================  =============================

Parquet and the Arrow file format keep their index at the end, so they are spooled to a
temporary file first (removed at the end of the stream, on Ctrl-C, and at exit).

``write_pipe`` writes ``arrow`` (IPC stream), ``csv``/``jsonl`` (DuckDB's writers, the same
text ``write_csv``/``write_json`` produce), ``parquet`` (streamed row groups) or ``table`` (the
terminal view of :mod:`oxiflow.pipe.table`); ``auto`` is ``table`` on a terminal, else ``arrow``.
A reader that goes away (``| head``) ends the run quietly (:class:`OutputClosed`); a run that
fails mid-stream ends its Arrow output with a deliberately broken message, so the next process
in the pipe fails too instead of taking a truncated stream for a complete one.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import errno
import io
import os
import re
import select
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.errors import DataError, RunCancelled
from oxiflow.oxi import OxiConfig, Sink, Source, StepContext, oxi

InFormat = Literal["auto", "arrow", "csv", "jsonl", "json", "parquet"]
OutFormat = Literal["auto", "arrow", "csv", "jsonl", "parquet", "table"]
STDIN_NAME = "<stdin>"
_PEEK = 64 * 1024  # bytes looked at to tell formats apart (CSV sniffing wants a few lines)
_IO_BUFFER = 1 << 20  # one buffered read/write per MiB instead of one per Arrow buffer
_PIPE_SIZE = 1 << 20  # Linux pipes hold 64 KiB by default: 16x fewer wake-ups per MiB
# Written in place of the end-of-stream marker when a run fails: a continuation marker, then a
# metadata length and bytes that are no valid flatbuffer, so any Arrow reader fails on them.
ABORT_MESSAGE = b"\xff\xff\xff\xff" + (16).to_bytes(4, "little") + b"oxiflow: aborted"


class OutputClosed(RunCancelled):
    """The process reading our output went away (``oxi cat big.csv | head``): stop quietly."""

    exit_code = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`


def grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer on ``fd`` when it is a pipe (Linux; best effort)."""
    import fcntl
    import stat

    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and hasattr(fcntl, "F_SETPIPE_SZ"):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size, or not allowed: the default size works too


# -- reading ----------------------------------------------------------------------------------------
class _Prefixed(io.RawIOBase):
    """A raw stream that yields ``head`` (the bytes peeked at) and then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: Callable[[int], bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head.nbytes:
            n = min(len(view), self._head.nbytes)
            view[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._rest(len(view))
            n = len(data)
            view[:n] = data
        self.bytes_read += n
        return n


class _FdReader:
    """Reads a file descriptor so that :meth:`stop` (Ctrl-C, the end of the stream, exit) ends a
    read blocked waiting for data at once: it polls the fd together with a wake-up pipe. After
    ``stop`` every read returns EOF."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.stopped = False
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False

    def read(self, n: int) -> bytes:
        while not self.stopped:
            poll = select.poll()  # one per call: a poll object refuses concurrent use
            poll.register(self.fd, select.POLLIN)
            poll.register(self._wake_r, select.POLLIN)
            ready = {fd for fd, _ in poll.poll()}
            if self._wake_r in ready or self.stopped:
                break
            return os.read(self.fd, n)
        return b""

    def stop(self) -> None:
        with self._lock:
            if self.stopped or self._closed:
                return
            self.stopped = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # the pipe cannot be full: one byte is ever written
                pass

    def close(self) -> None:
        """Release the wake-up pipe; only once nothing reads any more (the caller knows)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.stopped = True
        os.close(self._wake_r)
        os.close(self._wake_w)


# Arrow's streaming CSV / JSON readers read ahead on a thread of Arrow's I/O pool, and that thread
# calls into Python for every block (``pa.PythonFile``). If a Python object is touched from an Arrow
# thread while the interpreter exits -- a read still to come or in progress, the Python file or a
# ``bytes`` block released there -- CPython ends the thread inside C++ code and the process aborts
# (std::terminate, or "PyGILState_Release: thread state must be current"; exit 134). pyarrow cannot
# read a pipe through a native file (it needs lseek), so _ArrowFeed keeps that thread under control.
_AHEAD = 8  # blocks Arrow may read past the batches taken (its own queue would hold 32)
_STALL = 0.5  # seconds a read waits past _AHEAD while the consumer waits for a batch (tiny blocks)
_QUIET = 0.2  # seconds without a call after which a stopped feed's reader is taken to be done
_LIVE: weakref.WeakSet[_ArrowFeed] = weakref.WeakSet()


class _ArrowFeed:
    """The file object Arrow's streaming CSV / JSON readers read, through :attr:`file`.

    Arrow reads it through a native ``BufferedInputStream``, which copies every block into Arrow's
    own memory, so no Python ``bytes`` outlives a read. Its read-ahead is bounded (``_AHEAD`` blocks
    past the batches the consumer took), so until the end Arrow's I/O thread is never parked with a
    full queue: it is inside :meth:`read`, or about to call it. :meth:`shutdown` (at the end of the
    stream, when the consumer stops early, on Ctrl-C and at exit) makes the next read return EOF,
    waits until Arrow took it, then closes the file from the caller's thread, so no later destructor
    on Arrow's thread needs the interpreter.
    """

    def __init__(self, read: Callable[[int], bytes], source: _FdReader) -> None:
        self._read = read
        self._source = source
        self._cond = threading.Condition()
        self._handed = 0  # reads that returned data
        self._taken = 0  # batches the consumer took
        self._waiting = False  # the consumer is inside Arrow, waiting for a batch
        self._active = False  # Arrow's thread is inside read()
        self._calls = 0
        self._closing = False
        self._ended = False  # EOF (or an error) was handed to Arrow: it reads no more
        self._released = False
        # buffer_size=1: every read goes straight to read() below, copied into Arrow's memory
        self.file = pa.BufferedInputStream(pa.PythonFile(self, mode="r"), buffer_size=1)
        _LIVE.add(self)

    # -- what pa.PythonFile calls (on Arrow's I/O thread) ------------------------------------------
    def read(self, n: int = -1) -> bytes:
        with self._cond:
            self._calls += 1
            while not self._closing and self._handed - self._taken >= _AHEAD:
                if not self._cond.wait(_STALL) and self._waiting:
                    break  # one batch needs more blocks than that: let one through
            if self._closing:
                return self._end()
            self._active = True
        try:
            data = self._read(n)
        except BaseException:
            with self._cond:
                self._end()
                if self._closing:
                    return b""  # stopping made the read fail: EOF is all Arrow needs now
            raise
        with self._cond:
            self._active = False
            if not data:
                return self._end()
            self._handed += 1
            return data

    def _end(self) -> bytes:
        self._active = False
        self._ended = True
        self._cond.notify_all()
        return b""

    @property
    def closed(self) -> bool:
        # not _closing: pyarrow checks `closed` before each read, and a read refused that way would
        # never reach read(), so shutdown could not see Arrow take its EOF
        return self._released

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Called by ``file.close()``: nothing to release here (shutdown did)."""

    # -- the consumer's side ----------------------------------------------------------------------
    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a call that waits for Arrow (opening the reader, the next batch)."""
        with self._cond:
            self._waiting = True
        try:
            yield
        finally:
            with self._cond:
                self._waiting = False
                self._taken += 1
                self._cond.notify_all()

    def shutdown(self) -> None:
        """Stop Arrow's reading, wait until it is done, release the Python file (idempotent)."""
        with self._cond:
            if self._released:
                return
            self._closing = True
            self._cond.notify_all()
        self._source.stop()  # a read blocked on the fd returns now
        with self._cond:
            while not self._ended:
                calls = self._calls
                if not self._cond.wait(_QUIET) and not self._active and calls == self._calls:
                    break  # no read in progress, none started: Arrow's reader stopped by itself
            self._released = True
        try:
            self.file.close()  # closes the PythonFile too: it lets go of us here, under the GIL
        except (OSError, ValueError):
            pass
        _LIVE.discard(self)


@atexit.register
def _shutdown_feeds() -> None:
    # atexit runs before the interpreter starts finalizing: Arrow's thread can still take the GIL
    for feed in list(_LIVE):
        feed.shutdown()


def _peek(read: Callable[[int], bytes]) -> bytes:
    """Read until the format can be told: 8 bytes, plus the first non-blank byte (or EOF)."""
    head = b""
    while len(head) < _PEEK:
        chunk = read(_PEEK - len(head))
        if not chunk:
            break
        head += chunk
        if len(head) >= 8 and head.lstrip(b"\xef\xbb\xbf \t\r\n"):
            break
    return head


def detect(head: bytes) -> str:
    """The format of a stream from its first bytes (see the module docstring)."""
    if head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    if head.startswith(b"ARROW1"):
        return "arrow_file"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "jsonl"
    if text.startswith(b"["):
        return "json"
    return "csv"


class ReadPipeConfig(OxiConfig):
    path: str = "-"
    """`-` for standard input, or a named pipe / `/dev/fd/N` to read the same way."""
    format: InFormat = "auto"
    """`auto` tells Arrow IPC, Parquet, JSON Lines, JSON and CSV apart by the first bytes
    (gzip/zstd are decompressed first); or force one."""
    delimiter: str | None = None
    """CSV field separator; sniffed from the first lines when unset."""
    header: bool = True
    """CSV: the first row holds the column names."""
    block_size: int = Field(4 << 20, gt=0)
    """CSV/JSON Lines: bytes per parsed block. Types are inferred from the first block."""
    validate_batches: bool = False
    """Fully validate each Arrow batch (offsets, UTF-8). Off by default: the other end of a pipe
    is usually oxiflow, and structural checks still run."""


@oxi(
    "read_pipe",
    kind="source",
    config=ReadPipeConfig,
    summary="Read standard input: Arrow IPC streams (the oxi pipe protocol), CSV, JSON Lines, Parquet.",
    example="- name: read_pipe\n  config:\n    format: auto",
)
class ReadPipe(Source):
    config: ReadPipeConfig

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        name = STDIN_NAME if cfg.path == "-" else cfg.path
        if cfg.path == "-":
            fd, owned = sys.stdin.fileno(), False
        else:
            fd, owned = os.open(str(ctx.input_path(cfg.path)), os.O_RDONLY), True
        grow_pipe(fd)
        ctx.metadata.update(path=name)
        source = _FdReader(fd)
        ctx.on_interrupt(source.stop)  # Ctrl-C ends a read waiting for data

        def release() -> None:
            source.close()
            if owned:
                os.close(fd)

        try:
            head = _peek(source.read)
            ctx.check_cancelled()
            fmt = detect(head) if cfg.format == "auto" else cfg.format
            stream: IO[bytes] = io.BufferedReader(_Prefixed(head, source.read), _IO_BUFFER)
            if fmt in ("gzip", "zstd"):
                inner = pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), fmt)
                head = _peek(inner.read)
                fmt = detect(head) if cfg.format == "auto" else cfg.format
                stream = io.BufferedReader(_Prefixed(head, inner.read), _IO_BUFFER)
            if not head:
                raise DataError(
                    "no data on standard input" if cfg.path == "-" else "no data in the pipe",
                    file=name,
                    hint="give a FILE, or check the command before the pipe (did it fail?)",
                )
            ctx.metadata["format"] = fmt
            data = self._open(fmt, stream, head, name, ctx, source)
        except BaseException:
            release()
            raise
        return data.with_batches(_then(data, release))

    def _open(
        self, fmt: str, stream: IO[bytes], head: bytes, name: str, ctx: StepContext, source: _FdReader
    ) -> OxiData:
        if fmt == "arrow":
            return _read_ipc(stream, name, ctx, self.config.validate_batches)
        if fmt in ("arrow_file", "parquet", "json"):
            reader = {"arrow_file": "read_arrow", "parquet": "read_parquet", "json": "read_json"}[fmt]
            return _spooled(stream, reader, name, ctx)
        feed = _ArrowFeed(stream.read, source)
        try:
            if fmt == "jsonl":
                return _read_jsonl(feed, stream, name, ctx, self.config)
            return _read_csv(feed, stream, head, name, ctx, self.config)
        except BaseException:
            feed.shutdown()
            raise


def _then(data: OxiData, cleanup: Callable[[], None]) -> Iterator[pa.RecordBatch]:
    try:
        yield from data
    finally:
        cleanup()


def _counted(
    schema: pa.Schema, batches: Iterator[pa.RecordBatch], ctx: StepContext, stream: IO[bytes]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        ctx.check_cancelled()
        if batch.num_rows:
            yield batch
    raw = getattr(stream, "raw", None)
    ctx.bytes_read = getattr(raw, "bytes_read", 0)


def _read_ipc(stream: IO[bytes], name: str, ctx: StepContext, validate: bool) -> OxiData:
    import pyarrow.ipc as ipc

    def broken(exc: BaseException) -> DataError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DataError(
            f"the Arrow IPC stream is broken: {reason}",
            file=name,
            hint="the process writing into the pipe probably failed: see its error above",
        )

    try:
        reader = ipc.open_stream(stream)
    except (pa.ArrowException, OSError, ValueError) as exc:
        ctx.check_cancelled()  # Ctrl-C ended the read: not a broken stream
        raise broken(exc) from None
    if ctx.limit_rows == 0:
        return OxiData.empty(reader.schema)

    def batches() -> Iterator[pa.RecordBatch]:
        index = 0
        while True:
            try:
                batch = reader.read_next_batch()
                batch.validate(full=validate)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as exc:
                ctx.check_cancelled()
                raise broken(exc) from None
            yield batch
            index += 1

    return OxiData(reader.schema, _counted(reader.schema, batches(), ctx, stream))


_ROW = re.compile(r"Row #(\d+)")
_COLUMN = re.compile(r"column #(\d+)")


def _text_error(exc: BaseException, name: str, what: str, schema: pa.Schema | None) -> DataError:
    text = str(exc).strip()
    row = _ROW.search(text)
    col = _COLUMN.search(text)
    column: str | None = None
    if col and schema is not None and int(col.group(1)) < len(schema):
        column = schema.field(int(col.group(1))).name
    return DataError(
        f"cannot read {what}: {text.splitlines()[0] if text else type(exc).__name__}",
        file=name,
        line=int(row.group(1)) if row else None,
        column=column,
        hint="types are inferred from the first block: fix the record, or pass a FILE (read with DuckDB)",
    )


def _read_csv(
    feed: _ArrowFeed, stream: IO[bytes], head: bytes, name: str, ctx: StepContext, cfg: ReadPipeConfig
) -> OxiData:
    import pyarrow.csv as pcsv

    delimiter = cfg.delimiter
    if delimiter is None:
        sample = head.decode("utf-8", "replace").lstrip("\ufeff")
        sample = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","  # one column, or too little to tell
    ctx.metadata["delimiter"] = delimiter
    # use_threads=False: parsing a pipe serially costs little next to the pipe itself, and leaves
    # the cores to the processes on either side of it
    read_options = pcsv.ReadOptions(
        block_size=cfg.block_size, autogenerate_column_names=not cfg.header, use_threads=False
    )
    parse_options = pcsv.ParseOptions(delimiter=delimiter)
    try:
        with feed.waiting():
            reader = pcsv.open_csv(feed.file, read_options=read_options, parse_options=parse_options)
    except (pa.ArrowException, OSError, ValueError) as exc:
        ctx.check_cancelled()  # Ctrl-C ended the read before the first batch
        raise _text_error(exc, name, "CSV", None) from None
    return _text_stream(reader, name, "CSV", ctx, stream, feed)


def _read_jsonl(feed: _ArrowFeed, stream: IO[bytes], name: str, ctx: StepContext, cfg: ReadPipeConfig) -> OxiData:
    import pyarrow.json as pjson

    read_options = pjson.ReadOptions(block_size=cfg.block_size, use_threads=False)
    try:
        with feed.waiting():
            reader = pjson.open_json(feed.file, read_options=read_options)
    except (pa.ArrowException, OSError, ValueError) as exc:
        ctx.check_cancelled()  # Ctrl-C ended the read before the first batch
        raise _text_error(exc, name, "JSON Lines", None) from None
    return _text_stream(reader, name, "JSON Lines", ctx, stream, feed)


def _text_stream(reader: Any, name: str, what: str, ctx: StepContext, stream: IO[bytes], feed: _ArrowFeed) -> OxiData:
    schema = reader.schema
    if ctx.limit_rows == 0:
        feed.shutdown()
        return OxiData.empty(schema)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    with feed.waiting():
                        batch = reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowException, OSError, ValueError) as exc:
                    ctx.check_cancelled()  # a read ended by Ctrl-C is no parse error
                    raise _text_error(exc, name, what, schema) from None
                yield batch
        finally:
            feed.shutdown()  # before the reader goes: Arrow's thread must be done with us

    return OxiData(schema, _counted(schema, batches(), ctx, stream))


def _spooled(stream: IO[bytes], reader: str, name: str, ctx: StepContext) -> OxiData:
    """Copy the stream to a temporary file and read that with the file source oxi ``reader``."""
    from oxiflow.registry import default_registry

    folder = Path(tempfile.mkdtemp(prefix="oxiflow-stdin-"))

    def cleanup() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    # Ctrl-C (engine interrupt), a normal end, and an exit in between all remove the spool.
    atexit.register(cleanup)
    ctx.on_interrupt(cleanup)
    try:
        suffix = {"read_arrow": ".arrow", "read_parquet": ".parquet", "read_json": ".json"}[reader]
        target = folder / f"stdin{suffix}"
        with open(target, "wb") as out:
            while chunk := stream.read(_IO_BUFFER):
                ctx.check_cancelled()
                out.write(chunk)
        ctx.bytes_read = target.stat().st_size
        spec = default_registry().get(reader)
        source = spec.factory(spec.config.model_validate({"path": str(target)}))
        assert isinstance(source, Source)
        data = source.read(ctx)
    except DataError as exc:
        cleanup()
        exc.context["file"] = name  # the spool file's name means nothing to the user
        raise
    except BaseException:
        cleanup()
        raise
    ctx.metadata["path"] = name
    return data.with_batches(_then(data, cleanup))


# -- writing ----------------------------------------------------------------------------------------
class WritePipeConfig(OxiConfig):
    path: str = "-"
    """`-` for standard output, or a named pipe / `/dev/fd/N`."""
    format: OutFormat = "auto"
    """`arrow` (IPC stream: the oxi pipe protocol), `csv`, `jsonl`, `parquet`, `table` (for
    people), or `auto`: `table` when the output is a terminal, else `arrow`."""
    table_rows: int = Field(20, ge=0)
    """`table`: how many rows to show (the first and last half of them)."""


@oxi(
    "write_pipe",
    kind="sink",
    config=WritePipeConfig,
    summary="Write to standard output: Arrow IPC stream (between oxi processes), CSV, JSON Lines, Parquet, a table.",
    example="- name: write_pipe\n  config:\n    format: auto",
)
class WritePipe(Sink):
    config: WritePipeConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        if cfg.path == "-":
            fd, owned = sys.stdout.fileno(), False
            sys.stdout.flush()  # anything printed before must come first
        else:
            fd, owned = os.open(str(ctx.output_path(cfg.path)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), True
        fmt = resolve_format(cfg.format, fd)
        ctx.metadata.update(format=fmt)
        grow_pipe(fd)
        out: IO[bytes] = io.BufferedWriter(io.FileIO(fd, "wb", closefd=owned), _IO_BUFFER)
        try:
            rows = write_stream(data, fmt, out, fd, ctx, table_rows=cfg.table_rows)
            out.flush()
        except BaseException as exc:
            closed = _is_closed_pipe(exc)
            if fmt == "arrow" and not closed:
                _abort(out)
            if closed:
                _discard(out)
                raise OutputClosed("the reader of the output went away", step=ctx.step_id) from None
            raise
        finally:
            if owned:
                try:
                    out.close()
                except OSError:
                    pass
        ctx.metadata["rows"] = rows


def resolve_format(fmt: str, fd: int) -> str:
    if fmt != "auto":
        return fmt
    return "table" if os.isatty(fd) else "arrow"


def write_stream(data: OxiData, fmt: str, out: IO[bytes], fd: int, ctx: StepContext, *, table_rows: int = 20) -> int:
    """Write the whole stream to ``out`` (``fd`` underneath) in ``fmt``; the row count."""
    if fmt == "arrow":
        import pyarrow.ipc as ipc

        rows = 0
        writer = ipc.new_stream(out, data.schema)
        for batch in data:
            ctx.check_cancelled()
            writer.write_batch(batch)
            rows += batch.num_rows
        # not a `with`: on an error the end-of-stream marker must not be written (see _abort)
        writer.close()
        return rows
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = 0
        with pq.ParquetWriter(out, data.schema, compression="zstd") as pw:
            for batch in data:
                ctx.check_cancelled()
                pw.write_batch(batch)
                rows += batch.num_rows
        return rows
    if fmt in ("csv", "jsonl"):
        return _duck_text(data, fmt, out, ctx)
    if fmt == "table":
        from oxiflow.pipe.table import render_stream

        text, rows = render_stream(data, width=_terminal_width(fd), max_rows=table_rows, ctx=ctx)
        out.write(text.encode())
        return rows
    raise DataError(f"unknown output format {fmt!r}", hint="use arrow, csv, jsonl, parquet or table")


def _duck_text(data: OxiData, fmt: str, out: IO[bytes], ctx: StepContext) -> int:
    """CSV / JSON Lines through DuckDB's writers (nested values, dates, decimals as write_csv
    and write_json render them). DuckDB writes into a private pipe that we copy to ``out``:
    letting it open ``/dev/stdout`` itself would truncate (and overwrite) a redirected file."""
    import threading

    from oxiflow.engine.duck import connect, literal

    options = ("FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT json") + ", USE_TMP_FILE false"
    con = connect(ctx, stream="write")
    con.register("input_stream", data.to_reader())
    read_end, write_end = os.pipe()
    outcome: dict[str, Any] = {}

    def produce() -> None:
        try:
            query = f"COPY input_stream TO {literal(f'/dev/fd/{write_end}')} ({options})"
            row = con.execute(query).fetchall()
            outcome["rows"] = int(row[0][0]) if row else 0
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            os.close(write_end)

    writer = threading.Thread(target=produce, name=f"oxi-{ctx.step_id}-{fmt}", daemon=True)
    writer.start()
    try:
        while chunk := os.read(read_end, _IO_BUFFER):
            out.write(chunk)
    except BaseException:
        con.interrupt()
        raise
    finally:
        os.close(read_end)  # DuckDB's next write fails: it stops if it was still going
        writer.join()
        con.close()
    error = outcome.get("error")
    if error is not None:
        from oxiflow.oxis.transforms.sql import duck_error

        raise duck_error(error, ctx, f"writing {fmt}") from None
    return int(outcome.get("rows", 0))


def _terminal_width(fd: int) -> int:
    """$COLUMNS when set, else the terminal's width (a fresh pseudo-terminal says 0: use 80)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(fd).columns or 80
    except OSError:
        return 80


def _is_closed_pipe(exc: BaseException) -> bool:
    if isinstance(exc, BrokenPipeError):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        return True
    return isinstance(exc, pa.ArrowException) and "broken pipe" in str(exc).lower()


def _abort(out: IO[bytes]) -> None:
    """End a failed Arrow stream with a message no reader accepts (see the module docstring)."""
    try:
        out.write(ABORT_MESSAGE)
        out.flush()
    except (OSError, ValueError):
        pass


def _discard(out: IO[bytes]) -> None:
    """Drop what is buffered for a reader that is gone, so closing does not raise again; and
    point fd 1 at /dev/null so the interpreter's own flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        out.flush()
    except (OSError, ValueError):
        pass
