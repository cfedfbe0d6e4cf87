"""read_arrow / write_arrow: Arrow IPC file (Feather v2) and stream formats with pyarrow.ipc.

The file format is read one record batch at a time from a memory map; the stream format one
message at a time. Every batch is validated before it leaves the reader, so a corrupt file is a
DataError here rather than a crash in a later step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
import pyarrow.ipc as ipc

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import Sink, Source, StepContext, oxi
from oxiflow.oxis.files.common import FileSinkConfig, FileSourceConfig, atomic_output, expand_paths

FILE_MAGIC = b"ARROW1"
_ERRORS = (pa.ArrowException, OSError, ValueError, IndexError, OverflowError)


class ReadArrowConfig(FileSourceConfig):
    format: Literal["auto", "file", "stream"] = "auto"
    """`file` (random access, `.arrow`/`.feather`), `stream`, or `auto` (by the file's magic bytes)."""
    validate_batches: bool = True
    """Fully validate each batch (offsets, UTF-8) so corrupt input fails here with a clear error."""


def _bad(path: str, exc: BaseException, where: str = "") -> DataError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"not a readable Arrow IPC {where or 'file'}: {reason}",
        file=path,
        hint="check that the file is Arrow IPC (file or stream format) and was written completely",
    )


def detect_format(path: str) -> Literal["file", "stream"]:
    with open(path, "rb") as fh:
        head = fh.read(len(FILE_MAGIC))
    return "file" if head == FILE_MAGIC else "stream"


class _IpcFile:
    """One opened IPC source: its schema and a generator of validated batches."""

    def __init__(self, path: str, fmt: str, validate: bool) -> None:
        self.path = path
        self.validate = validate
        self.fmt = detect_format(path) if fmt == "auto" else fmt
        try:
            self.source = pa.memory_map(path, "r")
            if self.fmt == "file":
                self.file_reader: ipc.RecordBatchFileReader | None = ipc.open_file(self.source)
                self.stream_reader: ipc.RecordBatchStreamReader | None = None
                self.schema = self.file_reader.schema
            else:
                self.file_reader = None
                self.stream_reader = ipc.open_stream(self.source)
                self.schema = self.stream_reader.schema
        except _ERRORS as exc:
            raise _bad(path, exc, self.fmt) from None

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            if self.file_reader is not None:
                for i in range(self.file_reader.num_record_batches):
                    yield self._checked(self.file_reader.get_batch(i), i)
            else:
                assert self.stream_reader is not None
                i = 0
                while True:
                    try:
                        batch = self.stream_reader.read_next_batch()
                    except StopIteration:
                        break
                    yield self._checked(batch, i)
                    i += 1
        except DataError:
            raise
        except _ERRORS as exc:
            raise _bad(self.path, exc, self.fmt) from None
        finally:
            self.source.close()

    def _checked(self, batch: pa.RecordBatch, index: int) -> pa.RecordBatch:
        if self.validate:
            try:
                batch.validate(full=True)
            except _ERRORS as exc:
                raise DataError(
                    f"record batch {index} is corrupt: {str(exc).strip().splitlines()[0]}",
                    file=self.path,
                    hint="the file is damaged; re-export it",
                ) from None
        return batch


@oxi(
    "read_arrow",
    kind="source",
    config=ReadArrowConfig,
    summary="Read Arrow IPC files or streams (Feather v2, LZ4/ZSTD-compressed), batch by batch.",
    example="- name: read_arrow\n  config:\n    path: data/events.arrow",
)
class ReadArrow(Source):
    config: ReadArrowConfig

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        files = [str(p) for p in expand_paths(cfg.path, ctx, (".arrow", ".arrows", ".feather", ".ipc"))]
        ctx.metadata.update(path=files[0] if len(files) == 1 else files, files=len(files))
        first = _IpcFile(files[0], cfg.format, cfg.validate_batches)
        schema = first.schema
        limit = ctx.limit_rows

        def batches() -> Iterator[pa.RecordBatch]:
            remaining = limit
            for n, path in enumerate(files):
                src = first if n == 0 else _IpcFile(path, cfg.format, cfg.validate_batches)
                if not src.schema.equals(schema):
                    raise DataError(
                        f"schema differs from {files[0]}: {src.schema} vs {schema}",
                        file=path,
                        hint="read files with different schemas in separate steps",
                    )
                ctx.bytes_read += src.source.size()
                for batch in src.batches():
                    ctx.check_cancelled()
                    if remaining is not None:
                        if remaining <= 0:
                            break
                        batch = batch.slice(0, remaining)
                        remaining -= batch.num_rows
                    if batch.num_rows:
                        yield batch

        if limit == 0:
            first.source.close()
            return OxiData.empty(schema)
        return OxiData(schema, batches())


class WriteArrowConfig(FileSinkConfig):
    format: Literal["file", "stream"] = "file"
    """`file` (random access, readable as Feather v2) or `stream`."""
    compression: Literal["none", "lz4", "zstd"] = "none"
    """Buffer compression inside the IPC messages."""


@oxi(
    "write_arrow",
    kind="sink",
    config=WriteArrowConfig,
    summary="Write an Arrow IPC file or stream (optionally LZ4/ZSTD), atomically.",
    example="- name: write_arrow\n  config:\n    path: out/events.arrow\n    compression: zstd",
)
class WriteArrow(Sink):
    config: WriteArrowConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        target = ctx.output_path(cfg.path)
        opts = ipc.IpcWriteOptions(compression=None if cfg.compression == "none" else cfg.compression)
        rows = 0
        with atomic_output(target, ctx, overwrite=cfg.overwrite) as tmp:
            new = ipc.new_file if cfg.format == "file" else ipc.new_stream
            with pa.OSFile(str(tmp), "wb") as sink, new(sink, data.schema, options=opts) as writer:
                for batch in data:
                    ctx.check_cancelled()
                    writer.write_batch(batch)
                    rows += batch.num_rows
        ctx.metadata["rows"] = rows
