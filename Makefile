# Two commands for a fresh machine (see README):
#   make run    create .venv, install BrainSeg, open the viewer on the bundled sample patient
#   make test   create .venv, install BrainSeg with its test tools, run lint + the whole test suite
# The venv is reused across runs while pyproject.toml is unchanged.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench dist clean

$(BIN)/.brainseg-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.brainseg-installed

run: install
	@# bytecode for the editable install (pip compiles only what it copies): a faster first window
	$(BIN)/python -m compileall -q brainseg_core app
	$(BIN)/brainseg --sample

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/pipeline.py

dist: install
	$(BIN)/python -m pip install --quiet -e '.[dist]'
	$(BIN)/python packaging/build.py

clean:
	rm -rf build dist packaging/build packaging/dist
