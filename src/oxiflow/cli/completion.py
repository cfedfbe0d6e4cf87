"""Shell completion answers with one line per candidate.

Typer renders each candidate's help through rich, which wraps it at 80 columns when the output is
not a terminal, and it never is when a shell asks. fish and PowerShell read one candidate per
line, so a wrapped help became bogus candidates (``else arrow).``); zsh got a line break inside
a description. The classes here are typer's own, with the help joined back into one line.
"""

from __future__ import annotations

import re
from typing import Any

_BREAK = re.compile(r"[ \t]*\n[ \t]*")
SHELLS = ("ZshComplete", "FishComplete", "PowerShellComplete")


def one_line_candidates() -> None:
    """Make typer register the one-line variants (call before the app runs: typer registers its
    completion classes while it builds the command, from these module attributes)."""
    from typer import _completion_classes as classes

    for name in SHELLS:
        base = getattr(classes, name)
        if not getattr(base, "_oxiflow_one_line", False):
            setattr(classes, name, _one_line(base))


def _one_line(base: type[Any]) -> type[Any]:
    class OneLine(base):
        _oxiflow_one_line = True

        def format_completion(self, item: Any) -> str:
            return _BREAK.sub(" ", str(super().format_completion(item)))

    OneLine.__name__ = OneLine.__qualname__ = base.__name__
    return OneLine
