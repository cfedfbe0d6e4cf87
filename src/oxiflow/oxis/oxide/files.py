"""read_file / write_file: Oxide Flow's file source and sink.

``read_file`` streams a file as a text payload (chunks of decoded text) or, with ``binary: true``,
as bytes. Followed by ``parse_csv`` / ``parse_json`` it is fused into one DuckDB scan (see
``oxiflow.plan.fusion``), so this chunked path only runs when the text itself is needed.
``write_file`` writes text as-is and structured rows by the file's extension.
"""

from __future__ import annotations

import codecs
import mimetypes
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import AliasChoices, Field

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import OxiConfig, Sink, Source, StepContext, oxi
from oxiflow.oxis.files.common import atomic_output

CHUNK = 1 << 20  # bytes per text/binary chunk: bounded memory whatever the file size

_TYPES = {
    ".jsonl": "application/jsonl",
    ".ndjson": "application/jsonl",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
}


def content_type(path: Path, binary: bool = False) -> str:
    guessed = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    return guessed or ("application/octet-stream" if binary else "text/plain")


def normalize_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name  # "utf8" -> "utf-8", "latin1" -> "iso8859-1"
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", hint="use e.g. utf-8, utf-16, latin-1") from None


class ReadFileConfig(OxiConfig):
    path: str
    """The file to read, or a named pipe (relative paths start at the project root inside a project, else at
    the pipeline file's folder)."""
    encoding: str = "utf-8"
    """Text encoding (ignored with `binary: true`)."""
    binary: bool = False
    """Pass the raw bytes on instead of decoded text."""


def resolve_input(cfg: ReadFileConfig, ctx: StepContext) -> tuple[Path, dict[str, Any]]:
    """The file to read and the metadata read_file reports (also when fused into a parser). A named
    pipe (FIFO) is read too: its ``size`` is None until it has been read."""
    path = ctx.input_path(cfg.path)
    fifo = is_fifo(path)
    if not path.is_file() and not fifo:
        what = "is not a regular file" if path.exists() else "not found"
        raise DataError(
            f"file {what}: {cfg.path}",
            file=str(path),
            step=ctx.step_id,
            hint=relative_hint(cfg.path, ctx),
        )
    size = None if fifo else path.stat().st_size
    meta = {"path": str(path), "size": size, "content_type": content_type(path, cfg.binary)}
    if not cfg.binary:
        meta["encoding"] = normalize_encoding(cfg.encoding)
    return path, meta


def is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


def relative_hint(written: str, ctx: StepContext) -> str:
    """Where a relative path was looked for (the project root inside a project, else the pipeline's folder)."""
    if Path(written).expanduser().is_absolute():
        return "check the path"
    return f"check the path; relative paths start at {ctx.base_dir}"


def _open_input(path: Path, ctx: StepContext) -> Any:
    """Open for reading: a file, or a named pipe read without ever blocking (see :class:`_Fifo`)."""
    return _Fifo(path, ctx) if is_fifo(path) else path.open("rb")


class _Fifo:
    """A named pipe read with poll(): waiting for a writer, or for its next bytes, checks the step's
    cancel flag every 0.1 s, so a timeout or a stop ends the read (a plain open() or read() on a pipe
    blocks in the kernel where nothing can interrupt it)."""

    def __init__(self, path: Path, ctx: StepContext) -> None:
        import select

        self.ctx = ctx
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # returns at once, writer or not
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN | select.POLLHUP)

    def read(self, size: int) -> bytes:
        while True:
            # Linux reports no event before a writer has come (and POLLHUP once the last one left)
            if not self.poll.poll(100):
                self.ctx.check_cancelled()
                continue
            try:
                return os.read(self.fd, size)  # b"": every writer has gone, the end of the input
            except BlockingIOError:
                continue

    def __enter__(self) -> _Fifo:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def read_chunks(path: Path, encoding: str, ctx: StepContext) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with _open_input(path, ctx) as fh:
        while True:
            ctx.check_cancelled()
            raw = fh.read(CHUNK)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not valid {encoding} at byte {offset + exc.start}: {exc.reason}",
                    file=str(path),
                    step=ctx.step_id,
                    hint="set `encoding` to the file's encoding, or `binary: true`",
                ) from None
            offset += len(raw)
            if not raw and ctx.metadata.get("size") is None:
                ctx.metadata["size"] = offset  # a pipe: now its size is known
            if text:
                if offset == len(raw) and text.startswith("\ufeff"):
                    text = text[1:]  # a UTF-8 byte order mark is not content
                yield text
            if not raw:
                return


def read_byte_chunks(path: Path, ctx: StepContext) -> Iterator[bytes]:
    with _open_input(path, ctx) as fh:
        while raw := fh.read(CHUNK):
            ctx.check_cancelled()
            yield raw


