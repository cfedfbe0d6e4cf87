"""`oxiflow pipeline test --fix`: apply the repairs validation is sure of, in place.

Oxide Flow's `pipeline test --fix` promised to "attempt to fix common issues". oxiflow fixes exactly
the issues that carry one unambiguous repair (:class:`oxiflow.config.load.FixableIssue`): a misspelt
key (`pth` -> `path`, `timeout_second` -> `timeout_seconds`), a misspelt oxi name (`read_csvv` ->
`read_csv`), a misspelt step reference (`${steps.reader.metadta.size}`, `${steps.redaer...}`, an
unknown metadata key with one close match). Each repair is an edit of the text at the position
validation reported, so comments, quoting and layout stay as they were; anything else (a wrong type,
a missing variable, a cycle) is left for the author and still reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxiflow.config.load import FixableIssue
from oxiflow.errors import ConfigError, ConfigIssue


@dataclass
class Applied:
    line: int
    column: int
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.old} -> {self.new}"


def fix_file(path: Path, variables: dict[str, str], project: Any = None) -> tuple[list[Applied], list[ConfigIssue]]:
    """Apply every unambiguous repair to ``path`` (rounds until none is left: fixing an oxi name lets
    its config be checked). The repairs made, and the issues that remain."""
    from oxiflow.config.load import load_pipeline

    applied: list[Applied] = []
    for _ in range(5):
        try:
            load_pipeline(path, variables=variables, project=project)
            return applied, []
        except ConfigError as exc:
            issues = exc.issues
        fixes = [i for i in issues if isinstance(i, FixableIssue) and i.fix and i.line and i.column]
        if not fixes:
            return applied, issues
        text = path.read_text(encoding="utf-8")
        new_text, done = apply_fixes(text, fixes)
        if not done:
            return applied, issues
        path.write_text(new_text, encoding="utf-8")
        applied.extend(done)
    return applied, issues


def apply_fixes(text: str, fixes: list[FixableIssue]) -> tuple[str, list[Applied]]:
    """Edit ``text`` at each fix's position (bottom-up, so earlier positions stay valid)."""
    lines = text.splitlines(keepends=True)
    done: list[Applied] = []
    seen: set[tuple[int, int]] = set()
    for fix in sorted(fixes, key=lambda f: (f.line or 0, f.column or 0), reverse=True):
        assert fix.fix is not None and fix.line is not None and fix.column is not None
        if (fix.line, fix.column) in seen:
            continue
        seen.add((fix.line, fix.column))
        old, new = fix.fix
        at = _find(lines, fix.line - 1, fix.column - 1, old)
        if at is None:
            continue
        row, col = at
        lines[row] = lines[row][:col] + new + lines[row][col + len(old) :]
        done.append(Applied(row + 1, col + 1, old, new))
    return "".join(lines), sorted(done, key=lambda a: (a.line, a.column))


def _find(lines: list[str], row: int, col: int, old: str) -> tuple[int, int] | None:
    """Where ``old`` is written at (row, col): there exactly (maybe quoted), else the first occurrence
    after it (a reference inside a longer, maybe multi-line, string)."""
    if row >= len(lines):
        return None
    here = lines[row][col:]
    for quote in ("", '"', "'"):
        if here.startswith(quote + old):
            return row, col + len(quote)
    for r in range(row, min(row + 50, len(lines))):
        start = col if r == row else 0
        found = lines[r].find(old, start)
        if found >= 0:
            return r, found
    return None
