"""packernel2d forward and backward on the GPU: the twin of ``pacnp.cpu.kernel`` (same launcher
names and arguments; notation in that module and docs/semantics.md).

Forward: one thread per output element (b, kc, y, x) walks its window twice — raw kernel values
and window statistics, then the normalisation / partial-convolution factor. Backward: one thread
per output element recomputes its window and writes the per-tap slope g2 = ∂L/∂s (and its share
of ∂L/∂f_centre, the only centre-feature writer since window centres are distinct), then one
thread per guide pixel *gathers* g2·Δ over the taps that read it (inverse tap tables) — where
the CPU scatters in conflict-free rounds. α/λ gradients: per-pixel partials, then per-row sums in
column order. No atomics anywhere: bit-identical results from run to run.
"""

import math

from numba import cuda

from .._jit import cuda_jit, frozen
from ._launch import index_dtype, inverse_table, kernel_phases, run, unravel4, upload
from .arrays import empty

#: ε of the inv kernels (config.INV_EPS): a compile-time constant of the kernels
EPS = frozen("INV_EPS")
GAUSSIAN = 0
INV = 1


@cuda_jit(device=True)
def kernel_value(s, kind, alpha, lam):
    """Kraw as a function of the squared distance s."""
    if kind == GAUSSIAN:
        return math.exp(-0.5 * s)
    return alpha + (s + EPS) ** (0.5 * lam)


@cuda_jit(device=True)
def kernel_slope(s, kraw, kind, lam):
    """dKraw/ds."""
    if kind == GAUSSIAN:
        return -0.5 * kraw
    return 0.5 * lam * (s + EPS) ** (0.5 * lam - 1.0)


@cuda_jit(device=True)
def difference(guide, src, b, c, py, px, qy, qx, asym):
    d = guide[b, c, py, px] - src[b, c, qy, qx]
    if asym and d <= 0.0:  # max(Δ, 0); a NaN Δ fails the test and stays NaN
        return 0.0
    return d


@cuda_jit(device=True)
def distance(guide, src, b, c0, c1, py, px, qy, qx, asym):
    """s = Σ_{c0 ≤ c < c1} Δ_c² between tap (py, px) and the centre (qy, qx)."""
    s = 0.0
    for c in range(c0, c1):
        d = difference(guide, src, b, c, py, px, qy, qx, asym)
        s += d * d
    return s


@cuda_jit()
def _forward(
    guide,
    src,
    gy,
    gx,
    cy,
    cx,
    rph,
    cph,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    K,
    out_mask,
    y0,
):
    B, Cg = guide.shape[0], guide.shape[1]
    KC, kh, kw, n, Wo = K.shape[1], K.shape[2], K.shape[3], K.shape[4], K.shape[5]
    for t in range(cuda.grid(1), B * KC * n * Wo, cuda.gridsize(1)):
        b, kc, yk, xo = unravel4(t, KC, n, Wo)
        y = y0 + yk
        qy = cy[y]
        qx = cx[xo]
        c0 = kc if KC > 1 else 0
        c1 = kc + 1 if KC > 1 else Cg
        n_valid = 0.0
        n_in = 0.0
        total = 0.0
        for i in range(kh):  # K's layout: 0 at the taps that meet no guide pixel
            for j in range(kw):
                K[b, kc, i, j, yk, xo] = 0.0
        pr = y % rph.shape[0]  # the output's phases: only their taps can meet a guide pixel
        pc = xo % cph.shape[0]
        for ii in range(rph[pr, 0]):
            i = rph[pr, 1 + ii]
            py = gy[i, y]
            for jj in range(cph[pc, 0]):
                j = cph[pc, 1 + jj]
                px = gx[j, xo]
                if py < 0 or px < 0:
                    continue
                m = mask[b, py, px] if has_mask else 1.0
                v = (
                    kernel_value(
                        distance(guide, src, b, c0, c1, py, px, qy, qx, asym),
                        kind,
                        alpha[kc],
                        lam[kc],
                    )
                    * m
                )
                K[b, kc, i, j, yk, xo] = v
                n_valid += 1.0
                n_in += m
                total += v
        if normalize:
            f = 1.0 / total if total != 0.0 else 0.0
        elif has_mask:
            f = n_valid / n_in if n_in > 0.0 else 0.0
        else:
            f = 1.0
        for ii in range(rph[pr, 0]):
            for jj in range(cph[pc, 0]):
                K[b, kc, rph[pr, 1 + ii], cph[pc, 1 + jj], yk, xo] *= f
        if has_mask and kc == 0:
            out_mask[b, 0, y, xo] = 1.0 if n_in > 0.0 else 0.0


