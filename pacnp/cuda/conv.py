"""Dense PAC convolution (pacconv2d and pacconv_transpose2d) on the GPU: the twin of
``pacnp.cpu.conv`` (same launcher names and arguments, same tap-table formulation):

    out[b, o, y, x] = Σ_{c,i,j} Wm[o, (c,i,j)] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]

One thread per output element, taps with a -1 table entry skipped (so a transposed
convolution never multiplies by the zeros between input samples, and a non-finite weight never
reaches an output it does not touch — the CPU's column phases are not needed for that here).
Backward: dK one thread per element; dx a gather through the inverse tap tables (one thread per
input element, derived from the geometry the driver hands over) instead of the CPU's
conflict-free scatter rounds; dW / db fixed chunks of rows
into partial buffers (one thread per (chunk, weight element)), summed in chunk order by the
driver — deterministic, no atomics.
"""

from numba import cuda

from .._jit import cuda_jit
from ._launch import index_dtype, inverse_table, op_phases, run, unravel4, unravel6, upload


@cuda_jit()
def _forward(x, K, Wm, bias, ty, tx, rph, cph, out, y0, has_bias, zero):
    B, C = x.shape[0], x.shape[1]
    Cout, Wo = out.shape[1], out.shape[3]
    KC, kh, kw, n = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    kk = kh * kw
    for t in range(cuda.grid(1), B * Cout * n * Wo, cuda.gridsize(1)):
        b, o, yk, xo = unravel4(t, Cout, n, Wo)
        y = y0 + yk
        pr = y % rph.shape[0]  # the output's phases: only their taps can meet the input
        pc = xo % cph.shape[0]
        acc = zero
        for c in range(C):
            kc = c if KC > 1 else 0
            for ii in range(rph[pr, 0]):
                i = rph[pr, 1 + ii]
                iy = ty[i, y]
                if iy < 0:
                    continue
                for jj in range(cph[pc, 0]):
                    j = cph[pc, 1 + jj]
                    ix = tx[j, xo]
                    if ix >= 0:
                        acc += Wm[o, c * kk + i * kw + j] * (
                            K[b, kc, i, j, yk, xo] * x[b, c, iy, ix]
                        )
        if has_bias:
            acc += bias[o]
        out[b, o, y, xo] = acc


def pac_dense_forward(x, K, Wm, bias, geo, out, y0):
    """out rows y0 ≤ y < y0 + K.shape[4] (K: that stripe of the kernel) of a dense PAC op."""
    B, Cout, _, Wo = out.shape
    n = K.shape[4]
    it = index_dtype(x.size, K.size, out.size)
    run(
        _forward,
        B * Cout * n * Wo,
        x,
        K,
        upload(Wm),
        upload(bias),
        upload(geo.ty, it),
        upload(geo.tx, it),
        *op_phases(geo, it),
        out,
        y0,
        bias.shape[0] > 0,
        out.dtype.type(0),
    )


@cuda_jit()
def _backward_weight(g, x, K, ty, tx, inv_x, by_input, dW_parts, n_chunks, y0, zero):
    """dW_parts[ch, o, (c,i,j)] += Σ over the rows of chunk ch and all x of g · K · x. With
    ``by_input`` (a transposed op) the columns where tap j meets the input are visited through
    the inverse column table (one per input column, in increasing output column: the same order
    as a walk over all columns) — ≈ 1/s of them — instead of testing every output column."""
    B, C = x.shape[0], x.shape[1]
    Cout, Wo = g.shape[1], g.shape[3]
    KC, kh, kw, n = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    kk = kh * kw
    rows = B * n
    for t in range(cuda.grid(1), n_chunks * Cout * C * kk, cuda.gridsize(1)):
        col = t % (C * kk)
        r = t // (C * kk)
        o = r % Cout
        ch = r // Cout
        c = col // kk
        i = (col % kk) // kw
        j = col % kw
        kc = c if KC > 1 else 0
        acc = zero
        for q in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = q // n
            yk = q % n
            iy = ty[i, y0 + yk]
            if iy < 0:
                continue
            if by_input:
                for ix in range(inv_x.shape[1]):
                    xo = inv_x[j, ix]
                    if xo >= 0:
                        acc += g[b, o, y0 + yk, xo] * (K[b, kc, i, j, yk, xo] * x[b, c, iy, ix])
                continue
            for xo in range(Wo):
                ix = tx[j, xo]
                if ix >= 0:
                    acc += g[b, o, y0 + yk, xo] * (K[b, kc, i, j, yk, xo] * x[b, c, iy, ix])
        dW_parts[ch, o, col] += acc


