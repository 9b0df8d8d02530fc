"""packernel2d forward and backward: the adapting kernel K of Su et al. 2019, Eq. 3.

Notation (docs/semantics.md): for output pixel (y, x) and tap (i, j) the guide is read at
(gy[i,y], gx[j,x]) (-1: invalid tap, K = 0 there); the centre feature f_i is
src[b, :, cy[y], cx[x]] (src: the guide, or the smoothed guide); Δ_c = guide[.., c, P] - f_i,c.

    gaussian : Kraw = exp(-½ s)             s = Σ_c Δ_c²   (per channel with channel_wise)
    inv      : Kraw = α + (s + ε)^(λ/2)

then the mask, and either normalisation over the window or the partial-convolution factor
n_valid / n_in. Everything after Kraw is a per-(pixel, channel) affine map of the taps, so its
backward is dKraw = m · (A · dK - Bc) with per-pixel A and Bc computed from the window.

The public functions (``pacnp._backend.Kernel``) take the kernel's geometry and derive this
backend's schedule from it (``pacnp.cpu.schedule``: row blocks, scatter rounds); the numba
kernels they launch are the ``_``-prefixed functions.
"""

import math

import numpy as np
from numba import get_thread_id, prange

from .._jit import frozen, njit
from . import schedule
from .common import nowrap, prefetch, round_rows, strided_runs, unit_runs, vexp

#: ε of the inv kernels (config.INV_EPS): a compile-time constant of the kernels
EPS = frozen("INV_EPS")
GAUSSIAN = 0
INV = 1


@njit(inline="always")
def kernel_value(s, kind, alpha, lam):
    """Kraw as a function of the squared distance s."""
    if kind == GAUSSIAN:
        return math.exp(-0.5 * s)
    return alpha + (s + EPS) ** (0.5 * lam)


@njit(inline="always")
def kernel_slope(s, kraw, kind, lam):
    """dKraw/ds."""
    if kind == GAUSSIAN:
        return -0.5 * kraw
    return 0.5 * lam * (s + EPS) ** (0.5 * lam - 1.0)


# The loops below index the full arrays with explicit offsets instead of slicing row views:
# every view numba creates increfs its parent's reference count atomically, and hundreds of
# views per output row, on arrays all threads share, serialised the threads on that one
# counter. The unit-stride loops count t from 0 and add offsets that an `if ... < 0: return`
# guard has shown non-negative: LLVM then drops numba's negative-index wraparound and vectorises
# them (a loop from lo to hi with base + x indices stays scalar: 5–6× slower).
@njit(inline="always")
def add_sq_run(sq, kc, i, j, guide, src, b, c, py, qy, lo, hi, base, cbase, asym):
    """sq[kc, i, j, x] += Δ² for lo ≤ x < hi, tap pixel base + x, centre cbase + x."""
    n = hi - lo
    og = base + lo
    oc = cbase + lo
    if lo < 0 or og < 0 or oc < 0:
        return
    for t in range(n):  # counts from 0 with offsets proven ≥ 0: LLVM vectorises this form
        d = guide[b, c, py, og + t] - src[b, c, qy, oc + t]
        if asym:  # max(Δ, 0), NaN kept
            d = d if (d > 0.0 or d != d) else np.float32(0.0)
        sq[kc, i, j, lo + t] += d * d


@njit(inline="always")
def add_sq_gather(sq, kc, i, j, guide, src, b, c, py, qy, gx, cx, asym):
    """add_sq_run through the tap tables (strided or zero-inserted geometries)."""
    for xo in range(sq.shape[3]):
        px = gx[j, xo]
        if px >= 0:
            d = guide[b, c, py, px] - src[b, c, qy, cx[xo]]
            if asym:
                d = d if (d > 0.0 or d != d) else np.float32(0.0)
            sq[kc, i, j, xo] += d * d


@njit(inline="always")
def kernel_row(km, bk, yk, kc, i, j, sq, kind, alpha, lam):
    """km[bk, kc, i, j, yk, :] = Kraw(sq[kc, i, j, :]); the gaussian's exp vectorises."""
    if bk < 0 or yk < 0:
        return
    if kind == GAUSSIAN:
        for xo in range(sq.shape[3]):
            km[bk, kc, i, j, yk, xo] = vexp(sq[kc, i, j, xo] * np.float32(-0.5))
    else:
        for xo in range(sq.shape[3]):
            km[bk, kc, i, j, yk, xo] = kernel_value(sq[kc, i, j, xo], kind, alpha, lam)


@njit(inline="always")
def add_stats(km, bk, yk, stats, i, j, gx, mask, has_mask, b, py):
    """stats += tap (i, j)'s share: n_valid, n_in, Σ Km per channel."""
    for xo in range(km.shape[5]):
        px = gx[j, xo]
        if px >= 0:
            stats[0, xo] += 1.0
            stats[1, xo] += mask[b, py, px] if has_mask else 1.0
    for kc in range(km.shape[1]):
        for xo in range(km.shape[5]):
            stats[2 + kc, xo] += km[bk, kc, i, j, yk, xo]


