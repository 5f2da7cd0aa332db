# The two commands of the README. Both set everything up on a fresh machine first.
#   make serve   run the server on its embedded defaults (http://127.0.0.1:8765): installs
#                the runtime dependencies only, pinned with hashes (requirements.lock)
#   make test    run every gate: format, lint, types, the whole test suite (adds the dev and
#                load extras)
#   make web     rebuild the web editor into server/web/static (committed: docs/web.md)

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime-installed
NODE_STAMP := tests/interop/node_modules/.installed
# The npm workspace of the client library (clients/js) and the web editor (web).
JS_STAMP := node_modules/.installed

.PHONY: serve test lint install clean web

$(RUNTIME_STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --require-hashes -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,load]'
	touch $(STAMP)

$(NODE_STAMP): tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(JS_STAMP): package.json package-lock.json clients/js/package.json web/package.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

install: $(STAMP) $(NODE_STAMP) $(JS_STAMP)

# Rebuild the web editor's assets into server/web/static (committed: see docs/web.md).
web: $(JS_STAMP)
	node web/build.mjs

serve: $(RUNTIME_STAMP)
	$(VENV)/bin/collab serve $(ARGS)

lint: $(STAMP) $(JS_STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	npm run --silent lint

test: install lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) tests/interop/node_modules node_modules .mypy_cache .ruff_cache .pytest_cache
