# Two commands on a fresh machine:  make demo   |   make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo demo-web web-deps system-deps test test-java lint bench clean

$(BIN)/athe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all]'
	touch $@

install: $(BIN)/athe

demo: install
	$(BIN)/athe demo

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

lint: install
	$(BIN)/ruff check athe training convert runtime pi_runner tests

bench: install
	$(BIN)/python -m athe.convert.benchmark

clean:
	rm -rf $(VENV) bundles/athe-mini-demo
