"""The array operations the drivers (``pacnp._ops``) need besides the kernels, on the device.

Same names and meaning as the NumPy versions in ``pacnp.cpu.arrays``: allocation, fixed-
order reductions of partial buffers (the second pass of every weight / bias / α / λ / smoothing-
kernel gradient: each output element sums its partials in index order, one thread per element —
deterministic, no atomics), in-place adds and layout gathers. Everything runs on the stream of
the current call (``_launch.launch``); nothing is copied to the host.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._core import FLOAT_DTYPES
from .._jit import cuda_jit
from ._launch import index_dtype, run, stream, unravel4, unravel6, upload


# --------------------------------------------------------------------------- kernels
@cuda_jit()
def _fill(a, value):
    for t in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[t] = value


@cuda_jit()
def _copy1(src, dst):
    for t in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[t] = src[t]


@cuda_jit()
def _copy2(src, dst):
    n1 = dst.shape[1]
    for t in range(cuda.grid(1), dst.shape[0] * n1, cuda.gridsize(1)):
        dst[t // n1, t % n1] = src[t // n1, t % n1]


@cuda_jit()
def _copy4(src, dst):
    n0, n1, n2, n3 = dst.shape
    for t in range(cuda.grid(1), n0 * n1 * n2 * n3, cuda.gridsize(1)):
        i0, i1, i2, i3 = unravel4(t, n1, n2, n3)
        dst[i0, i1, i2, i3] = src[i0, i1, i2, i3]


@cuda_jit()
def _copy6(src, dst):
    n0, n1, n2, n3, n4, n5 = dst.shape
    for t in range(cuda.grid(1), n0 * n1 * n2 * n3 * n4 * n5, cuda.gridsize(1)):
        i0, i1, i2, i3, i4, i5 = unravel6(t, n1, n2, n3, n4, n5)
        dst[i0, i1, i2, i3, i4, i5] = src[i0, i1, i2, i3, i4, i5]


_COPY = {1: _copy1, 2: _copy2, 4: _copy4, 6: _copy6}


@cuda_jit()
def _sum0(parts, out):
    """out[j] = Σ_r parts[r, j], r in increasing order (one thread per j)."""
    n, m = parts.shape
    for j in range(cuda.grid(1), m, cuda.gridsize(1)):
        acc = parts[0, j]
        for r in range(1, n):
            acc += parts[r, j]
        out[j] = acc


@cuda_jit()
def _iadd(a, b):
    for t in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[t] += b[t]


@cuda_jit()
def _add_bias(out, bias, y0, n):
    B, C, _, W = out.shape
    for t in range(cuda.grid(1), B * C * n * W, cuda.gridsize(1)):
        x = t % W
        r = t // W
        y = y0 + r % n
        r //= n
        c = r % C
        out[r // C, c, y, x] += bias[c]


@cuda_jit()
def _channel_parts(g, parts):
    """parts[ch, c] = Σ over the (b, y) rows of chunk ch, in order, of Σ_x g[b, c, y, x]."""
    B, C, H, W = g.shape
    n_chunks = parts.shape[0]
    rows = B * H
    for t in range(cuda.grid(1), n_chunks * C, cuda.gridsize(1)):
        c = t % C
        ch = t // C
        acc = parts[ch, c] * 0
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = r // H
            y = r % H
            for x in range(W):
                acc += g[b, c, y, x]
        parts[ch, c] = acc


@cuda_jit()
def _gather(src, idx, dst):
    for t in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[t] = src[idx[t]]


# --------------------------------------------------------------------------- operations
def empty(shape, dtype):
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype), stream=stream())


def zeros(shape, dtype):
    a = empty(shape, dtype)
    if a.size:
        flat = a.reshape(a.size)
        run(_fill, a.size, flat, flat.dtype.type(0))
    return a


def empty_like(a):
    return empty(a.shape, a.dtype)


def zeros_like(a):
    return zeros(a.shape, a.dtype)


def _flat(a):
    return a.reshape(a.size)


def contiguous(a, dtype=None):
    """C-contiguous device array of ``dtype`` (default: a's); ``a`` itself when it already is
    one. Strided, negative-stride and float16 inputs are copied (and cast) by one kernel."""
    dtype = np.dtype(a.dtype if dtype is None else dtype)
    if a.dtype == dtype and a.is_c_contiguous():
        return a
    out = empty(a.shape, dtype)
    if a.size == 0:
        return out
    if a.ndim == 0:
        a, view = a.reshape(1), out.reshape(1)
    else:
        view = out
    kernel = _COPY.get(view.ndim)
    if kernel is None:
        raise TypeError(
            f"pacnp (CUDA): cannot copy a {a.ndim}-D device array; pacnp's arrays "
            f"are 0-, 1-, 2-, 4- or 6-D"
        )
    run(kernel, a.size, a, view)
    return out


def to_host(a):
    """Host copy of a (small) device array: the parameter arrays _core validates on the host."""
    out = contiguous(a).copy_to_host(stream=stream())
    stream().synchronize()  # the host reads it next: the copy must have landed
    return out


def cast(a, dtype):
    """Contiguous copy of ``a`` in ``dtype`` (the float32 → float16 of half-precision results)."""
    return contiguous(a, dtype)


def sum0(parts):
    """parts.sum(axis=0) in a fixed order; parts is (n, ...) contiguous, or a strided 2-D view."""
    n = parts.shape[0]
    rest = parts.shape[1:]
    m = int(np.prod(rest)) if rest else 1
    two = parts if parts.ndim == 2 else contiguous(parts).reshape(n, m)
    out = empty((m,), parts.dtype)
    if n == 0:
        run(_fill, m, out, out.dtype.type(0))
    else:
        run(_sum0, m, two, out)
    return out.reshape(rest) if rest else out.reshape(())


def iadd(a, b):
    """a += b for two contiguous arrays of one shape."""
    run(_iadd, a.size, _flat(a), _flat(contiguous(b)))
    return a


def add_bias(out, bias, y0, n):
    """out[:, :, y0:y0+n] += bias[None, :, None, None]."""
    B, C, _, W = out.shape
    run(_add_bias, B * C * n * W, out, upload(bias), y0, n)


def channel_sum(g, n_chunks):
    """g.sum(axis=(0, 2, 3)): per-chunk partials over rows, then the fixed-order second pass."""
    B, C, H, _ = g.shape
    n_chunks = max(1, min(n_chunks, B * H))
    parts = zeros((n_chunks, C), g.dtype)
    run(_channel_parts, n_chunks * C, g, parts)
    return sum0(parts)


def weight_grad(plan, dW):
    """plan.weight_grad for a device dW: the layout map (transpose, flips) is a permutation that
    ``_core`` computes on an index array; one gather applies it on the device."""
    idx = plan.weight_grad(np.arange(dW.size).reshape(dW.shape))
    out = empty(idx.shape, dW.dtype)
    flat_idx = upload(idx.reshape(-1), index_dtype(dW.size))
    run(_gather, out.size, _flat(contiguous(dW)), flat_idx, _flat(out))
    return out


def fold_param(rows, shape):
    """Per-row α/λ partials [rows, KC] → the shape α/λ was given in (as
    ``pacnp.cpu.arrays.fold_param``)."""
    per_channel = sum0(rows)
    kc = per_channel.shape[0]
    if shape == () or shape == (1,) or kc != int(np.prod(shape)):
        return sum0(per_channel.reshape(kc, 1)).reshape(shape)
    return per_channel.reshape(shape)


def is_float(dtype) -> bool:
    return np.dtype(dtype) in FLOAT_DTYPES
