# The two set-up commands of README.md. Everything installs into .venv from a bare Python.
VENV ?= .venv
PY := $(VENV)/bin/python
SC := $(VENV)/bin/sparse-circuits
RUNS ?= runs

.PHONY: install browser demo test bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch (an unpinned torch would pull a multi-GB CUDA build).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The page tests drive a real browser: Debian's chromium (playwright cannot download its own offline).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser tests will be skipped"

# Main job on the embedded default: stdlib + generated programs -> tokenizer -> micro sparse and dense models ->
# task scores -> circuits -> report. Re-running reuses finished stages.
demo: install
	$(SC) demo --out $(RUNS)/demo

test: install browser
	$(PY) -m pytest

bench: install
	$(SC) data --corpus stdlib --out $(RUNS)/data-stdlib
	$(PY) benchmarks/bench_training.py --data $(RUNS)/data-stdlib
