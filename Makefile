# Set-up and entry points. `make demo` and `make test` work on a fresh clone: they create .venv and install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch, installed before r1kit on a machine without a CUDA GPU so that pip does not pull a
# multi-GB CUDA build. Elsewhere point it at a CPU wheel index, e.g. TORCH_CPU="torch --index-url <cpu index>".
TORCH_CPU ?= torch==2.13.0
# The installer of everything but torch: uv (installed into the venv with pip) resolves and installs the ~90
# packages in about 10 s where pip took about 60 s on 2 cores, nearly all of it pip scanning the index pages' links
# (measured on a 2-core CPU, same package versions from both). uv reads its own settings (UV_INDEX_URL, ...), not
# pip's; INSTALLER=pip installs with pip alone, and pip takes over whenever uv cannot be installed or fails.
INSTALLER ?= uv
UV ?= uv>=0.4,<1
# `make demo` installs what the demo runs (serving, int8 and GGUF export, the OpenAI client it asks the server
# with); `make setup` and `make test` install everything the tests use as well.
DEMO_EXTRAS ?= serve,export,llamacpp,demo
EXTRAS ?= serve,export,llamacpp,demo,embed,deepspeed,test
# llama-cpp-python is built from source (PyPI has no wheel): for this machine's CPU, without the multimodal
# library r1kit does not use (3m33s instead of 4m09s on 2 cores), and with ggml's own thread pool rather than
# OpenMP, whose threads r1kit sets to passive waiting for torch (OMP_WAIT_POLICY).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF
DEMO_OUT ?= runs/demo
# Two pytest workers, one test file each at a time: most of the suite's time is single-threaded (the Python
# imports of the r1kit processes its tests start, ~10 s each here), so on 2 cores two workers finish in about
# 55% of the serial time (10.7 against 19.3 minutes, measured on a 2-core CPU). TEST_WORKERS=0 runs serially.
# Files are handed out in collection order, where the slow tests come first (tests/conftest.py). The tests that
# launch ranks with torchrun (marked multiprocess) run afterwards, alone: once, beside the other worker, a rank
# of the DDP test died mid-run, which it never did alone. So do the tests that bound a latency (marked alone):
# the server's /health under a flood of hostile clients must not be measured beside a training run.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo-setup demo test test-gpu lint clean

setup: $(VENV)/.installed
demo-setup: $(VENV)/.installed-demo

# Neither installer byte-compiles here (pip compiles one file after another; uv only when asked).
# - `make setup` then byte-compiles all of site-packages with one process per core (about a minute on 2 cores):
#   the tests start many r1kit processes, and each would otherwise compile what it imports afresh when
#   PYTHONDONTWRITEBYTECODE is set (about 14 s of a 23 s import, measured on a 2-core CPU).
# - `make demo` instead lets its one long process write the bytecode of the modules it imports (about 3,600 of
#   the 19,000 files, ~14 s), with PYTHONDONTWRITEBYTECODE cleared for that run only; the server it starts then
#   imports compiled modules. The venv is this Makefile's own, and compileall writes into it anyway.
# Like pip, compileall skips files that do not compile (test data of some packages is Python 2); the install
# itself stops on any error.
define install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: torch comes from your CUDA build (install it first to choose the CUDA version)"; \
	elif ! $(BIN)/python -c "import torch" >/dev/null 2>&1; then \
		echo "No CUDA GPU: installing the CPU build of torch first ($(TORCH_CPU))"; \
		$(BIN)/pip install --no-compile $(TORCH_CPU); \
	fi
	@if [ "$(INSTALLER)" = uv ]; then \
		if $(BIN)/pip install -q --no-compile "$(UV)"; then \
			$(BIN)/python -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' \
				>$(VENV)/torch-pin.txt 2>/dev/null || : >$(VENV)/torch-pin.txt; \
			echo "Installing r1kit[$(1)] with uv (torch stays as installed)"; \
			$(BIN)/uv pip install --python $(BIN)/python --constraints $(VENV)/torch-pin.txt -e ".[$(1)]" && exit 0; \
		fi; \
		echo "uv could not install r1kit[$(1)]: installing with pip instead (about a minute slower)"; \
	fi; \
	$(BIN)/pip install --no-compile -e ".[$(1)]"
endef

$(VENV)/.installed-demo: pyproject.toml Makefile
	$(call install,$(DEMO_EXTRAS))
	touch $@

# Everything the demo needs too: a full set-up also stamps the demo's.
$(VENV)/.installed: pyproject.toml Makefile
	$(call install,$(EXTRAS))
	@echo "Byte-compiling the installed packages"
	@$(BIN)/python -m compileall -qq -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch $@ $(VENV)/.installed-demo

demo: demo-setup
	PYTHONDONTWRITEBYTECODE= $(BIN)/r1kit demo --out $(DEMO_OUT)

# pytest exits 5 when it collected no test: a suite that ran nothing is reported as a failure, not a pass (one
# of the two phases may select none, e.g. with PYTEST_ARGS=tests/data). Coverage of src/r1kit below 80%
# (pyproject's [tool.coverage]) fails the run; the second phase adds to the first's coverage and checks it.
test: setup
	@$(BIN)/python -m pytest -m "not multiprocess and not alone" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--cov --cov-report= --cov-fail-under=0 $(PYTEST_ARGS); rest=$$?; \
	$(BIN)/python -m pytest -m "multiprocess or alone" --cov --cov-append --cov-report=term $(PYTEST_ARGS); launched=$$?; \
	if [ $$rest -eq 5 ] && [ $$launched -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	for rc in $$rest $$launched; do if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; done

# On a machine with a CUDA GPU: the end-to-end GPU tests (serve, eval, sample, SFT and GRPO steps, export on the
# GPU), which `make test` collects but skips where no CUDA device is visible.
test-gpu: setup
	@if ! $(BIN)/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		echo "make test-gpu needs a CUDA GPU visible to torch" >&2; exit 1; fi
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

# The pre-commit gates on every file (ruff lint and format, mypy on the public API, end of file, large files).
lint: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pre-commit run --all-files

clean:
	rm -rf $(VENV) runs .pytest_cache
