"""Joint bilateral upsampling on the GPU: the twin of ``pacnp.cpu.upsample`` (the same launcher
and arguments, arrays folded to rows). One thread per output voxel (folded row, column) visits
the samples of its row table and its column phase's tables; the channels are summed one at a
time (no per-thread array of runtime length), each pass recomputing the weights — cheap next
to a launch, and identical sums on every channel.
"""

import math

import numpy as np
from numba import cuda

from .._jit import cuda_jit
from ._launch import run, upload


@cuda_jit()
def _upsample(xx, g, gs, f, rtab, rw, taps, weights, counts, out, tiny, neg_half, nan, zero):
    B, C1, _, w = xx.shape
    Cg, H, W = g.shape[1], g.shape[2], g.shape[3]
    C = C1 - 1
    for t in range(cuda.grid(1), B * H * W, cuda.gridsize(1)):
        X = t % W
        r = t // W
        Y = r % H  # the folded high-res row
        b = r // H
        qx, px = X // f, X % f
        den = zero
        for c in range(C):  # every pass sums the same den
            num = zero
            den = zero
            for iy in range(rtab.shape[1]):
                ny = rtab[Y, iy]  # the folded low-res row; −1: none on some axis
                if ny < 0:
                    continue
                for ix in range(counts[px]):
                    nx = qx - taps[px, ix]
                    if nx < 0 or nx >= w:
                        continue
                    d2 = zero
                    for k in range(Cg):
                        e = g[b, k, Y, X] - gs[b, k, ny, nx]
                        d2 += e * e
                    wt = rw[Y, iy] * weights[px, ix] * math.exp(neg_half * d2)
                    num += wt * xx[b, c, ny, nx]
                    den += wt * xx[b, C, ny, nx]
            v = nan
            if den >= tiny:
                v = num / den
            out[b, c, Y, X] = v
        if out.shape[1] > C:  # the weight sum Σ w·conf asked for too
            out[b, C, Y, X] = den


def joint_upsample(xx, g, gs, f, rtab, rw, taps, weights, counts, out):
    """See ``pacnp.cpu.upsample.joint_upsample``: xx, g, gs, out on the device (any array
    with ``__cuda_array_interface__``, folded as there), the tables NumPy (uploaded once per
    call)."""
    dt = np.dtype(out.dtype)
    _, _, H, W = g.shape
    B = xx.shape[0]
    run(
        _upsample,
        B * H * W,
        xx,
        g,
        gs,
        int(f),
        upload(np.ascontiguousarray(rtab, dtype=np.int64)),
        upload(np.ascontiguousarray(rw, dtype=dt)),
        upload(np.ascontiguousarray(taps, dtype=np.int64)),
        upload(np.ascontiguousarray(weights, dtype=dt)),
        upload(np.ascontiguousarray(counts, dtype=np.int64)),
        out,
        dt.type(np.finfo(dt).tiny),
        dt.type(-0.5),
        dt.type(np.nan),
        dt.type(0),
    )
