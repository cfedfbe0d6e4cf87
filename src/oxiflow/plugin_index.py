"""The ``oxiflow.oxis`` entry points, remembered between runs.

Finding entry points means importing ``importlib.metadata`` (with ``email``, ``zipfile``, ``csv``)
and reading every installed distribution: about 40 ms of every ``oxi`` start, most of what
``oxiflow validate`` spends beyond its libraries. The answer only changes when packages are
installed or removed, and installing or removing one adds or deletes a folder in a ``sys.path``
directory, which changes that directory's mtime. So the index is kept in the user's cache folder,
keyed by ``sys.path`` and the mtime of each of its directories, and read back (a small JSON file)
while the key holds. Any doubt (no cache folder, a damaged file, another key) means a fresh scan;
``OXIFLOW_NO_PLUGIN_CACHE=1`` always scans.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
KEEP = 16  # index files kept (one per sys.path seen: virtualenvs, PYTHONPATH variants); the oldest go


@dataclass(frozen=True)
class PluginEntry:
    """One entry point: what ``importlib.metadata.EntryPoint`` offers the registry."""

    name: str
    value: str  # "package.module:Attribute"
    dist_name: str | None

    def load(self) -> Any:
        module, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


def entry_points(group: str) -> dict[str, PluginEntry]:
    """Name -> entry of ``group``, from the cache while no ``sys.path`` directory changed."""
    if os.environ.get("OXIFLOW_NO_PLUGIN_CACHE"):
        return _scan(group)
    key = _key(group)
    path = _cache_dir() / f"entry-points-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    cached = _read(path, key)
    if cached is not None:
        return cached
    found = _scan(group)
    _write(path, key, found)
    return found


def _key(group: str) -> str:
    parts = [str(CACHE_VERSION), group, sys.version]
    for entry in sys.path:
        try:
            parts.append(f"{entry}\0{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}\0-")
    return "\n".join(parts)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oxiflow"


def _scan(group: str) -> dict[str, PluginEntry]:
    from importlib.metadata import entry_points as scan

    out: dict[str, PluginEntry] = {}
    for ep in scan(group=group):
        dist = getattr(ep, "dist", None)
        out.setdefault(ep.name, PluginEntry(ep.name, ep.value, dist.name if dist is not None else None))
    return out


def _read(path: Path, key: str) -> dict[str, PluginEntry] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") != key:
            return None
        return {e["name"]: PluginEntry(e["name"], e["value"], e.get("dist")) for e in doc["entries"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(path: Path, key: str, found: dict[str, PluginEntry]) -> None:
    doc = {"key": key, "entries": [{"name": e.name, "value": e.value, "dist": e.dist_name} for e in found.values()]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".entry-points-", suffix=".tmp")
    except OSError:
        return  # a read-only home: scan every time
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    try:
        files = sorted(folder.glob("entry-points-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass  # another process pruned the same files first
