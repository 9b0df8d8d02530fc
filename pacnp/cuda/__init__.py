"""numba.cuda kernels: the GPU twins of ``pacnp.cpu`` — the same modules (conv, depthwise,
kernel, smooth, arrays) with the same launcher names and arguments (written down once in
``pacnp._backend``), so the drivers in ``pacnp._ops`` run unchanged on either backend.
``arrays`` is this backend's array module for the drivers (allocation and fixed-order
reductions on the device). From the geometry the drivers hand over, the launchers derive this
backend's schedule: inverse tap tables, so every backward is a gather (one thread per element)
where the CPU scatters in rounds.

Imported only when a device array reaches a public function (``import pacnp`` never imports
``numba.cuda``). Needs the ``numba-cuda`` package; under ``NUMBA_ENABLE_CUDASIM=1`` the kernels
run in numba's CUDA simulator on the host (how the test suite runs them without a GPU).
"""

import contextlib

from . import arrays, conv, depthwise, kernel, smooth, upsample  # noqa: F401
from ._launch import SIMULATOR, launch, stream_from_pointer  # noqa: F401

#: the drivers' array module on this backend (as on ``pacnp.cpu``)
xp = arrays


def blas_guard():
    """The CPU backend's guard against BLAS oversubscription; nothing to guard on the GPU."""
    return contextlib.nullcontext()
