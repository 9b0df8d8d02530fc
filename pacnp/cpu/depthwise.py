"""Depthwise PAC (pacpool2d, and pacconv2d / pacconv_transpose2d with shared_filters), forward
and backward:

    out[b, c, y, x] = Σ_{i,j} w[i, j] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

Pooling is w ≡ 1. Tap tables as in ``pacnp._core``; transposed ops pass conv-transpose tables
and the spatially flipped filter.
"""
import numpy as np
from numba import njit, prange

from .. import config

_par = dict(parallel=True, cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)


@njit(**_par)
def pac_depthwise_forward(x, K, w, ty, tx, out):
    B, C = x.shape[0], x.shape[1]
    Ho, Wo = out.shape[2], out.shape[3]
    kh, kw = ty.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    for r in prange(B * C * Ho):
        b = r // (C * Ho)
        c = (r // Ho) % C
        y = r % Ho
        kc = c if kc_many else 0
        acc = np.zeros(Wo, dtype=out.dtype)
        for i in range(kh):
            iy = ty[i, y]
            if iy < 0:
                continue
            for j in range(kw):
                wv = w[i, j]
                for xo in range(Wo):
                    ix = tx[j, xo]
                    if ix >= 0:
                        acc[xo] += wv * K[b, kc, i, j, y, xo] * x[b, c, iy, ix]
        for xo in range(Wo):
            out[b, c, y, xo] = acc[xo]


@njit(**_par)
def pac_depthwise_backward_params(g, x, K, w, ty, tx, dK, dw_parts, n_chunks, need_k, need_w):
    """dK (one writer per row) and dw (fixed chunks of rows into partial buffers; the caller
    adds them in chunk order, so the result is deterministic)."""
    B, C = x.shape[0], x.shape[1]
    Ho, Wo = g.shape[2], g.shape[3]
    kh, kw = ty.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    rows = B * Ho
    for ch in prange(n_chunks):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        for r in range(r0, r1):
            b = r // Ho
            y = r % Ho
            for i in range(kh):
                iy = ty[i, y]
                for j in range(kw):
                    wv = w[i, j]
                    dwacc = 0.0
                    for xo in range(Wo):
                        ix = tx[j, xo]
                        valid = iy >= 0 and ix >= 0
                        if kc_many:
                            for c in range(C):
                                t = g[b, c, y, xo] * x[b, c, iy, ix] if valid else 0.0
                                if need_k:
                                    dK[b, c, i, j, y, xo] = wv * t
                                dwacc += K[b, c, i, j, y, xo] * t
                        else:
                            t = 0.0
                            if valid:
                                for c in range(C):
                                    t += g[b, c, y, xo] * x[b, c, iy, ix]
                            if need_k:
                                dK[b, 0, i, j, y, xo] = wv * t
                            dwacc += K[b, 0, i, j, y, xo] * t
                    if need_w:
                        dw_parts[ch, i, j] += dwacc


@njit(**_par)
def pac_depthwise_backward_input(g, K, w, iy_inv, tx, dx):
    """dx as a gather over input rows (see pacnp.cpu.conv.pac_dense_backward_input)."""
    B, C, Hin, Win = dx.shape
    Wo = g.shape[3]
    kh, kw = iy_inv.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    for r in prange(B * C * Hin):
        b = r // (C * Hin)
        c = (r // Hin) % C
        n = r % Hin
        kc = c if kc_many else 0
        acc = np.zeros(Win, dtype=dx.dtype)
        for i in range(kh):
            y = iy_inv[i, n]
            if y < 0:
                continue
            for j in range(kw):
                wv = w[i, j]
                for xo in range(Wo):
                    ix = tx[j, xo]
                    if ix >= 0:
                        acc[ix] += wv * K[b, kc, i, j, y, xo] * g[b, c, y, xo]
        for ix in range(Win):
            dx[b, c, n, ix] = acc[ix]