@njit()
def window_row(
    guide,
    src,
    gy,
    gx,
    cy,
    cx,
    jrun,
    cbase,
    mask,
    alpha,
    lam,
    kind,
    asym,
    has_mask,
    b,
    y,
    km,
    bk,
    yk,
    sq,
    stats,
    need_stats,
):
    """Masked raw kernel Km and squared distances s of every tap of output row (b, y).

    Km goes to km[bk, :, :, :, yk, :] (K itself, or a one-row scratch with bk = yk = 0);
    sq: [KC, kh, kw, Wo]; stats: [2 + KC, Wo] ← n_valid, n_in, Σ_taps Km per channel (only if
    ``need_stats``). Loops run channel by channel with the output column innermost, so guide
    rows and the centre features stream contiguously (a channel-innermost loop strides by
    H·W); where tap j is a unit-stride run (``jrun[j]``, see common.unit_runs) and the centres
    too (``cbase`` ≥ 0), the loops are unit-stride and vectorise.
    """
    Cg = guide.shape[1]
    KC, kh, kw, Wo = sq.shape
    qy = cy[y]
    if need_stats:
        stats[:, :] = 0.0
    for i in range(kh):
        py = gy[i, y]
        for j in range(kw):
            for kc in range(KC):
                for xo in range(Wo):
                    sq[kc, i, j, xo] = 0.0
            if py < 0:
                for kc in range(KC):
                    for xo in range(Wo):
                        km[bk, kc, i, j, yk, xo] = 0.0
                continue
            lo, hi, base = jrun[j, 0], jrun[j, 1], jrun[j, 2]
            fast = lo >= 0 and cbase >= 0
            for c in range(Cg):
                kc = c if KC > 1 else 0
                if fast:
                    add_sq_run(sq, kc, i, j, guide, src, b, c, py, qy, lo, hi, base, cbase, asym)
                else:
                    add_sq_gather(sq, kc, i, j, guide, src, b, c, py, qy, gx, cx, asym)
            for kc in range(KC):
                kernel_row(km, bk, yk, kc, i, j, sq, kind, alpha[kc], lam[kc])
                if fast and not has_mask:
                    for xo in range(lo):
                        km[bk, kc, i, j, yk, xo] = 0.0
                    for xo in range(hi, Wo):
                        km[bk, kc, i, j, yk, xo] = 0.0
                else:
                    for xo in range(Wo):
                        px = gx[j, xo]
                        if px < 0:
                            km[bk, kc, i, j, yk, xo] = 0.0
                        elif has_mask:
                            km[bk, kc, i, j, yk, xo] *= mask[b, py, px]
            if need_stats:
                add_stats(km, bk, yk, stats, i, j, gx, mask, has_mask, b, py)


@njit()
def centre_base(cx):
    """b with cx[x] = b + x for every x (stride-1 windows), else -1."""
    for x in range(cx.shape[0]):
        if cx[x] != cx[0] + x:
            return -1
    return cx[0] if cx.shape[0] > 0 else 0


@njit(inline="always")
def scale_factor(stats, kc, xo, normalize, has_mask):
    """K = Km · factor (normalisation or partial-convolution re-weighting); 0 when degenerate."""
    if normalize:
        tot = stats[2 + kc, xo]
        return 1.0 / tot if tot != 0.0 else 0.0
    if has_mask:
        n_in = stats[1, xo]
        return stats[0, xo] / n_in if n_in > 0.0 else 0.0
    return 1.0


@njit(parallel=True)
def _packernel_forward(
    guide,
    src,
    gy,
    gx,
    cy,
    cx,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    K,
    out_mask,
    n_chunks,
    y0,
    sq_s,
    stats_s,
    fac_s,
):
    """K for the output rows y0 ≤ y < y0 + K.shape[4] (K may be a stripe of the full kernel),
    row by row, written in place; rows go to ``n_chunks`` contiguous blocks, each with its own
    slice of the scratch buffers (``sq_s`` [n_chunks, KC, kh, kw, W_out], ``stats_s``,
    ``fac_s``). The launcher allocates them: an allocation that fails inside a parallel region
    cannot reach the caller as a MemoryError (numba's worker threads lose it)."""
    B = guide.shape[0]
    KC, kh, kw, n, Wo = K.shape[1], K.shape[2], K.shape[3], K.shape[4], K.shape[5]
    rows = B * n
    jrun = np.empty((kw, 7), dtype=np.int64)
    unit_runs(gx, jrun)
    strided_runs(gx, jrun, 3)
    cbase = centre_base(cx)
    need_stats = normalize or has_mask
    for ch in prange(n_chunks):
        sq = sq_s[ch]
        stats = stats_s[ch]
        fac = fac_s[ch]
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = r // n
            yk = r % n
            y = y0 + yk
            window_row(
                guide,
                src,
                gy,
                gx,
                cy,
                cx,
                jrun,
                cbase,
                mask,
                alpha,
                lam,
                kind,
                asym,
                has_mask,
                b,
                y,
                K,
                b,
                yk,
                sq,
                stats,
                need_stats,
            )
            if not need_stats:
                continue
            for kc in range(KC):
                for xo in range(Wo):
                    fac[xo] = scale_factor(stats, kc, xo, normalize, has_mask)
                for i in range(kh):
                    for j in range(kw):
                        for xo in range(Wo):  # contiguous in K
                            K[b, kc, i, j, yk, xo] *= fac[xo]
            if has_mask:
                for xo in range(Wo):
                    out_mask[b, 0, y, xo] = 1.0 if stats[1, xo] > 0.0 else 0.0


# --------------------------------------------------------------------------- transposed phases
# A transposed window of stride s meets an input sample at ≈ (k/s)² of its k² taps: output row y
# has the row taps i with gy[i, y] ≥ 0, output column X ≡ ph (mod s) the column taps of column
# phase ph (schedule.kernel_phases). The kernels below evaluate K at those taps only — the guide
# samples a row reads gathered once into a contiguous buffer, the centres of a phase likewise, so
# every tap's distance and exp run over contiguous memory and vectorise — and leave K = 0 at the
# others (its documented layout). The all-taps loop of window_row instead evaluated all k² taps
# at every column, then zeroed the (s² − 1)/s² that miss.


