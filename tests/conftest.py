"""Shared fixtures: a scratch folder per test and helpers to write pipeline files."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"

# oxiflow's caches (the plugin index) go to a folder of this test session, not the user's home;
# subprocesses inherit it
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="oxiflow-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)


@pytest.fixture
def write_pipeline(tmp_path: Path):
    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write
