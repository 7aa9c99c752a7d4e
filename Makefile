# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: install chromium demo resource-server partner-idp serve test test-sqlite-then-scale-out test-scale-out test-sqlite test-postgres test-swapped test-multidb lint fuzz bench bench-scale bench-http bench-gc matrix tox package-check screenshots clean

# pip 25.1+ reads PEP 735 dependency groups (pyproject.toml [dependency-groups]).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet -e . --group dev
	touch $@

# The partner's OpenID provider that the tests start and `make partner-idp` runs
# (example_project/partner_idp: panva's oidc-provider, pinned by its package-lock.json), installed
# again whenever the lock file changes.
EXTERNAL_IDP := example_project/partner_idp

$(EXTERNAL_IDP)/node_modules/.installed: $(EXTERNAL_IDP)/package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --prefix $(EXTERNAL_IDP)
	touch $@

install: $(VENV)/.installed $(EXTERNAL_IDP)/node_modules/.installed

# The browser tests drive Debian's Chromium (Playwright downloads no browser here). Installed with
# apt-get when missing (as root, or through sudo); CHROMIUM_PATH points at another build.
chromium:
	@if [ "$${SKIP_BROWSER_TESTS:-0}" = 1 ] || [ -n "$${CHROMIUM_PATH:-}" ] || command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Chromium for the browser tests (apt-get install chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Chromium is missing: install it (apt-get install chromium), set CHROMIUM_PATH, or SKIP_BROWSER_TESTS=1"; \
		exit 1; \
	fi

# The example identity provider on an embedded SQLite database, with the guide's walkthrough, at
# http://$(HOST):$(PORT): `make demo PORT=9000` (or HOST=localhost). It becomes DEMO_ORIGIN, which
# everything naming the server follows: the issuer, ALLOWED_HOSTS, the portal's redirect URIs
# (seed_demo, demo_login), the walkthrough and jwt_profile.py. Taken from make's command line only:
# a HOST or PORT in the environment (zsh sets HOST, hosting platforms set PORT) is not this one.
HOST = 127.0.0.1
PORT = 8000

demo: export DEMO_ORIGIN = http://$(HOST):$(PORT)
demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@echo
	@echo "== Walkthrough: paste these in a second terminal at $(CURDIR)"
	@echo "   (or: DEMO_ORIGIN=$(DEMO_ORIGIN) bash example_project/walkthrough.sh) =="
	@grep -v -e '^set -euo' -e '^cd ' example_project/walkthrough.sh \
		| sed 's|^export DEMO_ORIGIN=.*|export DEMO_ORIGIN=$(DEMO_ORIGIN)|'
	@echo
	$(PY) manage.py runserver $(HOST):$(PORT)

# The example resource server (example_resource_server/): the demo's aggregates API as a separate
# service with its own SQLite database, verifying the demo's tokens by introspection
# (/introspected/...) and offline as RFC 9068 JWTs (/jwt/...). Start `make demo` first, with the
# same HOST and PORT; the walkthrough's last steps call it (RS_ORIGIN, default port 8001).
RS_PORT = 8001

resource-server: export DJANGO_SETTINGS_MODULE = example_resource_server.settings
resource-server: export AUTHORIZATION_SERVER = http://$(HOST):$(PORT)
resource-server: install
	$(PY) -m django migrate --noinput
	$(PY) -m django runserver $(HOST):$(RS_PORT)

# Another identity provider (example_project/partner_idp: panva's oidc-provider under Node.js) at
# http://127.0.0.1:$(PARTNER_PORT), signing with a key kept in partner_idp/partner-idp-key.json.
# seed_demo trusts it as "Partner IdP", its user alice being the demo's end-user; the
# walkthrough's last steps sign alice in there and bring her tokens to the demo. Another port:
# `make partner-idp PARTNER_PORT=9002`, and PARTNER_ORIGIN=http://127.0.0.1:9002 for seed_demo
# (`make demo`) and the walkthrough.
PARTNER_PORT = 8002

partner-idp: install
	$(PY) -m example_project.partner_idp serve --port $(PARTNER_PORT)

# The example served as a deployment is (docs/deployment.md): gunicorn with WORKERS processes
# (example_project/gunicorn.conf.py), DEBUG off, a fixed issuer, persistent database connections,
# and the replay store and throttle in Redis, shared by every process. On the demo's SQLite file
# unless DATABASE_URL names a PostgreSQL database; REDIS_URL defaults to the local Redis'
# database 1. DJANGO_SECRET_KEY, if not in the environment, is made up for this run (every
# worker shares it; sessions end when the server does). `make serve WORKERS=8 PORT=9000`
WORKERS = 3
REDIS_URL ?= redis://127.0.0.1:6379/1

serve: export DEMO_ORIGIN = http://$(HOST):$(PORT)
serve: export DJANGO_DEBUG = 0
serve: export REDIS_URL := $(REDIS_URL)
serve: export DATABASE_CONN_MAX_AGE = 600
serve: export BIND = $(HOST):$(PORT)
serve: export WEB_CONCURRENCY = $(WORKERS)
serve: install
	@if [ -z "$${DJANGO_SECRET_KEY:-}" ]; then echo "DJANGO_SECRET_KEY is not set: a random one for this run"; fi
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')}"; \
	export DJANGO_SECRET_KEY; \
	$(PY) manage.py migrate --noinput && \
	$(PY) manage.py seed_demo && \
	$(PY) manage.py check --deploy --fail-level ERROR && \
	exec $(VENV)/bin/gunicorn --config example_project/gunicorn.conf.py example_project.wsgi

# The whole suite on SQLite and on PostgreSQL when it answers (REQUIRE_POSTGRES=1: must answer),
# side by side, and the scale-out suite after the SQLite run: the runs share nothing (an
# in-memory SQLite database, PostgreSQL test databases of their own, servers on free ports), and
# together they take the time of the longest. Each run's output is printed whole when it ends.
test: install chromium lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-postgres test-sqlite-then-scale-out

test-sqlite-then-scale-out:
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-scale-out

# The suite expects the example's defaults: a shell may have exported another origin for the demo,
# or the variables of `make serve`.
SUITE_ENV := env -u DEMO_ORIGIN -u OIDC_ISS_ENDPOINT -u REDIS_URL -u DJANGO_DEBUG -u DJANGO_SECRET_KEY -u DATABASE_CONN_MAX_AGE

# The django-allauth resolver's tests need allauth's apps and tables (tests/settings_allauth.py):
# a run of their own after the main one, which leaves them out.
test-sqlite: install chromium
	$(SUITE_ENV) $(PY) -m pytest -m "not scale_out and not allauth"
	$(SUITE_ENV) DJANGO_SETTINGS_MODULE=tests.settings_allauth $(PY) -m pytest -m allauth -p no:cacheprovider

test-postgres: install chromium
	@if $(PY) -c "import psycopg; psycopg.connect('$(POSTGRES_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		$(SUITE_ENV) DATABASE_URL=$(POSTGRES_URL) $(PY) -m pytest -m "not scale_out and not allauth" && \
		$(SUITE_ENV) DATABASE_URL=$(POSTGRES_URL) DJANGO_SETTINGS_MODULE=tests.settings_allauth $(PY) -m pytest -m allauth -p no:cacheprovider; \
	elif [ "$${REQUIRE_POSTGRES:-0}" = "1" ]; then \
		echo "PostgreSQL at $(POSTGRES_URL) does not answer, and REQUIRE_POSTGRES=1"; exit 1; \
	else \
		echo "PostgreSQL at $(POSTGRES_URL) does not answer: PostgreSQL run skipped"; \
	fi

# Many processes, one truth (tests/test_scale_out*.py, docs/deployment.md): three gunicorn
# servers of the example on PostgreSQL (test database test_scale_out, beside test-postgres's) and
# the local Redis (database 13, flushed by the tests; SCALE_OUT_REDIS_URL), with faults. Needs
# both; REQUIRE_POSTGRES=1 / REQUIRE_REDIS=1 (CI): fail when they do not answer, else skip.
SCALE_OUT_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/scale_out

test-scale-out: install
	@if $(PY) -c "import psycopg; psycopg.connect('$(POSTGRES_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		$(SUITE_ENV) DATABASE_URL=$(SCALE_OUT_DATABASE_URL) $(PY) -m pytest -m scale_out -p no:cacheprovider; \
	elif [ "$${REQUIRE_POSTGRES:-0}" = "1" ]; then \
		echo "PostgreSQL at $(POSTGRES_URL) does not answer, and REQUIRE_POSTGRES=1"; exit 1; \
	else \
		echo "PostgreSQL at $(POSTGRES_URL) does not answer: scale-out suite skipped"; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=tests.settings_allauth $(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check --fail-level WARNING

# The fuzz properties at length: 5,000 examples each instead of make test's 100 (SQLite).
fuzz: install
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -m fuzz -p no:cacheprovider --hypothesis-show-statistics

# Token exchange against DOT's client_credentials grant, in one process, on PostgreSQL when it
# answers (else an SQLite file): a table, and bench/results.json. docs/performance.md reads it.
BENCH_DATABASE = $$($(PY) -c "import psycopg; psycopg.connect('$(POSTGRES_URL)', connect_timeout=3).close()" 2>/dev/null && echo "DATABASE_URL=$(POSTGRES_URL)")

bench: install
	env $(BENCH_DATABASE) $(PY) -m bench $(BENCH_ARGS)

# The same, then again after filling 100,000 users, 200,000 access tokens and 1,000,000 audit rows.
bench-scale: install
	env $(BENCH_DATABASE) $(PY) -m bench --scale $(BENCH_ARGS)

# The same cases over HTTP (bench/over_http.py): gunicorn with example_project/gunicorn.conf.py and
# BENCH_WORKERS sync workers, on PostgreSQL in a database of its own (token_exchange_bench_http,
# dropped after) and the local Redis (database 14, when it answers), at 1, 4 and 16 client threads:
# throughput as a ratio to client_credentials, p50/p95, and non-200 answers (must be none). Needs
# PostgreSQL. A table, and bench/http_results.json; about 5 min.
# `make bench-http BENCH_ARGS="--requests 2000"`
BENCH_WORKERS = 2

bench-http: install
	env $(BENCH_DATABASE) $(PY) -m bench --http --workers $(BENCH_WORKERS) $(BENCH_ARGS)

# The cyclic garbage collector's pauses in one worker, with and without gc.freeze() (bench/gc_pause.py):
# three fresh processes of 20,000 token requests each, on PostgreSQL when it answers (else an SQLite
# file) in a database of its own (token_exchange_bench_gc, dropped after). A table, and
# bench/gc_results.json; about 15 min on 2 CPUs. docs/deployment.md reads it.
# `make bench-gc BENCH_GC_ARGS="--requests 5000"`
bench-gc: install
	env $(BENCH_DATABASE) $(PY) -m bench.gc_pause $(BENCH_GC_ARGS)

# The rest of the supported matrix (tox.ini: floor versions on Python 3.10, Django 6.0 on 3.12,
# Django 6.1 on 3.13), on SQLite; the main cell is `make test`. Other Pythons come from pyenv when
# it is there (its versions' bin directories, not its shims), else from PATH.
PYENV_BINS := $(shell command -v pyenv >/dev/null 2>&1 && for v in $$(pyenv versions --bare | grep -E '^3\.1[0-3]\.'); do printf '%s:' "$$(pyenv root)/versions/$$v/bin"; done)

matrix: install chromium
	PATH="$(PYENV_BINS)$$PATH" $(VENV)/bin/tox run $(TOX_ARGS)
tox: matrix

# DOT's models swapped for a test app's, and every model routed to a database that is not
# "default": the whole suite under each (SQLite).
test-swapped: install chromium
	DJANGO_SETTINGS_MODULE=tests.settings_swapped $(PY) manage.py makemigrations --check --dry-run
	$(SUITE_ENV) DJANGO_SETTINGS_MODULE=tests.settings_swapped $(PY) -m pytest -p no:cacheprovider -q -m "not allauth"
test-multidb: install chromium
	$(SUITE_ENV) DJANGO_SETTINGS_MODULE=tests.settings_multidb $(PY) -m pytest -p no:cacheprovider -q -m "not allauth"

# Build the sdist and the wheel, check them, install the wheel alone into a clean virtual
# environment and run the example project on it over HTTP (.ci/installed-package).
package-check: install
	PY=$(PY) bash .ci/installed-package

# The README's screenshots, taken by the browser tests.
screenshots: install chromium
	SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest tests/test_browser.py -q

clean:
	rm -rf $(VENV) .tox dist build example_project/db.sqlite3
