# make run: create .venv, install, run the quickstart on a local Ray. make test: the test suite
# (tests/unit, then tests/integration: real Ray clusters, Prometheus, kills); make test-unit: the
# unit tests alone (no Ray, no servers, no subprocesses), the inner loop. make gpu-bundle: the
# folder an offline GPU host needs beside the repository (docs/development.md, "GPU").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-unit lint gpu-bundle clean

run: $(VENV)/.installed
	$(BIN)/swap run configs/quickstart.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit tests/integration --durations=25

test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest tests/unit

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

gpu-bundle: $(VENV)/.installed
	$(BIN)/python bench/gpu_bundle.py --out gpu-bundle

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache gpu-bundle .gpu-bundle-build
