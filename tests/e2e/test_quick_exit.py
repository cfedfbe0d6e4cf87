"""The console scripts leave with os._exit once a command is done (cli/main.py: entry): the exit
code, stdout and the atexit handlers are kept; a non-daemon thread still running gets Python's own
exit, which waits for it. (Every other e2e test runs `python -m oxiflow.cli.main`, i.e. entry().)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _cli import write


def _entry(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{script}\nsys.argv = ['oxi', *sys.argv[1:]]\nfrom oxiflow.cli.main import entry\nentry()\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as usual
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_atexit_handlers_run_and_the_exit_code_is_kept(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", "pipeline:\n  - name: read_csvv\n    config: {path: in.csv}\n")
    marker = tmp_path / "atexit.txt"
    script = f"import atexit\natexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))"
    r = _entry(script, "validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "read_csvv" in r.stderr and "did you mean" in r.stderr
    assert marker.read_text() == "ran"


def test_everything_printed_reaches_a_pipe(tmp_path: Path) -> None:
    """stdout is a pipe (block-buffered): the last buffer is flushed before os._exit."""
    rows = "".join(f"{i},name {i}\n" for i in range(20_000))
    (tmp_path / "in.csv").write_text("id,name\n" + rows)
    r = _entry("", "cat", "in.csv", "-f", "csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "id,name\n" + rows


def test_what_print_buffered_reaches_a_pipe(tmp_path: Path) -> None:
    write(tmp_path / "ok.yaml", "pipeline:\n  - name: read_csv\n    config: {path: in.csv}\n")
    r = _entry("", "validate", "ok.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"valid": True, "pipeline": "ok", "steps": ["read_csv"]}
    # a line left in stdout's buffer by code that never flushes (a plugin's print, say)
    r = _entry("print('from a plugin')", "validate", "ok.yaml", "--quiet", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "from a plugin\n"), r.stderr
    # and what an atexit handler prints: the handlers run before the last flush
    r = _entry("import atexit\natexit.register(print, 'at exit')", "validate", "ok.yaml", "--quiet", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "at exit\n"), r.stderr


def test_a_running_non_daemon_thread_is_waited_for(tmp_path: Path) -> None:
    """The thread writes only once the main thread has finished, which os._exit never lets happen:
    the file exists only if the exit was Python's own."""
    done = tmp_path / "thread.txt"
    script = (
        "import threading\n"
        "def later():\n"
        "    threading.main_thread().join()\n"
        f"    open({str(done)!r}, 'w').write('done')\n"
        "threading.Thread(target=later).start()"
    )
    r = _entry(script, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert done.read_text() == "done"
