# kgverify: `make demo` and `make test` set everything up themselves (idempotently).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kgverify-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export GRPC_VERBOSITY ?= ERROR

.PHONY: setup demo test proto proto-check bench-help clean lock

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first and pinned: the CPU build on this machine, never a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	@# the versions the tests last passed with (constraints.txt; `make lock` after changing pyproject.toml)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Pins every installed package at its current version (run after changing pyproject.toml and `make test`).
lock: setup
	@{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	   | grep -v -i '^kgverify' | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > constraints.txt.tmp
	@mv constraints.txt.tmp constraints.txt

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