@njit(inline="always")
def gather_samples(gd, guide, b, py, row, c0, s):
    """gd[row, c, m] = guide[b, c, py, c0 + s·m]: the guide samples of guide row ``py``."""
    Ws = gd.shape[2]
    if c0 < 0 or py < 0 or row < 0:
        return
    for c in range(guide.shape[1]):
        for m in range(Ws):
            gd[row, c, m] = guide[b, c, py, c0 + s * m]


@njit(inline="always")
def clip_pos(d, asym):
    """max(Δ, 0) for the asymmetric kernels, NaN kept; Δ otherwise."""
    if asym:
        return d if (d > 0.0 or d != d) else np.float32(0.0)
    return d


@njit(inline="always")
def phase_sq(sq, kc, ii, jj, gd, cen, c, lo, hi, base, asym):
    """sq[kc, ii, jj, lo:hi] += Δ² between sample base + q of row ii and centre q."""
    og = base + lo
    if lo < 0 or og < 0 or ii < 0 or jj < 0:
        return
    for t in range(hi - lo):
        d = clip_pos(gd[ii, c, nowrap(og + t)] - cen[c, nowrap(lo + t)], asym)
        sq[kc, ii, jj, nowrap(lo + t)] += d * d


@njit(inline="always")
def phase_sq4(sq, ii, jj, gd, cen, c, lo, hi, base, asym):
    """phase_sq of channels c .. c + 3 into sq[0] in one pass: a tap's run is ≈ Ws/s lanes,
    so one pass per channel spent as much on loop entry (alias checks, remainders) as on the
    arithmetic (W4b: ≈ 0.6 ms of 1.8)."""
    og = base + lo
    if lo < 0 or og < 0 or ii < 0 or jj < 0 or c < 0:
        return
    for t in range(hi - lo):
        g, q = nowrap(og + t), nowrap(lo + t)
        d0 = clip_pos(gd[ii, c, g] - cen[c, q], asym)
        d1 = clip_pos(gd[ii, c + 1, g] - cen[c + 1, q], asym)
        d2 = clip_pos(gd[ii, c + 2, g] - cen[c + 2, q], asym)
        d3 = clip_pos(gd[ii, c + 3, g] - cen[c + 3, q], asym)
        sq[0, ii, jj, q] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)


@njit()
def phase_window(
    gd,
    cen,
    itaps,
    n_i,
    gy,
    y,
    ph,
    ptaps,
    pntaps,
    runs,
    c0,
    s,
    mask,
    alpha,
    lam,
    kind,
    asym,
    has_mask,
    b,
    nx,
    km,
    sq,
    stats,
    need_stats,
):
    """Masked raw kernel Km of the live taps of output row y at the nx columns of phase ph:
    km[kc, ii, jj, q] for row tap itaps[ii] and column tap ptaps[ph, jj], the squared distances
    into sq[kc, ii, jj, q] — both on the tap's run lo ≤ q < hi only (runs[ph, j]; its callers
    read nothing outside it). With ``need_stats``: stats[:, q] ←
    n_valid, n_in, Σ Km (as in window_row, over the same taps: those that miss contribute
    nothing there either)."""
    Cg = gd.shape[1]
    KC = km.shape[0]
    if need_stats:
        for a in range(stats.shape[0]):
            for q in range(nx):
                stats[a, q] = 0.0
    for ii in range(n_i):
        py = gy[itaps[ii], y]
        for jj in range(pntaps[ph]):
            j = ptaps[ph, jj]
            lo, hi, base = runs[ph, j, 0], runs[ph, j, 1], runs[ph, j, 2]
            if lo < 0 or hi <= lo:
                continue
            n = hi - lo
            # lanes as nowrap(lo + t): a run-time lo would keep the wraparound select of a
            # signed index in every loop (see common.nowrap) and those loops from vectorising
            for kc in range(KC):
                for t in range(n):
                    sq[kc, ii, jj, nowrap(lo + t)] = 0.0
            if KC > 1:
                for c in range(Cg):
                    phase_sq(sq, c, ii, jj, gd, cen, c, lo, hi, base, asym)
            elif asym:  # the flag a constant in each loop body: no branch left in the run
                for c in range(0, Cg - 3, 4):
                    phase_sq4(sq, ii, jj, gd, cen, c, lo, hi, base, True)
                for c in range(Cg - Cg % 4, Cg):
                    phase_sq(sq, 0, ii, jj, gd, cen, c, lo, hi, base, True)
            else:
                for c in range(0, Cg - 3, 4):
                    phase_sq4(sq, ii, jj, gd, cen, c, lo, hi, base, False)
                for c in range(Cg - Cg % 4, Cg):
                    phase_sq(sq, 0, ii, jj, gd, cen, c, lo, hi, base, False)
            for kc in range(KC):
                if kind == GAUSSIAN:
                    for t in range(n):
                        q = nowrap(lo + t)
                        km[kc, ii, jj, q] = vexp(sq[kc, ii, jj, q] * np.float32(-0.5))
                else:
                    for t in range(n):
                        q = nowrap(lo + t)
                        km[kc, ii, jj, q] = kernel_value(
                            sq[kc, ii, jj, q], kind, alpha[kc], lam[kc]
                        )
                if has_mask:
                    for q in range(lo, hi):
                        km[kc, ii, jj, q] *= mask[b, py, c0 + s * (base + q)]
            if need_stats:
                for q in range(lo, hi):
                    stats[0, q] += 1.0
                    stats[1, q] += mask[b, py, c0 + s * (base + q)] if has_mask else 1.0
                for kc in range(KC):
                    for q in range(lo, hi):
                        stats[2 + kc, q] += km[kc, ii, jj, q]


