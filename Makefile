# Quick start: `make report` (the main job) and `make test`. Both create .venv on first use.
# torch is installed first, pinned to the CPU build this kind of machine holds on disk, so that
# a fresh machine never pulls a multi-GB CUDA build; elsewhere, override TORCH (or install the
# package into an environment of your own: see README.md).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup report info test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py hooked_mlp/training/_c_kernel.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/hooked-mlp report --out report

info: $(STAMP)
	$(BIN)/hooked-mlp info

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) report .pytest_cache
