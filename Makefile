# Two commands on a fresh machine:  make demo   |   make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/athe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all]'
	touch $@

install: $(BIN)/athe

demo: install
	$(BIN)/athe demo

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check athe training convert runtime pi_runner tests

bench: install
	$(BIN)/python -m athe.convert.benchmark

clean:
	rm -rf $(VENV) bundles/athe-mini-demo
