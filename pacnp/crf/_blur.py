"""Coarse-grid messages (``blur = b > 1``): b×b average pooling down, bilinear upsampling up,
their adjoints, and the padding helpers they need (the package docstring of :mod:`pacnp.crf`
has the geometry)."""

from __future__ import annotations

import numpy as np

from .. import _api as pac
from ._space import _dev


def _sl(a, axis, start, stop):
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(start, stop)
    return a[tuple(idx)]


def _zero_pad(xp, a, axis, before, after):
    """Zeros before/after ``a`` along ``axis`` (the adjoint of a crop)."""
    parts = []
    shape = list(a.shape)
    if before:
        shape[axis] = before
        parts.append(xp.zeros(tuple(shape), dtype=a.dtype, **_dev(a)))
    parts.append(a)
    if after:
        shape[axis] = after
        parts.append(xp.zeros(tuple(shape), dtype=a.dtype, **_dev(a)))
    return xp.concat(parts, axis=axis) if len(parts) > 1 else a


def _replicate_pad(xp, a, axis):
    """One copy of the first and of the last row (``axis``) added on each side."""
    n = a.shape[axis]
    return xp.concat([_sl(a, axis, 0, 1), a, _sl(a, axis, n - 1, n)], axis=axis)


def _replicate_pad_adjoint(xp, g, axis):
    n = g.shape[axis] - 2
    if n == 1:
        return _sl(g, axis, 0, 1) + _sl(g, axis, 1, 2) + _sl(g, axis, 2, 3)
    return xp.concat(
        [
            _sl(g, axis, 1, 2) + _sl(g, axis, 0, 1),
            _sl(g, axis, 2, n),
            _sl(g, axis, n, n + 1) + _sl(g, axis, n + 1, n + 2),
        ],
        axis=axis,
    )


class _Blur:
    """Coarse-grid messages for ``blur = b``: pooling and bilinear upsampling (``pacnp.crf``'s
    docstring).

    Per axis of size n: ``pad = ⌈((−n) mod b)/2⌉``, coarse size ``m = (n + 2·pad − b)//b + 1``
    (``avg_pool2d``). Pooling window: b taps (odd b) or b + 1 taps whose first is zero (even b;
    pacnp's windows are odd), padding ``pad`` (+1 for even b); its output may have one extra
    row/column, cropped. Upsampling: the coarse map with one replicated border row/column
    (index n' = n + 1), transposed convolution with stride b, padding 0 and the triangle
    ``w[t] = max(0, 1 − |t − c|/b)``, ``c = (b−1)/2 + ⌊b/2⌋``, 0 ≤ t ≤ 2b: output row
    Z = n'·b + t holds ``Σ_n tri((Y + pad − b·n − (b−1)/2)/b) · z[n]`` — torch's
    ``align_corners=False`` weights of fine row Y — at ``Z = Y + b + ⌊b/2⌋ + pad``.
    """

    def __init__(self, space, hw, b, B, dtype):
        self.b = b
        self.hw = tuple(hw)
        even = b % 2 == 0
        self.kp = b + 1 if even else b
        self.pad = tuple(((-n) % b + 1) // 2 for n in hw)
        self.m = tuple((n + 2 * p - b) // b + 1 for n, p in zip(hw, self.pad))
        self.pp = tuple(p + 1 if even else p for p in self.pad)
        self.mp = tuple((n + 2 * p - self.kp) // b + 1 for n, p in zip(hw, self.pp))
        axes = []
        for n, p, m, mp in zip(hw, self.pp, self.m, self.mp):
            i = np.arange(self.kp)[:, None]
            y = np.arange(mp)[None, :]
            row = y * b - p + i
            real = (i >= (1 if even else 0)) & (y < m)
            ok = (real & (row >= 0) & (row < n)).astype(np.float64)
            cnt = ok.sum(axis=0, keepdims=True)
            axes.append(ok / np.where(cnt > 0, cnt, 1.0))
        Kp = axes[0][:, None, :, None] * axes[1][None, :, None, :]
        Kp = np.broadcast_to(Kp[None, None], (B, 1) + Kp.shape)
        self.K_pool = space.asarray(np.ascontiguousarray(Kp), dtype)
        t = np.arange(2 * b + 1)
        c = (b - 1) / 2 + b // 2
        tri = np.clip(1.0 - np.abs(t - c) / b, 0.0, None)
        self.w_up = space.asarray(np.outer(tri, tri)[None, None], dtype)
        self.shift = tuple(b + b // 2 + p for p in self.pad)
        self.up_hw = tuple((m + 3) * b + 1 for m in self.m)
        self.up_guide = space.asarray(np.zeros((B, 1) + self.up_hw), dtype)

    def down(self, x):
        y = pac.pacpool2d(x, self.K_pool, self.kp, stride=self.b, padding=self.pp)
        if self.mp != self.m:
            y = y[:, :, : self.m[0], : self.m[1]]
        return y

    def down_adjoint(self, xp, g, x):
        for axis, (m, mp) in enumerate(zip(self.m, self.mp)):
            g = _zero_pad(xp, g, axis + 2, 0, mp - m)
        return pac.pacpool2d_backward(
            g, x, self.K_pool, self.kp, stride=self.b, padding=self.pp, needs=(True, False)
        )[0]

    def _up_args(self, z_rep):
        return (z_rep, self.up_guide, self.w_up)

    def _up_kw(self):
        return dict(stride=self.b, shared_filters=True)

    def up(self, xp, z):
        z_rep = _replicate_pad(xp, _replicate_pad(xp, z, 2), 3)
        u, _ = pac.pacconv_transpose2d_fused(*self._up_args(z_rep), **self._up_kw())
        (sy, sx), (H, W) = self.shift, self.hw
        return u[:, :, sy : sy + H, sx : sx + W]

    def up_adjoint(self, xp, g, z):
        (sy, sx), (H, W), (Hu, Wu) = self.shift, self.hw, self.up_hw
        g = _zero_pad(xp, _zero_pad(xp, g, 2, sy, Hu - sy - H), 3, sx, Wu - sx - W)
        z_rep = _replicate_pad(xp, _replicate_pad(xp, z, 2), 3)
        gz = pac.pacconv_transpose2d_fused_backward(
            g,
            *self._up_args(z_rep),
            **self._up_kw(),
            needs=(True, False, False, False, False, False, False),
        )[0]
        return _replicate_pad_adjoint(xp, _replicate_pad_adjoint(xp, gz, 2), 3)
