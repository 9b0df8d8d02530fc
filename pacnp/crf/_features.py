"""Features for the pairwise kernels: pixel positions (:func:`create_position_feats`) and
DenseCRF's position + colour features (:func:`create_YXRGB`)."""
from __future__ import annotations

import numpy as np

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
    shape = tuple(int(n) for n in shape)
    mesh = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape],
                                indexing="ij"))
    if scales is not None:
        s = np.broadcast_to(np.asarray(scales, dtype=np.float64).reshape(-1), (len(shape),))
        if np.any(s <= 0):
            raise ValueError(f"create_position_feats: scales must be positive, got {scales!r}")
        mesh = mesh / s.reshape((-1,) + (1,) * len(shape))
    out = np.ascontiguousarray(np.broadcast_to(mesh, (int(bs),) + mesh.shape))
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
        raise ValueError(f"{fn}: img must be (B, C, H, W) or (C, H, W), got shape "
                         f"{tuple(getattr(a, 'shape', ()))}")
    if len(a.shape) == 3:
        a = xp.reshape(a, (1,) + tuple(a.shape))
    if scales is not None:
        if yx_scale is not None or rgb_scale is not None:
            raise ValueError(f"{fn}: give scales or yx_scale/rgb_scale, not both")
        scales = list(np.asarray(scales, dtype=np.float64).reshape(-1))
        yx_scale, rgb_scale = scales[:2], scales[2:]
    dtype = a.dtype if _is_float(a.dtype) else xp.float32
    a = xp.astype(a, dtype) if a.dtype != dtype else a
    B, C, H, W = (int(v) for v in a.shape)
    if rgb_scale is not None:
        s = np.broadcast_to(np.asarray(rgb_scale, dtype=np.float64).reshape(-1), (C,))
        if np.any(s <= 0):
            raise ValueError(f"{fn}: rgb_scale must be positive, got {rgb_scale!r}")
        a = a / sp.asarray(s.reshape(1, C, 1, 1), dtype)
    pos = sp.asarray(create_position_feats((H, W), yx_scale, B, dtype=np.float64), dtype)
    return sp.out(xp.concat([pos, a], axis=1))
