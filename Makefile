# Loom on Airflow. Quick start: `make run` (stack + demo cluster), `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
export LOOM_ROOT := $(CURDIR)
export AIRFLOW_HOME := $(CURDIR)/state/airflow
export AIRFLOW_CONFIG := $(CURDIR)/airflow.cfg

.PHONY: run test test-unit stop install os-deps test-os-deps bench bench-solver clean-state

run: install
	$(VENV)/bin/loom demo

test: install test-os-deps
	$(VENV)/bin/python -m pytest

test-unit: install
	$(VENV)/bin/python -m pytest tests/unit -q

stop:
	@if [ -x $(VENV)/bin/loom ]; then $(VENV)/bin/loom stack down; else echo "nothing to stop"; fi

bench: install
	$(VENV)/bin/python bench/stack.py

bench-solver: install
	$(VENV)/bin/python bench/solver.py

install: os-deps $(VENV)/.installed

# OS packages the local provider needs (sshd, unshare). Installed via apt when root, else explained.
os-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v unshare >/dev/null || missing="$$missing util-linux"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing OS packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing OS packages:$$missing"; \
	    echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# OS packages only the tests need: puppet for the real puppet automator test (not `make run`).
# Installed via apt when root; otherwise that test is skipped with the install command.
test-os-deps:
	@if ! command -v puppet >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing OS package for the tests: puppet"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends puppet >/dev/null; \
	  else \
	    echo "missing OS package for the tests: puppet"; \
	    echo "run: sudo apt-get install -y puppet"; exit 1; \
	  fi; \
	fi

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

clean-state: stop
	rm -rf state
