# The two set-up commands of the README: `make demo` and `make test`.
# Both work on a fresh Debian 12 machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip

.PHONY: demo test bench-files system-deps clean

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	  else echo "python3 -m venv failed: install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	$(PIP) install -q --upgrade pip

$(VENV)/.drorch: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.drorch-test: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e '.[test]'
	@touch $@ $(VENV)/.drorch

# The main job on the embedded default (a local directory repository).
demo: $(VENV)/.drorch
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

# Debian packages the tests start for real (PostgreSQL, MariaDB, sshd, ...), when root.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then bash tests/system-deps.sh; \
	else echo "not root: skipping Debian packages (tests that need them will fail)"; fi

test: system-deps $(VENV)/.drorch-test
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
