"""Fixtures of the test suite (the shared cases, backends and ``assert_close`` live in
``tests/cases.py``).

``backend`` runs a test body once on the CPU and once on the CUDA backend. The CUDA run needs a
GPU or numba's CUDA simulator, and the simulator must be on before ``numba.cuda`` is first
imported, so it cannot share the main ``pytest tests`` process:

* ``pytest tests`` runs the ``cpu`` parameter; ``cuda`` is skipped with the reason unless a
  GPU is present, in which case it runs too, on every case;
* ``make test-cuda-sim`` (``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda ...``) selects the ``cuda``
  parameter (and tests/test_cuda.py, marked ``cuda`` as a whole); the simulator runs every GPU
  thread as a Python thread, so bodies shrink their shapes (``backend.pick``) and the cases
  marked ``full_grid`` are skipped there.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import Backend, cuda_missing


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cuda: runs on the CUDA backend (a GPU or numba's "
        "simulator); `make test-cuda-sim` selects these",
    )
    config.addinivalue_line(
        "markers",
        "full_grid: a case beyond the small grid that numba's "
        "CUDA simulator runs; the CPU and real GPUs run it",
    )


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def backend(request):
    """The backend a test body runs on (cases.Backend): "cpu", then "cuda"."""
    be = Backend(request.param)
    if be.name == "cuda":
        reason = cuda_missing()
        if reason:
            pytest.skip(f"CUDA backend: {reason}")
        if be.simulator and request.node.get_closest_marker("full_grid"):
            pytest.skip(
                "CUDA simulator: runs the small grid only (cases.SMALL_*); the CPU and "
                "a real GPU run this case"
            )
    return be


@pytest.fixture
def rng():
    return np.random.default_rng(20190616)


@pytest.fixture
def numba_threads():
    """Yields numba.set_num_threads; restores the thread count afterwards."""
    import numba

    old = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(old)


@pytest.fixture
def jax_x64():
    """JAX with float64 enabled for the test; the previous setting is restored afterwards."""
    import jax

    old = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)


@pytest.fixture
def dirty_memory(monkeypatch):
    """The host backend's uninitialised allocations filled with NaN: the kernels leave K's
    entries at the taps of a transposed window that meet no sample unwritten
    (Kernel.packernel_forward), so a fused stripe holds whatever its memory held there — here
    NaN, which would reach every output and gradient that read one of them."""
    from pacnp.cpu import arrays

    def nan_empty(shape, dtype):
        a = np.empty(shape, dtype)
        if np.issubdtype(a.dtype, np.floating):
            a.fill(np.nan)
        return a

    monkeypatch.setattr(arrays, "empty", nan_empty)
