"""Dense PAC convolution (pacconv2d and pacconv_transpose2d), forward and backward.

Both ops are one computation over tap tables (see ``pacnp._core``):

    out[b, o, y, x] = Σ_{c,i,j} Wm[o, (c,i,j)] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

For a transposed convolution the caller passes the conv-transpose tap tables and the weights
rearranged to ``Wm[o, c, i, j] = weight[c, o, kh-1-i, kw-1-j]``. Per output row the modulated
patches form a (C·kh·kw × W_out) column block — bounded by one row, never C·k²·H·W — and the
channel contraction is one GEMM (BLAS) per row.

The public functions (``pacnp._backend.Conv``) take the op's geometry and derive this backend's
schedule from it (``pacnp.cpu.schedule``: column phases, row blocks, GEMM tiles, scatter
rounds); the numba kernels they launch are the ``_``-prefixed functions.
"""

import numpy as np
from numba import get_thread_id, prange

from .._jit import njit
from . import schedule
from .common import nowrap, prefetch, round_rows, unit_runs
from .kernel import phase_row, prefetch_guide_rows, row_samples


@njit()
def row_taps(ty, y, taps):
    """The row taps i valid for output row y (ty[i, y] ≥ 0) into ``taps``; returns how many."""
    n = 0
    for i in range(ty.shape[0]):
        if ty[i, y] >= 0:
            taps[n] = i
            n += 1
    return n


@njit(inline="always")
def modulate_run(cols, row, col0, K, x, b, kc, c, i, j, yk, iy, lo, hi, base):
    """cols[row, col0 + X] = K·x over the unit-stride run lo ≤ X < hi of tap (i, j) (input
    column base + X). Counts from 0 with offsets shown ≥ 0, the form LLVM vectorises (numba's
    negative-index wraparound otherwise keeps it scalar; slicing row views instead costs an
    atomic reference-count update per view, on arrays every thread shares)."""
    n = hi - lo
    ox = base + lo
    oc = col0 + lo
    if lo < 0 or ox < 0 or oc < 0 or iy < 0 or row < 0:
        return
    for t in range(n):
        cols[row, oc + t] = K[b, kc, i, j, yk, lo + t] * x[b, c, iy, ox + t]


@njit(inline="always")
def phase_tile_run(cols, row, q0, q1, K, x, b, kc, c, i, j, yk, iy, lo, hi, base, X0, P):
    """cols[row, q - q0] = K·x for the phase columns q0 ≤ q < q1 (output column X0 + P·q) where
    tap (i, j) meets the input, lo ≤ q < hi at input column base + q; 0 at the others."""
    lo = min(max(lo, q0), q1)
    hi = min(max(hi, lo), q1)
    ox = base + lo
    oc = lo - q0
    if row < 0 or iy < 0 or X0 < 0 or ox < 0 or oc < 0:
        return
    for q in range(lo - q0):
        cols[row, q] = 0.0
    for q in range(hi - q0, q1 - q0):
        cols[row, q] = 0.0
    for t in range(hi - lo):
        cols[row, nowrap(oc + t)] = (
            K[b, kc, i, j, yk, nowrap(X0 + P * (lo + t))] * x[b, c, iy, nowrap(ox + t)]
        )


@njit()
def phase_columns(
    x,
    K,
    ty,
    tx,
    jrun,
    prun,
    pcols,
    pncols,
    ptaps,
    pntaps,
    b,
    y,
    yk,
    ph,
    q0,
    q1,
    itaps,
    n_i,
    buf,
    idx,
):
    """The column block of output row y, phase ph, phase columns q0 ≤ q < q1: only the taps
    that can be valid there.

    Output columns are grouped into phases (for a transposed convolution of stride s, the
    columns X ≡ ph mod s; for a convolution, one phase holding every column); a phase's columns
    share their valid column taps ``ptaps[ph]``, and the row's valid row taps are ``itaps``.
    Writes cols[(c,ii,jj), q - q0] = K[b,c|0,i,j,yk,X] · x[b,c,ty[i,y],tx[j,X]] for
    X = pcols[ph,q] into ``buf`` (as an (m × (q1-q0)) block, returned) and the matching column
    of Wm into ``idx``. ``jrun``: common.unit_runs of ``tx`` (used when there is one phase);
    ``prun``: schedule.phase_runs (several phases: a tap meets the input on a run of the
    phase's columns, K read at stride P, the input at unit stride — no table per column).
    Skipping the taps that fall between the samples of a zero-inserted input saves s² of the
    work of a transposed convolution, and keeps a non-finite weight out of outputs it never
    reaches (no NaN·0).
    """
    C = x.shape[1]
    kc_many = K.shape[1] > 1
    kw = tx.shape[0]
    kk = ty.shape[0] * kw
    nt = q1 - q0
    nj = pntaps[ph]
    one_phase = pncols.shape[0] == 1
    m = C * n_i * nj
    cols = buf[: m * nt].reshape(m, nt)
    if n_i * nj < kk:  # some taps skipped: the caller gathers the matching weight columns
        for c in range(C):
            for ii in range(n_i):
                for jj in range(nj):
                    idx[(c * n_i + ii) * nj + jj] = c * kk + itaps[ii] * kw + ptaps[ph, jj]
    # Two passes: the table-driven taps and the zero edges of the unit-stride runs first, then
    # the runs themselves. With the edge zeroing in the same loop body as a run, LLVM leaves
    # the run's loop scalar (measured: 2.5× slower). The first pass decides per tap, not per
    # (channel, tap): a tile inside the image has nothing to zero, and skips the channels.
    for ii in range(n_i):
        i = itaps[ii]
        iy = ty[i, y]
        for jj in range(nj):
            j = ptaps[ph, jj]
            lo, hi = jrun[j, 0], jrun[j, 1]
            if one_phase and lo >= 0:
                lo = min(max(lo, q0), q1)  # the run, clipped to the tile
                hi = min(max(hi, lo), q1)
                if lo == q0 and hi == q1:
                    continue
                for c in range(C):
                    row = (c * n_i + ii) * nj + jj
                    for q in range(lo - q0):
                        cols[row, q] = 0.0
                    for q in range(hi - q0, nt):
                        cols[row, q] = 0.0
                continue
            plo = prun[ph, j, 0]
            if not one_phase and plo >= 0:
                phi, pbase = prun[ph, j, 1], prun[ph, j, 2]
                for c in range(C):
                    phase_tile_run(
                        cols,
                        (c * n_i + ii) * nj + jj,
                        q0,
                        q1,
                        K,
                        x,
                        b,
                        c if kc_many else 0,
                        c,
                        i,
                        j,
                        yk,
                        iy,
                        plo,
                        phi,
                        pbase,
                        pcols[ph, 0],
                        pncols.shape[0],
                    )
                continue
            for c in range(C):
                kc = c if kc_many else 0
                row = (c * n_i + ii) * nj + jj
                for q in range(q0, q1):
                    X = pcols[ph, q]
                    ix = tx[j, X]
                    if ix < 0:
                        cols[row, q - q0] = 0.0
                    else:
                        cols[row, q - q0] = K[b, kc, i, j, yk, X] * x[b, c, iy, ix]
    if not one_phase:
        return cols
    for ii in range(n_i):
        i = itaps[ii]
        iy = ty[i, y]
        for jj in range(nj):
            j = ptaps[ph, jj]
            lo, hi, base = jrun[j, 0], jrun[j, 1], jrun[j, 2]
            if lo < 0:
                continue
            lo = min(max(lo, q0), q1)
            hi = min(max(hi, lo), q1)
            for c in range(C):
                modulate_run(
                    cols,
                    (c * n_i + ii) * nj + jj,
                    -q0,
                    K,
                    x,
                    b,
                    c if kc_many else 0,
                    c,
                    i,
                    j,
                    yk,
                    iy,
                    lo,
                    hi,
                    base,
                )
    return cols


