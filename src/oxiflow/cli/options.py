"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oxiflow.cli import output

VarsOpt = Annotated[
    list[str] | None,
    typer.Option("--var", "-v", help="Set a variable: --var KEY=VALUE (wins over the environment)."),
]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="Logs on stderr: text or json.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Project file (default: the nearest oxiflow.yaml).")
]


def parse_vars(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            output.fail_usage(f"--var expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out