@njit()
def phase_centres(src, cy, pcols, pncols, b, y, cen, ph):
    """The centres of phase ph of output row y into cen[c, q]; returns nx."""
    nx = pncols[ph]
    qy = cy[y]
    X0, P = pcols[ph, 0], pcols.shape[0]
    if nx <= 0 or X0 < 0 or qy < 0:
        return max(nx, 0)
    for c in range(src.shape[1]):  # a phase's columns are X0 + P·q: no table in the loop
        for q in range(nx):
            cen[c, q] = src[b, c, qy, nowrap(X0 + P * q)]
    return nx


@njit()
def row_samples(guide, gy, y, b, c0, s, itaps, gd):
    """The live row taps of output row y into itaps, their guide samples into gd; returns
    how many."""
    n_i = 0
    for i in range(gy.shape[0]):
        py = gy[i, y]
        if py >= 0:
            itaps[n_i] = i
            gather_samples(gd, guide, b, py, n_i, c0, s)
            n_i += 1
    return n_i


@njit()
def phase_row(
    gd,
    src,
    cy,
    pcols,
    pncols,
    itaps,
    n_i,
    gy,
    y,
    ph,
    ptaps,
    pntaps,
    runs,
    c0,
    s,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    b,
    cen,
    km,
    sq,
    stats,
    fac,
    out_mask,
):
    """K of output row y (guide samples gd, live row taps itaps[:n_i]: row_samples) at the
    live taps of column phase ph: raw in km[kc, ii, jj, q] (phase_window), its scale in
    fac[kc, q] (normalisation or the mask's re-weighting; 1 without), and with a mask the row's
    out_mask at the phase's columns. Returns the phase's column count nx. Shared by packernel2d
    (which stores km·fac into K) and the fused transposed op (which feeds it to its columns)."""
    nx = phase_centres(src, cy, pcols, pncols, b, y, cen, ph)
    need_stats = normalize or has_mask
    phase_window(
        gd,
        cen,
        itaps,
        n_i,
        gy,
        y,
        ph,
        ptaps,
        pntaps,
        runs,
        c0,
        s,
        mask,
        alpha,
        lam,
        kind,
        asym,
        has_mask,
        b,
        nx,
        km,
        sq,
        stats,
        need_stats,
    )
    for kc in range(km.shape[0]):
        if need_stats:
            for q in range(nx):
                fac[kc, q] = scale_factor(stats, kc, q, normalize, has_mask)
        else:
            for q in range(nx):
                fac[kc, q] = 1.0
    if has_mask:
        for q in range(nx):
            out_mask[b, 0, y, pcols[ph, q]] = 1.0 if stats[1, q] > 0.0 else 0.0
    return nx


@njit(inline="always")
def prefetch_k_row(K, gy, b, yk, y0):
    """Hint the cache to fetch, for writing, the lines of K's output row yk (of the stripe) at
    the row taps that meet a sample (all its columns: the column phases together write every
    line)."""
    W = K.shape[5]
    for kc in range(K.shape[1]):
        for i in range(K.shape[2]):
            if gy[i, y0 + yk] < 0:
                continue
            for j in range(K.shape[3]):
                for x in range(0, W, 16):
                    prefetch(K, (b, kc, i, j, yk, x), True)


@njit(inline="always")
def prefetch_guide_rows(guide, src, gy, cy, b, y):
    """Hint the cache to fetch the guide rows output row y reads: its centres' row of ``src``
    and the sample rows of its live row taps, every channel."""
    qy = cy[y]
    if qy >= 0:
        for c in range(src.shape[1]):
            for x in range(0, src.shape[3], 16):
                prefetch(src, (b, c, qy, x), False)
    for i in range(gy.shape[0]):
        py = gy[i, y]
        if py < 0:
            continue
        for c in range(guide.shape[1]):
            for x in range(0, guide.shape[3], 16):
                prefetch(guide, (b, c, py, x), False)


