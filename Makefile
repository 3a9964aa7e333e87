# Two commands on a fresh machine:  make demo   |   make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo demo-web web-deps system-deps test test-java lint bench clean wheel

$(BIN)/athe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all]'
	touch $@

install: $(BIN)/athe

demo: install
	$(BIN)/athe demo

# The installable artifacts in dist/ (a wheel a Raspberry Pi installs with `pip install
# 'dist/athe-VERSION-py3-none-any.whl[pi]'`, and an sdist), checked by twine.
wheel: install
	rm -f dist/athe-*.whl dist/athe-*.tar.gz
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/athe-*

# The phone demo: LiteRT.js from npm, then serve the PWA with the demo bundle (tflite only).
WEB := android_demo/web
DEMO_BUNDLE ?= bundles/athe-mini-demo
HOST ?= 127.0.0.1
PORT ?= 8765

$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --no-audit --no-fund --prefix $(WEB)

web-deps: $(WEB)/node_modules/.package-lock.json

$(DEMO_BUNDLE)/manifest.json: | install
	$(BIN)/athe convert --variant athe-mini --format tflite --out $(DEMO_BUNDLE) --force

demo-web: install web-deps $(DEMO_BUNDLE)/manifest.json
	$(BIN)/athe demo serve --bundle $(DEMO_BUNDLE) --host $(HOST) --port $(PORT)

# Debian packages the browser test and the Java tests need (root or sudo); only the missing ones,
# so a node that came from elsewhere (with its own npm) is left alone.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
MISSING_PKGS = $(strip $(if $(shell command -v chromium),,chromium) \
                       $(if $(shell command -v node),,nodejs) \
                       $(if $(shell command -v npm),,npm) \
                       $(if $(shell command -v mvn),,maven))
system-deps:
	@if [ -n "$(MISSING_PKGS)" ]; then \
	  echo "installing $(MISSING_PKGS)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(MISSING_PKGS); \
	else echo "system packages present (chromium, node, npm, mvn)"; fi

test-java:
	bash android_demo/core/run-tests.sh

test: install web-deps
	$(BIN)/pytest -q

# mypy cannot follow the editable install's import hook (athe.training -> training/, ...): the
# folders are linked into build/mypy/athe/, the installed layout, and mypy checks that package
# (pyproject.toml [tool.mypy]).
ROOMS := training convert runtime pi_runner evaluate
MYPY_TREE := build/mypy/athe

lint: install
	$(BIN)/ruff check athe $(ROOMS) tests
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)
	for f in athe/*; do ln -s "$(CURDIR)/$$f" $(MYPY_TREE)/; done
	for d in $(ROOMS); do ln -s "$(CURDIR)/$$d" $(MYPY_TREE)/$$d; done
	$(BIN)/mypy

bench: install
	$(BIN)/python -m athe.convert.benchmark

clean:
	rm -rf $(VENV) bundles/athe-mini-demo
