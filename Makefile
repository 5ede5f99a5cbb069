# vcycle: `make demo` shows it working, `make test` proves it.
# Every set-up step lives here: a fresh clone needs only Python 3.11+ and the package registries.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

# Debian packages some tests and the demo use: cloud-init's schema validator, shellcheck, curl (pilots' uploads).
TOOLS := cloud-init:cloud-init shellcheck:shellcheck curl:curl bwrap:bubblewrap  # command:package

# Debian packages benchmarks/web.py measures with and against: the load generator and nginx.
BENCH_TOOLS := wrk nginx

# A real OpenStack for the tests (scripts/openstack_testbed.py), in a virtualenv of its own.
OPENSTACK_VENV := .openstack/venv
OPENSTACK_STAMP := $(OPENSTACK_VENV)/.installed-2
OPENSTACK_PACKAGES := nova==34.0.0 keystone==30.0.0 glance==33.0.0 openstack-placement==16.0.0 neutron==29.0.0 \
	openstacksdk==4.22.0 gunicorn==27.0.1 PyMySQL==1.1.2

.PHONY: all install tools bench-tools openstack-testbed demo test lint bench openapi check-config clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP) tools
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

tools:
	@missing=""; for pair in $(TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages) for the user-data tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing >/dev/null; \
	  else echo "note:$$missing not installed; the tests that need them skip"; fi; fi

$(OPENSTACK_STAMP):
	$(PYTHON) -m venv $(OPENSTACK_VENV)
	$(OPENSTACK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(OPENSTACK_PACKAGES)
	touch $@

openstack-testbed: $(OPENSTACK_STAMP)

test: lint tools openstack-testbed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-tools:
	@missing=""; for tool in $(BENCH_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages) for the benchmarks"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing >/dev/null; \
	  else echo "note:$$missing not installed; benchmarks/web.py needs them"; fi; fi

openapi: $(STAMP)
	$(BIN)/python scripts/openapi.py

bench: $(STAMP) bench-tools
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

check-config: $(STAMP)
	@for f in etc/*.example etc/vcycle.d/*.example; do echo "== $$f"; $(BIN)/vcycle check-config --config $$f >/dev/null || exit 1; done

clean:
	rm -rf $(VENV) .openstack .pytest_cache .mypy_cache .ruff_cache .hypothesis
