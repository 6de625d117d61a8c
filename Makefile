# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
export FLASK_APP := wsgi

.PHONY: run test test-fast lint bench clean install dist docs screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## make run: the demo LMS on http://127.0.0.1:$(PORT) (SQLite file + embedded store); make run PORT=8000
run: export DEMO_CONFIG := development
run: install
	$(BIN)/flask db upgrade demo@head
	$(BIN)/flask db upgrade heads
	$(BIN)/flask seed-demo --history
	$(BIN)/flask run --host 127.0.0.1 --port $(PORT)

## make test: the whole suite (real-service tests run when the servers answer; CI=true requires them)
## the dashboard's browser tests leave what they saw in $(SCREENSHOTS)
SCREENSHOTS ?= test-screenshots
test: export TUTOR_TIMES_SCREENSHOTS := $(SCREENSHOTS)
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-fast: the inner loop, everything but the `system` tests (servers and processes of
## their own, a cluster, a browser, a wheel build, load tests) and the `slow` ones (property and
## fuzz runs, bulk data); still on the real servers when they answer
test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not system and not slow" $(PYTEST_ARGS)

## make bench: the benchmarks on the real servers (B=b1 for one); rewrites benchmarks/README.md
bench: install
	$(BIN)/python -m benchmarks.run $(B)

## make dist: sdist and wheel in dist/, built offline with the venv's setuptools
dist: install
	rm -rf dist
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m build --no-isolation --outdir dist .

## make docs: the documentation site in docs/_build/html; a warning (a broken reference, a page
## missing from the tree) fails the build. Offline: intersphinx reads docs/_inventories/.
docs: install
	$(BIN)/sphinx-build -E -W -n --keep-going -b html -d docs/_build/doctrees docs docs/_build/html

## make screenshots: the dashboard pictures of the docs (docs/_static/dashboard-*.png), taken by
## the browser tests in headless Chromium on the demo's history, as make run shows it
screenshots: install
	TUTOR_TIMES_DOCS_SCREENSHOTS=docs/_static $(BIN)/python -m pytest tests/system/test_dashboard_browser.py -k documentations_screenshots -q

lint: install
	$(BIN)/ruff check tutor_times demo tests benchmarks docs config.py wsgi.py
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) instance dist build docs/_build .pytest_cache .mypy_cache .ruff_cache
