# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install everything, run the main job end to end
#   make test   create .venv, install everything, run the whole test suite
# GGTOOL_LLAMA_BACKEND=cuda|metal|cpu (default cpu) picks the llama.cpp build (see README).

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.ggtool-installed

.PHONY: install test test-fast demo bench native clean

$(STAMP): pyproject.toml setup.py scripts/install-llama-cpp.sh $(wildcard native/*.c native/*.h)
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	PYTHON=$(VPY) bash scripts/install-llama-cpp.sh
	$(VPY) -m pip install -q --no-cache-dir -e '.[test,serve]'
	$(VPY) -m ggtool doctor
	@touch $@

install: $(STAMP)

native: install
	PYTHON=$(VPY) bash scripts/build-native.sh

test: install
	$(VPY) -m pytest -q -ra

test-fast: install
	$(VPY) -m pytest -q -m "not slow"

demo: install
	$(VPY) -m ggtool demo

bench: install
	$(VPY) benchmarks/convert_bench.py

clean:
	rm -rf $(VENV) build *.egg-info ggtool/_native*.so
