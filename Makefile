# ModelTrain — two commands for a new Debian/Ubuntu machine:
#   make run    set everything up, build the web UI and start the app
#   make test   set everything up (apt packages too when run as root), run `make check`, then every suite
# Day to day: `make check` (lint, format, types), `make test-fast` (server unit tests, about a minute),
# `make fix` (apply the formatters and the safe lint fixes).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEBUI_STAMP := webui/node_modules/.installed

.PHONY: run serve test test-fast test-python test-webui test-postgres test-package check check-python check-webui fix \
	package deb system-deps venv webui webui-deps llama regen-migration regen-schema bench clean
STAGE := .ci/stage

system-deps:
	.ci/install-system-packages.sh

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[desktop,test,dev]'
	touch $(STAMP)

# Our sources' bytecode, as an installed app has it (a no-op when current). Where PYTHONDONTWRITEBYTECODE
# is set, Python never writes it itself and every start would compile ~120 modules again (~0.2 s).
venv: $(STAMP)
	$(BIN)/python -m compileall -q server desktop >/dev/null

$(WEBUI_STAMP): webui/package.json webui/package-lock.json
	cd webui && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEBUI_STAMP)

webui-deps: $(WEBUI_STAMP)

webui: $(WEBUI_STAMP)
	cd webui && npm run build --silent

# The real-model test needs llama-cpp-python (compiled once, then cached as a wheel) and SmolLM2.
llama: venv
	.ci/build-llama-wheel.sh

# The desktop window when there is a display (X11/Wayland, Xvfb included); the headless server otherwise.
run: system-deps venv webui
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then exec $(BIN)/modeltrain-desktop; else exec $(BIN)/modeltrain serve; fi

serve: venv webui
	$(BIN)/modeltrain serve

test:
	$(STAGE) setup $(MAKE) --no-print-directory system-deps venv webui llama
	$(STAGE) check $(MAKE) --no-print-directory check
	$(STAGE) webui $(MAKE) --no-print-directory test-webui
	$(STAGE) python $(MAKE) --no-print-directory test-python
	$(STAGE) postgres $(MAKE) --no-print-directory test-postgres
	$(STAGE) package $(MAKE) --no-print-directory test-package

# Lint, formatting and types, Python and web UI; zero findings is the bar. Versions are pinned
# (pyproject's dev extra, webui/package.json), so every machine reports the same.
check: check-python check-webui

check-python: venv
	$(BIN)/ruff check server desktop tests bench
	$(BIN)/ruff format --check server desktop tests bench
	$(BIN)/mypy

check-webui: webui-deps
	cd webui && npm run --silent lint && npm run --silent format:check

# Apply the formatters and ruff's safe fixes (then read the diff).
fix: venv webui-deps
	$(BIN)/ruff check --fix server desktop tests bench
	$(BIN)/ruff format server desktop tests bench
	cd webui && npm run --silent format

# Every Python suite (system tests included: PostgreSQL, nginx, Qt/Chromium, packaging files, a real model).
# Tests without a system component in three workers (much of a test's time is spent waiting on servers,
# streams and timeouts), then those that drive one (Qt, nginx, bubblewrap, packaging...) one at a time.
test-python:
	$(BIN)/python -m pytest -m "not system" -n 3
	$(BIN)/python -m pytest -m system

# The server's unit and integration tests without any system component: the quick loop while coding.
# Four workers even on two cores: much of a test's time is spent waiting (servers, streams, timeouts).
test-fast: venv
	$(BIN)/python -m pytest tests/server tests/test_import_graph.py tests/test_docs.py -m "not system" -q -n 4

# The server suite again on a private PostgreSQL cluster the fixtures start (tests/server/pg_support.py).
test-postgres:
	MODELTRAIN_TEST_POSTGRES=1 $(BIN)/python -m pytest tests/server -n 3

# Desktop package (PyInstaller onedir, web UI bundled) -> build/package/dist/ModelTrain/
package: venv webui
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[package]'
	@start=$$(date +%s); \
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath build/package/dist \
	  --workpath build/package/work packaging/pyinstaller/modeltrain.spec && \
	echo "package: built in $$(( $$(date +%s) - start )) s, $$(du -sh build/package/dist/ModelTrain | cut -f1)"

# The Linux packages of that bundle -> build/package/modeltrain_<version>_<arch>.deb and a .tar.xz
deb: package
	$(BIN)/python packaging/deb/build_deb.py

# Builds the desktop package and its .deb (a few minutes; the .tar.xz is left to `make deb`), then checks
# the bundle, runs the packaged binary's --self-test, and installs, self-tests and removes the .deb
# (root: it installs into /opt and /usr).
test-package: package
	$(BIN)/python packaging/deb/build_deb.py --no-tarball
	MODELTRAIN_TEST_PACKAGE=1 $(BIN)/python -m pytest tests/deploy/test_package.py tests/deploy/test_deb.py -s

test-webui:
	cd webui && npm run --silent check:api && npm run --silent typecheck && npm run --silent test && npm run --silent e2e

bench: venv
	for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done
	node bench/webui_budget.mjs

# Pre-release only: rebuild the initial migration from the ORM models.
regen-migration: venv
	set -e; tmp=$$(mktemp -d); mkdir $$tmp/later; \
	rm -f server/migrations/versions/*_0001_initial_schema.py; \
	find server/migrations/versions -maxdepth 1 -name '*.py' -exec mv {} $$tmp/later/ \; ; \
	$(BIN)/alembic -x url=sqlite:///$$tmp/regen.db revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null; \
	mv $$tmp/later/*.py server/migrations/versions/ 2>/dev/null || true; rm -rf $$tmp
	sed -i 's/^Revises: $$/Revises: (none)/; /# ### commands auto generated by Alembic - please adjust! ###/d; /# ### end Alembic commands ###/d' server/migrations/versions/*_0001_initial_schema.py
	@echo "regenerated server/migrations/versions/*_0001_initial_schema.py"
	$(MAKE) regen-schema

# The schema a new SQLite database gets (server/migrations/sqlite_schema.sql, see server/db/migrate.py),
# dumped from a database the migrations have brought to head. Run it after adding a migration.
regen-schema: venv
	$(BIN)/python -c "from server.db.migrate import write_sqlite_schema; write_sqlite_schema()"

clean:
	rm -rf $(VENV) webui/node_modules webui/dist

# The settings reference, generated from the Field descriptions in server/settings.py. Run it after changing a
# setting; tests/server/test_settings_doc.py fails while docs/settings.md is stale.
.PHONY: regen-settings-doc
regen-settings-doc: venv
	$(BIN)/python -m server.settings_doc > docs/settings.md.tmp && mv docs/settings.md.tmp docs/settings.md