@njit(parallel=True)
def _packernel_forward_phased(
    guide,
    src,
    gy,
    cy,
    pcols,
    pncols,
    ptaps,
    pntaps,
    runs,
    c0,
    s,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    K,
    out_mask,
    blocks,
    y0,
    itaps_s,
    gd_s,
    cen_s,
    km_s,
    sq_s,
    stats_s,
    fac_s,
):
    """_packernel_forward of a transposed window, by phase (see the section comment): per
    output row each column phase's live taps are evaluated (phase_window), scaled and stored at
    the phase's columns. K's entries at the taps that meet no sample are not written (the
    caller passes K zeroed where it needs them: see Kernel.packernel_forward). Scratch per
    thread (from the launcher)."""
    B = guide.shape[0]
    KC, n = K.shape[1], K.shape[4]
    rows = B * n
    P = pncols.shape[0]
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        tid = get_thread_id()
        itaps = itaps_s[tid]
        gd = gd_s[tid]
        cen = cen_s[tid]
        km = km_s[tid]
        sq = sq_s[tid]
        stats = stats_s[tid]
        fac = fac_s[tid]
        for r in range(blk * rows // blocks, (blk + 1) * rows // blocks):
            b = r // n
            yk = r % n
            y = y0 + yk
            if r + 1 < (blk + 1) * rows // blocks:
                # the next row's lines of K (to write) and of the guide (to read): a row's
                # accesses jump between planes every 16 or so lines, which the hardware
                # prefetchers do not follow (W4b: 0.2–0.7 ms of packernel2d's ≈ 7, one thread,
                # depending on the run; docs/performance.md, stop 14)
                prefetch_k_row(K, gy, (r + 1) // n, (r + 1) % n, y0)
                prefetch_guide_rows(guide, src, gy, cy, (r + 1) // n, y0 + (r + 1) % n)
            n_i = row_samples(guide, gy, y, b, c0, s, itaps, gd)
            for ph in range(pncols.shape[0]):
                nx = phase_row(
                    gd,
                    src,
                    cy,
                    pcols,
                    pncols,
                    itaps,
                    n_i,
                    gy,
                    y,
                    ph,
                    ptaps,
                    pntaps,
                    runs,
                    c0,
                    s,
                    mask,
                    alpha,
                    lam,
                    kind,
                    asym,
                    normalize,
                    has_mask,
                    b,
                    cen,
                    km,
                    sq,
                    stats,
                    fac,
                    out_mask,
                )
                X0 = pcols[ph, 0]
                for kc in range(KC):
                    for ii in range(n_i):
                        i = itaps[ii]
                        for jj in range(pntaps[ph]):
                            j = ptaps[ph, jj]
                            lo, hi = runs[ph, j, 0], runs[ph, j, 1]
                            if lo < 0 or X0 < 0 or nx < 0:
                                continue
                            for t in range(hi - lo):
                                q = nowrap(lo + t)
                                K[b, kc, i, j, yk, nowrap(X0 + P * (lo + t))] = (
                                    km[kc, ii, jj, q] * fac[kc, q]
                                )


@njit(parallel=True)
def _packernel_backward_phased(
    dK,
    guide,
    src,
    gy,
    cy,
    pcols,
    pncols,
    ptaps,
    pntaps,
    runs,
    c0,
    s,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    dsrc,
    dguide,
    dpar_rows,
    y0,
    rnd,
    R,
    need_f,
    need_g,
    need_par,
    blocks,
    itaps_s,
    gd_s,
    dgd_s,
    cen_s,
    dcen_s,
    km_s,
    sq_s,
    g2_s,
    stats_s,
    fac_s,
    bc_s,
):
    """_packernel_backward of a transposed window, by phase: per output row (of round rnd) and
    column phase, K of the live taps is recomputed (phase_window), dK turned into
    g2 = 2·dKraw·dKraw/ds at those taps only, and g2·Δ added into the row's gathered guide
    samples (dgd, scattered into ``dguide`` once per row) and the phase's centres (into
    ``dsrc``). The same rounds as _packernel_backward keep the scatters race-free and in a
    fixed order; dα, dλ go to dpar_rows as there."""
    B, Cg = guide.shape[0], guide.shape[1]
    KC, n = dK.shape[1], dK.shape[4]
    Ho = cy.shape[0]
    Ws = gd_s.shape[3]
    need_stats = normalize or has_mask
    first, cnt = round_rows(y0, n, rnd, R)
    items = B * cnt
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        tid = get_thread_id()
        itaps = itaps_s[tid]
        gd = gd_s[tid]
        dgd = dgd_s[tid]
        cen = cen_s[tid]
        dcen = dcen_s[tid]
        km = km_s[tid]
        sq = sq_s[tid]
        g2 = g2_s[tid]
        stats = stats_s[tid]
        fac = fac_s[tid]
        bc = bc_s[tid]
        for it in range(blk * items // blocks, (blk + 1) * items // blocks):
            b = it // cnt
            y = first + (it % cnt) * R
            yk = y - y0
            qy = cy[y]
            for kc in range(KC):
                dpar_rows[b * Ho + y, 0, kc] = 0.0
                dpar_rows[b * Ho + y, 1, kc] = 0.0
            n_i = row_samples(guide, gy, y, b, c0, s, itaps, gd)
            if n_i == 0:
                continue
            for ii in range(n_i):
                for c in range(Cg):
                    for m in range(Ws):
                        dgd[ii, c, m] = 0.0
            for ph in range(pncols.shape[0]):
                nx = phase_centres(src, cy, pcols, pncols, b, y, cen, ph)
                nj = pntaps[ph]
                phase_window(
                    gd,
                    cen,
                    itaps,
                    n_i,
                    gy,
                    y,
                    ph,
                    ptaps,
                    pntaps,
                    runs,
                    c0,
                    s,
                    mask,
                    alpha,
                    lam,
                    kind,
                    asym,
                    has_mask,
                    b,
                    nx,
                    km,
                    sq,
                    stats,
                    need_stats,
                )
                for kc in range(KC):
                    for q in range(nx):
                        fac[q] = 1.0
                        bc[q] = 0.0
                    if need_stats:
                        for q in range(nx):
                            fac[q] = scale_factor(stats, kc, q, normalize, has_mask)
                    if normalize:
                        # K_t = Km_t / S  =>  dKm_t = (dK_t - Σ_u dK_u K_u) / S
                        for ii in range(n_i):
                            i = itaps[ii]
                            for jj in range(nj):
                                j = ptaps[ph, jj]
                                for q in range(runs[ph, j, 0], runs[ph, j, 1]):
                                    X = pcols[ph, q]
                                    bc[q] += dK[b, kc, i, j, yk, X] * km[kc, ii, jj, q]
                        for q in range(nx):
                            bc[q] *= fac[q] * fac[q]
                    da = 0.0
                    dl = 0.0
                    for ii in range(n_i):
                        i = itaps[ii]
                        py = gy[i, y]
                        for jj in range(nj):
                            j = ptaps[ph, jj]
                            lo, hi, base = runs[ph, j, 0], runs[ph, j, 1], runs[ph, j, 2]
                            for q in range(nx):
                                g2[kc, ii, jj, q] = 0.0
                            if kind == GAUSSIAN:
                                # as in _packernel_backward: g2 = −(f·dK − Bc)·Km
                                for q in range(lo, hi):
                                    X = pcols[ph, q]
                                    g2[kc, ii, jj, q] = (
                                        -(fac[q] * dK[b, kc, i, j, yk, X] - bc[q])
                                        * km[kc, ii, jj, q]
                                    )
                                continue
                            for q in range(lo, hi):
                                m = mask[b, py, c0 + s * (base + q)] if has_mask else 1.0
                                if m == 0.0:
                                    continue
                                sv = sq[kc, ii, jj, q]
                                dkr = m * (fac[q] * dK[b, kc, i, j, yk, pcols[ph, q]] - bc[q])
                                kraw = kernel_value(sv, kind, alpha[kc], lam[kc])
                                g2[kc, ii, jj, q] = (
                                    2.0 * dkr * kernel_slope(sv, kraw, kind, lam[kc])
                                )
                                if need_par:
                                    da += dkr
                                    dl += (
                                        dkr
                                        * 0.5
                                        * math.log(sv + EPS)
                                        * (sv + EPS) ** (0.5 * lam[kc])
                                    )
                    dpar_rows[b * Ho + y, 0, kc] += da
                    dpar_rows[b * Ho + y, 1, kc] += dl
                if not (need_f or need_g):
                    continue
                # dL/dΔ_c = g2 · Δ_c: + into the tap's guide sample, − into the centre
                for c in range(Cg):
                    kc = c if KC > 1 else 0
                    for q in range(nx):
                        dcen[c, q] = 0.0
                    for ii in range(n_i):
                        for jj in range(nj):
                            j = ptaps[ph, jj]
                            lo, hi, base = runs[ph, j, 0], runs[ph, j, 1], runs[ph, j, 2]
                            og = base + lo
                            if lo < 0 or og < 0:
                                continue
                            for t in range(hi - lo):
                                d = gd[ii, c, og + t] - cen[c, lo + t]
                                if asym:
                                    d = d if (d > 0.0 or d != d) else np.float32(0.0)
                                v = g2[kc, ii, jj, lo + t] * d
                                dcen[c, lo + t] -= v
                                dgd[ii, c, og + t] += v
                    if need_f:
                        for q in range(nx):
                            dsrc[b, c, qy, pcols[ph, q]] += dcen[c, q]
            if need_g:
                for ii in range(n_i):
                    py = gy[itaps[ii], y]
                    for c in range(Cg):
                        for m in range(Ws):
                            dguide[b, c, py, c0 + s * m] += dgd[ii, c, m]


@njit(inline="always")
def scatter_run(
    g2, kc, i, j, guide, src, dsrc, dguide, b, c, py, qy, lo, hi, base, cbase, asym, need_f, need_g
):
    """dL/dΔ = g2·Δ along a unit-stride run: − into the centre features, + into the taps."""
    n = hi - lo
    og = base + lo
    oc = cbase + lo
    if lo < 0 or og < 0 or oc < 0:
        return
    for t in range(n):
        d = guide[b, c, py, og + t] - src[b, c, qy, oc + t]
        if asym:
            d = d if (d > 0.0 or d != d) else np.float32(0.0)
        v = g2[kc, i, j, lo + t] * d
        if need_f:
            dsrc[b, c, qy, oc + t] -= v
        if need_g:
            dguide[b, c, py, og + t] += v


@njit(inline="always")
def scatter_gather(
    g2, kc, i, j, guide, src, dsrc, dguide, b, c, py, qy, gx, cx, asym, need_f, need_g
):
    """scatter_run through the tap tables."""
    for xo in range(g2.shape[3]):
        px = gx[j, xo]
        if px < 0:
            continue
        d = guide[b, c, py, px] - src[b, c, qy, cx[xo]]
        if asym:
            d = d if (d > 0.0 or d != d) else np.float32(0.0)
        v = g2[kc, i, j, xo] * d
        if need_f:
            dsrc[b, c, qy, cx[xo]] -= v
        if need_g:
            dguide[b, c, py, px] += v


@njit(inline="always")
def scatter_strided(
    g2,
    kc,
    i,
    j,
    guide,
    src,
    dsrc,
    dguide,
    b,
    c,
    py,
    qy,
    cx,
    x0,
    step,
    nv,
    p0,
    asym,
    need_f,
    need_g,
):
    """scatter_gather over the columns x0 + step·q where a transposed tap meets a sample
    (common.strided_runs), in the same order."""
    for q in range(nv):
        X = x0 + step * q
        px = p0 + q
        d = guide[b, c, py, px] - src[b, c, qy, cx[X]]
        if asym:
            d = d if (d > 0.0 or d != d) else np.float32(0.0)
        v = g2[kc, i, j, X] * d
        if need_f:
            dsrc[b, c, qy, cx[X]] -= v
        if need_g:
            dguide[b, c, py, px] += v


@njit(parallel=True)
def _packernel_backward(
    dK,
    guide,
    src,
    gy,
    gx,
    cy,
    cx,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    dsrc,
    dguide,
    dpar_rows,
    y0,
    rnd,
    R,
    need_f,
    need_g,
    need_par,
    blocks,
    km_s,
    sq_s,
    g2_s,
    stats_s,
    fac_s,
    bc_s,
):
    """Backward of K for the output rows y0 ≤ y < y0 + dK.shape[4] with y ≡ rnd (mod R).

    Per row: K is recomputed (window_row), the normalisation / mask backward turns dK into
    dKraw = m · (f·dK − Bc) (f: the row's scale factor, Bc the normalisation's correction),
    and each tap's dL/dΔ_c = g2·Δ_c, g2 = 2·dKraw·dKraw/ds, goes to the centre feature
    (dsrc[:, :, cy[y], cx[x]] −= …) and to the guide pixel the tap read (dguide += …): both
    scatters, and ``dsrc`` may be ``dguide`` itself (no smoothing). The caller runs the rounds
    rnd = 0..R-1 one after another, with R such that rows of one round read disjoint guide rows
    (schedule.kernel_rounds):
    no two threads ever add to the same guide pixel, and every pixel receives its contributions
    in a fixed order (deterministic). dα, dλ go to per-row partials dpar_rows[b·Ho + y, 0|1, kc],
    added in row order later. The rows go to ``blocks`` contiguous blocks, each working in the
    running thread's slice of the scratch buffers the launcher allocated (never inside the
    parallel region, where a failed allocation would not reach the caller).
    """
    B, Cg = guide.shape[0], guide.shape[1]
    KC, kh, kw, n, Wo = dK.shape[1], dK.shape[2], dK.shape[3], dK.shape[4], dK.shape[5]
    Ho = cy.shape[0]
    jrun = np.empty((kw, 7), dtype=np.int64)
    unit_runs(gx, jrun)
    strided_runs(gx, jrun, 3)
    cbase = centre_base(cx)
    need_stats = normalize or has_mask
    first, cnt = round_rows(y0, n, rnd, R)
    items = B * cnt
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        tid = get_thread_id()
        sq = sq_s[tid]
        g2 = g2_s[tid]
        stats = stats_s[tid]
        fac = fac_s[tid]
        bc = bc_s[tid]
        for q in range(blk * items // blocks, (blk + 1) * items // blocks):
            b = q // cnt
            y = first + (q % cnt) * R
            yk = y - y0
            qy = cy[y]
            # fresh per row, as the buffers were when allocated per row
            g2[:, :, :, :] = 0.0
            fac[:] = 1.0
            bc[:] = 0.0
            window_row(
                guide,
                src,
                gy,
                gx,
                cy,
                cx,
                jrun,
                cbase,
                mask,
                alpha,
                lam,
                kind,
                asym,
                has_mask,
                b,
                y,
                km_s,
                tid,
                0,
                sq,
                stats,
                need_stats,
            )
            for kc in range(KC):
                if need_stats:
                    for xo in range(Wo):
                        fac[xo] = scale_factor(stats, kc, xo, normalize, has_mask)
                if normalize:
                    # K_t = Km_t / S  =>  dKm_t = (dK_t - Σ_u dK_u K_u) / S
                    for xo in range(Wo):
                        bc[xo] = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            for xo in range(Wo):
                                bc[xo] += dK[b, kc, i, j, yk, xo] * km_s[tid, kc, i, j, 0, xo]
                    for xo in range(Wo):
                        bc[xo] *= fac[xo] * fac[xo]
                da = 0.0
                dl = 0.0
                for i in range(kh):
                    py = gy[i, y]
                    if py < 0:
                        continue
                    for j in range(kw):
                        if kind == GAUSSIAN:
                            # dKraw/ds = −Kraw/2 and m·Kraw = Km (m ∈ {0, 1}; Km = 0 off the
                            # window): g2 = −(f·dK − Bc)·Km, one vectorised line per tap
                            for xo in range(Wo):
                                g2[kc, i, j, xo] = (
                                    -(fac[xo] * dK[b, kc, i, j, yk, xo] - bc[xo])
                                    * km_s[tid, kc, i, j, 0, xo]
                                )
                            continue
                        for xo in range(Wo):
                            px = gx[j, xo]
                            if px < 0:
                                continue
                            m = mask[b, py, px] if has_mask else 1.0
                            if m == 0.0:
                                continue
                            s = sq[kc, i, j, xo]
                            dkr = m * (fac[xo] * dK[b, kc, i, j, yk, xo] - bc[xo])
                            kraw = kernel_value(s, kind, alpha[kc], lam[kc])
                            g2[kc, i, j, xo] = 2.0 * dkr * kernel_slope(s, kraw, kind, lam[kc])
                            if need_par:
                                da += dkr
                                dl += dkr * 0.5 * math.log(s + EPS) * (s + EPS) ** (0.5 * lam[kc])
                dpar_rows[b * Ho + y, 0, kc] = da
                dpar_rows[b * Ho + y, 1, kc] = dl
            if not (need_f or need_g):
                continue
            # dL/dΔ_c = g2 · Δ_c: +into the tap's guide pixel, −into the centre feature
            for c in range(Cg):
                kc = c if KC > 1 else 0
                for i in range(kh):
                    py = gy[i, y]
                    if py < 0:
                        continue
                    for j in range(kw):
                        lo, hi, base = jrun[j, 0], jrun[j, 1], jrun[j, 2]
                        if lo >= 0 and cbase >= 0:
                            scatter_run(
                                g2,
                                kc,
                                i,
                                j,
                                guide,
                                src,
                                dsrc,
                                dguide,
                                b,
                                c,
                                py,
                                qy,
                                lo,
                                hi,
                                base,
                                cbase,
                                asym,
                                need_f,
                                need_g,
                            )
                        elif jrun[j, 4] > 0:
                            scatter_strided(
                                g2,
                                kc,
                                i,
                                j,
                                guide,
                                src,
                                dsrc,
                                dguide,
                                b,
                                c,
                                py,
                                qy,
                                cx,
                                jrun[j, 3],
                                jrun[j, 4],
                                jrun[j, 5],
                                jrun[j, 6],
                                asym,
                                need_f,
                                need_g,
                            )
                        else:
                            scatter_gather(
                                g2,
                                kc,
                                i,
                                j,
                                guide,
                                src,
                                dsrc,
                                dguide,
                                b,
                                c,
                                py,
                                qy,
                                gx,
                                cx,
                                asym,
                                need_f,
                                need_g,
                            )


# --------------------------------------------------------------------------- launchers
def packernel_forward(
    guide, src, geo, mask, alpha, lam, kind, asym, normalize, has_mask, K, out_mask, y0
):
    """K of the output rows y0 ≤ y < y0 + K.shape[4] (K: that stripe), written in place; with
    a mask also those rows of ``out_mask``."""
    KC, kh, kw, Wo = K.shape[1], K.shape[2], K.shape[3], K.shape[5]
    blocks = schedule.thread_blocks(guide.shape[0] * K.shape[4])
    phased = schedule.kernel_phases(geo)
    if phased is not None:
        pcols, pncols, ptaps, pntaps, runs, c0, ws = phased
        T = schedule.scratch_slices()  # scratch per thread (see the kernel)
        nx, nj, dt = pcols.shape[1], ptaps.shape[1], K.dtype
        _packernel_forward_phased(
            guide,
            src,
            geo.gy,
            geo.cy,
            pcols,
            pncols,
            ptaps,
            pntaps,
            runs,
            c0,
            geo.stride[-1],
            mask,
            alpha,
            lam,
            kind,
            asym,
            normalize,
            has_mask,
            K,
            out_mask,
            schedule.row_blocks(guide.shape[0] * K.shape[4]),
            y0,
            np.empty((T, kh), np.int64),
            np.empty((T, kh, guide.shape[1], max(ws, 1)), dt),
            np.empty((T, src.shape[1], nx), dt),
            np.empty((T, KC, kh, nj, nx), dt),
            np.empty((T, KC, kh, nj, nx), dt),
            np.empty((T, 2 + KC, nx), dt),
            np.empty((T, KC, nx), dt),
        )
        return
    # scratch per block, allocated here (see _packernel_forward): at most one row of K per
    # block, and no more blocks than rows, so never more than the stripe of K itself
    _packernel_forward(
        guide,
        src,
        geo.gy,
        geo.gx,
        geo.cy,
        geo.cx,
        mask,
        alpha,
        lam,
        kind,
        asym,
        normalize,
        has_mask,
        K,
        out_mask,
        blocks,
        y0,
        np.empty((blocks, KC, kh, kw, Wo), K.dtype),
        np.empty((blocks, 2 + KC, Wo), K.dtype),
        np.empty((blocks, Wo), K.dtype),
    )


def packernel_backward(
    dK,
    guide,
    src,
    geo,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    dsrc,
    dguide,
    dpar_rows,
    y0,
    need_f,
    need_g,
    need_par,
):
    """Gradients from the output rows y0 ≤ y < y0 + dK.shape[4]: added into ``dsrc`` (the
    centre features' source) and ``dguide``, dα/dλ written to their rows of ``dpar_rows``; in
    the scatter rounds of the geometry, one after another."""
    R = schedule.kernel_rounds(geo)
    B, KC, kh, kw, n, Wo = dK.shape
    dt = dK.dtype
    phased = schedule.kernel_phases(geo)
    if phased is not None:
        pcols, pncols, ptaps, pntaps, runs, c0, ws = phased
        blocks = schedule.row_blocks(B * -(-n // R))
        T = schedule.scratch_slices()  # scratch per thread (see the kernel)
        nx, nj, Cg = pcols.shape[1], ptaps.shape[1], guide.shape[1]
        scratch = (
            np.empty((T, kh), np.int64),
            np.empty((T, kh, Cg, max(ws, 1)), dt),
            np.empty((T, kh, Cg, max(ws, 1)), dt),
            np.empty((T, Cg, nx), dt),
            np.empty((T, Cg, nx), dt),
            np.empty((T, KC, kh, nj, nx), dt),
            np.empty((T, KC, kh, nj, nx), dt),
            np.empty((T, KC, kh, nj, nx), dt),
            np.empty((T, 2 + KC, nx), dt),
            np.empty((T, nx), dt),
            np.empty((T, nx), dt),
        )
        for rnd in range(R):
            _packernel_backward_phased(
                dK,
                guide,
                src,
                geo.gy,
                geo.cy,
                pcols,
                pncols,
                ptaps,
                pntaps,
                runs,
                c0,
                geo.stride[-1],
                mask,
                alpha,
                lam,
                kind,
                asym,
                normalize,
                has_mask,
                dsrc,
                dguide,
                dpar_rows,
                y0,
                rnd,
                R,
                need_f,
                need_g,
                need_par,
                blocks,
                *scratch,
            )
        return
    # scratch per thread, allocated here (a failed allocation inside the parallel region
    # would be lost): one row of dK per thread; many row blocks for load balance
    blocks = schedule.row_blocks(B * -(-n // R))
    T = schedule.scratch_slices()
    km = np.empty((T, KC, kh, kw, 1, Wo), dt)
    sq = np.empty((T, KC, kh, kw, Wo), dt)
    g2 = np.empty((T, KC, kh, kw, Wo), dt)
    stats = np.empty((T, 2 + KC, Wo), dt)
    fac = np.empty((T, Wo), dt)
    bc = np.empty((T, Wo), dt)
    for rnd in range(R):
        _packernel_backward(
            dK,
            guide,
            src,
            geo.gy,
            geo.gx,
            geo.cy,
            geo.cx,
            mask,
            alpha,
            lam,
            kind,
            asym,
            normalize,
            has_mask,
            dsrc,
            dguide,
            dpar_rows,
            y0,
            rnd,
            R,
            need_f,
            need_g,
            need_par,
            blocks,
            km,
            sq,
            g2,
            stats,
            fac,
            bc,
        )
