# npucenter — `make run` starts the center, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench install install-sandbox clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

install-sandbox:  # bubblewrap: the job sandbox (apt-get when missing; docs/security.md)
	scripts/ensure-bwrap.sh

run: $(STAMP) install-sandbox
	$(BIN)/npucenter up

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	scripts/ensure-bwrap.sh     # bubblewrap for the job sandbox's tests (apt-get when missing)
	scripts/ensure-chromium.sh  # chromium for the dashboard's browser tests (apt-get when missing)
	scripts/pg-test-server.sh run -- $(BIN)/pytest -q tests  # PostgreSQL on loopback for the store tests

bench: $(STAMP)
	@mkdir -p bench/results
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
