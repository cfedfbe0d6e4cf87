"""The entry-point index: read back while sys.path holds still, scanned again when it changes."""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points as metadata_entry_points
from pathlib import Path

import pytest

from oxiflow import plugin_index
from oxiflow.registry import ENTRY_POINT_GROUP


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OXIFLOW_NO_PLUGIN_CACHE", raising=False)
    return tmp_path / "cache" / "oxiflow"


def _oracle() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata_entry_points(group=ENTRY_POINT_GROUP)}


def test_the_index_equals_importlib_metadata_and_is_written_once(cache: Path) -> None:
    first = plugin_index.entry_points(ENTRY_POINT_GROUP)
    assert {n: e.value for n, e in first.items()} == _oracle()
    assert first["read_csv"].dist_name == "oxiflow"
    files = list(cache.glob("entry-points-*.json"))
    assert len(files) == 1
    # the second call reads the file: prove it by editing the file's entries under the same key
    doc = json.loads(files[0].read_text())
    doc["entries"] = [{"name": "only_this", "value": "json:loads", "dist": "x"}]
    files[0].write_text(json.dumps(doc))
    again = plugin_index.entry_points(ENTRY_POINT_GROUP)
    assert list(again) == ["only_this"]
    assert again["only_this"].load() is json.loads


def test_a_changed_sys_path_directory_means_a_new_scan(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(plugins)])
    plugin_index.entry_points(ENTRY_POINT_GROUP)
    assert len(list(cache.glob("entry-points-*.json"))) == 1
    # a package installed into that folder: a new dist-info with an oxiflow.oxis entry point
    dist = plugins / "extra_oxi-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-oxi\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nextra = json:dumps\n")
    os.utime(plugins, ns=(1, os.stat(plugins).st_mtime_ns + 1_000_000))  # however coarse the clock
    found = plugin_index.entry_points(ENTRY_POINT_GROUP)
    assert found["extra"].dist_name == "extra-oxi" and found["extra"].load() is json.dumps
    assert len(list(cache.glob("entry-points-*.json"))) == 2


def test_damaged_index_or_no_cache_means_a_scan(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_index.entry_points(ENTRY_POINT_GROUP)
    (file,) = cache.glob("entry-points-*.json")
    file.write_text("{not json")
    assert {n: e.value for n, e in plugin_index.entry_points(ENTRY_POINT_GROUP).items()} == _oracle()
    assert json.loads(file.read_text())["entries"]  # rewritten whole
    monkeypatch.setenv("OXIFLOW_NO_PLUGIN_CACHE", "1")
    file.write_text(json.dumps({"key": "stale", "entries": []}))
    assert {n: e.value for n, e in plugin_index.entry_points(ENTRY_POINT_GROUP).items()} == _oracle()


def test_a_read_only_cache_folder_still_scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # cannot hold an oxiflow/ folder
    assert {n: e.value for n, e in plugin_index.entry_points(ENTRY_POINT_GROUP).items()} == _oracle()


def test_old_index_files_are_pruned(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.mkdir(parents=True)
    for i in range(plugin_index.KEEP + 5):
        old = cache / f"entry-points-old{i:02d}.json"
        old.write_text("{}")
        os.utime(old, (1_000 + i, 1_000 + i))
    plugin_index.entry_points(ENTRY_POINT_GROUP)
    left = sorted(p.name for p in cache.glob("entry-points-*.json"))
    assert len(left) == plugin_index.KEEP
    assert "entry-points-old00.json" not in left  # the oldest went first
