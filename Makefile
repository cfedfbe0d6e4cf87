# Newcomer commands: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench soak clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,avro]'
	# bytecode now, as a pip install would: a shell with PYTHONDONTWRITEBYTECODE=1 otherwise
	# compiles every module from source at each start of oxi (about 0.1 s)
	$(BIN)/python -m compileall -q src >/dev/null
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo/generate.py
	cd examples/demo && ../../$(BIN)/oxiflow run pipelines/orders_daily.yaml

test: $(STAMP)
	bash scripts/run-tests.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(MAKE) -C benchmarks bench PYTHON=$(abspath $(BIN)/python)

# Exactly-once under kill -9: every crash point of every sink and disposition, then 100 randomized trials
# over every pair mixing hook-point and timed kills (about 5 minutes; needs PostgreSQL). -rP prints where the
# timed kills landed; OXIFLOW_SOAK_SEED=N picks another sequence.
soak: $(STAMP)
	OXIFLOW_SOAK_TRIALS=100 $(BIN)/python -m pytest -q -rP -p no:randomly -n 2 tests/e2e/test_incremental_crash.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
