"""Depthwise PAC (pacpool2d, and pacconv2d / pacconv_transpose2d with shared_filters), forward
and backward:

    out[b, c, y, x] = Σ_{i,j} w[i, j] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

Pooling is w ≡ 1. Tap tables as in ``pacnp._core``; transposed ops pass conv-transpose tables
and the spatially flipped filter.
"""
import numpy as np
from numba import njit, prange

from .. import config
from .common import unit_runs

_par = dict(parallel=True, cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)
_seq = dict(cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)
ROW_BLOCKS = config.ROW_BLOCKS


@njit(**_seq, inline="always")
def accumulate_run(acc, c, wv, K, x, b, kc, i, j, yk, iy, lo, hi, base):
    """acc[c, X] += w·K·x over the unit-stride run lo ≤ X < hi of tap (i, j) (input column
    base + X), in the loop form LLVM vectorises (see pacnp.cpu.conv.modulate_run)."""
    n = hi - lo
    ox = base + lo
    if lo < 0 or ox < 0 or iy < 0:
        return
    for t in range(n):
        acc[c, lo + t] += wv * K[b, kc, i, j, yk, lo + t] * x[b, c, iy, ox + t]


@njit(**_par)
def pac_depthwise_forward(x, K, w, ty, tx, out, y0):
    """Output rows y0 ≤ y < y0 + K.shape[4] (K may be a stripe of the full kernel).

    One (image, output row) per iteration with every channel in it, tap-major: a tap's K row is
    read once and used for all channels while it sits in L1 (a channel-major loop re-reads
    the whole k²·W_out kernel of the row once per channel)."""
    B, C = x.shape[0], x.shape[1]
    Wo = out.shape[3]
    n = K.shape[4]
    kh, kw = ty.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    jrun = np.empty((kw, 3), dtype=np.int64)
    unit_runs(tx, jrun)
    rows = B * n
    blocks = min(rows, ROW_BLOCKS)
    for blk in prange(blocks):
        acc = np.empty((C, Wo), dtype=out.dtype)
        for r in range(blk * rows // blocks, (blk + 1) * rows // blocks):
            b = r // n
            yk = r % n
            y = y0 + yk
            for c in range(C):
                for xo in range(Wo):
                    acc[c, xo] = 0.0
            for i in range(kh):
                iy = ty[i, y]
                if iy < 0:
                    continue
                for j in range(kw):
                    wv = w[i, j]
                    lo, hi, base = jrun[j, 0], jrun[j, 1], jrun[j, 2]
                    for c in range(C):
                        kc = c if kc_many else 0
                        if lo >= 0:
                            accumulate_run(acc, c, wv, K, x, b, kc, i, j, yk, iy, lo, hi, base)
                            continue
                        for xo in range(Wo):
                            ix = tx[j, xo]
                            if ix >= 0:
                                acc[c, xo] += wv * K[b, kc, i, j, yk, xo] * x[b, c, iy, ix]
            for c in range(C):
                for xo in range(Wo):
                    out[b, c, y, xo] = acc[c, xo]


@njit(**_par)
def pac_depthwise_backward_params(g, x, K, w, ty, tx, dK, dw_parts, n_chunks, y0, need_k,
                                  need_w):
    """dK (one writer per row) and dw (fixed chunks of rows into partial buffers; the caller
    adds them in chunk order, so the result is deterministic)."""
    B, C = x.shape[0], x.shape[1]
    Wo = g.shape[3]
    n = K.shape[4]
    kh, kw = ty.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    rows = B * n
    for ch in prange(n_chunks):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        for r in range(r0, r1):
            b = r // n
            yk = r % n
            y = y0 + yk
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
                                    dK[b, c, i, j, yk, xo] = wv * t
                                dwacc += K[b, c, i, j, yk, xo] * t
                        else:
                            t = 0.0
                            if valid:
                                for c in range(C):
                                    t += g[b, c, y, xo] * x[b, c, iy, ix]
                            if need_k:
                                dK[b, 0, i, j, yk, xo] = wv * t
                            dwacc += K[b, 0, i, j, yk, xo] * t
                    if need_w:
                        dw_parts[ch, i, j] += dwacc


@njit(**_par)
def pac_depthwise_backward_input(g, K, w, iy_inv, tx, dx, y0, n0, n1):
    """dx += the gradient flowing from the output rows K covers, for input rows n0 ≤ n < n1
    (a gather, see pacnp.cpu.conv.pac_dense_backward_input)."""
    B, C, Hin, Win = dx.shape
    Wo = g.shape[3]
    n_k = K.shape[4]
    kh, kw = iy_inv.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    m = n1 - n0
    for r in prange(B * C * m):
        b = r // (C * m)
        c = (r // m) % C
        n = n0 + r % m
        kc = c if kc_many else 0
        acc = np.zeros(Win, dtype=dx.dtype)
        for i in range(kh):
            y = iy_inv[i, n]
            yk = y - y0
            if y < 0 or yk < 0 or yk >= n_k:
                continue
            for j in range(kw):
                wv = w[i, j]
                for xo in range(Wo):
                    ix = tx[j, xo]
                    if ix >= 0:
                        acc[ix] += wv * K[b, kc, i, j, yk, xo] * g[b, c, y, xo]
        for ix in range(Win):
            dx[b, c, n, ix] += acc[ix]
