"""What every file source and sink shares: path expansion, on_error, atomic output."""

from __future__ import annotations

import glob
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

from oxiflow.errors import DataError
from oxiflow.incremental import IncrementalConfig, crash_point
from oxiflow.oxi import OxiConfig, StepContext


class OnError(StrEnum):
    fail = "fail"
    skip = "skip"
    dlq = "dlq"


class FileSourceConfig(OxiConfig):
    path: str | list[str]
    """A file, a glob (`data/*.csv`, `**` for subfolders), a folder, or a list of them."""
    on_error: OnError = OnError.fail
    """Malformed records: `fail` (stop with file/line/column), `skip` (count them), `dlq` (dead-letter them)."""
    incremental: IncrementalConfig | None = None
    """Read only what is new since the last run: rows by a cursor column, or (`mode: files`) new files by
    modification time or name. See docs/incremental.md."""


class FileSinkConfig(OxiConfig):
    path: str
    """Output file (or folder when partitioning). Written to a temporary name and renamed on success."""
    overwrite: bool = True
    """Replace an existing output; when false an existing output is an error."""


def expand_paths(path: str | list[str], ctx: StepContext, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Expand globs and folders into a sorted list of files; an empty match is an error."""
    patterns = [path] if isinstance(path, str) else list(path)
    out: list[Path] = []
    for pattern in patterns:
        resolved = ctx.input_path(pattern)
        text = str(resolved)
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"no file matches {pattern!r}", file=pattern, hint="check the glob and the folder")
            out.extend(matches)
        elif resolved.is_dir():
            matches = sorted(
                p
                for p in resolved.rglob("*")
                if p.is_file() and not p.name.startswith((".", "_")) and (not suffixes or _has_suffix(p, suffixes))
            )
            if not matches:
                raise DataError(f"folder {pattern!r} holds no matching files", file=pattern)
            out.extend(matches)
        elif resolved.is_file():
            out.append(resolved)
        elif resolved.exists():
            # a named pipe or a device: DuckDB's readers need a file they can seek in
            raise DataError(
                f"{pattern} is not a regular file (a named pipe or a device)",
                file=pattern,
                hint=f"read a pipe with read_pipe (path: {pattern}) or read_file",
            )
        else:
            where = "" if Path(pattern).expanduser().is_absolute() else f"; relative paths start at {ctx.base_dir}"
            raise DataError(f"file not found: {pattern}", file=pattern, hint=f"check the path{where}")
    cursor = ctx.cursor
    if cursor is not None and cursor.config.mode == "files":
        out = cursor.select_files(out, ctx)
    return out


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    for comp in (".gz", ".zst", ".zstd", ".bz2", ".xz"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    return name.endswith(suffixes)


def temp_sibling(target: Path, run_id: str) -> Path:
    return target.with_name(f".{target.name}.oxitmp-{run_id}-{uuid.uuid4().hex[:6]}")


@contextmanager
def atomic_output(target: Path, ctx: StepContext, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` only on success.

    A failure (or a kill) leaves at most a hidden ``.NAME.oxitmp-*`` file, never a partial
    ``target``. Works for files and for folders (partitioned datasets).
    """
    if target.exists() and not overwrite:
        raise DataError(f"{target} exists and overwrite is false", file=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tmp = temp_sibling(target, ctx.run_id)
    try:
        yield tmp
        if ctx.cancel.is_set():
            raise DataError("write cancelled before commit", file=str(target))
        if tmp.is_dir():
            if target.exists():
                old = temp_sibling(target, ctx.run_id + "-old")
                os.replace(target, old)
                os.replace(tmp, target)
                _remove(old)
            else:
                os.replace(tmp, target)
        else:
            if not tmp.exists():  # nothing was written: still publish an empty file
                tmp.touch()
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp, target)
        if ctx.load_id is not None:
            crash_point("after_publish")
            write_load_marker(target, ctx.load_id)
        ctx.metadata["path"] = str(target)
        ctx.bytes_written += _size(target)
        remove_stale_temps(target, started)
    finally:
        if tmp.exists():
            _remove(tmp)


MARKERS = ".oxiflow-loads"


def write_load_marker(target: Path, load_id: str) -> None:
    """After the rename published ``target``: ``.oxiflow-loads/.<name>.<load_id>`` beside it says the load
    is out (exactly-once recovery, docs/incremental.md). Older markers of the same output go."""
    folder = target.parent / MARKERS
    folder.mkdir(exist_ok=True)
    marker = folder / f".{target.name}.{load_id}"
    marker.write_text(load_id, encoding="utf-8")
    for old in folder.glob(f".{glob.escape(target.name)}.*"):
        if old != marker and len(old.name) == len(marker.name):
            old.unlink(missing_ok=True)


def file_load_committed(target: Path, load_id: str) -> bool:
    return (target.parent / MARKERS / f".{target.name}.{load_id}").is_file()


def remove_stale_temps(target: Path, before: float) -> None:
    """Remove ``.NAME.oxitmp-*`` left for ``target`` by killed runs: only those untouched since
    ``before`` (this write's start), so a concurrent writer's temporary file is left alone."""
    remove_temps(stale_temps(target, before))


def stale_temps(target: Path, before: float) -> list[Path]:
    """The ``.NAME.oxitmp-*`` of ``target`` untouched since ``before``: left by killed runs. A writer that
    restores from them (datasets.py) asks first, since restoring touches them."""
    found = []
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.oxitmp-*"):
        try:
            if _latest_mtime(leftover) < before:
                found.append(leftover)
        except OSError:  # vanished meanwhile (its owner finished or cleaned it)
            pass
    return found


def remove_temps(paths: list[Path]) -> None:
    for path in paths:
        try:
            _remove(path)
        except OSError:
            pass


def _latest_mtime(path: Path) -> float:
    if path.is_dir():
        return max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
    return path.stat().st_mtime


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
