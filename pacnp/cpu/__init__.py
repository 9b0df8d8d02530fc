"""The CPU backend: numba kernels, one module per op family (conv, depthwise, kernel, smooth),
and ``arrays``, the drivers' array operations on NumPy arrays. ``pacnp.cuda`` has the same
modules and function names; ``pacnp._backend`` writes the interface down.

The drivers hand each launcher a geometry (``pacnp._core``); how the kernels walk it — scatter
rounds, column phases, row blocks, GEMM tiles — is derived here (``schedule``).
"""

import contextlib

from . import arrays, conv, depthwise, kernel, smooth, upsample  # noqa: F401

#: the drivers' array module on this backend (the same name as on ``pacnp.cuda``)
xp = arrays

_controller = None


def blas_guard():
    """Context manager: BLAS single-threaded while pacnp's kernels run.

    The kernels call BLAS (``np.dot`` → SciPy's OpenBLAS) from inside numba's parallel loops.
    A multi-threaded OpenBLAS called from an OpenMP region oversubscribes the cores and can
    deadlock (OpenBLAS warns "Detect OpenMP Loop and this application may hang"), so BLAS runs
    on one thread per numba thread for the duration of the call, then gets its setting back.
    """
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba calls: load it first)
        from threadpoolctl import ThreadpoolController

        # Only the BLAS numba calls (SciPy's). NumPy's own copy, if separate, is left alone:
        # flipping its thread count wakes its spinning worker threads, which then compete
        # with numba's for the cores.
        _controller = ThreadpoolController().select(user_api="blas")
        own = [lib for lib in _controller.lib_controllers if "numpy" not in lib.filepath]
        _controller.lib_controllers = own or _controller.lib_controllers
    return _controller.limit(limits=1)


def launch(stream, device=None):
    """The CUDA backend's context for a call's stream and device; the host has neither."""
    return contextlib.nullcontext()
