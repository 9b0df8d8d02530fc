"""Drivers: allocate outputs, call a backend's kernels for a validated plan, fold partial sums.

A backend (``pacnp.cpu`` or ``pacnp.cuda``; the interface is written down in ``pacnp._backend``)
has the kernel modules ``conv``, ``depthwise``, ``kernel``, ``smooth`` and its array module
``arrays``: every allocation and every fold of partial sums goes through it, so device arrays
never travel to the host. The drivers hand the kernels a geometry (``pacnp._core``: tap tables
and sizes) and a stripe of output rows; each backend derives its own schedule from the geometry
(the CPU's scatter rounds, column phases and blocks, the GPU's inverse tables). Small tables
(tap tables, α, λ, weight matrices, smoothing kernels) stay NumPy on either backend; the CUDA
launchers upload them.

Every kernel works on a *stripe* of output rows ``y0 ≤ y < y1``: the K (and dK) it sees hold only
those rows. The two-step path (``packernel2d`` then an op) runs one stripe covering the image;
the fused path walks the image stripe by stripe, computing K for a stripe just before the op
consumes it, so K is never materialised whole and the extra memory is bounded by the stripe
(``config.STRIPE_BYTES``), not by the image. Gradients that several stripes reach (input and
guide rows near a stripe border) accumulate, stripe after stripe, in a fixed order. One
exception: the fused forward of a dense transposed op, whose K a backend may compute inside the
op itself (``Conv.pac_dense_forward_from_guide``: the CPU's by-phase GEMM units) for the rows
between the border rows, with no K in memory at all; the border rows then go stripe by stripe.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from . import config
from ._core import KernelGeometry, OpGeometry, pair_geometry


def _chunks(rows: int) -> int:
    return max(1, min(config.REDUCTION_CHUNKS, rows))


def stripes(plan, skip=None):
    """Output-row stripes for the fused path (without the rows skip[0] ≤ y < skip[1], where
    given): as many rows as fit K in config.STRIPE_BYTES
    (at least one). A stripe's K is therefore ≤ max(STRIPE_BYTES, one output row's K), and
    with the dead taps trimmed (:func:`live_taps`) one row's K holds only the taps that can
    meet the guide: the memory is bounded by the output width and what the window can reach,
    whatever the window. (Rows per stripe are also rows of parallel work: the budget leaves
    dozens of rows per stripe for the usual windows.)"""
    B = plan.guide.shape[0]
    Ho, Wo = plan.geo.out_hw
    row_bytes = max(B * plan.KC * plan.k[0] * plan.k[1] * Wo * plan.guide.dtype.itemsize, 1)
    rows = max(config.STRIPE_BYTES // row_bytes, 1)
    spans = [(0, Ho)] if skip is None else [(0, skip[0]), (skip[1], Ho)]
    return [(y0, min(y0 + rows, y1)) for lo, y1 in spans for y0 in range(lo, y1, rows)]


# --------------------------------------------------------------------------- dead taps
_live_memo = {}
_live_lock = threading.Lock()


def _live_range(tab):
    """[lo, hi) of the taps (rows of a tap table) valid for at least one output."""
    live = np.nonzero((tab >= 0).any(axis=1))[0]
    if live.size == 0:
        return 0, 1  # no tap reaches the guide: keep one (K = 0 there) so shapes stay valid
    return int(live[0]), int(live[-1]) + 1


def _trimmed_geometries(kgeo, ogeo):
    """(i0, i1, j0, j1, kernel geometry, op geometry) restricted to the live taps, or None when
    every tap row and column is live. Memoised on the geometry objects (``_core`` memoises
    those), so the schedules memoised on geometries are reused across calls."""
    key = (id(kgeo), id(ogeo))
    hit = _live_memo.get(key)
    if hit is not None and hit[0] is kgeo and hit[1] is ogeo:
        return hit[2]
    i0, i1 = _live_range(kgeo.gy)
    j0, j1 = _live_range(kgeo.gx)
    kh, kw = kgeo.gy.shape[0], kgeo.gx.shape[0]
    value = None
    if (i0, i1, j0, j1) != (0, kh, 0, kw):
        d = kgeo.dilation
        # tap i reads y·s − p + i·d: dropping the first i0 taps lowers the padding by i0·d
        pad = (kgeo.padding[0] - i0 * d[0], kgeo.padding[1] - j0 * d[1])
        kg = KernelGeometry(
            kgeo.guide_hw,
            kgeo.out_hw,
            np.ascontiguousarray(kgeo.gy[i0:i1]),
            np.ascontiguousarray(kgeo.gx[j0:j1]),
            kgeo.cy,
            kgeo.cx,
            kgeo.stride,
            pad,
            d,
            kgeo.transposed,
            kgeo.guide_shape,
            kgeo.out_shape,
        )
        og = OpGeometry(
            ogeo.in_hw,
            ogeo.out_hw,
            np.ascontiguousarray(ogeo.ty[i0:i1]),
            np.ascontiguousarray(ogeo.tx[j0:j1]),
            ogeo.stride,
            ogeo.transposed,
            ogeo.in_shape,
            ogeo.out_shape,
        )
        value = (i0, i1, j0, j1, kg, og)
    with _live_lock:
        if len(_live_memo) >= 256:
            _live_memo.clear()
        _live_memo[key] = (kgeo, ogeo, value)
    return value


def live_taps(kplan, oplan):
    """The fused op's plans with the window cut to the taps that can meet the guide.

    packernel2d's K is 0 at every tap whose guide pixel lies outside the guide (``gy``/``gx``
    = −1; the normalisation and the mask statistics skip those taps too), so a tap row or
    column that is −1 for every output contributes nothing to the op, to its normalisation or
    to any gradient but the weight's: dropping it is exact. A window far larger than the guide
    (a huge radius, padding beyond the image) then costs and stores only what can reach the
    image. Returns the plans unchanged when every tap is live (the usual case: a cheap check)."""
    kgeo = kplan.geo
    gy, gx = kgeo.gy, kgeo.gx
    if kgeo.nd != 2:  # folded rows: a dead tap row is no longer one padding amount per axis
        return kplan, oplan
    if (gy[0] >= 0).any() and (gy[-1] >= 0).any() and (gx[0] >= 0).any() and (gx[-1] >= 0).any():
        return kplan, oplan
    cut = _trimmed_geometries(kgeo, oplan.geo)
    if cut is None:
        return kplan, oplan
    i0, i1, j0, j1, kg, og = cut
    kplan = dataclasses.replace(kplan, geo=kg, k=(i1 - i0, j1 - j0))
    if oplan.dense:
        Cout, C = oplan.Cout, oplan.x.shape[1]
        Wm = oplan.Wm.reshape(Cout, C, *oplan.geo.ty.shape[:1], oplan.geo.tx.shape[0])
        Wm = np.ascontiguousarray(Wm[:, :, i0:i1, j0:j1]).reshape(Cout, -1)
        oplan = dataclasses.replace(oplan, geo=og, Wm=Wm)
    else:
        oplan = dataclasses.replace(oplan, geo=og, w=np.ascontiguousarray(oplan.w[i0:i1, j0:j1]))
    return kplan, oplan


# --------------------------------------------------------------------------- packernel2d
def centre_source(be, plan):
    """The array the centre features are read from: the guide, or the smoothed guide."""
    if plan.S is None:
        return plan.guide
    src = be.arrays.empty_like(plan.guide)
    be.smooth.smooth_forward(plan.guide, plan.S, plan.Sgeo, src)
    return src


def _mask_arg(plan):
    if plan.mask is None:
        return np.ones((1, 1, 1), dtype=plan.guide.dtype), False
    return plan.mask, True


def kernel_stripe(be, plan, src, y0, y1, out_mask, published=False):
    """K of the output rows y0..y1-1; writes those rows of ``out_mask`` (if masked).
    ``published``: K is packernel2d's output, so its entries at the taps of a transposed
    window that meet no sample must read 0; the backends leave them unwritten
    (Kernel.packernel_forward), so K starts zeroed — a fresh zeroed allocation costs no more
    than the page faults any fresh one pays. The fused path's stripes skip that: the ops
    never read those entries."""
    g = plan.guide
    B = g.shape[0]
    shape = (B, plan.KC, plan.k[0], plan.k[1], y1 - y0, plan.geo.out_hw[1])
    K = (be.arrays.zeros if published and plan.geo.transposed else be.arrays.empty)(shape, g.dtype)
    mask, has_mask = _mask_arg(plan)
    be.kernel.packernel_forward(
        g,
        src,
        plan.geo,
        mask,
        plan.alpha,
        plan.lam,
        plan.kind,
        plan.asym,
        plan.normalize,
        has_mask,
        K,
        out_mask,
        y0,
    )
    return K


def new_output_mask(be, plan):
    B = plan.guide.shape[0]
    Ho, Wo = plan.geo.out_hw
    shape = (B, 1, Ho, Wo) if plan.mask is not None else (0, 1, 1, 1)
    return be.arrays.empty(shape, plan.guide.dtype)


def packernel_forward(be, plan):
    out_mask = new_output_mask(be, plan)
    K = kernel_stripe(
        be, plan, centre_source(be, plan), 0, plan.geo.out_hw[0], out_mask, published=True
    )
    return K, (out_mask if plan.mask is not None else None)


class KernelBackward:
    """Gradients of packernel2d, accumulated stripe by stripe of dK."""

    def __init__(self, be, plan, src, needs):
        need_g, need_a, need_l, need_s = needs
        self.be, self.plan, self.src = be, plan, src
        self.need_g = need_g
        self.need_a = need_a and plan.alpha_shape is not None
        self.need_l = need_l and plan.lam_shape is not None
        self.need_s = need_s and plan.S_shape is not None
        self.need_f = self.need_g or self.need_s
        g = plan.guide
        B = g.shape[0]
        Ho = plan.geo.out_hw[0]
        xp = self.xp = be.arrays
        self.dpar = xp.zeros((B * Ho, 2, plan.KC), g.dtype)
        none = xp.empty((0, 0, 0, 0), g.dtype)
        self.d_guide = xp.zeros_like(g) if need_g else none
        # gradient of the centre-feature source: the guide itself, or the smoothed guide
        if plan.S is None:
            self.d_src = self.d_guide
        else:
            self.d_src = xp.zeros_like(g) if self.need_f else none

    @property
    def wanted(self):
        return self.need_f or self.need_a or self.need_l

    def stripe(self, dK, y0):
        plan = self.plan
        mask, has_mask = _mask_arg(plan)
        self.be.kernel.packernel_backward(
            dK,
            plan.guide,
            self.src,
            plan.geo,
            mask,
            plan.alpha,
            plan.lam,
            plan.kind,
            plan.asym,
            plan.normalize,
            has_mask,
            self.d_src,
            self.d_guide,
            self.dpar,
            y0,
            self.need_f,
            self.need_g,
            self.need_a or self.need_l,
        )

    def finish(self):
        """(d_guide, d_inv_alpha, d_inv_lambda, d_smooth_kernel)."""
        plan, g, xp = self.plan, self.plan.guide, self.xp
        d_guide = self.d_guide if self.need_g else None
        d_alpha = d_lam = d_S = None
        if plan.S is not None and self.need_g:
            # adjoint of a centred zero-padded correlation: correlation with the flipped S
            tmp = xp.empty_like(g)
            # (the folded S reversed on both axes is S reversed on every spatial axis)
            flipped = np.ascontiguousarray(plan.S[::-1, ::-1])
            self.be.smooth.smooth_forward(self.d_src, flipped, plan.Sgeo, tmp)
            d_guide = xp.iadd(d_guide, tmp)
        if self.need_s:
            B, Cg, H, _ = g.shape
            parts = xp.zeros((_chunks(B * Cg * H),) + tuple(plan.S.shape), g.dtype)
            self.be.smooth.smooth_backward_kernel(self.d_src, g, plan.Sgeo, parts)
            d_S = xp.sum0(parts).reshape(plan.S_shape)
        if self.need_a:
            d_alpha = xp.fold_param(self.dpar[:, 0, :], plan.alpha_shape)
        if self.need_l:
            d_lam = xp.fold_param(self.dpar[:, 1, :], plan.lam_shape)
        return d_guide, d_alpha, d_lam, d_S


def packernel_backward(be, plan, dK, needs):
    kb = KernelBackward(be, plan, centre_source(be, plan), needs)
    if kb.wanted:
        kb.stripe(dK, 0)
    return kb.finish()


# --------------------------------------------------------------------------- conv / pool
def op_stripe(be, plan, K, y0, out):
    """out rows y0 .. y0 + K.shape[4] - 1 of a conv / transposed conv / pool."""
    x, geo = plan.x, plan.geo
    if plan.dense:
        bias = plan.bias if plan.bias is not None else np.empty(0, dtype=x.dtype)
        be.conv.pac_dense_forward(x, K, plan.Wm, bias, geo, out, y0)
    else:
        be.depthwise.pac_depthwise_forward(x, K, plan.w, geo, out, y0)
        if plan.bias is not None:
            be.arrays.add_bias(out, plan.bias, y0, K.shape[4])


def op_forward(be, plan):
    out = be.arrays.empty(plan.folded_out_shape, plan.x.dtype)
    op_stripe(be, plan, plan.K, 0, out)
    return out


class OpBackward:
    """Gradients of a conv / transposed conv / pool, accumulated stripe by stripe of K."""

    def __init__(self, be, plan, g, need_x, need_k, need_w, need_b):
        self.be, self.plan, self.g = be, plan, g
        xp = self.xp = be.arrays
        x, geo = plan.x, plan.geo
        dt = x.dtype
        B, C = x.shape[:2]
        kh, kw = geo.ty.shape[0], geo.tx.shape[0]
        self.need_x, self.need_k = need_x, need_k
        self.need_w = need_w
        self.need_b = need_b and plan.bias is not None
        self.n_chunks = _chunks(B * geo.out_hw[0])
        if plan.dense:
            self.dW_parts = xp.zeros((self.n_chunks if need_w else 0, plan.Cout, C * kh * kw), dt)
            self.db_parts = xp.zeros((self.n_chunks if self.need_b else 0, plan.Cout), dt)
        else:
            self.dW_parts = xp.zeros((self.n_chunks if need_w else 0, kh, kw), dt)
        if need_x:
            self.dx = xp.zeros_like(x)
        if plan.dense:
            self.WmT = np.ascontiguousarray(plan.Wm.T)

    def stripe(self, K, y0):
        """Gradients from output rows y0 .. y0 + K.shape[4] - 1; returns dK of that stripe."""
        plan, g, geo, be = self.plan, self.g, self.plan.geo, self.be
        dt = plan.x.dtype
        dK = self.xp.empty(K.shape, dt) if self.need_k else self.xp.empty((0,) * 6, dt)
        if plan.dense:
            if self.need_w or self.need_b:
                be.conv.pac_dense_backward_params(
                    g,
                    plan.x,
                    K,
                    geo,
                    self.dW_parts,
                    self.db_parts,
                    self.n_chunks,
                    y0,
                    self.need_w,
                    self.need_b,
                )
            if self.need_x or self.need_k:
                dx = self.dx if self.need_x else self.xp.empty((0, 0, 0, 0), dt)
                be.conv.pac_dense_backward_data(
                    g, plan.x, K, self.WmT, geo, dx, dK, y0, self.need_x, self.need_k
                )
        else:
            if self.need_k or self.need_w:
                be.depthwise.pac_depthwise_backward_params(
                    g,
                    plan.x,
                    K,
                    plan.w,
                    geo,
                    dK,
                    self.dW_parts,
                    self.n_chunks,
                    y0,
                    self.need_k,
                    self.need_w,
                )
            if self.need_x:
                be.depthwise.pac_depthwise_backward_input(g, K, plan.w, geo, self.dx, y0)
        return dK if self.need_k else None

    def finish(self):
        """(dx, dW, db) — dK is returned per stripe."""
        plan, xp = self.plan, self.xp
        dW = db = None
        if self.need_w:
            dW = xp.sum0(self.dW_parts)
            if plan.dense:
                C = plan.x.shape[1]
                dW = dW.reshape(plan.Cout, C, plan.geo.ty.shape[0], plan.geo.tx.shape[0])
            dW = xp.weight_grad(plan, dW)
        if self.need_b:
            db = xp.sum0(self.db_parts) if plan.dense else xp.channel_sum(self.g, self.n_chunks)
        return (self.dx if self.need_x else None), dW, db


def op_backward(be, plan, g, needs, pool=False):
    """Gradients (x, kernel, weight, bias) of a conv / transposed conv, or (x, kernel) of a pool."""
    if pool:
        need_x, need_k = needs
        need_w = need_b = False
    else:
        need_x, need_k, need_w, need_b = needs
    ob = OpBackward(be, plan, g, need_x, need_k, need_w, need_b)
    dK = ob.stripe(plan.K, 0)
    dx, dW, db = ob.finish()
    return (dx, dK) if pool else (dx, dK, dW, db)


# --------------------------------------------------------------------------- fused path
def pair_forward(be, kplan, oplan, pairs):
    """The fused depthwise op in pair form (``pacnp._core.pair_geometry``): one pass, each
    kernel value computed once for the two outputs it weighs."""
    out = be.arrays.empty(oplan.folded_out_shape, oplan.x.dtype)
    be.depthwise.pac_depthwise_symmetric_forward(
        oplan.x, kplan.guide, oplan.w, pairs, kplan.kind, kplan.alpha[0], kplan.lam[0], out
    )
    if oplan.bias is not None:
        be.arrays.add_bias(out, oplan.bias, 0, out.shape[2])
    return out


def fused_forward(be, kplan, oplan):
    """The op's output straight from the guide: in pair form when K and the filter are
    symmetric, else K computed stripe by stripe."""
    pairs = pair_geometry(kplan, oplan)
    if pairs is not None:
        return pair_forward(be, kplan, oplan, pairs), None
    src = centre_source(be, kplan)
    out_mask = new_output_mask(be, kplan)
    out = be.arrays.empty(oplan.folded_out_shape, oplan.x.dtype)
    done = None
    if oplan.dense and kplan.geo.transposed:
        # the rows between the border rows with K computed inside the op, where the backend
        # can (Conv.pac_dense_forward_from_guide); the rest stripe by stripe
        mask, has_mask = _mask_arg(kplan)
        bias = oplan.bias if oplan.bias is not None else np.empty(0, dtype=oplan.x.dtype)
        done = be.conv.pac_dense_forward_from_guide(
            oplan.x,
            kplan.guide,
            src,
            kplan.geo,
            mask,
            kplan.alpha,
            kplan.lam,
            kplan.kind,
            kplan.asym,
            kplan.normalize,
            has_mask,
            oplan.Wm,
            bias,
            oplan.geo,
            out,
            out_mask,
        )
    for y0, y1 in stripes(kplan, done):
        op_stripe(be, oplan, kernel_stripe(be, kplan, src, y0, y1, out_mask), y0, out)
    return out, (out_mask if kplan.mask is not None else None)


def fused_backward(be, kplan, oplan, g, needs, pool=False):
    """Gradients of the fused op: (x, guide, weight, bias, α, λ, S), or (x, guide, α, λ, S)
    for pooling — K and dK recomputed / kept one stripe at a time."""
    if pool:
        need_x, need_g, need_a, need_l, need_s = needs
        need_w = need_b = False
    else:
        need_x, need_g, need_w, need_b, need_a, need_l, need_s = needs
    if not need_w:  # the weight's gradient keeps the whole window's shape
        kplan, oplan = live_taps(kplan, oplan)
    src = centre_source(be, kplan)
    kb = KernelBackward(be, kplan, src, (need_g, need_a, need_l, need_s))
    ob = OpBackward(be, oplan, g, need_x, kb.wanted, need_w, need_b)
    scratch_mask = new_output_mask(be, kplan)
    if need_x or need_w or need_b or kb.wanted:
        for y0, y1 in stripes(kplan):
            K = kernel_stripe(be, kplan, src, y0, y1, scratch_mask)
            dK = ob.stripe(K, y0)
            if kb.wanted:
                kb.stripe(dK, y0)
    dx, dW, db = ob.finish()
    dg, da, dl, dS = kb.finish()
    return (dx, dg, da, dl, dS) if pool else (dx, dg, dW, db, da, dl, dS)
