# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv and installs the project into it on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo replay fake-exchange test lint bench bench-live clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job, offline: the live run against an in-process fake exchange.
demo: $(STAMP)
	$(BIN)/hbar-data demo --dump out/demo

# The same pipeline over the bundled sample capture (with faults in it).
replay: $(STAMP)
	$(BIN)/hbar-data replay pipeline/data/sample_hbarusdt.jsonl.gz --dump out/sample

# The fake exchange on :8080, for trying clients against it.
fake-exchange: $(STAMP)
	$(BIN)/hbar-data fake-exchange --port 8080

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/replay_throughput.py

# Frames/s and receipt-to-frame latency against the fake exchange over loopback (~2 min).
bench-live: $(STAMP)
	$(BIN)/python benchmarks/live_loopback.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
