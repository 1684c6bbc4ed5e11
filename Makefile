# kgverify: `make demo` and `make test` set everything up themselves (idempotently).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kgverify-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export GRPC_VERBOSITY ?= ERROR

.PHONY: setup demo test proto proto-check bench-help clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first and pinned: the CPU build on this machine, never a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/kgverify demo

test: setup
	$(BIN)/python -m pytest -q -n 2 --durations=15 -p no:cacheprovider

proto: setup
	$(BIN)/python scripts/gen_proto.py

proto-check: setup
	$(BIN)/python scripts/gen_proto.py --check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
