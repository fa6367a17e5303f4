# Two commands do all the set-up: `make demo` and `make test` (`make tutorial` runs docs/tutorial.md).
# Both create .venv if it is missing and (re)install only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export CEREB_CACHE ?= $(CURDIR)/.cache
export MPLBACKEND ?= Agg
# test processes (pytest-xdist): the suite is mostly single-threaded compiling and simulating
TEST_JOBS ?= 2

.PHONY: demo test tutorial install clean-cache

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS)

# every bash/python block of docs/tutorial.md, in order, in a fresh directory (CI runs it after the tests)
tutorial: $(STAMP)
	$(PY) -m scripts.tutorial docs/tutorial.md

demo: $(STAMP)
	$(VENV)/bin/cereb demo

clean-cache:
	rm -rf .cache
