# Two commands for a fresh machine: `make run` (the REPL on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test install pull bench clean sandbox

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build that installs from local disk here; constraints.txt pins the rest.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -c constraints.txt "torch==2.13.0" -e ".[test]"
	touch $(STAMP)

# bubblewrap is the sandbox's strongest layer (docs/sandbox.md). Installed here when apt-get is available and we
# are root; otherwise this prints how to install it (the assistant refuses to run commands without a sandbox
# layer unless you pass --sandbox weak).
sandbox:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing bubblewrap (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
		echo "note: bubblewrap (bwrap) is not installed; commands will be refused until it is:"; \
		echo "      sudo apt-get install bubblewrap   (Debian/Ubuntu; Fedora: sudo dnf install bubblewrap)"; \
	fi

install: $(STAMP) sandbox

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
