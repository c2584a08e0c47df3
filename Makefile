# Two commands do all the set-up on a fresh machine (each creates .venv on first use):
#   make search   # the main job: a small demo search on the embedded synthetic data
#   make test     # the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: search test test-fast test-slow install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: the CPU wheel; never let a resolver pick a CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	touch $@

search: install
	$(VENV)/bin/suhmo-search run

# The fast group quietly, with its slowest tests listed; then the slow end-to-end group with
# each test's name as it starts (-v), so a long stretch says which test it is.
test: install
	$(PY) -m pytest -q -m "not slow" --durations=10
	$(PY) -m pytest -v -m slow --durations=10

test-fast: install
	$(PY) -m pytest -q -m "not slow" --durations=10

test-slow: install
	$(PY) -m pytest -v -m slow --durations=10

clean:
	rm -rf $(VENV) suhmo-runs .pytest_cache
