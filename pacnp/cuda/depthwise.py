"""Depthwise PAC (pacpool2d, and pacconv2d / pacconv_transpose2d with shared_filters) on the GPU:
the twin of ``pacnp.cpu.depthwise`` (same launcher names and arguments):

    out[b, c, y, x] = Σ_{i,j} w[i, j] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

One thread per output element; dK one thread per element; dx a gather over the taps that read
an input element (inverse tap tables); dw fixed chunks of rows into partial buffers (one thread
per (chunk, tap)), summed in chunk order by the driver — deterministic, no atomics.

``pac_depthwise_symmetric_forward``: the fused op for a symmetric K and filter, one thread per
output pixel.
"""

from numba import cuda

from .._core import reached_rows
from .._jit import cuda_jit
from ._launch import index_dtype, inverse_table, op_phases, run, unravel4, unravel6, upload
from .kernel import distance, kernel_value


@cuda_jit()
def _forward(x, K, w, ty, tx, rph, cph, out, y0, zero):
    B, C = x.shape[0], x.shape[1]
    Wo = out.shape[3]
    KC, n = K.shape[1], K.shape[4]
    for t in range(cuda.grid(1), B * C * n * Wo, cuda.gridsize(1)):
        b, c, yk, xo = unravel4(t, C, n, Wo)
        kc = c if KC > 1 else 0
        y = y0 + yk
        pr = y % rph.shape[0]  # the output's phases: only their taps can meet the input
        pc = xo % cph.shape[0]
        acc = zero
        for ii in range(rph[pr, 0]):
            i = rph[pr, 1 + ii]
            iy = ty[i, y]
            if iy < 0:
                continue
            for jj in range(cph[pc, 0]):
                j = cph[pc, 1 + jj]
                ix = tx[j, xo]
                if ix >= 0:
                    acc += w[i, j] * K[b, kc, i, j, yk, xo] * x[b, c, iy, ix]
        out[b, c, y, xo] = acc


def pac_depthwise_forward(x, K, w, geo, out, y0):
    """Output rows y0 ≤ y < y0 + K.shape[4] (K: that stripe of the kernel)."""
    B, C = x.shape[0], x.shape[1]
    n = K.shape[4]
    it = index_dtype(x.size, K.size, out.size)
    run(
        _forward,
        B * C * n * out.shape[3],
        x,
        K,
        upload(w),
        upload(geo.ty, it),
        upload(geo.tx, it),
        *op_phases(geo, it),
        out,
        y0,
        out.dtype.type(0),
    )


@cuda_jit()
def _backward_kernel(g, x, w, ty, tx, dK, y0, zero):
    """dK[b, kc, i, j, y, x] = w[i, j] · Σ_{c of kc} g[b, c, y, x] · x[b, c, tap]."""
    C = x.shape[1]
    B, KC, kh, kw, n, Wo = dK.shape
    for t in range(cuda.grid(1), B * KC * kh * kw * n * Wo, cuda.gridsize(1)):
        b, kc, i, j, yk, xo = unravel6(t, KC, kh, kw, n, Wo)
        y = y0 + yk
        iy = ty[i, y]
        ix = tx[j, xo]
        acc = zero
        if iy >= 0 and ix >= 0:
            c0 = kc if KC > 1 else 0
            c1 = kc + 1 if KC > 1 else C
            for c in range(c0, c1):
                acc += g[b, c, y, xo] * x[b, c, iy, ix]
        dK[b, kc, i, j, yk, xo] = w[i, j] * acc


@cuda_jit()
def _backward_weight(g, x, K, ty, tx, inv_x, by_input, dw_parts, n_chunks, y0, zero):
    """dw_parts[ch, i, j] += Σ over the rows of chunk ch, x and c of K · g · x; with
    ``by_input`` (a transposed op) over the columns where tap j meets the input only, through
    the inverse column table (as pacnp.cuda.conv._backward_weight)."""
    B, C = x.shape[0], x.shape[1]
    Wo = g.shape[3]
    KC, kh, kw, n = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    rows = B * n
    for t in range(cuda.grid(1), n_chunks * kh * kw, cuda.gridsize(1)):
        j = t % kw
        r = t // kw
        i = r % kh
        ch = r // kh
        acc = zero
        for q in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = q // n
            yk = q % n
            y = y0 + yk
            iy = ty[i, y]
            if iy < 0:
                continue
            for q in range(inv_x.shape[1] if by_input else Wo):
                if by_input:
                    ix = q
                    xo = inv_x[j, q]
                    if xo < 0:
                        continue
                else:
                    xo = q
                    ix = tx[j, q]
                    if ix < 0:
                        continue
                if KC > 1:
                    for c in range(C):
                        acc += K[b, c, i, j, yk, xo] * (g[b, c, y, xo] * x[b, c, iy, ix])
                else:
                    s = zero
                    for c in range(C):
                        s += g[b, c, y, xo] * x[b, c, iy, ix]
                    acc += K[b, 0, i, j, yk, xo] * s
        dw_parts[ch, i, j] += acc


