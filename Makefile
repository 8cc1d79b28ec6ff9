# The README's commands. Everything installs into .venv; nothing touches the system Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test bench microbench lab postgres lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[postgres,bench,dev,langgraph]'
	@rm -f $(VENV)/.installed-* && touch $@

postgres: $(STAMP)
	@bash scripts/ensure-postgres.sh $(PY)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict storekit bench
	$(PY) -m bench headline reference --check README.md $(wildcard docs/*.md)

test: lint postgres
	$(VENV)/bin/pytest
	$(PY) -m bench micro --quick --output-dir $(VENV)/microbench-ci

bench: postgres
	$(PY) -m bench run --profile quick
	$(PY) -m bench report

microbench: postgres
	$(PY) -m bench micro

# LAB_ARGS passes options through, e.g. make lab LAB_ARGS="--no-browser --port 8899".
# Jupyter refuses root without --allow-root; root is a supported way to run the kit.
LAB_ARGS ?=
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(PY) -m pip install --quiet -e '.[postgres,bench,dev,lab]'
	PYTHONPATH=$(CURDIR) $(VENV)/bin/jupyter lab $(ROOT_FLAG) $(LAB_ARGS) notebooks/

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache build
