"""Drivers: allocate outputs, call a backend's kernels for a validated plan, fold partial sums.

A backend is a namespace with the kernel modules ``conv``, ``depthwise``, ``kernel``, ``smooth``
(``pacnp.cpu`` today; ``pacnp.cuda`` has the same module and function names) and ``xp``, the
array library its buffers live in.
"""
from __future__ import annotations

import numba
import numpy as np

from . import config
from ._core import inverse_taps


def _chunks(rows: int) -> int:
    return max(1, min(config.REDUCTION_CHUNKS, rows))


def _blocks(rows: int) -> int:
    """Row blocks for kernels without reductions: a few per thread, for load balance."""
    return max(1, min(rows, 4 * numba.get_num_threads()))


def _empty6(dtype):
    return np.empty((0, 0, 0, 0, 0, 0), dtype=dtype)


# --------------------------------------------------------------------------- packernel2d
def _centre_features(be, plan):
    """F[b, c, y, x] = (smoothed) guide at the centre of window (y, x); [B, Cg, Ho, Wo]."""
    g = plan.guide
    src = g
    if plan.S is not None:
        src = np.empty_like(g)
        be.smooth.smooth_forward(g, plan.S, src)
    geo = plan.geo
    return np.ascontiguousarray(src[:, :, geo.cy[:, None], geo.cx[None, :]])


def _mask_arg(plan):
    if plan.mask is None:
        return np.ones((1, 1, 1), dtype=plan.guide.dtype), False
    return plan.mask, True


def packernel_forward(be, plan):
    g = plan.guide
    B, Ho, Wo = g.shape[0], plan.geo.out_hw[0], plan.geo.out_hw[1]
    F = _centre_features(be, plan)
    K = np.empty(plan.out_shape, dtype=g.dtype)
    mask, has_mask = _mask_arg(plan)
    out_mask = np.empty((B, 1, Ho, Wo) if has_mask else (0, 1, 1, 1), dtype=g.dtype)
    be.kernel.packernel_forward(g, F, plan.geo.gy, plan.geo.gx, mask, plan.alpha, plan.lam,
                                plan.kind, plan.asym, plan.normalize, has_mask, K, out_mask,
                                _blocks(B * Ho))
    return K, (out_mask if has_mask else None)


def packernel_backward(be, plan, dK, needs):
    need_g, need_a, need_l, need_s = needs
    need_a = need_a and plan.alpha_shape is not None
    need_l = need_l and plan.lam_shape is not None
    need_s = need_s and plan.S_shape is not None
    g = plan.guide
    geo = plan.geo
    B, Cg, H, W = g.shape
    Ho, Wo = geo.out_hw
    KC = plan.KC
    F = _centre_features(be, plan)
    mask, has_mask = _mask_arg(plan)
    A = np.empty((B, KC, Ho, Wo), dtype=g.dtype)
    Bc = np.empty_like(A)
    need_f = need_g or need_s
    dF = np.empty((B, Cg, Ho, Wo) if need_f else (0, 0, 0, 0), dtype=g.dtype)
    dpar = np.zeros((B * Ho, 2, KC), dtype=g.dtype)
    be.kernel.packernel_backward_centre(dK, g, F, geo.gy, geo.gx, mask, plan.alpha, plan.lam,
                                        plan.kind, plan.asym, plan.normalize, has_mask, A, Bc,
                                        dF, dpar, need_f, need_a or need_l)
    d_guide = d_alpha = d_lam = d_S = None
    if need_f:
        # the centre features read the guide at the window centres (through the smoothing)
        d_centre = np.zeros_like(g)
        d_centre[:, :, geo.cy[:, None], geo.cx[None, :]] = dF
    if need_g:
        gy_inv, gx_inv = geo.inverse()
        d_guide = np.empty_like(g)
        be.kernel.packernel_backward_guide(dK, g, F, gy_inv, gx_inv, mask, plan.alpha, plan.lam,
                                           plan.kind, plan.asym, has_mask, A, Bc, d_guide)
        if plan.S is None:
            d_guide += d_centre
        else:
            tmp = np.empty_like(g)
            # adjoint of a centred zero-padded correlation: correlation with the flipped kernel
            be.smooth.smooth_forward(d_centre, np.ascontiguousarray(plan.S[::-1, ::-1]), tmp)
            d_guide += tmp
    if need_s:
        n = plan.S.shape[0]
        parts = np.zeros((_chunks(B * Cg * H), n, n), dtype=g.dtype)
        be.smooth.smooth_backward_kernel(d_centre, g, parts)
        d_S = parts.sum(axis=0).reshape(plan.S_shape)
    if need_a:
        d_alpha = _fold_param(dpar[:, 0, :], plan.alpha_shape)
    if need_l:
        d_lam = _fold_param(dpar[:, 1, :], plan.lam_shape)
    return d_guide, d_alpha, d_lam, d_S


