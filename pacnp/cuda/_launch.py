"""Launch plumbing shared by the CUDA kernel modules: the stream and device of the current call,
launch shapes, index width, and uploads of the small host tables the drivers pass.

The drivers in ``pacnp._ops`` are backend-agnostic: they hand the kernels the same arguments on
both backends — the big arrays (input, guide, K, gradients) already on the device, and small
host tables (tap tables, α, λ, weight matrices, smoothing kernels) computed by ``pacnp._core``.
A launcher here uploads those tables once per public call (``upload`` caches by identity for
the duration of a ``launch`` context, so the fused path's many stripes do not upload again) and
runs its kernels on the caller's stream.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
from numba import cuda
from numba.cuda.core import config as _cuda_config

from .. import config
from .._core import inverse_taps
from .._jit import cuda_jit

#: numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run as Python threads on the host
SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)

_state = threading.local()


class _Call:
    """Stream of one public call, and the uploads made during it (kept alive with it)."""

    def __init__(self, stream):
        self.stream = stream
        self.uploads = {}


def _current() -> _Call:
    call = getattr(_state, "call", None)
    if call is None:  # a launcher called outside ``launch``: numba's default stream
        call = _Call(cuda.default_stream())
    return call


def stream():
    return _current().stream


@contextlib.contextmanager
def launch(stream, device=None):
    """Run the enclosed launches on ``stream`` and (if given) device index ``device``.

    Re-entrant: a nested context with the same stream keeps the outer one's upload cache.
    """
    prev = getattr(_state, "call", None)
    call = prev if prev is not None and prev.stream is stream else _Call(stream)
    _state.call = call
    try:
        if device is None or device < 0:
            yield call
        else:
            with cuda.gpus[device]:
                yield call
    finally:
        _state.call = prev


def stream_from_pointer(ptr):
    """numba stream for a raw ``cudaStream_t`` of the caller's library (CuPy / torch).

    0 is the legacy default stream, which numba's ``default_stream()`` already is.
    """
    if not ptr:
        return cuda.default_stream()
    return cuda.external_stream(int(ptr))


def grid(n):
    """(blocks, threads) for ``n`` work items; kernels grid-stride, so any shape is correct."""
    if SIMULATOR:
        tpb, cap = config.CUDA_SIM_THREADS_PER_BLOCK, config.CUDA_SIM_MAX_BLOCKS
    else:
        tpb, cap = config.CUDA_THREADS_PER_BLOCK, config.CUDA_MAX_BLOCKS
    blocks = max(1, min(cap, -(-int(n) // tpb)))
    return blocks, tpb


def run(kernel, n, *args):
    """Launch ``kernel`` over ``n`` work items on the current stream (nothing if n == 0)."""
    if n <= 0:
        return
    blocks, tpb = grid(n)
    kernel[blocks, tpb, stream()](*args)


def index_dtype(*sizes):
    """int32 tables when every flat size fits in 31 bits, else int64: 32-bit index maths halves
    the integer work and register use of the kernels (numba compiles each width once)."""
    return np.int32 if max((int(s) for s in sizes), default=0) < 2**31 - 1 else np.int64


def upload(a, dtype=None):
    """The device copy of host array ``a`` (device arrays pass through), cached per call.

    A zero-size array (an argument a kernel does not use, e.g. dK when it is not needed) becomes
    a one-element dummy of the same rank: zero-size device buffers are not portable kernel
    arguments.
    """
    if a is None:
        return None
    if is_device(a):
        if a.size == 0:
            return cuda.device_array((1,) * a.ndim, dtype=a.dtype, stream=stream())
        return a
    call = _current()
    key = (id(a), None if dtype is None else np.dtype(dtype).str)
    hit = call.uploads.get(key)
    if hit is not None and hit[0] is a:
        return hit[1]
    host = np.asarray(a)
    if dtype is not None:
        host = host.astype(dtype)
    if host.size == 0:
        host = np.zeros((1,) * max(host.ndim, 1), dtype=host.dtype)
    host = np.ascontiguousarray(host)
    dev = cuda.to_device(host, stream=call.stream)
    # keeps ``a`` alive (its id is not reused during the call) and the staging copy until the
    # call ends, in case the stream reads it after to_device returns
    call.uploads[key] = (a, dev, host)
    return dev


def derived(key, source, make):
    """A device table derived from host array ``source`` by ``make`` (e.g. inverse taps),
    computed and uploaded once per call."""
    call = _current()
    k = (key, id(source))
    hit = call.uploads.get(k)
    if hit is not None and hit[0] is source:
        return hit[1]
    host = np.ascontiguousarray(make(source))
    dev = cuda.to_device(host, stream=call.stream)
    call.uploads[k] = (source, dev, host)
    return dev


def inverse_table(tab, n, it):
    """The device copy of ``inverse_taps(tab, n)`` in index type ``it``, once per call: the
    gathers that replace the CPU's scatter rounds read it (inv[i, m]: the output position whose
    tap i reads index m, or -1)."""
    return derived(("inv", n, np.dtype(it).str), tab, lambda t: inverse_taps(t, n).astype(it))


def is_device(a) -> bool:
    return not isinstance(a, (np.ndarray, np.generic)) and hasattr(a, "copy_to_host")


def dummy(ndim, dtype):
    return cuda.device_array((1,) * ndim, dtype=dtype, stream=stream())


# --------------------------------------------------------------------------- flat indices
# Every kernel walks a row-major flat index with a grid-stride loop; these split it back.
@cuda_jit(device=True)
def unravel4(t, n1, n2, n3):
    """(i0, i1, i2, i3) of the flat index t of a row-major (·, n1, n2, n3) grid."""
    i3 = t % n3
    r = t // n3
    i2 = r % n2
    r //= n2
    return r // n1, r % n1, i2, i3


@cuda_jit(device=True)
def unravel6(t, n1, n2, n3, n4, n5):
    """(i0, …, i5) of the flat index t of a row-major (·, n1, n2, n3, n4, n5) grid."""
    i5 = t % n5
    r = t // n5
    i4 = r % n4
    r //= n4
    i3 = r % n3
    r //= n3
    i2 = r % n2
    r //= n2
    return r // n1, r % n1, i2, i3, i4, i5


# --------------------------------------------------------------------------- phases
def _phase_taps(tab, period):
    """(taps [P, k], ntaps [P]): the taps of ``tab`` valid for at least one output ≡ ph
    (mod P), P = min(period, n_out), in ascending order."""
    k, n_out = tab.shape
    P = max(1, min(int(period), n_out))
    taps = np.full((P, k), -1, dtype=np.int64)
    ntaps = np.zeros(P, dtype=np.int64)
    for ph in range(P):
        live = np.nonzero((tab[:, ph::P] >= 0).any(axis=1))[0]
        taps[ph, : live.size] = live
        ntaps[ph] = live.size
    return np.concatenate([ntaps[:, None], taps], axis=1)


def phase_table(tab, period, it):
    """The device table ``ph[P, 1 + k]`` of a tap table by output phase: ph[y % P, 0] taps,
    listed in ph[y % P, 1:], can meet the input at output y (P = the stride for a transposed
    window, 1 otherwise). A thread then visits its phase's taps only — ≈ k/s of the k taps of
    a transposed window of stride s — instead of testing all k; the table test stays, for the
    border. Once per call, like inverse_table."""
    return derived(
        ("phase", int(period), np.dtype(it).str), tab, lambda t: _phase_taps(t, period).astype(it)
    )


def op_phases(geo, it):
    """(row, column) phase tables of an op's geometry (:func:`phase_table`, period: the stride
    of a transposed op, else 1)."""
    sy, sx = geo.stride if geo.transposed else (1, 1)
    return phase_table(geo.ty, sy, it), phase_table(geo.tx, sx, it)


def kernel_phases(geo, it):
    """(row, column) phase tables of packernel2d's geometry, as :func:`op_phases` (its stride
    is per spatial axis: the rows take the last leading axis's, as the folded op's do)."""
    st = tuple(geo.stride) if geo.transposed else (1,)
    sy, sx = (st[-2] if len(st) > 1 else 1), st[-1]
    return phase_table(geo.gy, sy, it), phase_table(geo.gx, sx, it)