def pac_depthwise_backward_params(g, x, K, w, geo, dK, dw_parts, n_chunks, y0, need_k, need_w):
    """dK (one writer per element) and dw (partial buffers per chunk of rows)."""
    zero = g.dtype.type(0)
    it = index_dtype(x.size, K.size, g.size)
    ty_d, tx_d = upload(geo.ty, it), upload(geo.tx, it)
    if need_k:
        run(_backward_kernel, dK.size, g, x, upload(w), ty_d, tx_d, dK, y0, zero)
    if need_w:
        kh, kw = K.shape[2], K.shape[3]
        run(
            _backward_weight,
            n_chunks * kh * kw,
            g,
            x,
            K,
            ty_d,
            tx_d,
            inverse_table(geo.tx, x.shape[3], it),
            bool(geo.transposed),
            dw_parts,
            n_chunks,
            y0,
            zero,
        )


@cuda_jit()
def _backward_input(g, K, w, iy_inv, inv_x, dx, y0, n0, n1, zero):
    B, C, _, Win = dx.shape
    KC, kh, kw, nk = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    m_rows = n1 - n0
    for t in range(cuda.grid(1), B * C * m_rows * Win, cuda.gridsize(1)):
        m = t % Win
        r = t // Win
        nn = n0 + r % m_rows
        r //= m_rows
        c = r % C
        b = r // C
        kc = c if KC > 1 else 0
        acc = zero
        for i in range(kh):
            y = iy_inv[i, nn]
            if y < 0 or y < y0 or y >= y0 + nk:
                continue
            for j in range(kw):
                xo = inv_x[j, m]
                if xo >= 0:
                    acc += w[i, j] * K[b, kc, i, j, y - y0, xo] * g[b, c, y, xo]
        dx[b, c, nn, m] += acc


def pac_depthwise_backward_input(g, K, w, geo, dx, y0):
    """dx += the gradient flowing from the output rows K covers, for the input rows they
    reach: one thread per input element gathers over its taps (inverse tap tables)."""
    n0, n1 = reached_rows(geo.ty, y0, y0 + K.shape[4])
    if n1 <= n0:
        return
    B, C, Hin, Win = dx.shape
    it = index_dtype(dx.size, K.size, g.size)
    run(
        _backward_input,
        B * C * (n1 - n0) * Win,
        g,
        K,
        upload(w),
        inverse_table(geo.ty, Hin, it),
        inverse_table(geo.tx, Win, it),
        dx,
        y0,
        n0,
        n1,
        g.dtype.type(0),
    )


@cuda_jit()
def _symmetric_forward(x, guide, w, nbr, dx, crow, ox0, kind, alpha, lam, out):
    B, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    kw = w.shape[1]
    T = w.shape[0] * kw
    tc = T // 2
    for t in range(cuda.grid(1), B * Ho * Wo, cuda.gridsize(1)):
        b, _, yo, xo = unravel4(t, 1, Ho, Wo)
        qy = crow[yo]  # the image row of the output row's centre
        qx = xo + ox0
        for k in range(T):
            tap = (tc + k) % T  # the centre first: it initialises the output
            py = nbr[tap // kw, qy]  # -1 off the image on a folded axis
            px = qx + dx[tap]
            if py < 0 or px < 0 or px >= W:
                continue
            v = w[tap // kw, tap % kw] * kernel_value(
                distance(guide, guide, b, 0, guide.shape[1], py, px, qy, qx, False),
                kind,
                alpha,
                lam,
            )
            for c in range(C):
                if k == 0:
                    out[b, c, yo, xo] = v * x[b, c, py, px]
                else:
                    out[b, c, yo, xo] += v * x[b, c, py, px]


def pac_depthwise_symmetric_forward(x, guide, w, pairs, kind, alpha, lam, out):
    """The twin of ``pacnp.cpu.depthwise.pac_depthwise_symmetric_forward`` (same result): one
    thread per output pixel evaluates K once per tap for all channels. The CPU pairs the taps
    to halve its exps, its bottleneck; a GPU thread owning one pixel has no cheap way to share
    a weight with the pixel at the other end, and has exps to spare (so no CPU blocking)."""
    B, _, Ho, Wo = out.shape
    it = index_dtype(x.size, guide.size, out.size)
    run(
        _symmetric_forward,
        B * Ho * Wo,
        x,
        guide,
        upload(w),
        upload(pairs.nbr, it),
        upload(pairs.dx, it),
        upload(pairs.crow, it),
        pairs.ox0,
        kind,
        alpha,
        lam,
        out,
    )