def packernel_forward(
    guide, src, geo, mask, alpha, lam, kind, asym, normalize, has_mask, K, out_mask, y0
):
    """K for the output rows y0 ≤ y < y0 + K.shape[4] (K: that stripe): one thread per output
    element."""
    B, KC, _, _, n, Wo = K.shape
    it = index_dtype(guide.size, K.size)
    run(
        _forward,
        B * KC * n * Wo,
        guide,
        src,
        upload(geo.gy, it),
        upload(geo.gx, it),
        upload(geo.cy, it),
        upload(geo.cx, it),
        *kernel_phases(geo, it),
        upload(mask),
        upload(alpha),
        upload(lam),
        kind,
        asym,
        normalize,
        has_mask,
        K,
        upload(out_mask),
        y0,
    )


@cuda_jit()
def _backward_pixels(
    dK,
    guide,
    src,
    gy,
    gx,
    cy,
    cx,
    rph,
    cph,
    mask,
    alpha,
    lam,
    kind,
    asym,
    normalize,
    has_mask,
    dsrc,
    G2,
    pda,
    pdl,
    y0,
    need_f,
    need_par,
):
    """Per output element: g2 of every tap into G2, α/λ partials, and the centre's gradient."""
    B, Cg = guide.shape[0], guide.shape[1]
    KC, n, Wo = dK.shape[1], dK.shape[4], dK.shape[5]
    for t in range(cuda.grid(1), B * KC * n * Wo, cuda.gridsize(1)):
        b, kc, yk, xo = unravel4(t, KC, n, Wo)
        y = y0 + yk
        qy = cy[y]
        qx = cx[xo]
        c0 = kc if KC > 1 else 0
        c1 = kc + 1 if KC > 1 else Cg
        a = alpha[kc]
        lm = lam[kc]
        # window statistics, as in the forward; ``dot`` = Σ_t dK_t · Km_t for normalisation
        n_valid = 0.0
        n_in = 0.0
        total = 0.0
        dot = 0.0
        # the output's phases: only their taps can meet a guide pixel (G2 is read at the taps
        # that do only, by _backward_guide's inverse tables)
        pr = y % rph.shape[0]
        pc = xo % cph.shape[0]
        nr, nc = rph[pr, 0], cph[pc, 0]
        for ii in range(nr):
            i = rph[pr, 1 + ii]
            py = gy[i, y]
            for jj in range(nc):
                j = cph[pc, 1 + jj]
                px = gx[j, xo]
                if py < 0 or px < 0:
                    continue
                m = mask[b, py, px] if has_mask else 1.0
                v = (
                    kernel_value(distance(guide, src, b, c0, c1, py, px, qy, qx, asym), kind, a, lm)
                    * m
                )
                n_valid += 1.0
                n_in += m
                total += v
                dot += dK[b, kc, i, j, yk, xo] * v
        if normalize:
            f = 1.0 / total if total != 0.0 else 0.0
        elif has_mask:
            f = n_valid / n_in if n_in > 0.0 else 0.0
        else:
            f = 1.0
        # K_t = Km_t / S  =>  dKm_t = (dK_t - Σ_u dK_u K_u) / S
        bc = dot * f * f if normalize else 0.0
        da = 0.0
        dl = 0.0
        for ii in range(nr):
            i = rph[pr, 1 + ii]
            py = gy[i, y]
            for jj in range(nc):
                j = cph[pc, 1 + jj]
                px = gx[j, xo]
                g2 = 0.0
                if py >= 0 and px >= 0:
                    m = mask[b, py, px] if has_mask else 1.0
                    if m != 0.0:
                        s = distance(guide, src, b, c0, c1, py, px, qy, qx, asym)
                        dkr = m * (f * dK[b, kc, i, j, yk, xo] - bc)
                        kraw = kernel_value(s, kind, a, lm)
                        g2 = 2.0 * dkr * kernel_slope(s, kraw, kind, lm)
                        if need_par and kind == INV:
                            da += dkr
                            dl += dkr * 0.5 * math.log(s + EPS) * (s + EPS) ** (0.5 * lm)
                G2[b, kc, i, j, yk, xo] = g2
        pda[b, kc, yk, xo] = da
        pdl[b, kc, yk, xo] = dl
        if need_f:
            # dL/dΔ_c = g2 · Δ_c, with a minus into the centre feature: this thread is the only
            # writer of the centre (qy, qx) — window centres of distinct outputs are distinct
            for c in range(c0, c1):
                acc = 0.0
                for ii in range(nr):
                    i = rph[pr, 1 + ii]
                    py = gy[i, y]
                    if py < 0:
                        continue
                    for jj in range(nc):
                        j = cph[pc, 1 + jj]
                        px = gx[j, xo]
                        if px < 0:
                            continue
                        acc += G2[b, kc, i, j, yk, xo] * difference(
                            guide, src, b, c, py, px, qy, qx, asym
                        )
                dsrc[b, c, qy, qx] -= acc


