# The two set-up commands of README.md. Everything installs into .venv from a bare Python.
VENV ?= .venv
PY := $(VENV)/bin/python
SC := $(VENV)/bin/sparse-circuits
RUNS ?= runs

.PHONY: install demo test bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch (an unpinned torch would pull a multi-GB CUDA build).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Main job on the embedded default: stdlib corpus -> tokenizer -> micro sparse and dense models.
# Re-running reuses the data and resumes (or skips) finished training.
demo: install
	$(SC) data --corpus stdlib --out $(RUNS)/data-stdlib
	$(SC) train --data $(RUNS)/data-stdlib --preset micro --out $(RUNS)/micro-sparse --resume-if-exists
	$(SC) train --data $(RUNS)/data-stdlib --preset micro --out $(RUNS)/micro-dense --dense --resume-if-exists

test: install
	$(PY) -m pytest

bench: install
	$(SC) data --corpus stdlib --out $(RUNS)/data-stdlib
	$(PY) benchmarks/bench_training.py --data $(RUNS)/data-stdlib
