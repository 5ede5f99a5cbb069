# vcycle: `make demo` shows it working, `make test` proves it.
# Every set-up step lives here: a fresh clone needs only Python 3.11+ and the package registries.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

# Debian packages some tests and the demo use: cloud-init's schema validator, shellcheck, curl (pilots' uploads),
# bubblewrap, systemd-analyze (the shipped unit is verified), Chromium (the status page's browser tests).
TOOLS := cloud-init:cloud-init shellcheck:shellcheck curl:curl bwrap:bubblewrap systemd-analyze:systemd \
	chromium:chromium  # command:package

# Debian packages benchmarks/web.py measures with and against: the load generator and nginx.
BENCH_TOOLS := wrk nginx

# The servers the tests start private instances of (scripts/services.py, scripts/slurm_testbed.py): the store's
# PostgreSQL, the OpenStack testbed's RabbitMQ, the DIRAC testbed's MariaDB, the Slurm testbed's munge and Slurm.
SERVICE_DEBS := postgresql rabbitmq-server mariadb-server munge slurmctld slurmd slurm-client slurmrestd \
	slurm-wlm-jwt-plugin

# Installs the Debian packages $(1) that are missing, for $(2); as root only (else a note: their tests skip, or
# fail under CI=true). Their services are left stopped while installing (a policy-rc.d that says no, where the
# machine has none): the tests start servers of their own, and a system server nobody asked for is not started.
define apt_install
	@missing=""; for pkg in $(1); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages) for $(2)"; \
	    policy=/usr/sbin/policy-rc.d; made=""; \
	    if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy && made=1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing >/dev/null; status=$$?; \
	    if [ -n "$$made" ]; then rm -f $$policy; fi; \
	    [ $$status = 0 ] || { echo "error: installing$$missing failed"; exit $$status; }; \
	  else echo "note:$$missing not installed (run make as root, or apt-get install them); $(2) skip"; fi; fi
endef

# A real OpenStack for the tests (scripts/openstack_testbed.py), in a virtualenv of its own.
OPENSTACK_VENV := .openstack/venv
OPENSTACK_STAMP := $(OPENSTACK_VENV)/.installed-2
OPENSTACK_PACKAGES := nova==34.0.0 keystone==30.0.0 glance==33.0.0 openstack-placement==16.0.0 neutron==29.0.0 \
	openstacksdk==4.22.0 gunicorn==27.0.1 PyMySQL==1.1.2

# The DIRAC testbed (scripts/dirac_testbed.py), in a virtualenv of its own.
DIRAC_VENV := .dirac/venv
DIRAC_VERSION := 9.1.22
DIRAC_STAMP := $(DIRAC_VENV)/.installed-1
DIRAC_DEBS := swig libssl-dev pkg-config libmariadb-dev libmariadb-dev-compat unzip

.PHONY: all install tools services bench-tools openstack-testbed dirac-testbed kubernetes-testbed azure-tools demo test \
	lint bench \
	openapi check-config clean

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
	$(BIN)/lint-imports --no-cache

tools:
	@missing=""; for pair in $(TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages) for the user-data and status page tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $$missing >/dev/null; \
	  else echo "note:$$missing not installed; the tests that need them skip"; fi; fi

services:
	$(call apt_install,$(SERVICE_DEBS),the tests of the store and the testbeds)

$(OPENSTACK_STAMP):
	$(PYTHON) -m venv $(OPENSTACK_VENV)
	$(OPENSTACK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(OPENSTACK_PACKAGES)
	touch $@

openstack-testbed: $(OPENSTACK_STAMP)

# A real DIRAC 9 WMS for the DIRAC tests (scripts/dirac_testbed.py), in a virtualenv of its own. DIRAC 9 does not
# install from PyPI as it stands on Debian 12: M2Crypto builds with swig and libssl-dev, and gfal2-python (which
# the WMS does not use) does not build against Debian's libgfal2; so every requirement but gfal2-python is
# installed, then DIRAC without dependencies. The testbed's private database is a MariaDB (make services).
$(DIRAC_STAMP):
	$(call apt_install,$(DIRAC_DEBS),the DIRAC tests)
	$(PYTHON) -m venv $(DIRAC_VENV)
	$(DIRAC_VENV)/bin/python -m pip download --quiet --disable-pip-version-check --no-deps DIRAC==$(DIRAC_VERSION) \
	  -d $(DIRAC_VENV)/wheels
	unzip -p $(DIRAC_VENV)/wheels/dirac-$(DIRAC_VERSION)-py3-none-any.whl '*/METADATA' | grep '^Requires-Dist' \
	  | grep -v 'extra == "testing"' | sed -e 's/^Requires-Dist: //' -e 's/; extra == "server"//' \
	  | grep -v '^gfal2-python' | sort -u > $(DIRAC_VENV)/requirements.txt
	$(DIRAC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(DIRAC_VENV)/requirements.txt
	$(DIRAC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps DIRAC==$(DIRAC_VERSION)
	touch $@

# vcycle itself beside DIRAC, as `pip install vcycle[dirac]` puts it: DIRAC's SiteDirector loads the VcycleDIRAC CE
# (entry-point group dirac), which records pilots in vcycle's store.
DIRAC_VCYCLE_STAMP := $(DIRAC_VENV)/.vcycle-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
$(DIRAC_VCYCLE_STAMP): $(DIRAC_STAMP)
	$(DIRAC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e .
	rm -f $(DIRAC_VENV)/.vcycle-*
	touch $@

dirac-testbed: $(DIRAC_STAMP) $(DIRAC_VCYCLE_STAMP)

# A real Kubernetes control plane for the Kubernetes tests (scripts/kubernetes_testbed.py): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built with the machine's Go from the Go module proxy into a
# cache outside the clone (scripts/kubernetes/build.sh: about 10 minutes on 2 cores the first time, nothing after;
# VCYCLE_KUBERNETES_CACHE moves it, VCYCLE_KUBERNETES_BIN uses prebuilt binaries instead).
kubernetes-testbed:
	@if command -v go >/dev/null || [ -n "$$VCYCLE_KUBERNETES_BIN" ]; then bash scripts/kubernetes/build.sh >/dev/null; \
	else echo "note: no go command: the Kubernetes control plane is not built; the Kubernetes tests skip"; fi

# Microsoft's oav (npm), which validates the Azure tests' recorded traffic against the Compute Swagger
# (tests/connectors/test_azure_wire.py), with the machine's Node.js and npm: about 10 s the first time.
OAV_DIR := .azure/oav
OAV_STAMP := $(OAV_DIR)/.installed-4.0.3
$(OAV_STAMP):
	@if command -v npm >/dev/null; then \
	  mkdir -p $(OAV_DIR) && cd $(OAV_DIR) && printf '{"name": "vcycle-oav", "private": true}\n' > package.json && \
	  npm install --no-audit --no-fund --silent oav@4.0.3 && touch .installed-4.0.3; \
	else echo "note: no npm: oav is not installed; the Azure wire test against the Swagger skips"; fi

azure-tools: $(OAV_STAMP)

test: lint tools services openstack-testbed dirac-testbed kubernetes-testbed azure-tools
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

bench: $(STAMP) bench-tools services openstack-testbed dirac-testbed kubernetes-testbed
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

check-config: $(STAMP)
	@for f in etc/*.example etc/vcycle.d/*.example; do echo "== $$f"; $(BIN)/vcycle check-config --syntax-only --quiet --config $$f || exit 1; done

clean:
	rm -rf $(VENV) .openstack .pytest_cache .mypy_cache .ruff_cache .hypothesis
