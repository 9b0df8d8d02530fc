"""Centre-feature smoothing of packernel2d on the GPU: the twin of ``pacnp.cpu.smooth`` (each
guide channel cross-correlated with an odd N×N kernel S, zero padded, same size).

Forward: one thread per pixel. dS: fixed chunks of (b, c, y) rows into partial buffers, one
thread per (chunk, u, v), summed in chunk order by the driver — deterministic, no atomics.
"""

from numba import cuda

from .._jit import cuda_jit
from ._launch import run, unravel4, upload


@cuda_jit()
def _forward(g, S, out, zero):
    B, C, H, W = g.shape
    N = S.shape[0]
    m = N // 2
    for t in range(cuda.grid(1), B * C * H * W, cuda.gridsize(1)):
        b, c, Y, X = unravel4(t, C, H, W)
        acc = zero
        for u in range(N):
            yy = Y + u - m
            if yy < 0 or yy >= H:
                continue
            for v in range(N):
                xx = X + v - m
                if 0 <= xx < W:
                    acc += S[u, v] * g[b, c, yy, xx]
        out[b, c, Y, X] = acc


def smooth_forward(g, S, out):
    run(_forward, out.size, g, upload(S), out, out.dtype.type(0))


@cuda_jit()
def _backward_kernel(d, g, dS_parts, zero):
    """dS_parts[ch, u, v] += Σ over the rows of chunk ch of Σ_X d[Y, X] · g[Y+u-m, X+v-m]."""
    B, C, H, W = d.shape
    n_chunks, N = dS_parts.shape[0], dS_parts.shape[1]
    m = N // 2
    rows = B * C * H
    for t in range(cuda.grid(1), n_chunks * N * N, cuda.gridsize(1)):
        v = t % N
        r = t // N
        u = r % N
        ch = r // N
        acc = zero
        for q in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = q // (C * H)
            c = (q // H) % C
            Y = q % H
            yy = Y + u - m
            if yy < 0 or yy >= H:
                continue
            for X in range(W):
                xx = X + v - m
                if 0 <= xx < W:
                    acc += d[b, c, Y, X] * g[b, c, yy, xx]
        dS_parts[ch, u, v] += acc


def smooth_backward_kernel(d, g, dS_parts):
    """dS[u, v] = Σ d[Y, X] g[Y+u-m, X+v-m], over fixed chunks of rows into partial buffers."""
    N = dS_parts.shape[1]
    run(_backward_kernel, dS_parts.shape[0] * N * N, d, g, dS_parts, d.dtype.type(0))
