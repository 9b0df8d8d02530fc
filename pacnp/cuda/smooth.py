"""Centre-feature smoothing of packernel on the GPU: the twin of ``pacnp.cpu.smooth`` (each
guide channel cross-correlated with an odd N^nd kernel S, zero padded, same size, over the
folded arrays and the smoothing's tap tables).

Forward: one thread per pixel. dS: fixed chunks of (b, c, y) rows into partial buffers, one
thread per (chunk, u, v), summed in chunk order by the driver — deterministic, no atomics.
"""

from numba import cuda

from .._jit import cuda_jit
from ._launch import index_dtype, run, unravel4, upload


@cuda_jit()
def _forward(g, S, ty, tx, out, zero):
    B, C, H, W = g.shape
    Nr, Nc = S.shape
    for t in range(cuda.grid(1), B * C * H * W, cuda.gridsize(1)):
        b, c, Y, X = unravel4(t, C, H, W)
        acc = zero
        for u in range(Nr):
            yy = ty[u, Y]
            if yy < 0:
                continue
            for v in range(Nc):
                xx = tx[v, X]
                if xx >= 0:
                    acc += S[u, v] * g[b, c, yy, xx]
        out[b, c, Y, X] = acc


def smooth_forward(g, S, geo, out):
    it = index_dtype(g.size)
    run(
        _forward,
        out.size,
        g,
        upload(S),
        upload(geo.ty, it),
        upload(geo.tx, it),
        out,
        out.dtype.type(0),
    )


@cuda_jit()
def _backward_kernel(d, g, ty, tx, dS_parts, zero):
    """dS_parts[ch, u, v] += Σ over the rows of chunk ch of Σ_X d[Y, X] · g[ty[u, Y], tx[v, X]]."""
    B, C, H, W = d.shape
    n_chunks, Nr, Nc = dS_parts.shape[0], dS_parts.shape[1], dS_parts.shape[2]
    rows = B * C * H
    for t in range(cuda.grid(1), n_chunks * Nr * Nc, cuda.gridsize(1)):
        v = t % Nc
        r = t // Nc
        u = r % Nr
        ch = r // Nr
        acc = zero
        for q in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = q // (C * H)
            c = (q // H) % C
            Y = q % H
            yy = ty[u, Y]
            if yy < 0:
                continue
            for X in range(W):
                xx = tx[v, X]
                if xx >= 0:
                    acc += d[b, c, Y, X] * g[b, c, yy, xx]
        dS_parts[ch, u, v] += acc


def smooth_backward_kernel(d, g, geo, dS_parts):
    """dS over fixed chunks of rows into the partial buffers ``dS_parts`` [chunks, *S.shape]."""
    it = index_dtype(d.size)
    n = dS_parts.shape[0] * dS_parts.shape[1] * dS_parts.shape[2]
    run(
        _backward_kernel, n, d, g, upload(geo.ty, it), upload(geo.tx, it), dS_parts, d.dtype.type(0)
    )
