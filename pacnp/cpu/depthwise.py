"""Depthwise PAC (pacpool2d, and pacconv2d / pacconv_transpose2d with shared_filters), forward
and backward:

    out[b, c, y, x] = Σ_{i,j} w[i, j] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

Pooling is w ≡ 1. Tap tables as in ``pacnp._core``; transposed ops pass conv-transpose tables
and the spatially flipped filter.

``pac_depthwise_symmetric_forward`` is the fused op (K computed in the same pass) for a
symmetric K and filter (``pacnp._core.pair_geometry``), evaluated once per pair of pixels.

The public functions (``pacnp._backend.Depthwise``) take the op's geometry and derive this
backend's schedule from it (``pacnp.cpu.schedule``: row blocks, inverse row taps, the rows a
stripe reaches, the pair form's blocks); the numba kernels they launch are the ``_``-prefixed
functions.
"""

import numpy as np
from numba import get_thread_id, prange

from .. import config
from .._core import reached_rows
from .._jit import frozen, njit
from . import schedule
from .common import nowrap, strided_runs, unit_runs, vexp
from .kernel import GAUSSIAN, kernel_value


@njit(inline="always")
def accumulate_run(acc, c, wv, K, x, b, kc, i, j, yk, iy, lo, hi, base):
    """acc[c, X] += w·K·x over the unit-stride run lo ≤ X < hi of tap (i, j) (input column
    base + X), in the loop form LLVM vectorises (see pacnp.cpu.conv.modulate_run)."""
    n = hi - lo
    ox = base + lo
    if lo < 0 or ox < 0 or iy < 0:
        return
    for t in range(n):
        acc[c, lo + t] += wv * K[b, kc, i, j, yk, lo + t] * x[b, c, iy, ox + t]


@njit(inline="always")
def accumulate_strided(acc, c, wv, K, x, b, kc, i, j, yk, iy, run):
    """acc[c, X] += w·K·x at the columns X = x0 + step·q (q < n) where a transposed tap meets
    input column p0 + q (run = common.strided_runs' (x0, step, n, p0) at offset 3): the ≈ 1/s
    of the columns, no validity test per column."""
    x0, step, nv, p0 = run[3], run[4], run[5], run[6]
    if x0 < 0 or p0 < 0 or iy < 0:
        return
    for q in range(nv):
        X = x0 + step * q
        acc[c, X] += wv * K[b, kc, i, j, yk, X] * x[b, c, iy, p0 + q]


@njit(inline="always")
def forward_row(x, K, w, ty, tx, out, y0, acc, jrun, r, strided):
    """One (image, output row) of :func:`_depthwise_forward`, every channel, tap-major.
    ``strided`` is a constant of the calling kernel: inlined, the transposed branch is compiled
    away from the forward kernel (its mere presence cost the generic strided-forward loop ~10 %)."""
    C = x.shape[1]
    Wo = out.shape[3]
    n = K.shape[4]
    kh, kw = ty.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
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
                if strided and jrun[j, 4] > 0:  # a transposed tap: only the columns it meets
                    accumulate_strided(acc, c, wv, K, x, b, kc, i, j, yk, iy, jrun[j])
                    continue
                for xo in range(Wo):
                    ix = tx[j, xo]
                    if ix >= 0:
                        acc[c, xo] += wv * K[b, kc, i, j, yk, xo] * x[b, c, iy, ix]
    for c in range(C):
        for xo in range(Wo):
            out[b, c, y, xo] = acc[c, xo]


