"""Joint bilateral upsampling as a direct sum over (high-res voxel, low-res sample) pairs.

Low-res sample n sits at high-res voxel n·f + o on every axis (o = (f − 1) // 2); output voxel
Y averages the samples within ``r_a`` on each axis a, weighted by
w_s(Y − n·f − o) · w_c(g_Y − g_(n·f+o)) · conf_n, w_s separable over the axes. The arrays come
folded (``docs/development.md``, "Volumes and signals"): the leading spatial axes are one axis
of rows, so a volume is an image of rows and a signal one row. Along the rows the samples in
reach of high-res row R are a table (``rtab[R, j]`` the folded low-res row, −1 when any axis has
none; ``rw[R, j]`` the product of the axes' w_s). Along the last axis, writing X = q·f + p (p
the phase), the samples in reach are n = q − m for the offsets m of phase p with
|m·f + p − o| ≤ r: a table per phase (``taps``, ``weights``, ``counts``). A voxel so visits
≈ Π_a (2r_a/f + 1) samples — the ones that exist — where the transposed PAC's window visits
Π_a (2r_a + 1) taps, most of them between samples.

The CPU walks folded output rows (prange over chunks of rows, one scratch row per chunk,
allocated by the launcher; a signal's few long rows are also cut into blocks of columns,
``config.UPSAMPLE_MIN_BLOCK_COLS``); within a row, the columns of one phase px read the guide
de-interleaved by phase (``gp[b, c, R, px, q]`` = g[b, c, R, q·f + px]) and the samples at unit
stride, so every inner loop is a contiguous, vectorisable run over q.
"""

import numba
import numpy as np
from numba import prange

from .. import config
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
def _rows(
    xx,
    gp,
    gs,
    rtab,
    rw,
    taps,
    weights,
    counts,
    out,
    acc,
    d2,
    tiny,
    neg_half,
    nan,
    n_chunks,
    n_blocks,
):
    B, C1, _, w = xx.shape
    Cg = gs.shape[1]
    H = gp.shape[2]
    f = gp.shape[3]
    C = C1 - 1
    items = B * H * n_blocks  # (row, block of columns) pairs
    for t in prange(n_chunks):
        a = acc[t]
        dd = d2[t]
        for item in range(t * items // n_chunks, (t + 1) * items // n_chunks):
            row = item // n_blocks
            k = item % n_blocks
            q0 = k * w // n_blocks  # low-res columns q0 ≤ q < q1 of this block
            q1 = (k + 1) * w // n_blocks
            b = row // H
            Y = row % H
            a[:] = 0
            for iy in range(rtab.shape[1]):
                ny = rtab[Y, iy]  # the folded low-res row; −1: none on some axis
                if ny < 0:
                    continue
                wy = rw[Y, iy]
                for px in range(f):
                    for ix in range(counts[px]):
                        # sample column q − m for the output columns q·f + px, lo ≤ q < hi
                        m = taps[px, ix]
                        lo = max(q0, m)
                        hi = min(q1, w + m)
                        if hi <= lo:
                            continue
                        n = hi - lo
                        dv = dd[:n]
                        _d2_first(dv, gp[b, 0, Y, px, lo:hi], gs[b, 0, ny, lo - m : hi - m], n)
                        for c in range(1, Cg):
                            _d2_add(dv, gp[b, c, Y, px, lo:hi], gs[b, c, ny, lo - m : hi - m], n)
                        _weigh(dv, n, wy * weights[px, ix], neg_half)
                        for c in range(C1):
                            _axpy(a[c, px, lo - q0 : hi - q0], dv, xx[b, c, ny, lo - m : hi - m], n)
            for c in range(C):
                for px in range(f):
                    for q in range(q1 - q0):
                        den = a[C, px, q]
                        v = nan
                        if den >= tiny:
                            v = a[c, px, q] / den
                        out[b, c, Y, (q0 + q) * f + px] = v
            if out.shape[1] > C:  # the weight sum asked for too
                for px in range(f):
                    for q in range(q1 - q0):
                        out[b, C, Y, (q0 + q) * f + px] = a[C, px, q]


def joint_upsample(xx, g, gs, f, rtab, rw, taps, weights, counts, out):
    """Write out [B, C, R, W] (W = w·f): Σ w·x / Σ w·conf over the samples in reach, NaN where
    that weight is below the dtype's smallest normal number; an ``out`` of C + 1 channels also
    gets the weight sum Σ w·conf in its last one. Every array is folded: the leading spatial
    axes are one axis of rows (R high-res rows, r low-res rows; a signal: one row).

    xx: [B, C + 1, r, w] values × confidence, then the confidence; g: [B, Cg, R, W] the guide
    divided by σ_c; gs: [B, Cg, r, w] the same guide at the samples' voxels (n·f + o on every
    axis); one float dtype for xx, g, gs and out. rtab / rw [R, J]: the low-res rows in reach
    of each high-res row (−1: none) and their w_s; taps / weights / counts: the last axis's
    per-phase tables (``pacnp.filters._phase_taps``): offsets m, w_s of each, how many per
    phase."""
    B, C1, _, w = xx.shape
    Cg, H = g.shape[1], g.shape[2]
    dt = xx.dtype
    # the guide de-interleaved by column phase: the contiguous rows the inner loops read
    gp = np.empty((B, Cg, H, f, w), dtype=dt)
    gp[...] = g.reshape(B, Cg, H, w, f).transpose(0, 1, 2, 4, 3)
    rows = B * H
    want = 4 * numba.get_num_threads()
    # too few rows to keep every thread busy (a signal): blocks of columns as well
    n_blocks = 1
    if rows < want:
        n_blocks = max(1, min(-(-want // rows), w // config.UPSAMPLE_MIN_BLOCK_COLS))
    n_chunks = max(1, min(rows * n_blocks, want))
    wb = -(-w // n_blocks)  # the longest block
    acc = np.empty((n_chunks, C1, f, wb), dtype=dt)
    d2 = np.empty((n_chunks, wb), dtype=dt)
    _rows(
        np.ascontiguousarray(xx),
        gp,
        np.ascontiguousarray(gs, dtype=dt),
        np.ascontiguousarray(rtab, dtype=np.int64),
        np.ascontiguousarray(rw, dtype=dt),
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
        n_blocks,
    )
