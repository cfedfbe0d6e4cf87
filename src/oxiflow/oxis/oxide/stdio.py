"""read_stdin / write_stdout: Oxide Flow's terminal source and sink."""

from __future__ import annotations

import codecs
import json
import os
import select
import sys
import time
from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import OxiConfig, Sink, Source, StepContext, oxi
from oxiflow.oxis.oxide.common import json_default

_POLL = 0.1  # seconds between checks of the cancel flag while waiting for input


class ReadStdinConfig(OxiConfig):
    prompt: str | None = None
    """Printed to stderr before reading, when stdin is a terminal."""
    timeout_seconds: float | None = Field(None, gt=0)
    """Fail when no input arrives for this long (unset: wait for end of input)."""
    echo: bool = False
    """Copy what is read to stderr."""
    encoding: str = "utf-8"
    """Text encoding of the input."""


@oxi(
    "read_stdin",
    kind="source",
    config=ReadStdinConfig,
    summary="Read standard input as text (chunked; follow it with parse_json or parse_csv).",
    example="- name: read_stdin\n  config:\n    timeout_seconds: 30",
)
class ReadStdin(Source):
    config: ReadStdinConfig
    metadata_keys: ClassVar[tuple[str, ...]] = ("path", "content_type", "size")

    def read(self, ctx: StepContext) -> OxiData:
        meta = {"path": "<stdin>", "content_type": "text/plain"}
        if ctx.limit_rows == 0:
            return OxiData.from_text([], meta)
        return OxiData.from_text(self._chunks(ctx), meta)

    def _chunks(self, ctx: StepContext) -> Iterator[str]:
        cfg = self.config
        fd = sys.stdin.fileno()
        if cfg.prompt and os.isatty(fd):
            sys.stderr.write(cfg.prompt)
            sys.stderr.flush()
        decoder = codecs.getincrementaldecoder(cfg.encoding)()
        waited_since = time.monotonic()
        total = 0
        while True:
            ctx.check_cancelled()
            ready, _, _ = select.select([fd], [], [], _POLL)
            if not ready:
                if cfg.timeout_seconds is not None and time.monotonic() - waited_since > cfg.timeout_seconds:
                    raise DataError(
                        f"no input on stdin for {cfg.timeout_seconds}s",
                        step=ctx.step_id,
                        hint="pipe data in, or raise timeout_seconds",
                    )
                continue
            raw = os.read(fd, 1 << 20)
            waited_since = time.monotonic()
            total += len(raw)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise DataError(f"stdin is not valid {cfg.encoding}: {exc.reason}", step=ctx.step_id) from None
            if text:
                if cfg.echo:
                    sys.stderr.write(text)
                    sys.stderr.flush()
                yield text
            if not raw:
                ctx.metadata["size"] = total
                ctx.bytes_read = total
                return


class WriteStdoutConfig(OxiConfig):
    newline: bool = True
    """End the output with a newline (text), or each record (rows)."""
    prefix: str = ""
    """Put this in front of every line printed."""
    json_pretty: bool = False
    """Print rows as indented JSON instead of one JSON object per line."""


@oxi(
    "write_stdout",
    kind="sink",
    config=WriteStdoutConfig,
    summary="Print text as-is or rows as JSON Lines to stdout; the data flows on to later steps.",
    example="- name: write_stdout\n  config:\n    prefix: '> '",
)
class WriteStdout(Sink):
    config: WriteStdoutConfig
    metadata_keys: ClassVar[tuple[str, ...]] = ()

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        out = sys.stdout
        at_line_start = True
        last = ""
        for chunk in self._texts(data):
            ctx.check_cancelled()
            if cfg.prefix:
                chunk, at_line_start = _prefix_lines(chunk, cfg.prefix, at_line_start)
            out.write(chunk)
            if chunk:
                last = chunk[-1]
        if cfg.newline and data.kind != "arrow" and last and last != "\n":
            out.write("\n")
        out.flush()

    def _texts(self, data: OxiData) -> Iterator[str]:
        cfg = self.config
        if data.kind != "arrow":
            yield from data.iter_text()
            return
        end = "\n" if cfg.newline else ""
        for batch in data:
            rows = batch.to_pylist()
            if cfg.json_pretty:
                yield "".join(json.dumps(r, indent=2, default=json_default, ensure_ascii=False) + "\n" for r in rows)
            else:
                yield "".join(json.dumps(r, default=json_default, ensure_ascii=False) + end for r in rows)


def _prefix_lines(chunk: str, prefix: str, at_line_start: bool) -> tuple[str, bool]:
    """Prefix every line of a stream of chunks (a line may span chunks)."""
    if not chunk:
        return chunk, at_line_start
    lines = chunk.splitlines(keepends=True)
    out = [(prefix + line) if (i > 0 or at_line_start) else line for i, line in enumerate(lines)]
    return "".join(out), lines[-1].endswith("\n")
