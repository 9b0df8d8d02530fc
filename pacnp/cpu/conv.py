"""Dense PAC convolution (pacconv2d and pacconv_transpose2d), forward and backward.

Both ops are one computation over tap tables (see ``pacnp._core``):

    out[b, o, y, x] = Σ_{c,i,j} Wm[o, (c,i,j)] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

For a transposed convolution the caller passes the conv-transpose tap tables and the weights
rearranged to ``Wm[o, c, i, j] = weight[c, o, kh-1-i, kw-1-j]``. Per output row the modulated
patches form a (C·kh·kw × W_out) column block — bounded by one row, never C·k²·H·W — and the
channel contraction is one GEMM (BLAS) per row.
"""
import numpy as np
from numba import njit, prange

from .. import config

_par = dict(parallel=True, cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)
_seq = dict(cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)


@njit(**_seq)
def fill_columns(x, K, ty, tx, b, y, yk, cols):
    """cols[(c,i,j), xo] = K[b, c|0, i, j, yk, xo] · x[b, c, ty[i,y], tx[j,xo]] (0 on padding);
    ``yk`` is output row ``y`` within the (possibly partial) K."""
    C = x.shape[1]
    kc_many = K.shape[1] > 1
    kh = ty.shape[0]
    kw = tx.shape[0]
    Wo = cols.shape[1]
    for c in range(C):
        kc = c if kc_many else 0
        for i in range(kh):
            iy = ty[i, y]
            for j in range(kw):
                row = (c * kh + i) * kw + j
                if iy < 0:
                    for xo in range(Wo):
                        cols[row, xo] = 0.0
                    continue
                for xo in range(Wo):
                    ix = tx[j, xo]
                    if ix < 0:
                        cols[row, xo] = 0.0
                    else:
                        cols[row, xo] = K[b, kc, i, j, yk, xo] * x[b, c, iy, ix]


@njit(**_par)
def pac_dense_forward(x, K, Wm, bias, ty, tx, out, y0):
    """out[b, :, y, :] = Wm @ columns(b, y) + bias for the output rows y0 ≤ y < y0 + n that K
    (n rows, a stripe of the full kernel) covers; rows in parallel."""
    B = x.shape[0]
    C = x.shape[1]
    Cout, Wo = out.shape[1], out.shape[3]
    n = K.shape[4]
    kk = ty.shape[0] * tx.shape[0]
    has_bias = bias.shape[0] > 0
    for r in prange(B * n):
        b = r // n
        yk = r % n
        y = y0 + yk
        cols = np.empty((C * kk, Wo), dtype=x.dtype)
        fill_columns(x, K, ty, tx, b, y, yk, cols)
        res = np.dot(Wm, cols)
        for o in range(Cout):
            bo = bias[o] if has_bias else 0.0
            for xo in range(Wo):
                out[b, o, y, xo] = res[o, xo] + bo


@njit(**_par)
def pac_dense_backward_params(g, x, K, Wm, ty, tx, dK, dW_parts, db_parts, n_chunks, y0, need_k,
                              need_w, need_b):
    """Kernel, weight and bias gradients.

    dK has one writer per (b, y) row. Weight and bias gradients are reductions over all pixels:
    each of ``n_chunks`` fixed chunks of rows sums into its own partial buffer, in row
    order, and the caller adds the partials in chunk order — deterministic, no atomics.
    """
    B = x.shape[0]
    C = x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    n = K.shape[4]  # rows y0 .. y0+n-1 (K and dK are that stripe)
    kh = ty.shape[0]
    kw = tx.shape[0]
    kk = kh * kw
    kc_many = K.shape[1] > 1
    rows = B * n
    WmT = np.ascontiguousarray(Wm.T) if need_k else np.empty((0, 0), dtype=Wm.dtype)
    for ch in prange(n_chunks):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        cols = np.empty((C * kk, Wo), dtype=x.dtype)
        grow = np.empty((Cout, Wo), dtype=g.dtype)
        for r in range(r0, r1):
            b = r // n
            yk = r % n
            y = y0 + yk
            for o in range(Cout):
                for xo in range(Wo):
                    grow[o, xo] = g[b, o, y, xo]
            if need_b:
                for o in range(Cout):
                    acc = 0.0
                    for xo in range(Wo):
                        acc += grow[o, xo]
                    db_parts[ch, o] += acc
            if need_w:
                fill_columns(x, K, ty, tx, b, y, yk, cols)
                dW_parts[ch] += np.dot(grow, cols.T)
            if need_k:
                G = np.dot(WmT, grow)  # (C·kk × Wo): Σ_o W[o,c,t] g[o, xo]
                for i in range(kh):
                    iy = ty[i, y]
                    for j in range(kw):
                        t = i * kw + j
                        for xo in range(Wo):
                            ix = tx[j, xo]
                            if kc_many:
                                for c in range(C):
                                    v = 0.0
                                    if iy >= 0 and ix >= 0:
                                        v = G[c * kk + t, xo] * x[b, c, iy, ix]
                                    dK[b, c, i, j, yk, xo] = v
                            else:
                                v = 0.0
                                if iy >= 0 and ix >= 0:
                                    for c in range(C):
                                        v += G[c * kk + t, xo] * x[b, c, iy, ix]
                                dK[b, 0, i, j, yk, xo] = v


@njit(**_par)
def pac_dense_backward_input(g, K, WmT_taps, iy_inv, tx, dx, y0, n0, n1):
    """dx += the part of the input gradient that flows from the output rows K covers
    (y0 ≤ y < y0 + K.shape[4]), for input rows n0 ≤ n < n1.

    A gather over input rows: input row n receives from output row y = iy_inv[i, n] through tap
    i; within that row, tap j of output column xo lands on column tx[j, xo]. WmT_taps[i, j] is
    the (C × Cout) weight matrix of tap (i, j). Stripes are run one after another, so rows that
    several stripes reach simply accumulate.
    """
    B, C, Hin, Win = dx.shape
    Cout, Wo = g.shape[1], g.shape[3]
    n_k = K.shape[4]
    kh = iy_inv.shape[0]
    kw = tx.shape[0]
    kc_many = K.shape[1] > 1
    m = n1 - n0
    for r in prange(B * m):
        b = r // m
        n = n0 + r % m
        acc = np.zeros((C, Win), dtype=dx.dtype)
        grow = np.empty((Cout, Wo), dtype=g.dtype)
        for i in range(kh):
            y = iy_inv[i, n]
            yk = y - y0
            if y < 0 or yk < 0 or yk >= n_k:
                continue
            for o in range(Cout):
                for xo in range(Wo):
                    grow[o, xo] = g[b, o, y, xo]
            for j in range(kw):
                h = np.dot(WmT_taps[i, j], grow)  # (C × Wo)
                for xo in range(Wo):
                    ix = tx[j, xo]
                    if ix < 0:
                        continue
                    if kc_many:
                        for c in range(C):
                            acc[c, ix] += K[b, c, i, j, yk, xo] * h[c, xo]
                    else:
                        kv = K[b, 0, i, j, yk, xo]
                        for c in range(C):
                            acc[c, ix] += kv * h[c, xo]
        for c in range(C):
            for ix in range(Win):
                dx[b, c, n, ix] += acc[c, ix]