@njit(parallel=True)
def _depthwise_forward(x, K, w, ty, tx, out, y0, blocks, acc_s):
    """Output rows y0 ≤ y < y0 + K.shape[4] (K may be a stripe of the full kernel), in
    ``blocks`` blocks of rows, each accumulating in the running thread's slice of ``acc_s``
    [threads, C, W_out] (allocated by the launcher: an allocation failing inside the parallel
    region would not reach the caller).

    One (image, output row) per iteration with every channel in it, tap-major: a tap's K row is
    read once and used for all channels while it sits in L1 (a channel-major loop re-reads
    the whole k²·W_out kernel of the row once per channel)."""
    jrun = np.empty((tx.shape[0], 7), dtype=np.int64)
    unit_runs(tx, jrun)
    rows = x.shape[0] * K.shape[4]
    for blk in prange(blocks):  # blocks of rows; the scratch is the running thread's
        acc = acc_s[get_thread_id()]
        for r in range(blk * rows // blocks, (blk + 1) * rows // blocks):
            forward_row(x, K, w, ty, tx, out, y0, acc, jrun, r, False)


@njit(parallel=True)
def _depthwise_forward_transposed(x, K, w, ty, tx, out, y0, blocks, acc_s):
    """:func:`_depthwise_forward` for a transposed geometry: a tap that meets the input at
    stride s walks only those columns (``common.strided_runs``)."""
    jrun = np.empty((tx.shape[0], 7), dtype=np.int64)
    unit_runs(tx, jrun)
    strided_runs(tx, jrun, 3)
    rows = x.shape[0] * K.shape[4]
    for blk in prange(blocks):
        acc = acc_s[get_thread_id()]
        for r in range(blk * rows // blocks, (blk + 1) * rows // blocks):
            forward_row(x, K, w, ty, tx, out, y0, acc, jrun, r, True)


@njit(inline="always")
def params_row(g, x, K, w, ty, tx, dK, dw_parts, ch, y0, need_k, need_w, jrun, r, strided):
    """dK of one (image, output row) and its share of dw into chunk ``ch``'s partial buffer
    (``strided``: a constant of the calling kernel, as in :func:`forward_row`)."""
    C = x.shape[1]
    Wo = g.shape[3]
    n = K.shape[4]
    kh, kw = ty.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    b = r // n
    yk = r % n
    y = y0 + yk
    for i in range(kh):
        iy = ty[i, y]
        for j in range(kw):
            wv = w[i, j]
            x0, step, nv, p0 = jrun[j, 0], jrun[j, 1], jrun[j, 2], jrun[j, 3]
            if strided and step > 1:
                # a transposed tap: dK is 0 off the columns it meets, dw sums over those
                if need_k:
                    for kc in range(K.shape[1]):
                        for xo in range(Wo):
                            dK[b, kc, i, j, yk, xo] = 0.0
                if iy < 0:
                    continue
                dwacc = 0.0
                for q in range(nv):
                    xo = x0 + step * q
                    ix = p0 + q
                    if kc_many:
                        for c in range(C):
                            t = g[b, c, y, xo] * x[b, c, iy, ix]
                            if need_k:
                                dK[b, c, i, j, yk, xo] = wv * t
                            dwacc += K[b, c, i, j, yk, xo] * t
                    else:
                        t = 0.0
                        for c in range(C):
                            t += g[b, c, y, xo] * x[b, c, iy, ix]
                        if need_k:
                            dK[b, 0, i, j, yk, xo] = wv * t
                        dwacc += K[b, 0, i, j, yk, xo] * t
                if need_w:
                    dw_parts[ch, i, j] += dwacc
                continue
            dwacc = 0.0
            for xo in range(Wo):
                ix = tx[j, xo]
                valid = iy >= 0 and ix >= 0
                # K is read at valid taps only: a fused stripe of a transposed window leaves
                # the others unwritten (Kernel.packernel_forward)
                if kc_many:
                    for c in range(C):
                        t = g[b, c, y, xo] * x[b, c, iy, ix] if valid else 0.0
                        if need_k:
                            dK[b, c, i, j, yk, xo] = wv * t
                        if valid:
                            dwacc += K[b, c, i, j, yk, xo] * t
                else:
                    t = 0.0
                    if valid:
                        for c in range(C):
                            t += g[b, c, y, xo] * x[b, c, iy, ix]
                        dwacc += K[b, 0, i, j, yk, xo] * t
                    if need_k:
                        dK[b, 0, i, j, yk, xo] = wv * t
            if need_w:
                dw_parts[ch, i, j] += dwacc


@njit(parallel=True)
def _depthwise_backward_params(g, x, K, w, ty, tx, dK, dw_parts, n_chunks, y0, need_k, need_w):
    """dK (one writer per row) and dw (fixed chunks of rows into partial buffers; the caller
    adds them in chunk order, so the result is deterministic)."""
    jrun = np.zeros((tx.shape[0], 4), dtype=np.int64)
    rows = x.shape[0] * K.shape[4]
    for ch in prange(n_chunks):
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            params_row(g, x, K, w, ty, tx, dK, dw_parts, ch, y0, need_k, need_w, jrun, r, False)


@njit(parallel=True)
def _depthwise_backward_params_transposed(
    g, x, K, w, ty, tx, dK, dw_parts, n_chunks, y0, need_k, need_w
):
    """:func:`_depthwise_backward_params` for a transposed geometry (strided tap runs)."""
    jrun = np.empty((tx.shape[0], 4), dtype=np.int64)
    strided_runs(tx, jrun, 0)
    rows = x.shape[0] * K.shape[4]
    for ch in prange(n_chunks):
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            params_row(g, x, K, w, ty, tx, dK, dw_parts, ch, y0, need_k, need_w, jrun, r, True)


@njit(inline="always")
def input_item(g, K, w, iy_inv, tx, dx, y0, n0, m, acc, jrun, r, strided):
    """dx of one (image, channel, input row) item, gathered through the inverse row table
    (``strided``: a constant of the calling kernel, as in :func:`forward_row`)."""
    C, Win = dx.shape[1], dx.shape[3]
    Wo = g.shape[3]
    n_k = K.shape[4]
    kh, kw = iy_inv.shape[0], tx.shape[0]
    kc_many = K.shape[1] > 1
    b = r // (C * m)
    c = (r // m) % C
    n = n0 + r % m
    kc = c if kc_many else 0
    acc[:] = 0.0
    for i in range(kh):
        y = iy_inv[i, n]
        yk = y - y0
        if y < 0 or yk < 0 or yk >= n_k:
            continue
        for j in range(kw):
            wv = w[i, j]
            x0, step, nv, p0 = jrun[j, 0], jrun[j, 1], jrun[j, 2], jrun[j, 3]
            if strided and step > 1:  # a transposed tap: only the columns it meets
                for q in range(nv):
                    xo = x0 + step * q
                    acc[p0 + q] += wv * K[b, kc, i, j, yk, xo] * g[b, c, y, xo]
                continue
            for xo in range(Wo):
                ix = tx[j, xo]
                if ix >= 0:
                    acc[ix] += wv * K[b, kc, i, j, yk, xo] * g[b, c, y, xo]
    for ix in range(Win):
        dx[b, c, n, ix] += acc[ix]


@njit(parallel=True)
def _depthwise_backward_input(g, K, w, iy_inv, tx, dx, y0, n0, n1, blocks, acc_s):
    """dx += the gradient flowing from the output rows K covers, for input rows n0 ≤ n < n1
    (a gather, see pacnp.cpu.conv.pac_dense_backward_input). The (image, channel, row) items go
    to ``blocks`` contiguous blocks, each accumulating a row in the running thread's slice of
    ``acc_s`` (allocated by the launcher)."""
    jrun = np.zeros((tx.shape[0], 4), dtype=np.int64)
    m = n1 - n0
    items = dx.shape[0] * dx.shape[1] * m
    for blk in prange(blocks):  # blocks of items; the scratch is the running thread's
        acc = acc_s[get_thread_id()]
        for r in range(blk * items // blocks, (blk + 1) * items // blocks):
            input_item(g, K, w, iy_inv, tx, dx, y0, n0, m, acc, jrun, r, False)


@njit(parallel=True)
def _depthwise_backward_input_transposed(g, K, w, iy_inv, tx, dx, y0, n0, n1, blocks, acc_s):
    """:func:`_depthwise_backward_input` for a transposed geometry (strided tap runs)."""
    jrun = np.empty((tx.shape[0], 4), dtype=np.int64)
    strided_runs(tx, jrun, 0)
    m = n1 - n0
    items = dx.shape[0] * dx.shape[1] * m
    for blk in prange(blocks):
        acc = acc_s[get_thread_id()]
        for r in range(blk * items // blocks, (blk + 1) * items // blocks):
            input_item(g, K, w, iy_inv, tx, dx, y0, n0, m, acc, jrun, r, True)


# --------------------------------------------------------------------------- pair form
@njit(inline="always")
def diff_sq(guide, b, c, s, s2, i1, i2):
    """(f[b, c, s, i1] − f[b, c, s2, i2])² (indices in range: no wraparound)."""
    d = guide[b, c, s, nowrap(i1)] - guide[b, c, s2, nowrap(i2)]
    return d * d


@njit(inline="always")
def pair_weights(e, guide, b, s, s2, lo, dx, n, wv, kind, alpha, lam):
    """e[t] = wv · K(f[b, :, s, lo + t], f[b, :, s2, lo + dx + t]) for 0 ≤ t < n.

    Loops run with the column innermost (contiguous, vectorised): the squared differences of
    all channels but the last are summed into e, one pass per channel, and the last pass adds
    the last channel's and evaluates K. An RGB guide with the gaussian (the bilateral filter)
    takes a single pass: each pass over e costs about as much as a channel's arithmetic."""
    o2 = lo + dx
    if n <= 0 or lo < 0 or o2 < 0:
        return
    last = guide.shape[1] - 1
    if kind == GAUSSIAN and last == 2:
        for t in range(n):
            e[nowrap(t)] = wv * vexp(
                (
                    diff_sq(guide, b, 0, s, s2, lo + t, o2 + t)
                    + diff_sq(guide, b, 1, s, s2, lo + t, o2 + t)
                    + diff_sq(guide, b, 2, s, s2, lo + t, o2 + t)
                )
                * np.float32(-0.5)
            )
        return
    for c in range(last):
        if c == 0:
            for t in range(n):
                e[nowrap(t)] = diff_sq(guide, b, 0, s, s2, lo + t, o2 + t)
        else:
            for t in range(n):
                e[nowrap(t)] += diff_sq(guide, b, c, s, s2, lo + t, o2 + t)
    if last < 0:  # no guide channels: every distance is 0
        for t in range(n):
            e[nowrap(t)] = wv * kernel_value(0.0 * wv, kind, alpha, lam)
    elif kind == GAUSSIAN and last == 0:
        for t in range(n):
            e[nowrap(t)] = wv * vexp(diff_sq(guide, b, 0, s, s2, lo + t, o2 + t) * np.float32(-0.5))
    elif kind == GAUSSIAN:
        for t in range(n):
            e[nowrap(t)] = wv * vexp(
                (e[nowrap(t)] + diff_sq(guide, b, last, s, s2, lo + t, o2 + t)) * np.float32(-0.5)
            )
    elif last == 0:
        for t in range(n):
            e[nowrap(t)] = wv * kernel_value(
                diff_sq(guide, b, 0, s, s2, lo + t, o2 + t), kind, alpha, lam
            )
    else:
        for t in range(n):
            e[nowrap(t)] = wv * kernel_value(
                e[nowrap(t)] + diff_sq(guide, b, last, s, s2, lo + t, o2 + t), kind, alpha, lam
            )


@njit(inline="always")
def scatter_run(out, b, orow, ocol, e, eo, x, xrow, xcol, n):
    """out[b, :, orow, ocol + t] += e[eo + t] · x[b, :, xrow, xcol + t] for 0 ≤ t < n."""
    if n <= 0 or ocol < 0 or eo < 0 or xcol < 0:
        return
    for c in range(x.shape[1]):
        for t in range(n):
            out[b, c, orow, nowrap(ocol + t)] += e[nowrap(eo + t)] * x[b, c, xrow, nowrap(xcol + t)]


@njit(inline="always")
def store_run(out, b, orow, ocol, e, x, xrow, xcol, n):
    """out[b, :, orow, ocol + t] = e[t] · x[b, :, xrow, xcol + t] for 0 ≤ t < n."""
    if n <= 0 or ocol < 0 or xcol < 0:
        return
    for c in range(x.shape[1]):
        for t in range(n):
            out[b, c, orow, nowrap(ocol + t)] = e[nowrap(t)] * x[b, c, xrow, nowrap(xcol + t)]


@njit(parallel=True, fastmath=frozen("PAIR_FASTMATH"))
def _depthwise_symmetric_forward(
    x, guide, w, nbr, dx, crow, orow, ox0, reach, kind, alpha, lam, rows, cols, out, e_s
):
    """The fused depthwise op for a symmetric K and filter, pair by pair (Su et al. 2019, Eq. 3
    with K(f_a, f_b) = K(f_b, f_a) and w(δ) = w(−δ)):

        out[a] = w(0) K(f_a, f_a) v_a + Σ_{δ in the half plane} e_δ(a) v_(a+δ) + e_δ(a−δ) v_(a−δ),
        e_δ(a) = w(δ) K(f_a, f_(a+δ)),

    so each pair weight e is computed once and added to both of its ends that are window
    centres (a pair with an end outside the image contributes nothing: K = 0 or v = 0 there in
    the window form). x, guide: [B, C|Cg, H, W], the image itself, folded (a volume's planes
    stacked as rows; the op's zero padding is implicit); nbr, dx, crow, orow, ox0, reach:
    ``pacnp._core.PairGeometry`` (the row a tap reaches comes from ``nbr``, which knows the
    edges of every folded axis); out: [B, C, Ho, Wo], pixel (y, q) centred at image pixel
    (crow[y], q + ox0); orow maps an image row back to its output row (-1: not a centre).

    Blocks of ``rows`` × ``cols`` outputs run in parallel. A block evaluates the pairs of its
    centres with the half plane below them, and the pairs whose lower end is one of its centres
    from the ``reach`` rows above it (a halo recomputed by the block: every output element keeps
    one writer, no reduction). The per-row working set (the rows the taps reach, of x, out and
    the guide at ``cols`` columns) stays in L2 (schedule.pair_blocks). The blocks are split among
    ``e_s.shape[0]`` workers, each with its row of pair weights in ``e_s`` (allocated by the
    launcher, never inside the parallel region).
    """
    B, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    kw = w.shape[1]
    T = w.shape[0] * kw
    tc = T // 2
    nby = -(-Ho // rows)
    nbx = -(-Wo // cols)
    nb = B * nby * nbx
    workers = e_s.shape[0]
    for wk in prange(workers):
        e_row = e_s[wk]
        for blk in range(wk * nb // workers, (wk + 1) * nb // workers):
            b = blk // (nby * nbx)
            r0 = (blk // nbx) % nby * rows
            q0 = blk % nbx * cols
            r1 = min(r0 + rows, Ho)
            q1 = min(q0 + cols, Wo)
            c0, c1 = crow[r0], crow[r1 - 1] + 1  # the image rows spanned by the centres
            x0, x1 = q0 + ox0, q1 + ox0  # and image columns
            e = e_row[: x1 - x0 + dx[T - 1]]
            wc = w[tc // kw, tc % kw]
            for r in range(r0, r1):
                s = crow[r]
                pair_weights(e, guide, b, s, s, x0, 0, x1 - x0, wc, kind, alpha, lam)
                store_run(out, b, r, q0, e, x, s, x0, x1 - x0)
            for s in range(max(c0 - reach, 0), c1):
                ra = orow[s]
                at_a = ra >= r0 and ra < r1  # the upper end (s, X) is one of the block's centres
                for t in range(tc + 1, T):
                    s2 = nbr[t // kw, s]
                    if s2 < 0:
                        continue  # off the image on some axis
                    rb = orow[s2]
                    at_b = rb >= r0 and rb < r1  # the lower end (s2, X + δx) is
                    if not (at_a or at_b):
                        continue
                    ox = dx[t]
                    # the columns X where each end is a centre of the block and the other end
                    # an image pixel
                    alo, ahi = max(x0, -ox), min(x1, W - ox)
                    blo, bhi = max(x0 - ox, 0), min(x1 - ox, W)
                    lo, hi = W, 0
                    if at_a and ahi > alo:
                        lo, hi = alo, ahi
                    if at_b and bhi > blo:
                        lo, hi = min(lo, blo), max(hi, bhi)
                    if hi <= lo:
                        continue
                    pair_weights(
                        e, guide, b, s, s2, lo, ox, hi - lo, w[t // kw, t % kw], kind, alpha, lam
                    )
                    if at_a:
                        scatter_run(out, b, ra, alo - ox0, e, alo - lo, x, s2, alo + ox, ahi - alo)
                    if at_b:
                        scatter_run(out, b, rb, blo + ox - ox0, e, blo - lo, x, s, blo, bhi - blo)


# --------------------------------------------------------------------------- launchers
def pac_depthwise_forward(x, K, w, geo, out, y0):
    """Output rows y0 ≤ y < y0 + K.shape[4] (K: that stripe of the kernel)."""
    C, Wo = out.shape[1], out.shape[3]
    blocks = schedule.row_blocks(x.shape[0] * K.shape[4])
    acc = np.empty((schedule.scratch_slices(), C, Wo), out.dtype)  # per thread
    kernel = _depthwise_forward_transposed if geo.transposed else _depthwise_forward
    kernel(x, K, w, geo.ty, geo.tx, out, y0, blocks, acc)


def pac_depthwise_backward_params(g, x, K, w, geo, dK, dw_parts, n_chunks, y0, need_k, need_w):
    """dK of the output rows K covers (written) and dw (added into the partial buffers)."""
    kernel = _depthwise_backward_params_transposed if geo.transposed else _depthwise_backward_params
    kernel(g, x, K, w, geo.ty, geo.tx, dK, dw_parts, n_chunks, y0, need_k, need_w)


def pac_depthwise_backward_input(g, K, w, geo, dx, y0):
    """dx += the gradient flowing from the output rows K covers: a gather over the input rows
    those rows reach."""
    n0, n1 = reached_rows(geo.ty, y0, y0 + K.shape[4])
    if n1 > n0:
        B, C, _, Win = dx.shape
        # per-block scratch, allocated here (see the kernel)
        blocks = schedule.row_blocks(B * C * (n1 - n0))
        kernel = (
            _depthwise_backward_input_transposed if geo.transposed else _depthwise_backward_input
        )
        kernel(
            g,
            K,
            w,
            schedule.inverse_rows(geo),
            geo.tx,
            dx,
            y0,
            n0,
            n1,
            blocks,
            np.empty((schedule.scratch_slices(), Win), dx.dtype),  # per thread
        )


def pac_depthwise_symmetric_forward(x, guide, w, pairs, kind, alpha, lam, out):
    """The fused depthwise op in pair form (``pacnp._core.PairGeometry``): one pass, each
    kernel value computed once for the two outputs it weighs."""
    rows, cols = schedule.pair_blocks(out.shape[0], out.shape[2:], pairs.reach)
    Ho, Wo = out.shape[2], out.shape[3]
    nb = out.shape[0] * -(-Ho // rows) * -(-Wo // cols)
    # a row of pair weights per worker, allocated here (see the kernel)
    workers = max(1, min(nb, 4 * config.ROW_BLOCKS))
    e = np.empty((workers, cols + int(pairs.dx[-1])), out.dtype)
    _depthwise_symmetric_forward(
        x,
        guide,
        w,
        pairs.nbr,
        pairs.dx,
        pairs.crow,
        pairs.orow,
        pairs.ox0,
        pairs.reach,
        kind,
        alpha,
        lam,
        rows,
        cols,
        out,
        e,
    )
