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
def row_taps(ty, y, taps):
    """The row taps i valid for output row y (ty[i, y] ≥ 0) into ``taps``; returns how many."""
    n = 0
    for i in range(ty.shape[0]):
        if ty[i, y] >= 0:
            taps[n] = i
            n += 1
    return n


@njit(**_seq)
def phase_columns(x, K, ty, tx, pcols, pncols, ptaps, pntaps, b, y, yk, ph, itaps, n_i, buf, idx):
    """The column block of output row y, phase ph: only the taps that can be valid there.

    Output columns are grouped into phases (for a transposed convolution of stride s, the
    columns X ≡ ph mod s; for a convolution, one phase holding every column); a phase's columns
    share their valid column taps ``ptaps[ph]``, and the row's valid row taps are ``itaps``.
    Writes cols[(c,ii,jj), q] = K[b,c|0,i,j,yk,X] · x[b,c,ty[i,y],tx[j,X]] for X = pcols[ph,q]
    into ``buf`` (as an (m × nx) block, returned) and the matching column of Wm into ``idx``.
    Skipping the taps that fall between the samples of a zero-inserted input saves s² of the
    work of a transposed convolution, and keeps a non-finite weight out of outputs it never
    reaches (no NaN·0).
    """
    C = x.shape[1]
    kc_many = K.shape[1] > 1
    kw = tx.shape[0]
    kk = ty.shape[0] * kw
    nx = pncols[ph]
    nj = pntaps[ph]
    m = C * n_i * nj
    cols = buf[:m * nx].reshape(m, nx)
    for c in range(C):
        kc = c if kc_many else 0
        for ii in range(n_i):
            i = itaps[ii]
            iy = ty[i, y]
            for jj in range(nj):
                j = ptaps[ph, jj]
                row = (c * n_i + ii) * nj + jj
                idx[row] = c * kk + i * kw + j
                for q in range(nx):
                    X = pcols[ph, q]
                    ix = tx[j, X]
                    if ix < 0:
                        cols[row, q] = 0.0
                    else:
                        cols[row, q] = K[b, kc, i, j, yk, X] * x[b, c, iy, ix]
    return cols


@njit(**_par)
def pac_dense_forward(x, K, Wm, bias, ty, tx, pcols, pncols, ptaps, pntaps, out, y0):
    """out[b, :, y, :] = Wm @ columns(b, y) + bias for the output rows y0 ≤ y < y0 + n that K
    (n rows, a stripe of the full kernel) covers; rows in parallel, one GEMM per phase."""
    B = x.shape[0]
    C = x.shape[1]
    Cout, Wo = out.shape[1], out.shape[3]
    n = K.shape[4]
    kh = ty.shape[0]
    kk = kh * tx.shape[0]
    has_bias = bias.shape[0] > 0
    for r in prange(B * n):
        b = r // n
        yk = r % n
        y = y0 + yk
        buf = np.empty(C * kk * Wo, dtype=x.dtype)
        wbuf = np.empty(Cout * C * kk, dtype=x.dtype)
        idx = np.empty(C * kk, dtype=np.int64)
        itaps = np.empty(kh, dtype=np.int64)
        n_i = row_taps(ty, y, itaps)
        for ph in range(pncols.shape[0]):
            cols = phase_columns(x, K, ty, tx, pcols, pncols, ptaps, pntaps, b, y, yk, ph,
                                 itaps, n_i, buf, idx)
            m, nx = cols.shape
            if m == C * kk:
                res = np.dot(Wm, cols)
            else:
                Wsub = wbuf[:Cout * m].reshape(Cout, m)
                for o in range(Cout):
                    for row in range(m):
                        Wsub[o, row] = Wm[o, idx[row]]
                res = np.dot(Wsub, cols)
            for o in range(Cout):
                bo = bias[o] if has_bias else 0.0
                for q in range(nx):
                    out[b, o, y, pcols[ph, q]] = (res[o, q] if m > 0 else 0.0) + bo


