# tlsuite: every target sets up what it needs (.venv, the project installed in it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tlsuite-installed

.PHONY: demo test test-pypy test-min unit integration lint typecheck apidocs bench clean

# Twisted keeps a cache of the plugins it found next to them; building it
# here means a later run by another user (a service's User=) never tries,
# and fails, to write it.
PLUGIN_CACHE = -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "python3-venv is missing; installing it with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat mode puts the checkout on sys.path through a .pth file, so
	# Twisted finds twisted/plugins/tlsuite.py (plugins are found via sys.path).
	$(PY) -m pip install -q -e '.[test,dev]' --config-settings editable_mode=compat
	$(PY) $(PLUGIN_CACHE)
	@touch $@

demo: $(STAMP)
	$(PY) examples/demo/run.py

# The whole suite on CPython, then the unit tests on PyPy 3.9 and on the
# oldest dependency versions pyproject.toml claims to support, and the API
# reference (which fails on any docstring error).
test: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term tests
	$(MAKE) test-pypy
	$(MAKE) test-min
	$(MAKE) apidocs

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

# PyPy 3.9 (Debian's pypy3) in its own environment.
PYPY_STAMP := .venv-pypy/.tlsuite-installed
$(PYPY_STAMP): pyproject.toml .ci/pypy-constraints.txt
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

# The declared floors, installed exactly (constraints generated from
# pyproject.toml by .ci/min-constraints.py), running the unit suite.
MIN_STAMP := .venv-min/.tlsuite-installed
$(MIN_STAMP): pyproject.toml .ci/min-constraints.py
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/min-constraints.py > .venv-min/constraints.txt
	.venv-min/bin/python -m pip install -q -c .venv-min/constraints.txt \
	  -e '.[test]' --config-settings editable_mode=compat
	@touch $@

test-min: $(MIN_STAMP)
	.venv-min/bin/python -m pip freeze | grep -i -E '^(twisted|pyopenssl|cryptography|zope.interface|attrs|txredisapi|prometheus.client)=='
	.venv-min/bin/python -m pytest -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check tlsuite tlbalance tlsession tlcache tests bench examples twisted .ci
	$(VENV)/bin/ruff format --check tlsuite tlbalance tlsession tlcache tests bench examples twisted .ci

typecheck: $(STAMP)
	$(VENV)/bin/mypy tlsuite tlbalance tlsession tlcache

# The API reference, a pydoctor site of the public API, in build/apidocs.
# Links to Twisted's API docs come from an inventory built from the
# installed Twisted (no network needed); any docstring error fails the build.
TWISTED_DIR = $$($(PY) -c "import os, twisted; print(os.path.dirname(twisted.__file__))")
TWISTED_API = https://docs.twistedmatrix.com/en/stable/api/
apidocs: $(STAMP)
	@mkdir -p build
	$(PY) -m pydoctor --make-intersphinx --project-name=Twisted -q \
	  --html-output=build/twisted-inventory $(TWISTED_DIR) >/dev/null 2>&1
	$(PY) -m pydoctor --project-name=tlsuite \
	  --project-version=$$($(PY) -c "import tlsuite; print(tlsuite.__version__)") \
	  --docformat=epytext --html-output=build/apidocs \
	  --intersphinx-file=build/twisted-inventory/objects.inv::$(TWISTED_API) \
	  --privacy="HIDDEN:**._*" \
	  --warnings-as-errors -q tlsuite tlbalance tlsession tlcache
	@echo "API reference: build/apidocs/index.html"

bench: $(STAMP)
	$(PY) bench/balancer.py

clean:
	rm -rf $(VENV) .venv-pypy .venv-min build dist *.egg-info .pytest_cache .hypothesis .coverage
