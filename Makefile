# One command per habit; CI runs the same ones.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench stress clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Render manifests/example.yaml on the built-in simulator into output/example/
run: $(STAMP)
	$(BIN)/i2v-runner run manifests/example.yaml --simulate

## The test suite (unit + integration against the simulator over loopback), then the
## integration suite again against the simulator's "realistic" profile (terse errors,
## best-effort cancel, a few percent transient faults on every endpoint, lagging executions)
test: $(STAMP)
	$(BIN)/pytest -q
	SIM_PROFILE=realistic $(BIN)/pytest -q tests/integration

## ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check runner tests
	$(BIN)/ruff format --check runner tests
	$(BIN)/mypy

## The crash test at length, against the realistic profile: 30 SIGKILLs at random moments,
## then resume
stress: $(STAMP)
	SIM_PROFILE=realistic CRASH_KILLS=30 $(BIN)/pytest -q tests/integration/test_crash.py -k sigkill

## Scheduler benchmark against the time-compressed simulator, then the scale table (validate and
## dry run at 1k/10k/100k items, a 1M-event ledger replay, 1,000 in flight); fails if either fails
bench: $(STAMP)
	$(BIN)/python -m runner.bench; status=$$?; $(BIN)/python -m runner.bench.scaletable && exit $$status

clean:
	rm -rf $(VENV) output/example
