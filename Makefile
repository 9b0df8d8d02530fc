# The two entry points of the README: `make test` and `make demo`.
# Both create (or reuse) .venv and install what they need into it. `make docs` builds the
# documentation site (docs/, Sphinx) into docs/_build/html; CI runs it after `make test`.
# Benchmarks (asv_benchmarks/README.md): `make bench` prints the ratio table of the performance
# targets, `make asv` runs the asv suite on the current venv; `make bench-smoke` (part of
# `make test`) keeps both from rotting.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ASV    := ../$(VENV)/bin/python -m asv
STAMP  := $(VENV)/.installed

# `make asv ASV_ARGS='-b W1'`: any `asv run` arguments (default: the whole suite, saved to
# asv_benchmarks/.asv/results; `make asv-publish` then builds the HTML report)
ASV_ARGS ?=
# `make bench BENCH_ARGS='--markdown'`: options of the ratio table, asv_benchmarks/ratio_table.py
BENCH_ARGS ?=
# the asv benchmarks the smoke runs once each (W1, pacnp's own implementations)
SMOKE_BENCH := "PacConv2d\.time_forward_backward\('numpy', 'W1', 'pacnp|PacConv2dMemBackward.*'W1', 'pacnp"

.PHONY: test lint test-cuda-sim doctest demo venv clean bench bench-smoke asv asv-machine asv-publish \
	gpu-wheels gpu-check docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-test: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-docs: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

$(VENV)/.installed-demo: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

venv: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-cuda-sim
	$(MAKE) --no-print-directory bench-smoke

# ruff, configured in pyproject.toml: lint and formatting, both clean (`ruff format .` fixes
# the second; ruff is pinned in setup.cfg's test extra, so its formatting never drifts)
lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The CUDA backend under numba's simulator, in a process of their own: the simulator must be on
# before numba.cuda is first imported (README "GPU (CUDA)"). `-m cuda` selects the "cuda"
# parameter of the `backend` fixture (tests/conftest.py) -- the same test bodies as the CPU's,
# on the small grid and small shapes -- and tests/test_cuda.py. About a minute.
CUDA_SIM_TESTS := tests/test_ops.py tests/test_fused.py tests/test_arrays.py tests/test_cuda.py \
	tests/test_contract.py tests/test_nd.py
test-cuda-sim: $(VENV)/.installed-test
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -m cuda $(CUDA_SIM_TESTS)

# The Examples sections of the public docstrings, run as doctests (tests/test_doctests.py
# collects them by public name, so `make test`'s `pytest tests` runs them too; this target runs
# only them). Tiny shapes, printed shapes/dtypes/rounded numbers: deterministic, a few seconds.
doctest: $(VENV)/.installed-test
	$(PY) -m pytest -q tests/test_doctests.py

# The documentation site (docs/): Sphinx + numpydoc + sphinx-gallery, offline, warnings are
# errors; the gallery's scripts run here. Output in docs/_build/html.
docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -b html -W --keep-going -q -j 1 docs docs/_build/html

demo: $(VENV)/.installed-demo
	$(PY) -m pacnp.demo --out demo-output

# ---- benchmarks
bench: $(VENV)/.installed-test
	$(PY) asv_benchmarks/ratio_table.py $(BENCH_ARGS)

asv-machine: $(VENV)/.installed-test
	cd asv_benchmarks && $(ASV) machine --yes > /dev/null

asv: asv-machine
	cd asv_benchmarks && $(ASV) run --python=same --show-stderr $(ASV_ARGS)

asv-publish: asv-machine
	cd asv_benchmarks && $(ASV) publish

# asv discovers and checks the suite, runs a few W1 benchmarks once (not saved), and the ratio
# table runs in its quick mode on 1 round: everything must still run; no target is asserted.
bench-smoke: asv-machine
	cd asv_benchmarks && $(ASV) check --python=same
	cd asv_benchmarks && $(ASV) run --python=same --quick --dry-run --show-stderr \
		-b $(SMOKE_BENCH)
	$(PY) asv_benchmarks/ratio_table.py --quick --repeats 1

# ---- the GPU machine (tools/gpu/README.md: the device tool's call)
# `make gpu-wheels` (here, network to PyPI): the wheels of tools/gpu/wheels.txt into .whl/, which
# git ignores (.git/info/exclude) and the device tool carries (`carry: [".whl"]`).
# `make gpu-check` (there, no venv, its own python3): install what it lacks, tests/test_cuda.py and
# tests/test_device_interop.py on the GPU, the GPU benchmarks; report and logs to $OUT.
# `make gpu-check GPU_CHECK_ARGS=--dry-run PYTHON=.venv/bin/python` runs every step here.
GPU_CHECK_ARGS ?=

gpu-wheels:
	@x="$$(git rev-parse --git-path info/exclude)"; mkdir -p "$$(dirname "$$x")"; \
	grep -qxF '/.whl/' "$$x" 2>/dev/null || { echo '/.whl/' >> "$$x"; echo "added /.whl/ to $$x"; }
	$(PYTHON) tools/gpu/wheels.py download --dest .whl

gpu-check:
	$(PYTHON) tools/gpu/gpu_check.py --out "$${OUT:-/tmp/gpu-check-out}" $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) demo-output build *.egg-info asv_benchmarks/.asv \
		docs/_build docs/api docs/auto_examples docs/sg_execution_times.rst
