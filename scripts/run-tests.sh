#!/usr/bin/env bash
# The test suite as CI runs it: lint, types, then pytest. pytest's exit code 5 ("no tests
# collected") is a failure here, never a silent success.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# a native crash in a subprocess prints its Python stack instead of a bare -11
export PYTHONFAULTHANDLER=1
$BIN/ruff check src tests benchmarks examples || exit 1
$BIN/mypy || exit 1
$BIN/python -m pytest -n 2 -q "$@"
code=$?
if [ $code -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $code
