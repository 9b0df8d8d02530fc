"""packernel2d forward and backward: the adapting kernel K of Su et al. 2019, Eq. 3.

Notation (docs/semantics.md): for output pixel (y, x) and tap (i, j) the guide is read at
(gy[i,y], gx[j,x]) (-1: invalid tap, K = 0 there); the centre feature f_i is
src[b, :, cy[y], cx[x]] (src: the guide, or the smoothed guide); Δ_c = guide[.., c, P] - f_i,c.

    gaussian : Kraw = exp(-½ s)             s = Σ_c Δ_c²   (per channel with channel_wise)
    inv      : Kraw = α + (s + ε)^(λ/2)

then the mask, and either normalisation over the window or the partial-convolution factor
n_valid / n_in. Everything after Kraw is a per-(pixel, channel) affine map of the taps, so its
backward is dKraw = m · (A · dK - Bc) with per-pixel A and Bc computed from the window.
"""
import math

import numpy as np
from numba import njit, prange

from .. import config

_par = dict(parallel=True, cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)
_seq = dict(cache=config.CACHE, fastmath=config.FASTMATH, nogil=True)

EPS = config.INV_EPS
GAUSSIAN = 0
INV = 1


@njit(**_seq, inline="always")
def kernel_value(s, kind, alpha, lam):
    """Kraw as a function of the squared distance s."""
    if kind == GAUSSIAN:
        return math.exp(-0.5 * s)
    return alpha + (s + EPS) ** (0.5 * lam)


@njit(**_seq, inline="always")
def kernel_slope(s, kraw, kind, lam):
    """dKraw/ds."""
    if kind == GAUSSIAN:
        return -0.5 * kraw
    return 0.5 * lam * (s + EPS) ** (0.5 * lam - 1.0)


@njit(**_seq, inline="always")
def difference(guide, src, b, c, py, px, qy, qx, asym):
    """Δ_c between the tap's guide pixel (py, px) and the centre (qy, qx) of ``src``."""
    d = guide[b, c, py, px] - src[b, c, qy, qx]
    if asym and d <= 0.0:  # max(Δ, 0); a NaN Δ fails the test and stays NaN
        return 0.0
    return d


@njit(**_seq)
def window_row(guide, src, gy, gx, cy, cx, mask, alpha, lam, kind, asym, has_mask, b, y, km, sq,
               stats):
    """Masked raw kernel Km and squared distances s of every tap of output row (b, y).

    km, sq: [KC, kh, kw, Wo]; stats: [2 + KC, Wo] ← n_valid, n_in, Σ_taps Km per channel.
    Loops run channel by channel with the output column innermost, so guide rows and the
    centre features stream contiguously (a channel-innermost loop strides by H·W).
    """
    Cg = guide.shape[1]
    KC, kh, kw, Wo = km.shape
    stats[:, :] = 0.0
    for i in range(kh):
        py = gy[i, y]
        for j in range(kw):
            if py < 0:
                for kc in range(KC):
                    for xo in range(Wo):
                        km[kc, i, j, xo] = 0.0
                        sq[kc, i, j, xo] = 0.0
                continue
            for kc in range(KC):
                for xo in range(Wo):
                    sq[kc, i, j, xo] = 0.0
            qy = cy[y]
            for c in range(Cg):
                kc = c if KC > 1 else 0
                grow = guide[b, c, py]  # 1-D row views: no 4-D index maths per element
                srow = src[b, c, qy]
                acc = sq[kc, i, j]
                txj = gx[j]
                if asym:
                    for xo in range(Wo):
                        px = txj[xo]
                        if px >= 0:
                            d = grow[px] - srow[cx[xo]]
                            if d > 0.0 or d != d:  # max(Δ, 0), NaN kept
                                acc[xo] += d * d
                else:
                    for xo in range(Wo):
                        px = txj[xo]
                        if px >= 0:
                            d = grow[px] - srow[cx[xo]]
                            acc[xo] += d * d
            for xo in range(Wo):
                px = gx[j, xo]
                if px < 0:
                    for kc in range(KC):
                        km[kc, i, j, xo] = 0.0
                    continue
                m = mask[b, py, px] if has_mask else 1.0
                stats[0, xo] += 1.0
                stats[1, xo] += m
                for kc in range(KC):
                    v = kernel_value(sq[kc, i, j, xo], kind, alpha[kc], lam[kc]) * m
                    km[kc, i, j, xo] = v
                    stats[2 + kc, xo] += v


@njit(**_seq, inline="always")
def scale_factor(stats, kc, xo, normalize, has_mask):
    """K = Km · factor (normalisation or partial-convolution re-weighting); 0 when degenerate."""
    if normalize:
        tot = stats[2 + kc, xo]
        return 1.0 / tot if tot != 0.0 else 0.0
    if has_mask:
        n_in = stats[1, xo]
        return stats[0, xo] / n_in if n_in > 0.0 else 0.0
    return 1.0


