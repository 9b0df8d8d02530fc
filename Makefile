# The two entry points of the README: `make test` and `make demo`.
# Both create (or reuse) .venv and install what they need into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-test: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-demo: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

venv: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed-demo
	$(PY) -m pacnp.demo --out demo-output

clean:
	rm -rf $(VENV) demo-output build *.egg-info
