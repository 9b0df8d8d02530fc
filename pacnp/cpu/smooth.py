"""Centre-feature smoothing of packernel2d (smooth_kernel_type != 'none'): each guide channel
cross-correlated with an odd N×N kernel S, zero padded, same size; forward and backward.

The input-gradient of a zero-padded, centred correlation with S is the same correlation with S
flipped on both axes, so the backward in the guide is ``smooth_forward(d, S[::-1, ::-1])``.
"""

from numba import prange

from .._jit import njit


@njit(parallel=True)
def smooth_forward(g, S, out):
    B, C, H, W = g.shape
    N = S.shape[0]
    m = N // 2
    for r in prange(B * C * H):
        b = r // (C * H)
        c = (r // H) % C
        Y = r % H
        for X in range(W):
            acc = 0.0
            for u in range(N):
                yy = Y + u - m
                if yy < 0 or yy >= H:
                    continue
                for v in range(N):
                    xx = X + v - m
                    if 0 <= xx < W:
                        acc += S[u, v] * g[b, c, yy, xx]
            out[b, c, Y, X] = acc


@njit(parallel=True)
def smooth_backward_kernel(d, g, dS_parts):
    """dS[u, v] = Σ d[Y, X] g[Y+u-m, X+v-m], over fixed chunks of rows into partial buffers."""
    B, C, H, W = d.shape
    N = dS_parts.shape[1]
    m = N // 2
    rows = B * C * H
    n_chunks = dS_parts.shape[0]
    for ch in prange(n_chunks):
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = r // (C * H)
            c = (r // H) % C
            Y = r % H
            for u in range(N):
                yy = Y + u - m
                if yy < 0 or yy >= H:
                    continue
                for v in range(N):
                    acc = 0.0
                    for X in range(W):
                        xx = X + v - m
                        if 0 <= xx < W:
                            acc += d[b, c, Y, X] * g[b, c, yy, xx]
                    dS_parts[ch, u, v] += acc