@njit(**_par)
def packernel_forward(guide, src, gy, gx, cy, cx, mask, alpha, lam, kind, asym, normalize, has_mask,
                      K, out_mask, n_chunks, y0):
    """K for the output rows y0 ≤ y < y0 + K.shape[4] (K may be a stripe of the full kernel),
    row by row; rows go to ``n_chunks`` contiguous blocks so the per-row scratch buffers
    (k²·W_out each) are allocated once per block, not once per row."""
    B = guide.shape[0]
    KC, kh, kw, n, Wo = K.shape[1], K.shape[2], K.shape[3], K.shape[4], K.shape[5]
    rows = B * n
    for ch in prange(n_chunks):
        km = np.empty((KC, kh, kw, Wo), dtype=K.dtype)
        sq = np.empty((KC, kh, kw, Wo), dtype=K.dtype)
        stats = np.empty((2 + KC, Wo), dtype=K.dtype)
        fac = np.empty(Wo, dtype=K.dtype)
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = r // n
            yk = r % n
            y = y0 + yk
            window_row(guide, src, gy, gx, cy, cx, mask, alpha, lam, kind, asym, has_mask, b, y,
                       km, sq, stats)
            for kc in range(KC):
                for xo in range(Wo):
                    fac[xo] = scale_factor(stats, kc, xo, normalize, has_mask)
                for i in range(kh):
                    for j in range(kw):
                        for xo in range(Wo):  # contiguous in K
                            K[b, kc, i, j, yk, xo] = km[kc, i, j, xo] * fac[xo]
            if has_mask:
                for xo in range(Wo):
                    out_mask[b, 0, y, xo] = 1.0 if stats[1, xo] > 0.0 else 0.0


@njit(**_seq)
def round_rows(y0, n, rnd, R):
    """(first, count) of the output rows y0 ≤ y < y0+n with y ≡ rnd (mod R)."""
    first = y0 + (rnd - y0) % R
    if first >= y0 + n:
        return first, 0
    return first, (y0 + n - 1 - first) // R + 1


@njit(**_par)
def packernel_backward(dK, guide, src, gy, gx, cy, cx, mask, alpha, lam, kind, asym, normalize,
                       has_mask, dsrc, dguide, dpar_rows, y0, rnd, R, need_f, need_g, need_par):
    """Backward of K for the output rows y0 ≤ y < y0 + dK.shape[4] with y ≡ rnd (mod R).

    Per row: K is recomputed (window_row), the normalisation / mask backward turns dK into
    dKraw = m · (A·dK − Bc), and each tap's dL/dΔ_c = g2·Δ_c goes to the centre feature
    (dsrc[:, :, cy[y], cx[x]] −= …) and to the guide pixel the tap read (dguide += …): both
    scatters, and ``dsrc`` may be ``dguide`` itself (no smoothing). The caller runs the rounds rnd = 0..R-1 one after another, with R
    such that rows of one round read disjoint guide rows: no two threads ever add to the same
    guide pixel, and every pixel receives its contributions in a fixed order (deterministic).
    dα, dλ go to per-row partials dpar_rows[b·Ho + y, 0|1, kc], added in row order later.
    """
    B, Cg = guide.shape[0], guide.shape[1]
    KC, kh, kw, n, Wo = dK.shape[1], dK.shape[2], dK.shape[3], dK.shape[4], dK.shape[5]
    Ho = cy.shape[0]
    first, cnt = round_rows(y0, n, rnd, R)
    for q in prange(B * cnt):
        b = q // cnt
        y = first + (q % cnt) * R
        yk = y - y0
        km = np.empty((KC, kh, kw, Wo), dtype=dK.dtype)
        sq = np.empty((KC, kh, kw, Wo), dtype=dK.dtype)
        g2 = np.zeros((KC, kh, kw, Wo), dtype=dK.dtype)
        stats = np.empty((2 + KC, Wo), dtype=dK.dtype)
        window_row(guide, src, gy, gx, cy, cx, mask, alpha, lam, kind, asym, has_mask, b, y, km,
                   sq, stats)
        for kc in range(KC):
            da = 0.0
            dl = 0.0
            for xo in range(Wo):
                f = scale_factor(stats, kc, xo, normalize, has_mask)
                bc = 0.0
                if normalize:
                    # K_t = Km_t / S  =>  dKm_t = (dK_t - Σ_u dK_u K_u) / S
                    dot = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            dot += dK[b, kc, i, j, yk, xo] * km[kc, i, j, xo]
                    bc = dot * f * f
                for i in range(kh):
                    py = gy[i, y]
                    if py < 0:
                        continue
                    for j in range(kw):
                        px = gx[j, xo]
                        if px < 0:
                            continue
                        m = mask[b, py, px] if has_mask else 1.0
                        if m == 0.0:
                            continue
                        s = sq[kc, i, j, xo]
                        dkr = m * (f * dK[b, kc, i, j, yk, xo] - bc)
                        kraw = kernel_value(s, kind, alpha[kc], lam[kc])
                        g2[kc, i, j, xo] = 2.0 * dkr * kernel_slope(s, kraw, kind, lam[kc])
                        if need_par and kind == INV:
                            da += dkr
                            dl += dkr * 0.5 * math.log(s + EPS) * (s + EPS) ** (0.5 * lam[kc])
            dpar_rows[b * Ho + y, 0, kc] = da
            dpar_rows[b * Ho + y, 1, kc] = dl
        # dL/dΔ_c = g2 · Δ_c: +into the tap's guide pixel, −into the centre feature
        for c in range(Cg):
            kc = c if KC > 1 else 0
            for i in range(kh):
                py = gy[i, y]
                if py < 0:
                    continue
                for j in range(kw):
                    for xo in range(Wo):
                        px = gx[j, xo]
                        if px < 0:
                            continue
                        v = g2[kc, i, j, xo] * difference(guide, src, b, c, py, px, cy[y],
                                                          cx[xo], asym)
                        if need_f:
                            dsrc[b, c, cy[y], cx[xo]] -= v
                        if need_g:
                            dguide[b, c, py, px] += v