@njit()
def full_columns(x, K, ty, tx, jrun, b, y, yk, cols, col0):
    """cols[(c,i,j), col0 + X] = K[b,c|0,i,j,yk,X] · x[b,c,ty[i,y],tx[j,X]] for every tap and
    every output column X of row y, 0 where the tap falls outside the input: the fixed row
    layout lets the weight gradient stack several output rows into one GEMM. Two passes, as
    in phase_columns."""
    C = x.shape[1]
    kc_many = K.shape[1] > 1
    kh, kw = ty.shape[0], tx.shape[0]
    Wo = K.shape[5]
    for c in range(C):
        kc = c if kc_many else 0
        for i in range(kh):
            iy = ty[i, y]
            for j in range(kw):
                row = (c * kh + i) * kw + j
                lo, hi = jrun[j, 0], jrun[j, 1]
                if iy < 0:
                    lo = hi = Wo  # the whole row is zero
                if iy < 0 or lo >= 0:
                    for X in range(lo):
                        cols[row, col0 + X] = 0.0
                    for X in range(hi, Wo):
                        cols[row, col0 + X] = 0.0
                    continue
                for X in range(Wo):
                    ix = tx[j, X]
                    if ix < 0:
                        cols[row, col0 + X] = 0.0
                    else:
                        cols[row, col0 + X] = K[b, kc, i, j, yk, X] * x[b, c, iy, ix]
    for i in range(kh):  # channels innermost: the tap's K row stays in L1 across them
        iy = ty[i, y]
        if iy < 0:
            continue
        for j in range(kw):
            lo, hi, base = jrun[j, 0], jrun[j, 1], jrun[j, 2]
            if lo < 0:
                continue
            for c in range(C):
                modulate_run(
                    cols,
                    (c * kh + i) * kw + j,
                    col0,
                    K,
                    x,
                    b,
                    c if kc_many else 0,
                    c,
                    i,
                    j,
                    yk,
                    iy,
                    lo,
                    hi,
                    base,
                )


@njit(inline="always")
def store_run(out, res, b, o, y, q0, q1, bo):
    """out[b, o, y, q0:q1] = res[o, :] + bo, in the vectorising loop form of modulate_run
    (an unguarded q0 + q index left this store scalar: ~10 % of a small-Cout forward)."""
    if q0 < 0 or y < 0 or o < 0 or b < 0:
        return
    for q in range(q1 - q0):
        out[b, o, y, q0 + q] = res[o, q] + bo


@njit(inline="always")
def forward_row(
    x,
    K,
    Wm,
    bias,
    ty,
    tx,
    jrun,
    pcols,
    pncols,
    ptaps,
    pntaps,
    prun,
    rntaps,
    wph,
    out,
    b,
    y,
    yk,
    tile,
    buf,
    wbuf,
    idx,
    itaps,
    resb,
):
    """out[b, :, y, :] = Wm @ columns(b, y) + bias: one GEMM per phase and tile of ``tile``
    columns, in the scratch the caller hands over."""
    C = x.shape[1]
    Cout = out.shape[1]
    kk = ty.shape[0] * tx.shape[0]
    has_bias = bias.shape[0] > 0
    one_phase = pncols.shape[0] == 1
    Pr = rntaps.shape[0]
    n_i = row_taps(ty, y, itaps)
    for ph in range(pncols.shape[0]):
        nx = pncols[ph]
        for q0 in range(0, nx, tile):
            q1 = min(q0 + tile, nx)
            cols = phase_columns(
                x,
                K,
                ty,
                tx,
                jrun,
                prun,
                pcols,
                pncols,
                ptaps,
                pntaps,
                b,
                y,
                yk,
                ph,
                q0,
                q1,
                itaps,
                n_i,
                buf,
                idx,
            )
            m = cols.shape[0]
            if m == 0:
                for o in range(Cout):
                    for q in range(q0, q1):
                        out[b, o, y, pcols[ph, q]] = bias[o] if has_bias else np.float32(0.0)
                continue
            res = resb[: Cout * (q1 - q0)].reshape(Cout, q1 - q0)
            if m == C * kk:
                np.dot(Wm, cols, res)
            elif Pr > 1 and n_i == rntaps[y % Pr]:
                # the row has every tap of its row phase (away from the border): the phase
                # pair's weight columns, gathered once by the launcher
                np.dot(wph[y % Pr, ph, : Cout * m].reshape(Cout, m), cols, res)
            else:
                Wsub = wbuf[: Cout * m].reshape(Cout, m)
                for o in range(Cout):
                    for row in range(m):
                        Wsub[o, row] = Wm[o, idx[row]]
                np.dot(Wsub, cols, res)
            for o in range(Cout):
                # a float32 zero keeps float32 sums in float32 (a 0.0 literal would promote
                # them to float64)
                bo = bias[o] if has_bias else np.float32(0.0)
                if one_phase:
                    store_run(out, res, b, o, y, q0, q1, bo)
                else:
                    for q in range(q0, q1):
                        out[b, o, y, pcols[ph, q]] = res[o, q - q0] + bo