@oxi(
    "read_file",
    kind="source",
    config=ReadFileConfig,
    summary="Read a file as text (or bytes); fused with a following parse_csv/parse_json into one streaming scan.",
    example="- name: read_file\n  id: reader\n  config:\n    path: data/input.json",
)
class ReadFile(Source):
    config: ReadFileConfig
    # what `${steps.ID.metadata.KEY}` may name (checked by validate)
    metadata_keys: ClassVar[tuple[str, ...]] = ("path", "size", "content_type", "encoding")

    def read(self, ctx: StepContext) -> OxiData:
        path, meta = resolve_input(self.config, ctx)
        ctx.metadata.update(meta)
        ctx.bytes_read = meta["size"] or 0
        if ctx.limit_rows == 0:
            return OxiData.from_bytes([], meta) if self.config.binary else OxiData.from_text([], meta)
        if self.config.binary:
            return OxiData.from_bytes(read_byte_chunks(path, ctx), meta)
        return OxiData.from_text(read_chunks(path, meta["encoding"], ctx), meta)


class WriteFileConfig(OxiConfig):
    path: str
    """The file to write. Text is written as-is; rows by extension: `.csv` CSV, `.json` a JSON array,
    anything else JSON Lines."""
    append: bool = False
    """Append to the file instead of replacing it (not atomic)."""
    create_dirs: bool = Field(True, validation_alias=AliasChoices("create_dirs", "create_directories"))
    """Create missing parent folders (alias `create_directories`)."""
    encoding: str = "utf-8"
    """Text encoding of the written file."""
    backup: bool = False
    """Keep the file being replaced (or appended to) as `PATH.bak`."""


def row_chunks(data: OxiData, target: Path, *, header: bool = True) -> Iterator[str]:
    from oxiflow.oxis.oxide.format import csv_chunks, json_chunks, json_lines

    suffix = target.suffix.lower()
    if suffix == ".csv":
        return csv_chunks(data, headers=header)
    if suffix == ".json":
        return json_chunks(data, indent=2, sort_keys=False, compact=False)
    return json_lines(data)


@oxi(
    "write_file",
    kind="sink",
    config=WriteFileConfig,
    summary="Write text as-is, or rows as CSV/JSON/JSON Lines by extension; atomic unless appending.",
    example="- name: write_file\n  config:\n    path: out/result.json\n    backup: true",
)
class WriteFile(Sink):
    config: WriteFileConfig
    metadata_keys: ClassVar[tuple[str, ...]] = ("path", "size", "backup_path")

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        target = ctx.output_path(cfg.path)
        encoding = normalize_encoding(cfg.encoding)
        if target.is_dir():
            raise DataError(f"{target} is a folder", file=str(target), step=ctx.step_id, hint="give a file path")
        if not target.parent.is_dir() and not cfg.create_dirs:
            raise DataError(
                f"folder {target.parent} does not exist",
                file=str(target),
                step=ctx.step_id,
                hint="create it, or set create_dirs: true",
            )
        existed = target.is_file() and target.stat().st_size > 0
        if cfg.backup and target.is_file():
            backup = target.with_name(target.name + ".bak")
            shutil.copy2(target, backup)
            ctx.metadata["backup_path"] = str(backup)
        if data.kind == "binary":
            chunks: Iterator[Any] = (b for batch in data for b in batch.column(0).to_pylist())
        elif data.kind == "text":
            chunks = data.iter_text()
        else:
            chunks = row_chunks(data, target, header=not (cfg.append and existed))
        if cfg.append:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("ab") as fh:
                _write_all(fh, chunks, encoding, ctx)
            ctx.metadata["path"] = str(target)
        else:
            with atomic_output(target, ctx) as tmp, tmp.open("wb") as fh:
                _write_all(fh, chunks, encoding, ctx)
        ctx.metadata["size"] = target.stat().st_size
        ctx.bytes_written = ctx.metadata["size"]


def _write_all(fh: Any, chunks: Iterator[Any], encoding: str, ctx: StepContext) -> None:
    encoder = codecs.getincrementalencoder(encoding)()
    for chunk in chunks:
        ctx.check_cancelled()
        if isinstance(chunk, bytes):
            fh.write(chunk)
            continue
        try:
            fh.write(encoder.encode(chunk))
        except UnicodeEncodeError as exc:
            raise DataError(
                f"cannot encode {exc.object[exc.start : exc.end]!r} as {encoding}",
                step=ctx.step_id,
                hint="choose an encoding that can hold the text, e.g. utf-8",
            ) from None
    fh.write(encoder.encode("", final=True))
    fh.flush()
    os.fsync(fh.fileno())
