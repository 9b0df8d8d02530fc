"""The array operations the drivers (``pacnp._ops``) need besides the kernels, on the host.

The twin of ``pacnp.cuda.arrays`` (same names, same meaning; see ``pacnp._backend.Arrays``):
allocation, the fixed-order second pass of every reduction over partial buffers, in-place adds
and the layout maps of the gradients. NumPy does all of it here.
"""

from __future__ import annotations

import numpy as np


def empty(shape, dtype):
    return np.empty(shape, dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype)


def empty_like(a):
    return np.empty_like(a)


def zeros_like(a):
    return np.zeros_like(a)


def sum0(parts):
    """parts.sum(axis=0): the partial buffers of a reduction added in index order."""
    return parts.sum(axis=0)


def iadd(a, b):
    """a += b; returns a."""
    a += b
    return a


def add_bias(out, bias, y0, n):
    """out[:, :, y0:y0+n] += bias[None, :, None, None]."""
    out[:, :, y0 : y0 + n] += bias[None, :, None, None]


def channel_sum(g, n_chunks):
    """g.sum(axis=(0, 2, 3)) (``n_chunks``: the device's partial buffers; NumPy needs none)."""
    return g.sum(axis=(0, 2, 3))


def weight_grad(plan, dW):
    """A gradient of Wm ([Cout, C, kh, kw]) or w ([kh, kw]) in the layout of the weight."""
    return plan.weight_grad(dW)


def fold_param(rows, shape):
    """Sum per-row α/λ partials [rows, KC] in row order, then to the shape α/λ was given in."""
    per_channel = rows.sum(axis=0)
    if shape == () or shape == (1,) or per_channel.shape[0] != int(np.prod(shape)):
        return np.asarray(per_channel.sum(), dtype=rows.dtype).reshape(shape)
    return np.ascontiguousarray(per_channel.reshape(shape))