@njit(parallel=True)
def _dense_forward(
    x,
    K,
    Wm,
    bias,
    ty,
    tx,
    pcols,
    pncols,
    ptaps,
    pntaps,
    prun,
    rntaps,
    wph,
    out,
    y0,
    tile,
    blocks,
    buf_s,
    wbuf_s,
    idx_s,
    itaps_s,
    res_s,
):
    """out[b, :, y, :] = Wm @ columns(b, y) + bias for the output rows y0 ≤ y < y0 + n that K
    (n rows, a stripe of the full kernel) covers; ``blocks`` blocks of rows in parallel, one
    GEMM per phase and tile of ``tile`` columns. Each block works in the running thread's slice
    (``numba.get_thread_id()``) of the scratch buffers (columns, weight rows, tap indices, GEMM
    result), which the launcher allocates: a failed allocation inside the parallel region would
    not reach the caller."""
    B = x.shape[0]
    n = K.shape[4]
    jrun = np.empty((tx.shape[0], 3), dtype=np.int64)
    unit_runs(tx, jrun)
    rows = B * n
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        tid = get_thread_id()
        for r in range(blk * rows // blocks, (blk + 1) * rows // blocks):
            b = r // n
            yk = r % n
            forward_row(
                x,
                K,
                Wm,
                bias,
                ty,
                tx,
                jrun,
                pcols,
                pncols,
                ptaps,
                pntaps,
                prun,
                rntaps,
                wph,
                out,
                b,
                y0 + yk,
                yk,
                tile,
                buf_s[tid],
                wbuf_s[tid],
                idx_s[tid],
                itaps_s[tid],
                res_s[tid],
            )


@njit(inline="always")
def gather_phase_run(kb, K, b, kc, i, j, yk, lo, hi, X0, P):
    """kb[kc, t] = K[b, kc, i, j, yk, X0 + P·(lo + t)] for t < hi - lo: a tap's K on its run
    of phase columns, made contiguous."""
    if lo < 0 or X0 < 0 or yk < 0:
        return
    for t in range(hi - lo):
        kb[kc, t] = K[b, kc, i, j, yk, nowrap(X0 + P * (lo + t))]


@njit(inline="always")
def prefetch_phase_row(K, b, yk, rtaps, rntaps, pr, ptaps, pntaps, pcols, pc, prun):
    """Hint the cache to fetch the lines of K that by-phase output row yk (of K's stripe; row
    phase pr, column phase pc) reads: each live tap's run at stride P in K's full layout, one
    hint per 64-byte line. Those reads jump between K's tap planes every 16 or so lines, a
    pattern the hardware prefetchers do not follow: without the hints the op waited on memory
    for K (W4b, the op alone: 9.2 → 7.9 ms, one thread; docs/performance.md, stop 14)."""
    X0, P = pcols[pc, 0], pcols.shape[0]
    if yk < 0 or X0 < 0 or pr < 0:
        return
    step = max(1, 16 // P)  # phase columns per line of float32
    for kc in range(K.shape[1]):
        for ii in range(rntaps[pr]):
            i = rtaps[pr, ii]
            for jj in range(pntaps[pc]):
                j = ptaps[pc, jj]
                lo, hi = prun[pc, j, 0], prun[pc, j, 1]
                if lo < 0:
                    continue
                for q in range(lo, hi, step):
                    prefetch(K, (b, kc, i, j, yk, X0 + P * q), False)


@njit(inline="always")
def channel_rows(colsT, col0, nx, r0, C, kb, xT, b, iy, lo, hi, base):
    """colsT[col0 + q, r0 + c] = kb[0|c, q - lo] · xT[b, iy, base + q, c] for lo ≤ q < hi,
    0 at the other phase columns q < nx: a tap's columns, channels innermost (contiguous in
    both the channels-last input and the transposed column block)."""
    if lo < 0 or hi > nx or col0 < 0 or r0 < 0 or iy < 0 or base + lo < 0:
        return
    for q in range(lo):
        for c in range(C):
            colsT[col0 + q, r0 + c] = 0.0
    for q in range(hi, nx):
        for c in range(C):
            colsT[col0 + q, r0 + c] = 0.0
    if kb.shape[0] == 1:
        for t in range(hi - lo):
            kv = kb[0, t]
            cq = nowrap(col0 + lo + t)
            ix = nowrap(base + lo + t)
            for c in range(C):
                colsT[cq, nowrap(r0 + c)] = kv * xT[b, iy, ix, c]
    else:
        for t in range(hi - lo):
            cq = nowrap(col0 + lo + t)
            ix = nowrap(base + lo + t)
            for c in range(C):
                colsT[cq, nowrap(r0 + c)] = kb[c, t] * xT[b, iy, ix, c]


@njit(parallel=True)
def _dense_forward_phased(
    x,
    K,
    Wm,
    bias,
    ty,
    tx,
    rtaps,
    rntaps,
    pcols,
    pncols,
    ptaps,
    pntaps,
    prun,
    units,
    rows,
    out,
    y0,
    xT,
    iy0,
    wphT,
    buf_s,
    res_s,
    kb_s,
    rbuf_s,
    wbuf_s,
    idx_s,
    itaps_s,
    rres_s,
):
    """_dense_forward of a transposed convolution, by phase pair. Unit u = (b, pr, pc, start,
    cnt) is one GEMM colsᵀ @ Wᵀ over the output rows rows[start : start + cnt] of row phase pr
    (rows that have every tap of their phase) and the columns of column phase pc, side by side:
    colsᵀ has one row per output element and the taps' channels innermost (read from ``xT``,
    the input from row iy0 on, channels last), Wᵀ is the phase pair's ``wphT``. One GEMM of
    cnt·(phase columns) replaces cnt GEMMs of one phase row each, whose per-call and per-run
    overheads dominated. pr = -1: the border row rows[start], which misses some taps of its
    phase, by forward_row (all phases; only the taps it meets, so a non-finite weight stays out
    of outputs it never reaches)."""
    C = x.shape[1]
    KC = K.shape[1]
    P = pncols.shape[0]
    jrun = np.empty((tx.shape[0], 3), dtype=np.int64)
    unit_runs(tx, jrun)
    # a border row misses taps of its row phase: forward_row gathers the weight columns of
    # the taps it meets (one row phase here switches its phase-pair shortcut off)
    no_phase = np.zeros(1, dtype=np.int64)
    for u in prange(units.shape[0]):  # units are disjoint sets of output elements
        tid = get_thread_id()
        b, pr, pc, start, cnt = units[u, 0], units[u, 1], units[u, 2], units[u, 3], units[u, 4]
        if pr < 0:
            y = rows[start]
            forward_row(
                x,
                K,
                Wm,
                bias,
                ty,
                tx,
                jrun,
                pcols,
                pncols,
                ptaps,
                pntaps,
                prun,
                no_phase,
                wphT,
                out,
                b,
                y,
                y - y0,
                pcols.shape[1],
                rbuf_s[tid],
                wbuf_s[tid],
                idx_s[tid],
                itaps_s[tid],
                rres_s[tid],
            )
            continue
        nx = pncols[pc]
        X0 = pcols[pc, 0]
        n_i, nj = rntaps[pr], pntaps[pc]
        m = C * n_i * nj
        ncol = cnt * nx
        colsT = buf_s[tid, : ncol * m].reshape(ncol, m)
        kb = kb_s[tid]
        for k in range(cnt):
            y = rows[start + k]
            # K's lines for the next row: this unit's, else the next unit's first
            un, kn = np.int64(u), k + 1
            if kn == cnt:
                un, kn = un + 1, 0
            if un < units.shape[0] and units[un, 0] == b:
                pr_n, pc_n, yk_n = units[un, 1], units[un, 2], rows[units[un, 3] + kn] - y0
                prefetch_phase_row(
                    K, b, yk_n, rtaps, rntaps, pr_n, ptaps, pntaps, pcols, pc_n, prun
                )
            for ii in range(n_i):
                i = rtaps[pr, ii]
                iy = ty[i, y]
                for jj in range(nj):
                    j = ptaps[pc, jj]
                    lo, hi, base = prun[pc, j, 0], prun[pc, j, 1], prun[pc, j, 2]
                    # the tap's K run (stride P in K's full layout) gathered once, then the
                    # channels of each column side by side at unit stride
                    for kc in range(KC):
                        gather_phase_run(kb, K, b, kc, i, j, y - y0, lo, hi, X0, P)
                    channel_rows(
                        colsT, k * nx, nx, (ii * nj + jj) * C, C, kb, xT, b, iy - iy0, lo, hi, base
                    )
        unit_gemm_store(colsT, wphT, pr, pc, res_s[tid], out, bias, b, rows, start, cnt, X0, P)


@njit(inline="always")
def unit_gemm_store(colsT, wphT, pr, pc, res, out, bias, b, rows, start, cnt, X0, P):
    """A by-phase unit's GEMM colsᵀ @ Wᵀ (colsT: one row per output element, cnt rows of nx
    phase columns side by side) and its outputs + bias at the phase's columns X0 + P·q."""
    ncol, m = colsT.shape[0], colsT.shape[1]
    Cout = out.shape[1]
    nx = ncol // max(cnt, 1)
    has_bias = bias.shape[0] > 0
    resT = res[: ncol * Cout].reshape(ncol, Cout)
    if m > 0:
        np.dot(colsT, wphT[pr, pc, : m * Cout].reshape(m, Cout), resT)
    else:  # no tap of this phase pair meets the input: the bias alone
        for t in range(ncol * Cout):
            res[t] = 0.0
    for o in range(Cout):
        # a float32 zero keeps float32 sums in float32
        bo = bias[o] if has_bias else np.float32(0.0)
        for k in range(cnt):
            y = rows[start + k]
            for q in range(nx):
                out[b, o, y, nowrap(X0 + P * q)] = resT[nowrap(k * nx + q), o] + bo


@njit(parallel=True)
def _dense_forward_from_guide(
    x,
    bias,
    ty,
    rtaps,
    rntaps,
    pcols,
    pncols,
    ptaps,
    pntaps,
    prun,
    chunks,
    rows,
    out,
    xT,
    iy0,
    wphT,
    guide,
    src,
    gy,
    cy,
    kruns,
    c0,
    s,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    out_mask,
    buf_s,
    res_s,
    kb_s,
    gd_s,
    itaps_s,
    cen_s,
    km_s,
    sq_s,
    stats_s,
    fac_s,
):
    """_dense_forward_phased with K computed in place of being read: chunk (b, pr, start, cnt)
    is the output rows rows[start : start + cnt] of row phase pr (each has every tap of its
    phase). Their guide samples are gathered once (kernel.row_samples), then per column phase
    each row's K at the phase's live taps (kernel.phase_window, scaled as packernel2d scales
    it) feeds that row's modulated columns directly, and one GEMM per phase as in the
    two-step path. K is never stored: no stripe to write, zero or read back."""
    C = x.shape[1]
    KC = km_s.shape[1]
    P = pncols.shape[0]
    for u in prange(chunks.shape[0]):
        tid = get_thread_id()
        b, pr, start, cnt = chunks[u, 0], chunks[u, 1], chunks[u, 2], chunks[u, 3]
        n_i = rntaps[pr]
        gd, itaps = gd_s[tid], itaps_s[tid]
        cen, km, sq, stats, fac, kb = (
            cen_s[tid],
            km_s[tid],
            sq_s[tid],
            stats_s[tid],
            fac_s[tid],
            kb_s[tid],
        )
        for k in range(cnt):
            if k + 1 < cnt:  # the next row's guide lines (see kernel.prefetch_guide_rows)
                prefetch_guide_rows(guide, src, gy, cy, b, rows[start + k + 1])
            row_samples(guide, gy, rows[start + k], b, c0, s, itaps[k], gd[k])
        for pc in range(P):
            nx = pncols[pc]
            nj = pntaps[pc]
            m = C * n_i * nj
            colsT = buf_s[tid, : cnt * nx * m].reshape(cnt * nx, m)
            for k in range(cnt):
                y = rows[start + k]
                phase_row(
                    gd[k],
                    src,
                    cy,
                    pcols,
                    pncols,
                    itaps[k],
                    n_i,
                    gy,
                    y,
                    pc,
                    ptaps,
                    pntaps,
                    kruns,
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
                for ii in range(n_i):
                    iy = ty[rtaps[pr, ii], y]
                    for jj in range(nj):
                        lo, hi, base = (
                            prun[pc, ptaps[pc, jj], 0],
                            prun[pc, ptaps[pc, jj], 1],
                            prun[pc, ptaps[pc, jj], 2],
                        )
                        if lo < 0:
                            continue
                        for kc in range(KC):
                            for t in range(hi - lo):
                                q = nowrap(lo + t)
                                kb[kc, t] = km[kc, ii, jj, q] * fac[kc, q]
                        channel_rows(
                            colsT,
                            k * nx,
                            nx,
                            (ii * nj + jj) * C,
                            C,
                            kb,
                            xT,
                            b,
                            iy - iy0,
                            lo,
                            hi,
                            base,
                        )
            unit_gemm_store(
                colsT, wphT, pr, pc, res_s[tid], out, bias, b, rows, start, cnt, pcols[pc, 0], P
            )


@njit(parallel=True)
def _dense_backward_params(
    g,
    x,
    K,
    ty,
    tx,
    dW_parts,
    db_parts,
    n_chunks,
    y0,
    need_w,
    need_b,
    group,
    buf_s,
    gbuf_s,
    acc_s,
    part_s,
):
    """Weight and bias gradients from the output rows y0 ≤ y < y0 + K.shape[4].

    dW = Σ_rows g_row · columns_rowᵀ, with the columns of ``group`` output rows of one image
    side by side per GEMM (schedule.param_group): a longer inner dimension than one row
    gives BLAS, and one accumulation per group instead of per row. Reductions over all pixels:
    each of ``n_chunks`` fixed chunks of rows sums into its own partial buffer, in row order,
    and the caller adds the partials in chunk order — deterministic, no atomics.
    Every tap gets a column (zero where it falls outside): no column phases here. Scratch
    per thread (``buf_s``, ``gbuf_s``, ``acc_s``, ``part_s``; empty unless need_w) comes from
    the launcher, never allocated inside the parallel region.
    """
    B = x.shape[0]
    C = x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    n = K.shape[4]
    kh = ty.shape[0]
    kk = kh * tx.shape[0]
    m = C * kk
    rows = B * n
    jrun = np.empty((tx.shape[0], 3), dtype=np.int64)
    unit_runs(tx, jrun)
    for ch in prange(n_chunks):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        # the running thread's scratch: a chunk runs on one thread, so it reuses that thread's
        # (cache-warm) buffers; the chunk's sum goes to its own dW_parts[ch] at the end
        tid = get_thread_id()
        buf = buf_s[tid]
        gbuf = gbuf_s[tid]
        acc = acc_s[tid]
        part = part_s[tid]
        acc[:, :] = 0.0
        r = r0
        while r < r1:
            b = r // n
            yk = r % n
            R = min(group, r1 - r, n - yk)  # rows of one image only
            if need_b:
                for t in range(R):
                    for o in range(Cout):
                        sb = 0.0
                        for xo in range(Wo):
                            sb += g[b, o, y0 + yk + t, xo]
                        db_parts[ch, o] += sb
            if need_w:
                ncol = R * Wo
                cols = buf[: m * ncol].reshape(m, ncol)
                gT = gbuf[: ncol * Cout].reshape(ncol, Cout)
                for t in range(R):
                    full_columns(x, K, ty, tx, jrun, b, y0 + yk + t, yk + t, cols, t * Wo)
                    for xo in range(Wo):
                        for o in range(Cout):
                            gT[t * Wo + xo, o] = g[b, o, y0 + yk + t, xo]
                # columns @ gᵀ, both C-contiguous: BLAS runs this orientation ~1.5× faster
                # than g @ columnsᵀ on these shapes
                np.dot(cols, gT, part)  # (m × Cout)
                for q in range(m):
                    for o in range(Cout):
                        acc[q, o] += part[q, o]
            r += R
        if need_w:
            for o in range(Cout):
                for q in range(m):
                    dW_parts[ch, o, q] += acc[q, o]


@njit(inline="always")
def tap_grads_run(G, grow, x, K, dK, dx, b, kc, c, i, j, yk, iy, lo, hi, base, need_k, need_x):
    """dK += G·x and dx += K·G along the unit-stride run lo ≤ X < hi of tap (i, j)
    (the vectorising loop form of modulate_run)."""
    n = hi - lo
    ox = base + lo
    if lo < 0 or ox < 0 or iy < 0 or grow < 0:
        return
    for t in range(n):
        gv = G[grow, lo + t]
        if need_k:
            dK[b, kc, i, j, yk, lo + t] += gv * x[b, c, iy, ox + t]
        if need_x:
            dx[b, c, iy, ox + t] += K[b, kc, i, j, yk, lo + t] * gv


@njit(inline="always")
def tap_grads_gather(G, grow, x, K, dK, dx, b, kc, c, i, j, yk, iy, tx, need_k, need_x):
    """tap_grads_run through the tap table (strided or zero-inserted geometries)."""
    for xo in range(G.shape[1]):
        ix = tx[j, xo]
        if ix >= 0:
            gv = G[grow, xo]
            if need_k:
                dK[b, kc, i, j, yk, xo] += gv * x[b, c, iy, ix]
            if need_x:
                dx[b, c, iy, ix] += K[b, kc, i, j, yk, xo] * gv


@njit(parallel=True)
def _dense_backward_data(
    g, x, K, WmT, ty, tx, dx, dK, y0, rnd, R, need_x, need_k, blocks, grow_s, G_s
):
    """Input and kernel gradients from the output rows y0 ≤ y < y0 + K.shape[4] with
    y ≡ rnd (mod R).

    One GEMM per output row, G = Wmᵀ · g[b, :, y, :] (C·kh·kw × W_out), serves both:
    dK[t, x] = Σ_c G[(c,t), x] · x[c, tap t of (y, x)] (one writer per row), and
    dx[c, tap t of (y, x)] += K[t, x] · G[(c,t), x] (a scatter). The caller runs the rounds
    rnd = 0..R-1 one after another with R such that rows of one round touch disjoint input rows
    (schedule.op_rounds),
    so the scatter has no races and every input pixel sums its contributions in a fixed order.
    The rows go to ``blocks`` contiguous blocks, each in the running thread's slice of the scratch
    (g's row, G) that the launcher allocated.
    """
    B, C = x.shape[0], x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    KC, kh, kw, n = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    kk = kh * kw
    first, cnt = round_rows(y0, n, rnd, R)
    jrun = np.empty((kw, 3), dtype=np.int64)
    unit_runs(tx, jrun)
    items = B * cnt
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        tid = get_thread_id()
        grow = grow_s[tid]
        G = G_s[tid]
        for q in range(blk * items // blocks, (blk + 1) * items // blocks):
            b = q // cnt
            y = first + (q % cnt) * R
            yk = y - y0
            for o in range(Cout):
                for xo in range(Wo):
                    grow[o, xo] = g[b, o, y, xo]
            np.dot(WmT, grow, G)
            if need_k:
                for kc in range(KC):
                    for i in range(kh):
                        for j in range(kw):
                            for xo in range(Wo):
                                dK[b, kc, i, j, yk, xo] = 0.0
            # one walk over the taps serves both gradients; channels innermost, so that the
            # tap's K and dK rows stay in L1 across them
            for i in range(kh):
                iy = ty[i, y]
                if iy < 0:
                    continue
                for j in range(kw):
                    lo, hi, base = jrun[j, 0], jrun[j, 1], jrun[j, 2]
                    for c in range(C):
                        kc = c if KC > 1 else 0
                        grow_t = c * kk + i * kw + j
                        if lo >= 0:
                            tap_grads_run(
                                G,
                                grow_t,
                                x,
                                K,
                                dK,
                                dx,
                                b,
                                kc,
                                c,
                                i,
                                j,
                                yk,
                                iy,
                                lo,
                                hi,
                                base,
                                need_k,
                                need_x,
                            )
                        else:
                            tap_grads_gather(
                                G, grow_t, x, K, dK, dx, b, kc, c, i, j, yk, iy, tx, need_k, need_x
                            )


# --------------------------------------------------------------------------- launchers
def phase_weights(Wm, C, rtaps, rntaps, ptaps, pntaps, kw):
    """wph[pr, pc, :Cout·m] = the (Cout × m) columns of Wm of the taps of row phase pr and
    column phase pc, in phase_columns' row order (c, ii, jj): the forward's GEMM operand for
    every row that has all of its phase's row taps, gathered once per call instead of per GEMM."""
    Cout = Wm.shape[0]
    kk = Wm.shape[1] // max(C, 1)
    Pr, Pc = rntaps.shape[0], pntaps.shape[0]
    mmax = C * max(int(rntaps.max()), 1) * max(int(pntaps.max()), 1)
    wph = np.zeros((Pr, Pc, Cout * mmax), Wm.dtype)
    for pr in range(Pr):
        for pc in range(Pc):
            ii, jj = rtaps[pr, : rntaps[pr]], ptaps[pc, : pntaps[pc]]
            taps = (ii[:, None] * kw + jj[None, :]).ravel()
            idx = (np.arange(C)[:, None] * kk + taps[None, :]).ravel()
            wph[pr, pc, : Cout * idx.size] = Wm[:, idx].ravel()
    return wph


def phase_weights_t(Wm, geo, C):
    """wphT[pr, pc, :m·Cout] = the (m × Cout) transposed weight columns of the taps of row phase
    pr and column phase pc, rows in (ii, jj, c) order: the second operand of the by-phase
    forward's GEMM colsᵀ @ Wᵀ (OpenBLAS runs that shape, a long first dimension and 16 or so
    columns, ~1.7× faster than W @ cols with 16 or so rows). One gather through the
    geometry's memoised table (schedule.phase_weight_index): the fused op calls this once per
    stripe of K."""
    idx = schedule.phase_weight_index(geo, C)
    Pr, Pc, mmax = idx.shape
    # rows of Wmᵀ taken straight into the (…, m, Cout) order: one gather, no transposed copy
    # (half the time of Wm[:, idx] then transposing, ≈ 10 µs a stripe at W4b)
    return np.take(Wm.T, idx, axis=0).reshape(Pr, Pc, mmax * Wm.shape[0])


def pac_dense_forward(x, K, Wm, bias, geo, out, y0):
    """out rows y0 ≤ y < y0 + K.shape[4] (K: that stripe of the kernel) of a dense PAC op."""
    pcols, pncols, ptaps, pntaps = schedule.phases(geo)
    m = x.shape[1] * geo.ty.shape[0] * geo.tx.shape[0]
    Cout, Wo = out.shape[1], out.shape[3]
    T = schedule.scratch_slices()
    dt = x.dtype
    plan = schedule.phase_forward_units(geo, x.shape[0], y0, K.shape[4], x.shape[1], Cout)
    if plan is not None:
        units, rows = plan
        _, _, rtaps, rntaps = schedule.row_phases(geo)
        wphT = phase_weights_t(Wm, geo, x.shape[1])
        mp = wphT.shape[2] // max(Cout, 1)
        nx = pcols.shape[1]
        span = int(units[:, 4].max()) * nx if units.shape[0] else 0
        # the input rows the stripe reads, channels last (see channel_rows): a stripe of the
        # fused op reads a fraction of the input
        ty = geo.ty[:, y0 : y0 + K.shape[4]]
        valid = ty[ty >= 0]
        iy0, iy1 = (int(valid.min()), int(valid.max()) + 1) if valid.size else (0, 0)
        xT = np.ascontiguousarray(np.moveaxis(x[:, :, iy0:iy1], 1, 3))
        # scratch per thread, allocated here (see _dense_forward); the border rows' (by
        # forward_row, whole phases) after the GEMM units'
        _dense_forward_phased(
            x,
            K,
            Wm,
            bias,
            geo.ty,
            geo.tx,
            rtaps,
            rntaps,
            pcols,
            pncols,
            ptaps,
            pntaps,
            schedule.phase_runs(geo),
            units,
            rows,
            out,
            y0,
            xT,
            iy0,
            wphT,
            np.empty((T, mp * span), dt),
            np.empty((T, Cout * span), dt),
            np.empty((T, K.shape[1], nx), K.dtype),
            np.empty((T, m * nx), dt),
            np.empty((T, Cout * m), dt),
            np.empty((T, m), np.int64),
            np.empty((T, geo.ty.shape[0]), np.int64),
            np.empty((T, Cout * nx), dt),
        )
        return
    if schedule.by_phase(geo):
        _, _, rtaps, rntaps = schedule.row_phases(geo)
        wph = phase_weights(Wm, x.shape[1], rtaps, rntaps, ptaps, pntaps, geo.tx.shape[0])
    else:
        rntaps, wph = np.zeros(1, np.int64), np.empty((1, 1, 0), Wm.dtype)
    tile = schedule.gemm_tile(Cout, m, pcols.shape[1])
    # scratch per thread, allocated here (see _dense_forward)
    blocks = schedule.row_blocks(x.shape[0] * K.shape[4])
    _dense_forward(
        x,
        K,
        Wm,
        bias,
        geo.ty,
        geo.tx,
        pcols,
        pncols,
        ptaps,
        pntaps,
        schedule.phase_runs(geo),
        rntaps,
        wph,
        out,
        y0,
        tile,
        blocks,
        np.empty((T, m * Wo), dt),
        np.empty((T, Cout * m), dt),
        np.empty((T, m), np.int64),
        np.empty((T, geo.ty.shape[0]), np.int64),
        np.empty((T, Cout * tile), dt),
    )


def from_guide_rows(kgeo, geo, B, C, Cout):
    """(a, e, chunks, rows): the output rows a ≤ y < e that _dense_forward_from_guide computes
    (those between the border rows, every one with all the taps of its row phase) and its work,
    or None where the kernel and op geometries do not share their phases the way it needs."""
    phased = schedule.kernel_phases(kgeo)
    if phased is None or not schedule.by_phase(geo):
        return None
    kcols, kncols, ktaps, kntaps, kruns = phased[:5]
    pcols, pncols, ptaps, pntaps = schedule.phases(geo)
    prun = schedule.phase_runs(geo)
    # the same phases, and each phase's taps on the same runs of its columns
    live = [(pc, j) for pc in range(pcols.shape[0]) for j in ptaps[pc, : pntaps[pc]]]
    same = (
        all(
            np.array_equal(u, v)
            for u, v in zip((kcols, kncols, ktaps, kntaps), (pcols, pncols, ptaps, pntaps))
        )
        and all(np.array_equal(kruns[pc, j, :2], prun[pc, j, :2]) for pc, j in live)
        and np.array_equal(kgeo.gy >= 0, geo.ty >= 0)
    )
    if not same:
        return None
    Ho = geo.ty.shape[1]
    border = np.nonzero(~schedule.full_rows(geo))[0]
    a = int(border[border < Ho // 2].max()) + 1 if (border < Ho // 2).any() else 0
    e = int(border[border >= Ho // 2].min()) if (border >= Ho // 2).any() else Ho
    if e <= a:
        return None
    plan = schedule.phase_forward_units(geo, B, a, e - a, C, Cout)
    if plan is None or (plan[0][:, 1] < 0).any():
        return None
    units, rows = plan
    # the units of one row chunk, one per column phase, are consecutive: one chunk each
    chunks = np.ascontiguousarray(units[units[:, 2] == 0][:, [0, 1, 3, 4]])
    return a, e, chunks, rows


def pac_dense_forward_from_guide(
    x,
    guide,
    src,
    kgeo,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    Wm,
    bias,
    geo,
    out,
    out_mask,
):
    """The fused transposed op's output rows between its border rows, K computed inside the
    by-phase GEMM units (_dense_forward_from_guide) and never stored; returns (a, e), the rows
    written (out, and out_mask with has_mask), or None where it does not apply (the caller
    then computes K stripe by stripe)."""
    B, C, Cout = x.shape[0], x.shape[1], out.shape[1]
    work = from_guide_rows(kgeo, geo, B, C, Cout)
    if work is None:
        return None
    a, e, chunks, rows = work
    pcols, pncols, ptaps, pntaps = schedule.phases(geo)
    _, _, rtaps, rntaps = schedule.row_phases(geo)
    kruns, c0, ws = schedule.kernel_phases(kgeo)[4:]
    wphT = phase_weights_t(Wm, geo, C)
    mp = wphT.shape[2] // max(Cout, 1)
    nx, kh, nj = pcols.shape[1], geo.ty.shape[0], ptaps.shape[1]
    cmax = int(chunks[:, 3].max()) if chunks.shape[0] else 1
    ty = geo.ty[:, a:e]
    valid = ty[ty >= 0]
    iy0, iy1 = (int(valid.min()), int(valid.max()) + 1) if valid.size else (0, 0)
    xT = np.ascontiguousarray(np.moveaxis(x[:, :, iy0:iy1], 1, 3))
    T = schedule.scratch_slices()
    KC, Cg, dt = alpha.shape[0], guide.shape[1], x.dtype
    _dense_forward_from_guide(
        x,
        bias,
        geo.ty,
        rtaps,
        rntaps,
        pcols,
        pncols,
        ptaps,
        pntaps,
        schedule.phase_runs(geo),
        chunks,
        rows,
        out,
        xT,
        iy0,
        wphT,
        guide,
        src,
        kgeo.gy,
        kgeo.cy,
        kruns,
        c0,
        kgeo.stride[-1],
        mask,
        alpha,
        lam,
        kind,
        asym,
        normalize,
        has_mask,
        out_mask,
        np.empty((T, mp * cmax * nx), dt),
        np.empty((T, Cout * cmax * nx), dt),
        np.empty((T, KC, nx), dt),
        np.empty((T, cmax, kh, Cg, max(ws, 1)), dt),
        np.empty((T, cmax, kh), np.int64),
        np.empty((T, src.shape[1], nx), dt),
        np.empty((T, KC, kh, nj, nx), dt),
        np.empty((T, KC, kh, nj, nx), dt),
        np.empty((T, 2 + KC, nx), dt),
        np.empty((T, KC, nx), dt),
    )
    return a, e


def pac_dense_backward_params(g, x, K, geo, dW_parts, db_parts, n_chunks, y0, need_w, need_b):
    """Weight and bias gradients of the output rows K covers, added into the partial buffers
    (``n_chunks`` fixed chunks of rows)."""
    m = x.shape[1] * geo.ty.shape[0] * geo.tx.shape[0]
    Cout, Wo = g.shape[1], g.shape[3]
    if schedule.by_phase(geo):
        _params_by_phase(g, x, K, geo, dW_parts, db_parts, n_chunks, y0, need_w, need_b, m)
        return
    group = schedule.param_group(m, Wo, x.itemsize)
    # scratch per thread, allocated here (see the kernel); empty without need_w
    mw, cw = (m, Cout) if need_w else (0, 0)
    T = schedule.scratch_slices()
    dt = x.dtype
    _dense_backward_params(
        g,
        x,
        K,
        geo.ty,
        geo.tx,
        dW_parts,
        db_parts,
        n_chunks,
        y0,
        need_w,
        need_b,
        group,
        np.empty((T, mw * group * Wo), dt),
        np.empty((T, cw * group * Wo), g.dtype),
        np.empty((T, mw, cw), dt),
        np.empty((T, mw, cw), dt),
    )


def pac_dense_backward_data(g, x, K, WmT, geo, dx, dK, y0, need_x, need_k):
    """dK of the output rows K covers (written) and their share of dx (added), in the scatter
    rounds of the geometry, one after another."""
    R = schedule.op_rounds(geo)
    Cout, Wo = g.shape[1], g.shape[3]
    if schedule.by_phase(geo):
        _data_by_phase(g, x, K, WmT, geo, dx, dK, y0, need_x, need_k, R)
        return
    # scratch per thread, allocated here (see the kernel); blocks for balance
    blocks = schedule.row_blocks(x.shape[0] * -(-K.shape[4] // R))
    T = schedule.scratch_slices()
    grow = np.empty((T, Cout, Wo), g.dtype)
    G = np.empty((T, WmT.shape[0], Wo), g.dtype)
    for rnd in range(R):
        _dense_backward_data(
            g, x, K, WmT, geo.ty, geo.tx, dx, dK, y0, rnd, R, need_x, need_k, blocks, grow, G
        )


# --------------------------------------------------------------------------- transposed phases
# A transposed convolution of stride s meets an input sample at only ≈ (k/s)² of its k² taps:
# output row y ≡ r (mod s) has the row taps of row phase r, output column X ≡ ph (mod s) the
# column taps of column phase ph (schedule.phases / schedule.row_phases). The backwards below
# run one GEMM per (row or row phase, column phase) over those taps only, instead of the
# all-taps GEMMs of _dense_backward_params / _dense_backward_data, whose rows are then mostly
# zero (s² of the work: 16× at stride 4).


@njit(inline="always")
def phase_column_run(cols, row, col0, nx, K, x, b, kc, c, i, j, yk, iy, lo, hi, base, X0, P):
    """cols[row, col0 + q] = K·x over the phase columns q (output column X0 + P·q) where tap
    (i, j) meets the input, lo ≤ q < hi at input column base + q; 0 at the others."""
    if lo < 0 or hi > nx or col0 < 0 or row < 0 or iy < 0 or X0 < 0 or base + lo < 0:
        return
    for q in range(lo):
        cols[row, col0 + q] = 0.0
    for q in range(hi, nx):
        cols[row, col0 + q] = 0.0
    ox = base + lo
    oc = col0 + lo
    for t in range(hi - lo):
        cols[row, oc + t] = K[b, kc, i, j, yk, X0 + P * (lo + t)] * x[b, c, iy, ox + t]


@njit(parallel=True)
def _dense_backward_params_phased(
    g,
    x,
    K,
    ty,
    tx,
    rtaps,
    rntaps,
    pcols,
    pncols,
    ptaps,
    pntaps,
    prun,
    dW_parts,
    db_parts,
    n_chunks,
    y0,
    need_w,
    need_b,
    group,
    buf_s,
    gbuf_s,
    acc_s,
    part_s,
    rows_s,
):
    """_dense_backward_params by phase: per chunk of output rows, per row phase and column
    phase, the columns of up to ``group`` rows of that row phase side by side, over the taps
    of the two phases only (zero where a tap misses the input near the border)."""
    B = x.shape[0]
    C = x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    n = K.shape[4]
    kc_many = K.shape[1] > 1
    kh, kw = ty.shape[0], tx.shape[0]
    kk = kh * kw
    Pr = rntaps.shape[0]
    Pc = pncols.shape[0]
    rows = B * n
    for ch in prange(n_chunks):
        r0 = ch * rows // n_chunks
        r1 = (ch + 1) * rows // n_chunks
        buf = buf_s[ch]
        gbuf = gbuf_s[ch]
        acc = acc_s[ch]
        part = part_s[ch]
        grp = rows_s[ch]
        if need_b:
            for r in range(r0, r1):
                b = r // n
                y = y0 + r % n
                for o in range(Cout):
                    sb = 0.0
                    for xo in range(Wo):
                        sb += g[b, o, y, xo]
                    db_parts[ch, o] += sb
        if not need_w:
            continue
        acc[:, :] = 0.0
        for pr in range(Pr):
            ni = rntaps[pr]
            if ni == 0:
                continue
            r = r0
            while r < r1:
                R = 0  # the next ≤ group rows of row phase pr
                while r < r1 and R < group:
                    if (y0 + r % n) % Pr == pr:
                        grp[R] = r
                        R += 1
                    r += 1
                if R == 0:
                    continue
                for pc in range(pncols.shape[0]):
                    nx = pncols[pc]
                    nj = pntaps[pc]
                    m = C * ni * nj
                    if m == 0 or nx == 0:
                        continue
                    ncol = R * nx
                    cols = buf[: m * ncol].reshape(m, ncol)
                    gT = gbuf[: ncol * Cout].reshape(ncol, Cout)
                    for t in range(R):
                        b = grp[t] // n
                        yk = grp[t] % n
                        y = y0 + yk
                        for c in range(C):
                            kc = c if kc_many else 0
                            for ii in range(ni):
                                i = rtaps[pr, ii]
                                iy = ty[i, y]
                                for jj in range(nj):
                                    j = ptaps[pc, jj]
                                    row = (c * ni + ii) * nj + jj
                                    lo, hi = prun[pc, j, 0], prun[pc, j, 1]
                                    if lo >= 0 and iy >= 0:
                                        phase_column_run(
                                            cols,
                                            row,
                                            t * nx,
                                            nx,
                                            K,
                                            x,
                                            b,
                                            kc,
                                            c,
                                            i,
                                            j,
                                            yk,
                                            iy,
                                            lo,
                                            hi,
                                            prun[pc, j, 2],
                                            pc,
                                            Pc,
                                        )
                                        continue
                                    for q in range(nx):
                                        X = pcols[pc, q]
                                        ix = tx[j, X]
                                        if iy < 0 or ix < 0:
                                            cols[row, t * nx + q] = 0.0
                                        else:
                                            cols[row, t * nx + q] = (
                                                K[b, kc, i, j, yk, X] * x[b, c, iy, ix]
                                            )
                        for q in range(nx):
                            X = pcols[pc, q]
                            for o in range(Cout):
                                gT[t * nx + q, o] = g[b, o, y, X]
                    pm = part[: m * Cout].reshape(m, Cout)
                    np.dot(cols, gT, pm)
                    for c in range(C):
                        for ii in range(ni):
                            for jj in range(nj):
                                row = (c * ni + ii) * nj + jj
                                full = c * kk + rtaps[pr, ii] * kw + ptaps[pc, jj]
                                for o in range(Cout):
                                    acc[full, o] += pm[row, o]
        for o in range(Cout):
            for q in range(C * kk):
                dW_parts[ch, o, q] += acc[q, o]


@njit(inline="always")
def phase_grads_run(
    G, row, x, K, dK, dx, b, kc, c, i, j, yk, iy, lo, hi, base, X0, P, need_k, need_x
):
    """tap_grads_run over phase columns lo ≤ q < hi (output column X0 + P·q, input column
    base + q): no table lookup or validity test per column."""
    n = hi - lo
    ox = base + lo
    if lo < 0 or ox < 0 or iy < 0 or row < 0 or X0 < 0:
        return
    for t in range(n):
        gv = G[row, lo + t]
        X = X0 + P * (lo + t)
        if need_k:
            dK[b, kc, i, j, yk, X] += gv * x[b, c, iy, ox + t]
        if need_x:
            dx[b, c, iy, ox + t] += K[b, kc, i, j, yk, X] * gv


@njit(parallel=True)
def _dense_backward_data_phased(
    g,
    x,
    K,
    WmT,
    ty,
    tx,
    pcols,
    pncols,
    ptaps,
    pntaps,
    prun,
    dx,
    dK,
    y0,
    rnd,
    R,
    need_x,
    need_k,
    blocks,
    itaps_s,
    wbuf_s,
    grow_s,
    G_s,
):
    """_dense_backward_data by phase: per output row and column phase, G = Wsubᵀ-rows · g over
    the row's valid row taps and the phase's column taps only; the same scatter rounds."""
    B, C = x.shape[0], x.shape[1]
    Cout = g.shape[1]
    KC, kh, kw, n = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    Wo = K.shape[5]
    kk = kh * kw
    P = pncols.shape[0]
    first, cnt = round_rows(y0, n, rnd, R)
    items = B * cnt
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        tid = get_thread_id()
        itaps = itaps_s[tid]
        wbuf = wbuf_s[tid]
        gbuf = grow_s[tid]
        Gbuf = G_s[tid]
        for q in range(blk * items // blocks, (blk + 1) * items // blocks):
            b = q // cnt
            y = first + (q % cnt) * R
            yk = y - y0
            if need_k:
                for kc in range(KC):
                    for i in range(kh):
                        for j in range(kw):
                            for xo in range(Wo):
                                dK[b, kc, i, j, yk, xo] = 0.0
            n_i = row_taps(ty, y, itaps)
            if n_i == 0:
                continue
            for ph in range(pncols.shape[0]):
                nx = pncols[ph]
                nj = pntaps[ph]
                m = C * n_i * nj
                if m == 0 or nx == 0:
                    continue
                Wsub = wbuf[: m * Cout].reshape(m, Cout)
                for c in range(C):
                    for ii in range(n_i):
                        for jj in range(nj):
                            full = c * kk + itaps[ii] * kw + ptaps[ph, jj]
                            for o in range(Cout):
                                Wsub[(c * n_i + ii) * nj + jj, o] = WmT[full, o]
                grow = gbuf[: Cout * nx].reshape(Cout, nx)
                for o in range(Cout):
                    for qq in range(nx):
                        grow[o, qq] = g[b, o, y, pcols[ph, qq]]
                G = Gbuf[: m * nx].reshape(m, nx)
                np.dot(Wsub, grow, G)
                for ii in range(n_i):
                    i = itaps[ii]
                    iy = ty[i, y]
                    for jj in range(nj):
                        j = ptaps[ph, jj]
                        lo, hi, base = prun[ph, j, 0], prun[ph, j, 1], prun[ph, j, 2]
                        for c in range(C):
                            kc = c if KC > 1 else 0
                            row = (c * n_i + ii) * nj + jj
                            if lo >= 0:
                                phase_grads_run(
                                    G,
                                    row,
                                    x,
                                    K,
                                    dK,
                                    dx,
                                    b,
                                    kc,
                                    c,
                                    i,
                                    j,
                                    yk,
                                    iy,
                                    lo,
                                    hi,
                                    base,
                                    pcols[ph, 0],
                                    P,
                                    need_k,
                                    need_x,
                                )
                                continue
                            for qq in range(nx):
                                X = pcols[ph, qq]
                                ix = tx[j, X]
                                if ix >= 0:
                                    gv = G[row, qq]
                                    if need_k:
                                        dK[b, kc, i, j, yk, X] += gv * x[b, c, iy, ix]
                                    if need_x:
                                        dx[b, c, iy, ix] += K[b, kc, i, j, yk, X] * gv


def _params_by_phase(g, x, K, geo, dW_parts, db_parts, n_chunks, y0, need_w, need_b, m):
    """pac_dense_backward_params of a transposed convolution: _dense_backward_params_phased."""
    rcols, rncols, rtaps, rntaps = schedule.row_phases(geo)
    pcols, pncols, ptaps, pntaps = schedule.phases(geo)
    C, Cout = x.shape[1], g.shape[1]
    mp = C * max(int(rntaps.max()), 1) * max(int(pntaps.max()), 1)
    nx = pcols.shape[1]
    group = schedule.param_group(mp, nx, x.itemsize)
    mw, mpw, cw = (m, mp, Cout) if need_w else (0, 0, 0)
    dt = x.dtype
    _dense_backward_params_phased(
        g,
        x,
        K,
        geo.ty,
        geo.tx,
        rtaps,
        rntaps,
        pcols,
        pncols,
        ptaps,
        pntaps,
        schedule.phase_runs(geo),
        dW_parts,
        db_parts,
        n_chunks,
        y0,
        need_w,
        need_b,
        group,
        np.empty((n_chunks, mpw * group * nx), dt),
        np.empty((n_chunks, cw * group * nx), g.dtype),
        np.empty((n_chunks, mw, cw), dt),
        np.empty((n_chunks, mpw * cw), dt),
        np.empty((n_chunks, group), np.int64),
    )


def _data_by_phase(g, x, K, WmT, geo, dx, dK, y0, need_x, need_k, R):
    """pac_dense_backward_data of a transposed convolution: _dense_backward_data_phased."""
    pcols, pncols, ptaps, pntaps = schedule.phases(geo)
    prun = schedule.phase_runs(geo)
    C, Cout = x.shape[1], g.shape[1]
    kh = geo.ty.shape[0]
    mp = C * kh * max(int(pntaps.max()), 1)
    nx = pcols.shape[1]
    blocks = schedule.row_blocks(x.shape[0] * -(-K.shape[4] // R))
    T = schedule.scratch_slices()  # scratch per thread (see the kernel)
    dt = g.dtype
    itaps = np.empty((T, kh), np.int64)
    wbuf = np.empty((T, mp * Cout), WmT.dtype)
    grow = np.empty((T, Cout * nx), dt)
    G = np.empty((T, mp * nx), dt)
    for rnd in range(R):
        _dense_backward_data_phased(
            g,
            x,
            K,
            WmT,
            geo.ty,
            geo.tx,
            pcols,
            pncols,
            ptaps,
            pntaps,
            prun,
            dx,
            dK,
            y0,
            rnd,
            R,
            need_x,
            need_k,
            blocks,
            itaps,
            wbuf,
            grow,
            G,
        )
