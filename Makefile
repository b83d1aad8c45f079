# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench bench-aie4ml clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aieflow demo --output build/demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Everything, including the full random frontend matrices (marker `full`).
test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

# Every benchmark, each printing ratios against a peer measured in the same run (aie4ml last: ~5 min).
bench: $(STAMP) .venv-aie4ml/bin/python
	$(BIN)/python bench/compile_speed.py
	$(BIN)/python bench/layer_scaling.py
	$(BIN)/python bench/emulator_speed.py
	$(BIN)/python bench/compile_scaling.py
	$(BIN)/python bench/cnn.py
	$(BIN)/python bench/vs_aie4ml.py

# The published reference, in a venv of its own; about 5 minutes, almost all of it aie4ml's search.
.venv-aie4ml/bin/python:
	$(PYTHON) -m venv .venv-aie4ml
	.venv-aie4ml/bin/pip install --quiet "aie4ml[onnx]==0.2.1"

bench-aie4ml: $(STAMP) .venv-aie4ml/bin/python
	$(BIN)/python bench/vs_aie4ml.py

clean:
	rm -rf build .pytest_cache
