"""Joint bilateral upsampling as a direct sum over (high-res pixel, low-res sample) pairs.

Low-res sample n sits at high-res pixel n·f + o (o = (f − 1) // 2); output pixel Y averages the
samples within ``r`` (per axis) weighted by w_s(Y − n·f − o) · w_c(g_Y − g_(n·f+o)) · conf_n.
Writing Y = q·f + p (p the phase), the samples in reach are n = q − m for the offsets m of the
phase p with |m·f + p − o| ≤ r: a table per phase (``taps``, ``weights``, ``counts``, the same
for both axes since w_s is separable), so a pixel visits ≈ (2r/f + 1)² samples — the ones that
exist — where the transposed PAC's window visits (2r + 1)² taps, most of them between samples.

The CPU walks output rows (prange over chunks of rows, one scratch row per chunk, allocated by
the launcher); within a row, the columns of one phase px read the guide de-interleaved by phase
(``gp[b, c, Y, px, q]`` = g[b, c, Y, q·f + px]) and the samples at unit stride, so every inner
loop is a contiguous, vectorisable run over q.
"""

import numba
import numpy as np
from numba import prange

from .._jit import njit
from .common import vexp


# The inner loops run over views that start at index 0 with a length: numba wraps negative
# indices, and a loop from a run-time start (``range(lo, hi)``) keeps that select, which stops
# LLVM from vectorising it (measured: 16× slower, exp included).
@njit(inline="always")
def _d2_first(dd, g, s, n):
    for k in range(n):
        e = g[k] - s[k]
        dd[k] = e * e


@njit(inline="always")
def _d2_add(dd, g, s, n):
    for k in range(n):
        e = g[k] - s[k]
        dd[k] += e * e


@njit(inline="always")
def _weigh(dd, n, wsp, neg_half):
    for k in range(n):
        dd[k] = wsp * vexp(neg_half * dd[k])


@njit(inline="always")
def _axpy(acc, dd, x, n):
    for k in range(n):
        acc[k] += dd[k] * x[k]


@njit(parallel=True)
def _rows(xx, gp, gs, taps, weights, counts, out, acc, d2, tiny, neg_half, nan, n_chunks):
    B, C1, h, w = xx.shape
    Cg = gs.shape[1]
    H = gp.shape[2]
    f = gp.shape[3]
    C = C1 - 1
    rows = B * H
    for t in prange(n_chunks):
        a = acc[t]
        dd = d2[t]
        for row in range(t * rows // n_chunks, (t + 1) * rows // n_chunks):
            b = row // H
            Y = row % H
            qy = Y // f
            py = Y % f
            a[:] = 0
            for iy in range(counts[py]):
                ny = qy - taps[py, iy]
                if ny < 0 or ny >= h:
                    continue
                wy = weights[py, iy]
                for px in range(f):
                    for ix in range(counts[px]):
                        # sample column q − m for the output columns q·f + px, lo ≤ q < hi
                        m = taps[px, ix]
                        lo = max(0, m)
                        hi = min(w, w + m)
                        if hi <= lo:
                            continue
                        n = hi - lo
                        dv = dd[:n]
                        _d2_first(dv, gp[b, 0, Y, px, lo:hi], gs[b, 0, ny, lo - m : hi - m], n)
                        for c in range(1, Cg):
                            _d2_add(dv, gp[b, c, Y, px, lo:hi], gs[b, c, ny, lo - m : hi - m], n)
                        _weigh(dv, n, wy * weights[px, ix], neg_half)
                        for c in range(C1):
                            _axpy(a[c, px, lo:hi], dv, xx[b, c, ny, lo - m : hi - m], n)
            for c in range(C):
                for px in range(f):
                    for q in range(w):
                        den = a[C, px, q]
                        v = nan
                        if den >= tiny:
                            v = a[c, px, q] / den
                        out[b, c, Y, q * f + px] = v
            if out.shape[1] > C:  # the weight sum asked for too
                for px in range(f):
                    for q in range(w):
                        out[b, C, Y, q * f + px] = a[C, px, q]


def joint_upsample(xx, g, f, o, taps, weights, counts, out):
    """Write out [B, C, H, W] (H = h·f, W = w·f): Σ w·x / Σ w·conf over the samples in reach,
    NaN where that weight is below the dtype's smallest normal number; an ``out`` of C + 1
    channels also gets the weight sum Σ w·conf in its last one.

    xx: [B, C + 1, h, w] values × confidence, then the confidence; g: [B, Cg, H, W] the guide
    divided by σ_c (one float dtype, as xx and out); taps / weights / counts: the per-phase
    tables (``pacnp.filters._phase_taps``): offsets m, w_s of each, how many per phase."""
    B, C1, h, w = xx.shape
    Cg, H = g.shape[1], g.shape[2]
    dt = xx.dtype
    # the guide de-interleaved by column phase and sampled at the low-res positions: the two
    # contiguous rows the inner loops read
    gp = np.empty((B, Cg, H, f, w), dtype=dt)
    gp[...] = g.reshape(B, Cg, H, w, f).transpose(0, 1, 2, 4, 3)
    gs = np.ascontiguousarray(g[:, :, o::f, o::f][:, :, :h, :w])
    rows = B * H
    n_chunks = max(1, min(rows, 4 * numba.get_num_threads()))
    acc = np.empty((n_chunks, C1, f, w), dtype=dt)
    d2 = np.empty((n_chunks, w), dtype=dt)
    _rows(
        np.ascontiguousarray(xx),
        gp,
        gs,
        np.ascontiguousarray(taps, dtype=np.int64),
        np.ascontiguousarray(weights, dtype=dt),
        np.ascontiguousarray(counts, dtype=np.int64),
        out,
        acc,
        d2,
        dt.type(np.finfo(dt).tiny),
        dt.type(-0.5),
        dt.type(np.nan),
        n_chunks,
    )
