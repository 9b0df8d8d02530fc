"""Centre-feature smoothing of packernel (smooth_kernel_type != 'none'): each guide channel
cross-correlated with an odd N^nd kernel S, zero padded, same size; forward and backward.

The guide and S arrive folded to two axes like every other array of the kernels
(``pacnp._core.fold_tables``), with the smoothing's tap tables (``_core.smooth_geometry``):
tap (u, v) of pixel (Y, X) reads the guide at (ty[u, Y], tx[v, X]), nothing where either is -1,
so a window never wraps across the edge of a volume's plane.

The input-gradient of a zero-padded, centred correlation with S is the same correlation with S
flipped on every axis, so the backward in the guide is ``smooth_forward(d, S[::-1, ::-1])``
(the folded axis reversed is each of its axes reversed; the tables are symmetric about the
centre tap).
"""

from numba import prange

from .._jit import njit


@njit(parallel=True)
def _forward(g, S, ty, tx, out):
    B, C, H, W = g.shape
    Nr, Nc = S.shape
    for r in prange(B * C * H):
        b = r // (C * H)
        c = (r // H) % C
        Y = r % H
        for X in range(W):
            acc = 0.0
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
    """out = g smoothed with S over the tap tables of ``geo`` (``_core.smooth_geometry``)."""
    _forward(g, S, geo.ty, geo.tx, out)


@njit(parallel=True)
def _backward_kernel(d, g, ty, tx, dS_parts):
    """dS[u, v] = Σ d[Y, X] g[ty[u, Y], tx[v, X]], over fixed chunks of rows into partial
    buffers."""
    B, C, H, W = d.shape
    Nr, Nc = dS_parts.shape[1], dS_parts.shape[2]
    rows = B * C * H
    n_chunks = dS_parts.shape[0]
    for ch in prange(n_chunks):
        for r in range(ch * rows // n_chunks, (ch + 1) * rows // n_chunks):
            b = r // (C * H)
            c = (r // H) % C
            Y = r % H
            for u in range(Nr):
                yy = ty[u, Y]
                if yy < 0:
                    continue
                for v in range(Nc):
                    acc = 0.0
                    for X in range(W):
                        xx = tx[v, X]
                        if xx >= 0:
                            acc += d[b, c, Y, X] * g[b, c, yy, xx]
                    dS_parts[ch, u, v] += acc


def smooth_backward_kernel(d, g, geo, dS_parts):
    """dS over fixed chunks of rows into the partial buffers ``dS_parts`` [chunks, *S.shape]."""
    _backward_kernel(d, g, geo.ty, geo.tx, dS_parts)