def _fold_param(rows, shape):
    """Sum per-row partials in row order, then to the shape α/λ was given in."""
    per_channel = rows.sum(axis=0)
    if shape == () or shape == (1,) or per_channel.shape[0] != int(np.prod(shape)):
        return np.asarray(per_channel.sum(), dtype=rows.dtype).reshape(shape)
    return np.ascontiguousarray(per_channel.reshape(shape))


# --------------------------------------------------------------------------- conv / pool
def op_forward(be, plan):
    x, K, geo = plan.x, plan.K, plan.geo
    out = np.empty(plan.out_shape, dtype=x.dtype)
    if plan.dense:
        bias = plan.bias if plan.bias is not None else np.empty(0, dtype=x.dtype)
        be.conv.pac_dense_forward(x, K, plan.Wm, bias, geo.ty, geo.tx, out)
    else:
        be.depthwise.pac_depthwise_forward(x, K, plan.w, geo.ty, geo.tx, out)
        if plan.bias is not None:
            out += plan.bias[None, :, None, None]
    return out


def op_backward(be, plan, g, needs, pool=False):
    """Gradients (x, kernel, weight, bias) of a conv / transposed conv, or (x, kernel) of a pool."""
    if pool:
        need_x, need_k = needs
        need_w = need_b = False
    else:
        need_x, need_k, need_w, need_b = needs
        need_b = need_b and plan.bias is not None
    x, K, geo = plan.x, plan.K, plan.geo
    dt = x.dtype
    B, C = x.shape[:2]
    Ho = geo.out_hw[0]
    kh, kw = geo.ty.shape[0], geo.tx.shape[0]
    dx = dK = dW = db = None
    n_chunks = _chunks(B * Ho)
    if plan.dense:
        if need_k or need_w or need_b:
            dK_buf = np.empty(K.shape, dtype=dt) if need_k else _empty6(dt)
            dW_parts = np.zeros((n_chunks if need_w else 0, plan.Cout, C * kh * kw), dtype=dt)
            db_parts = np.zeros((n_chunks if need_b else 0, plan.Cout), dtype=dt)
            be.conv.pac_dense_backward_params(g, x, K, plan.Wm, geo.ty, geo.tx, dK_buf, dW_parts,
                                              db_parts, n_chunks, need_k, need_w, need_b)
            dK = dK_buf if need_k else None
            if need_w:
                dW = plan.weight_grad(dW_parts.sum(axis=0).reshape(plan.Cout, C, kh, kw))
            if need_b:
                db = db_parts.sum(axis=0)
        if need_x:
            WmT_taps = np.ascontiguousarray(
                plan.Wm.reshape(plan.Cout, C, kh, kw).transpose(2, 3, 1, 0))
            dx = np.empty_like(x)
            iy_inv = inverse_taps(geo.ty, x.shape[2])
            be.conv.pac_dense_backward_input(g, K, WmT_taps, iy_inv, geo.tx, dx)
    else:
        if need_k or need_w:
            dK_buf = np.empty(K.shape, dtype=dt) if need_k else _empty6(dt)
            dw_parts = np.zeros((n_chunks if need_w else 0, kh, kw), dtype=dt)
            be.depthwise.pac_depthwise_backward_params(g, x, K, plan.w, geo.ty, geo.tx, dK_buf,
                                                       dw_parts, n_chunks, need_k, need_w)
            dK = dK_buf if need_k else None
            if need_w:
                dW = plan.weight_grad(dw_parts.sum(axis=0))
        if need_b:
            db = g.sum(axis=(0, 2, 3))
        if need_x:
            dx = np.empty_like(x)
            iy_inv = inverse_taps(geo.ty, x.shape[2])
            be.depthwise.pac_depthwise_backward_input(g, K, plan.w, iy_inv, geo.tx, dx)
    return (dx, dK) if pool else (dx, dK, dW, db)
