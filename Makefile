# tlsuite: every target sets up what it needs (.venv, the project installed in it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tlsuite-installed

.PHONY: demo test test-pypy unit integration lint typecheck bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "python3-venv is missing; installing it with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat mode puts the checkout on sys.path through a .pth file, so
	# Twisted finds twisted/plugins/tlsuite.py (plugins are found via sys.path).
	$(PY) -m pip install -q -e '.[test,dev]' --config-settings editable_mode=compat
	@touch $@

demo: $(STAMP)
	$(PY) examples/demo/run.py

# The whole suite on CPython, then the unit tests on PyPy 3.9.
test: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term tests
	$(MAKE) test-pypy

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

# PyPy 3.9 (Debian's pypy3) in its own environment.
PYPY_STAMP := .venv-pypy/.tlsuite-installed
$(PYPY_STAMP): setup.cfg pyproject.toml .ci/pypy-constraints.txt
	@pypy3 -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "PyPy 3 is missing; installing Debian's pypy3 with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq pypy3 pypy3-venv; }
	pypy3 -m venv .venv-pypy
	.venv-pypy/bin/python -m pip install -q --upgrade pip
	.venv-pypy/bin/python -m pip install -q -c .ci/pypy-constraints.txt \
	  -e '.[test]' --config-settings editable_mode=compat
	@touch $@

test-pypy: $(PYPY_STAMP)
	.venv-pypy/bin/python -m pytest -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check tlbalance tlsession tlcache tests bench examples twisted
	$(VENV)/bin/ruff format --check tlbalance tlsession tlcache tests bench examples twisted

typecheck: $(STAMP)
	$(VENV)/bin/mypy tlbalance tlsession tlcache

bench: $(STAMP)
	$(PY) bench/balancer.py

clean:
	rm -rf $(VENV) .venv-pypy build dist *.egg-info .pytest_cache .hypothesis .coverage
