# Three commands do everything on a fresh machine with Python 3.11+:
#   make demo   set up .venv/ and run the worker on sample events (starts its own Redis if needed)
#   make run    set up .venv/ and run the worker (LLM_PROVIDER=offline unless GROQ_API_KEY is set)
#   make test   set up .venv/ and run every test (starts its own redis-server processes)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo run test test-cluster lint typecheck check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	@touch $(STAMP)

venv: $(STAMP)

# ARGS are the demo's options, e.g. make demo ARGS="--budget --keep-running".
demo: $(STAMP)
	$(BIN)/groq-worker demo $(ARGS)

run: $(STAMP)
	@scripts/ensure-redis
	LLM_PROVIDER=$${LLM_PROVIDER:-$$( [ -n "$$GROQ_API_KEY" ] && echo groq || echo offline )} \
		$(BIN)/faststream run app:app

# Tests run in TEST_WORKERS processes (pytest-xdist), a file per process so a file's fixtures
# are shared; each process starts its own redis-server. TEST_WORKERS=0 runs them in this one.
TEST_WORKERS ?= auto

test: $(STAMP)
	@scripts/ensure-redis --binary-only
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The cluster matrix: every redis_modes test on a Redis Cluster and the long cluster fault
# runs (many kill -9 seeds), deselected from `make test` (marker `cluster`).
test-cluster: $(STAMP)
	@scripts/ensure-redis --binary-only
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "cluster or cluster_smoke" \
		tests/integration tests/faults/test_cluster_faults.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy app tests bench

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