@cuda_jit()
def _backward_bias(g, db_parts, n_chunks, y0, n, zero):
    B, Cout, _, Wo = g.shape
    rows = B * n
    for t in range(cuda.grid(1), n_chunks * Cout, cuda.gridsize(1)):
        o = t % Cout
        ch = t // Cout
        acc = zero
        for q in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = q // n
            y = y0 + q % n
            for xo in range(Wo):
                acc += g[b, o, y, xo]
        db_parts[ch, o] += acc


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
    """Nothing here (returns None): on the GPU the fused transposed op computes K stripe by
    stripe in device memory, one thread per output element (the host backend's version feeds
    K straight into its by-phase GEMMs, which the GPU kernels do not have)."""
    return None


def pac_dense_backward_params(g, x, K, geo, dW_parts, db_parts, n_chunks, y0, need_w, need_b):
    """Weight and bias gradients from the output rows y0 ≤ y < y0 + K.shape[4], into the
    partial buffers (fixed chunks of rows, as on the CPU)."""
    Cout = g.shape[1]
    C = x.shape[1]
    kk = K.shape[2] * K.shape[3]
    n = K.shape[4]
    zero = g.dtype.type(0)
    it = index_dtype(x.size, K.size, g.size)
    if need_w:
        run(
            _backward_weight,
            n_chunks * Cout * C * kk,
            g,
            x,
            K,
            upload(geo.ty, it),
            upload(geo.tx, it),
            inverse_table(geo.tx, x.shape[3], it),
            bool(geo.transposed),
            dW_parts,
            n_chunks,
            y0,
            zero,
        )
    if need_b:
        run(_backward_bias, n_chunks * Cout, g, db_parts, n_chunks, y0, n, zero)


@cuda_jit()
def _backward_kernel(g, x, WmT, ty, tx, dK, y0, zero):
    """dK[b, kc, i, j, y, x] = Σ_{c of kc} (Σ_o Wmᵀ[(c,i,j), o] · g[b, o, y, x]) · x[b, c, tap]."""
    B, C = x.shape[0], x.shape[1]
    Cout = g.shape[1]
    KC, kh, kw, n, Wo = dK.shape[1], dK.shape[2], dK.shape[3], dK.shape[4], dK.shape[5]
    kk = kh * kw
    for t in range(cuda.grid(1), B * KC * kk * n * Wo, cuda.gridsize(1)):
        b, kc, i, j, yk, xo = unravel6(t, KC, kh, kw, n, Wo)
        y = y0 + yk
        iy = ty[i, y]
        ix = tx[j, xo]
        acc = zero
        if iy >= 0 and ix >= 0:
            c0 = kc if KC > 1 else 0
            c1 = kc + 1 if KC > 1 else C
            for c in range(c0, c1):
                row = c * kk + i * kw + j
                G = zero
                for o in range(Cout):
                    G += WmT[row, o] * g[b, o, y, xo]
                acc += G * x[b, c, iy, ix]
        dK[b, kc, i, j, yk, xo] = acc


@cuda_jit()
def _backward_input(g, K, WmT, inv_y, inv_x, dx, y0, zero):
    """dx[b, c, n, m] += Σ over the taps (i, j) that read (n, m) of K · (Wmᵀ · g) — a gather:
    tap i of exactly one output row reads input row n (inv_y), likewise for columns."""
    B, C, Hin, Win = dx.shape
    Cout = g.shape[1]
    KC, kh, kw, nk = K.shape[1], K.shape[2], K.shape[3], K.shape[4]
    kk = kh * kw
    for t in range(cuda.grid(1), B * C * Hin * Win, cuda.gridsize(1)):
        b, c, nn, m = unravel4(t, C, Hin, Win)
        kc = c if KC > 1 else 0
        acc = zero
        for i in range(kh):
            y = inv_y[i, nn]
            if y < 0 or y < y0 or y >= y0 + nk:
                continue
            for j in range(kw):
                xo = inv_x[j, m]
                if xo < 0:
                    continue
                row = c * kk + i * kw + j
                G = zero
                for o in range(Cout):
                    G += WmT[row, o] * g[b, o, y, xo]
                acc += K[b, kc, i, j, y - y0, xo] * G
        dx[b, c, nn, m] += acc


def pac_dense_backward_data(g, x, K, WmT, geo, dx, dK, y0, need_x, need_k):
    """Input and kernel gradients from the output rows of K: dK one thread per element, dx a
    gather through the inverse tap tables (no scatter rounds on the GPU)."""
    zero = g.dtype.type(0)
    it = index_dtype(x.size, K.size, g.size)
    WmT_d = upload(WmT)
    if need_k:
        run(
            _backward_kernel,
            dK.size,
            g,
            x,
            WmT_d,
            upload(geo.ty, it),
            upload(geo.tx, it),
            dK,
            y0,
            zero,
        )
    if need_x:
        inv_y = inverse_table(geo.ty, x.shape[2], it)
        inv_x = inverse_table(geo.tx, x.shape[3], it)
        run(_backward_input, dx.size, g, K, WmT_d, inv_y, inv_x, dx, y0, zero)