@cuda_jit()
def _backward_guide(G2, guide, src, inv_y, inv_x, cy, cx, asym, dguide, y0):
    """Per guide pixel: Σ over the taps that read it of g2 · Δ (a gather through the inverse
    tap tables: exactly one output row / column per tap)."""
    B, Cg, H, W = guide.shape
    KC, kh, kw, n = G2.shape[1], G2.shape[2], G2.shape[3], G2.shape[4]
    for t in range(cuda.grid(1), B * Cg * H * W, cuda.gridsize(1)):
        b, c, py, px = unravel4(t, Cg, H, W)
        kc = c if KC > 1 else 0
        acc = 0.0
        for i in range(kh):
            y = inv_y[i, py]
            if y < 0 or y < y0 or y >= y0 + n:
                continue
            for j in range(kw):
                xo = inv_x[j, px]
                if xo < 0:
                    continue
                acc += G2[b, kc, i, j, y - y0, xo] * difference(
                    guide, src, b, c, py, px, cy[y], cx[xo], asym
                )
        dguide[b, c, py, px] += acc


@cuda_jit()
def _backward_rows(pda, pdl, dpar_rows, y0, Ho):
    """dpar_rows[b·Ho + y, 0|1, kc] = Σ_x of the per-pixel α/λ partials, x in order."""
    B, KC, n, Wo = pda.shape
    for t in range(cuda.grid(1), B * n * KC, cuda.gridsize(1)):
        kc = t % KC
        r = t // KC
        yk = r % n
        b = r // n
        sa = 0.0
        sl = 0.0
        for xo in range(Wo):
            sa += pda[b, kc, yk, xo]
            sl += pdl[b, kc, yk, xo]
        dpar_rows[b * Ho + y0 + yk, 0, kc] = sa
        dpar_rows[b * Ho + y0 + yk, 1, kc] = sl


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
    """Backward of K for the output rows of ``dK``: the GPU gathers through the inverse tap
    tables instead of scattering in rounds."""
    B, KC, kh, kw, n, Wo = dK.shape
    H, W = guide.shape[2], guide.shape[3]
    dt = dK.dtype
    it = index_dtype(guide.size, dK.size)
    gy_d, gx_d, cy_d, cx_d = (upload(a, it) for a in (geo.gy, geo.gx, geo.cy, geo.cx))
    G2 = empty(dK.shape, dt)
    pda = empty((B, KC, n, Wo), dt)
    pdl = empty((B, KC, n, Wo), dt)
    dsrc_d = upload(dsrc)
    run(
        _backward_pixels,
        B * KC * n * Wo,
        dK,
        guide,
        src,
        gy_d,
        gx_d,
        cy_d,
        cx_d,
        *kernel_phases(geo, it),
        upload(mask),
        upload(alpha),
        upload(lam),
        kind,
        asym,
        normalize,
        has_mask,
        dsrc_d,
        G2,
        pda,
        pdl,
        y0,
        need_f,
        need_par,
    )
    if need_g:
        # ordered after the centre writes above on the same stream: dsrc may be dguide itself
        run(
            _backward_guide,
            dguide.size,
            G2,
            guide,
            src,
            inverse_table(geo.gy, H, it),
            inverse_table(geo.gx, W, it),
            cy_d,
            cx_d,
            asym,
            dguide,
            y0,
        )
    if need_par:
        run(_backward_rows, B * n * KC, pda, pdl, dpar_rows, y0, geo.cy.shape[0])