@njit(**_par)
def pac_dense_backward_params(g, x, K, ty, tx, pcols, pncols, ptaps, pntaps, dW_parts, db_parts,
                              n_chunks, y0, need_w, need_b):
    """Weight and bias gradients from the output rows y0 ≤ y < y0 + K.shape[4].

    Reductions over all pixels: each of ``n_chunks`` fixed chunks of rows sums into its own
    partial buffer, in row order, and the caller adds the partials in chunk order —
    deterministic, no atomics.
    """
    B = x.shape[0]
    C = x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    n = K.shape[4]
    kh = ty.shape[0]
    kk = kh * tx.shape[0]
    rows = B * n
    for ch in prange(n_chunks):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        buf = np.empty(C * kk * Wo, dtype=x.dtype)
        gbuf = np.empty(Cout * Wo, dtype=g.dtype)
        idx = np.empty(C * kk, dtype=np.int64)
        itaps = np.empty(kh, dtype=np.int64)
        for r in range(r0, r1):
            b = r // n
            yk = r % n
            y = y0 + yk
            if need_b:
                for o in range(Cout):
                    acc = 0.0
                    for xo in range(Wo):
                        acc += g[b, o, y, xo]
                    db_parts[ch, o] += acc
            if not need_w:
                continue
            n_i = row_taps(ty, y, itaps)
            for ph in range(pncols.shape[0]):
                cols = phase_columns(x, K, ty, tx, pcols, pncols, ptaps, pntaps, b, y, yk, ph,
                                     itaps, n_i, buf, idx)
                m, nx = cols.shape
                if m == 0:
                    continue
                gph = gbuf[:Cout * nx].reshape(Cout, nx)
                for o in range(Cout):
                    for q in range(nx):
                        gph[o, q] = g[b, o, y, pcols[ph, q]]
                part = np.dot(gph, cols.T)  # (Cout × m)
                for o in range(Cout):
                    for row in range(m):
                        dW_parts[ch, o, idx[row]] += part[o, row]


@njit(**_par)
def pac_dense_backward_data(g, x, K, WmT, ty, tx, dx, dK, y0, rnd, R, need_x, need_k):
    """Input and kernel gradients from the output rows y0 ≤ y < y0 + K.shape[4] with
    y ≡ rnd (mod R).

    One GEMM per output row, G = Wmᵀ · g[b, :, y, :] (C·kh·kw × W_out), serves both:
    dK[t, x] = Σ_c G[(c,t), x] · x[c, tap t of (y, x)] (one writer per row), and
    dx[c, tap t of (y, x)] += K[t, x] · G[(c,t), x] (a scatter). The caller runs the rounds
    rnd = 0..R-1 one after another with R such that rows of one round touch disjoint input rows,
    so the scatter has no races and every input pixel sums its contributions in a fixed order.
    """
    B, C = x.shape[0], x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    KC, kh, kw, n = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    kk = kh * kw
    first = y0 + (rnd - y0) % R
    cnt = 0 if first >= y0 + n else (y0 + n - 1 - first) // R + 1
    for q in prange(B * cnt):
        b = q // cnt
        y = first + (q % cnt) * R
        yk = y - y0
        grow = np.empty((Cout, Wo), dtype=g.dtype)
        for o in range(Cout):
            for xo in range(Wo):
                grow[o, xo] = g[b, o, y, xo]
        G = np.dot(WmT, grow)
        acc = np.zeros((KC, kh, kw, Wo) if need_k else (0, 0, 0, 0), dtype=K.dtype)
        for c in range(C):  # one walk over the taps serves both gradients
            kc = c if KC > 1 else 0
            for i in range(kh):
                iy = ty[i, y]
                if iy < 0:
                    continue
                for j in range(kw):
                    row = c * kk + i * kw + j
                    for xo in range(Wo):
                        ix = tx[j, xo]
                        if ix >= 0:
                            if need_k:
                                acc[kc, i, j, xo] += G[row, xo] * x[b, c, iy, ix]
                            if need_x:
                                dx[b, c, iy, ix] += K[b, kc, i, j, yk, xo] * G[row, xo]
        if need_k:
            for kc in range(KC):
                for i in range(kh):
                    for j in range(kw):
                        for xo in range(Wo):
                            dK[b, kc, i, j, yk, xo] = acc[kc, i, j, xo]
