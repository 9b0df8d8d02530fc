"""Features for the pairwise kernels: pixel positions (:func:`create_position_feats`) and
DenseCRF's position + colour features (:func:`create_YXRGB`)."""

from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from ._space import _NP, _is_float, _is_numpy, _Space


def create_position_feats(shape, scales=None, bs=1, device=None, *, dtype=np.float32, xp=None):
    """Pixel coordinates as features: ``[bs, len(shape), *shape]``, coordinate ``a`` of every
    pixel divided by ``scales[a]`` (unscaled when None).

    Parameters
    ----------
    shape : tuple of int
        Spatial size, e.g. ``(H, W)``.
    scales : float or sequence of float, optional
        Bandwidth per axis (a number: the same for all).
    bs : int
        Batch size (copies).
    device : optional
        Device of the result (for namespaces that have devices).
    dtype : dtype
    xp : namespace, optional
        Array library of the result (default NumPy).

    Returns
    -------
    array, shape ``(bs, len(shape), *shape)``

    Examples
    --------
    >>> from pacnp import crf
    >>> p = crf.create_position_feats((2, 3), scales=(1.0, 0.5))
    >>> p.shape, p.dtype
    ((1, 2, 2, 3), dtype('float32'))
    >>> p[0, 1]
    array([[0., 2., 4.],
           [0., 2., 4.]], dtype=float32)
    """
    return _position_feats("create_position_feats", "scales", shape, scales, bs, device, dtype, xp)


def _count(fn, name, v, minimum):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def _scales(fn, name, scales, n):
    """Bandwidths: a positive finite number, or ``n`` of them (TypeError / ValueError naming
    ``name`` otherwise)."""
    try:
        s = np.asarray(scales)
    except Exception:
        s = None
    if s is None or s.dtype.kind not in "iuf":
        raise TypeError(f"{fn}: {name} must be a number or a sequence of numbers, got {scales!r}")
    s = s.astype(np.float64).reshape(-1)
    if s.size not in (1, n):
        raise ValueError(f"{fn}: {name} has {s.size} values; expected 1 or {n}")
    if not np.all((s > 0) & np.isfinite(s)):
        raise ValueError(f"{fn}: {name} must be positive and finite, got {scales!r}")
    return np.broadcast_to(s, (n,))


def _position_feats(fn, name, shape, scales, bs, device, dtype, xp):
    """:func:`create_position_feats`, its errors naming ``fn`` and the scales as ``name``."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{fn}: shape must be a tuple of ints, got {shape!r}") from None
    if isinstance(shape, (str, bytes)) or not shape:
        raise ValueError(
            f"{fn}: shape must be a non-empty tuple of ints, e.g. (H, W), got {shape!r}"
        )
    shape = tuple(_count(fn, "shape", n, 0) for n in shape)
    bs = _count(fn, "bs", bs, 0)
    _core.check_elements(
        fn,
        f"the features of bs={bs}, shape={shape}",
        (max(bs, 1), max(len(shape), 1)) + tuple(max(n, 1) for n in shape),
    )
    mesh = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    if scales is not None:
        s = _scales(fn, name, scales, len(shape))
        mesh = mesh / s.reshape((-1,) + (1,) * len(shape))
    out = np.ascontiguousarray(np.broadcast_to(mesh, (bs,) + mesh.shape))
    if xp is None or _is_numpy(xp) or xp is _NP:
        return out.astype(dtype)
    arr = xp.asarray(out) if device is None else xp.asarray(out, device=device)
    return xp.astype(arr, dtype)


def create_YXRGB(img, yx_scale=None, rgb_scale=None, scales=None):
    """The bilateral features of DenseCRF, ``[y/σ_y, x/σ_x, r/σ_r, g/σ_g, b/σ_b]`` per pixel.

    Parameters
    ----------
    img : array (B, C, H, W) or (C, H, W)
        The image, channel-first (any number of channels); a float array keeps its dtype,
        anything else becomes float32 (values unchanged: choose ``rgb_scale`` on the image's own
        scale, e.g. 13 for 0–255 colours).
    yx_scale : float or (float, float), optional
        Spatial bandwidth(s) σ_y, σ_x in pixels.
    rgb_scale : float or sequence of float, optional
        Colour bandwidth (one, or one per channel).
    scales : sequence, optional
        ``yx_scale + rgb_scale`` in one sequence (instead of the two).

    Returns
    -------
    array (B, 2 + C, H, W) in the image's array library.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import crf
    >>> f = crf.create_YXRGB(np.zeros((3, 4, 5), np.uint8), yx_scale=2.0, rgb_scale=13.0)
    >>> f.shape, f.dtype
    ((1, 5, 4, 5), dtype('float32'))
    >>> f[0, 1, 0]                                    # x / 2
    array([0. , 0.5, 1. , 1.5, 2. ], dtype=float32)
    """
    fn = "create_YXRGB"
    sp = _Space(fn, dict(img=img))
    a = sp.inp(img, "img")
    xp = sp.xp
    if not hasattr(a, "shape") or len(a.shape) not in (3, 4):
        raise ValueError(
            f"{fn}: img must be (B, C, H, W) or (C, H, W), got shape "
            f"{tuple(getattr(a, 'shape', ()))}"
        )
    if len(a.shape) == 3:
        a = xp.reshape(a, (1,) + tuple(a.shape))
    if scales is not None:
        if yx_scale is not None or rgb_scale is not None:
            raise ValueError(f"{fn}: give scales or yx_scale/rgb_scale, not both")
        scales = list(_scales(fn, "scales", scales, np.size(scales)))
        if len(scales) < 3:
            raise ValueError(
                f"{fn}: scales has {len(scales)} values; expected yx_scale's 2 "
                f"then rgb_scale's (1, or one per channel)"
            )
        yx_scale, rgb_scale = scales[:2], scales[2:]
    dtype = a.dtype if _is_float(a.dtype) else xp.float32
    a = xp.astype(a, dtype) if a.dtype != dtype else a
    B, C, H, W = (int(v) for v in a.shape)
    if rgb_scale is not None:
        s = _scales(fn, "rgb_scale" if scales is None else "scales", rgb_scale, C)
        a = a / sp.asarray(s.reshape(1, C, 1, 1), dtype)
    pos = sp.asarray(
        _position_feats(fn, "yx_scale", (H, W), yx_scale, B, None, np.float64, None), dtype
    )
    return sp.out(xp.concat([pos, a], axis=1))
