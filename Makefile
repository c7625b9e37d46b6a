# Two commands for a fresh machine: `make run` (the REPL on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test install pull bench clean sandbox llamacpp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build that installs from local disk here; constraints.txt pins the rest.
$(STAMP): pyproject.toml constraints.txt setup.py libcore/libcore.c libcore/libcore.h libcore/_build.py | $(BIN)/python
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
	$(BIN)/assistant models pull all-minilm-l6-v2

run: pull
	$(BIN)/assistant $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

bench: pull
	$(BIN)/assistant bench speed

# The optional llama.cpp backend (--model llamacpp:FILE.gguf). PyPI has only the source of llama-cpp-python; its
# default build uses the CPU's native AMX kernels, which crashed at the first eval on a Xeon with AMX, so the
# wheel is built once without them (about 6 minutes on 2 cores) and cached. Not part of `make test`.
WHEELS ?= $(HOME)/.cache/assistant/wheels
LLAMACPP ?= llama-cpp-python==0.3.36
LLAMACPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
llamacpp: install
	@if ! ls $(WHEELS)/llama_cpp_python-$(subst llama-cpp-python==,,$(LLAMACPP))-*.whl >/dev/null 2>&1; then \
		echo "building $(LLAMACPP) once (about 6 minutes; the wheel is cached in $(WHEELS))"; \
		CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(BIN)/pip wheel --no-deps -w $(WHEELS) "$(LLAMACPP)"; \
	fi
	$(BIN)/pip install --disable-pip-version-check --find-links $(WHEELS) -c constraints.txt "$(LLAMACPP)"

clean:
	rm -rf $(VENV) build *.egg-info
