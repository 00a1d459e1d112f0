# etcdguard: one entry point. `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
UV_VERSION  := 0.13.8
APT_PKGS    := etcd-server etcd-client openssh-server sudo zstd jq ca-certificates procps iproute2 util-linux
# The browser test drives Debian's Chromium with Playwright (no browser download).
TEST_APT_PKGS := chromium fonts-liberation
STATE_DIR   ?= $(CURDIR)/.state/demo
UI_STATE_DIR ?= $(CURDIR)/.state/ui
UV          := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: help deps apt apt-test venv lint typecheck imports test test-fast demo ui sim-up sim-down clean bench

help:
	@echo "make demo   - set up, start the simulated cluster and S3, run the nightly backup job end to end"
	@echo "make test   - set up, lint, type-check, check the layers, run every test"
	@echo "make ui     - the Prefect UI over a simulated cluster, every deployment served (Ctrl-C stops)"
	@echo "make sim-up / sim-down - start/stop the simulated cluster in $(STATE_DIR)"

apt-test: APT_PKGS += $(TEST_APT_PKGS)
apt-test: apt

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v kubectl >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq kubectl >/dev/null; } \
	  || { echo "kubectl is missing and apt could not install it: install kubectl 1.2x and retry"; exit 1; }

$(UV):
	python3 -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" || \
	  python3 -m pip install --quiet --user --disable-pip-version-check "uv==$(UV_VERSION)"

venv: $(UV)
	@UV=$$(command -v uv || echo $(UV)); $$UV sync --frozen --all-extras --quiet

deps: apt venv

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

imports: venv
	$(VENV)/bin/lint-imports

test: apt-test deps lint typecheck imports
	$(VENV)/bin/pytest

test-fast: venv
	$(VENV)/bin/pytest -m unit

demo: deps
	$(PY) -m etcdguard_sim.harness.demo --state-dir $(STATE_DIR) $(if $(KEEP),--keep)

ui: deps
	$(PY) -m etcdguard_sim.harness.ui --state-dir $(UI_STATE_DIR)

sim-up: deps
	$(VENV)/bin/etcdguard-sim up --state-dir $(STATE_DIR)

bench: deps
	$(PY) -m bench.backup_throughput
	$(PY) -m bench.retention_scale

sim-down:
	$(VENV)/bin/etcdguard-sim down --state-dir $(STATE_DIR)

clean: sim-down
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
