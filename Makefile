# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: install demo test test-sqlite test-postgres lint tox clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The example identity provider on an embedded SQLite database, with the guide's walkthrough.
demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@echo
	@echo "== Walkthrough: paste these in a second terminal (or: bash example_project/walkthrough.sh) =="
	@grep -v '^set -euo' example_project/walkthrough.sh
	@echo
	$(PY) manage.py runserver 127.0.0.1:8000

# The whole suite on SQLite, then on PostgreSQL when it answers (REQUIRE_POSTGRES=1: must answer).
test: install lint test-sqlite test-postgres

test-sqlite: install
	$(PY) -m pytest

test-postgres: install
	@if $(PY) -c "import psycopg; psycopg.connect('$(POSTGRES_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		DATABASE_URL=$(POSTGRES_URL) $(PY) -m pytest; \
	elif [ "$${REQUIRE_POSTGRES:-0}" = "1" ]; then \
		echo "PostgreSQL at $(POSTGRES_URL) does not answer, and REQUIRE_POSTGRES=1"; exit 1; \
	else \
		echo "PostgreSQL at $(POSTGRES_URL) does not answer: PostgreSQL run skipped"; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check --fail-level WARNING

# The Python x Django matrix (needs the interpreters, e.g. from pyenv).
tox: install
	$(VENV)/bin/tox

clean:
	rm -rf $(VENV) .tox example_project/db.sqlite3
