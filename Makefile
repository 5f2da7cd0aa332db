# The two commands of the README. Both set everything up on a fresh machine first.
#   make serve   run the server on its embedded defaults (http://127.0.0.1:8765): installs
#                the runtime dependencies only, pinned with hashes (requirements.lock)
#   make test    run every gate: format, lint, types, the whole test suite (adds the dev and
#                load extras)

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime-installed
NODE_STAMP := tests/interop/node_modules/.installed

.PHONY: serve test lint install clean

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

install: $(STAMP) $(NODE_STAMP)

serve: $(RUNTIME_STAMP)
	$(VENV)/bin/collab serve $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) tests/interop/node_modules .mypy_cache .ruff_cache .pytest_cache
