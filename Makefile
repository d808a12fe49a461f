# DictaMesh: `make dev` runs the local stack, `make test` runs lint, types and tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: dev test lint types pytest soak install clean

$(STAMP): pyproject.toml tooling/pyproject.toml tests/graphql/compose/package-lock.json tooling/graphiql/package-lock.json
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@echo "==> creating the virtualenv in $(VENV) and installing DictaMesh (first run: ~1 min)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -e '.[test]' -e ./tooling
	@echo "==> installing Apollo's composition checker for the federation tests (npm)"
	@npm ci --prefix tests/graphql/compose --no-audit --no-fund --loglevel=error
	@echo "==> installing GraphiQL's browser build (npm) and vendoring it into mesh/graphql/static/vendor/"
	@# The copies are committed: in CI it only checks them, so copies never committed fail there.
	@npm ci --prefix tooling/graphiql --no-audit --no-fund --loglevel=error
	@$(BIN)/python -m mesh_tooling.graphiql $(if $(CI),--check)
	@test -x /usr/bin/chromium || { \
	  echo "==> installing Debian's Chromium for the GraphiQL browser test (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@command -v promtool >/dev/null || { \
	  echo "==> installing Debian's prometheus package for promtool, the alert rule tests (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@echo "==> installing checkov for the manifest tests in .venv-checkov (it pins an older packaging than pytest)"
	@test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	@.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check --progress-bar off 'checkov==3.3.30'
	@touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	@$(BIN)/mesh dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint types pytest

# The crash and rebalance scenarios, each run many times from a fresh stack (about an hour).
soak: $(STAMP)
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .venv-checkov .state .mypy_cache .ruff_cache .pytest_cache
