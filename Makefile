# Two commands for a fresh machine: `make run` (the REPL on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test install pull bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build that installs from local disk here; constraints.txt pins the rest.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -c constraints.txt "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

pull: install
	$(BIN)/assistant models pull smollm2-135m

run: pull
	$(BIN)/assistant $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

bench: pull
	$(BIN)/assistant bench speed

clean:
	rm -rf $(VENV) build *.egg-info
