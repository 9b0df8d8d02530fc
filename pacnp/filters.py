"""The classic filters that pixel-adaptive convolution generalises, for signals, images and
volumes (1, 2 or 3 spatial axes: ``spatial_dims``).

Every filter here is one call of pacnp's public PAC operations (Su et al. 2019, Sec. 3.2), so it
runs wherever they run — NumPy arrays on the CPU, CuPy arrays on the GPU:

``joint_bilateral_filter`` / ``bilateral_filter``
    out_i = Σ_j w_s(p_i − p_j) · w_c(g_i − g_j) · v_j / Σ_j w_s(p_i − p_j) · w_c(g_i − g_j)

    with exact Gaussians w_s(δ) = exp(−Σ_a (δ_a·spacing_a)²/2σ_s²) (σ_s in the units of
    ``spacing``; voxels without it) and w_c(Δ) = exp(−‖Δ‖²/2σ_c²) (Euclidean distance over the
    guide's channels, in the guide's units), over the box window |δ_a| ≤ radius_a. PAC form:
    K = packernel(guide / σ_c) (its gaussian is exp(−½‖Δ‖²)), W = w_s as a shared filter, and
    the denominator is the same PAC applied to a channel of ones — one ``pacconv1d_fused`` /
    ``pacconv2d_fused`` / ``pacconv3d_fused`` call computes numerator and denominator together,
    K once per pair of voxels for all channels (the symmetric K and w_s take the fused op's pair
    form) and never stored.
``joint_bilateral_upsample``
    Kopf et al.'s joint bilateral upsampling as one transposed PAC: low-res sample n sits at
    high-res voxel n·f + (f−1)//2, every high-res voxel averages the samples within
    ``radius`` high-res voxels, weighted by w_s of the distance and w_c of the colour difference
    between the voxel and the sample's voxel in the high-res guide. (2-D with one radius and σ_s
    for both axes runs a direct kernel over the samples in reach, ``pacnp.cpu.upsample``; 1-D,
    3-D and anisotropic cases the transposed PAC, ``pacconv_transpose1d/2d/3d_fused``.)
``detail_preserving_pool``
    Detail-preserving pooling (Saeedan et al. 2018) as PAC pooling: weights
    α + (‖v_j − ṽ_i‖² + ε²)^λ per channel, ṽ the 3^d binomial smoothing of the input at the
    window centre, normalised over the window.

Borders (``border``): ``reflect`` (… c b | a b c … : the edge voxel is not repeated; OpenCV's
BORDER_REFLECT_101, kornia's and ``numpy.pad``'s ``reflect``), ``nearest`` (edge voxel
repeated), ``constant`` (zeros, for the image and the guide), ``renormalize`` (taps outside the
image are left out and the weights of the others renormalised — partial-window averaging).

Layout (``channel_axis`` as in scikit-image, ``spatial_dims`` = d, default 2): None — the last d
axes are the signal / image / volume, any axes before them are a batch; an integer — that axis
holds the channels, the last d *other* axes are spatial and any remaining axes a batch. The
guide shares the image's spatial and batch axes; its channels (any number) are on
``guide_channel_axis`` (default: the image's ``channel_axis`` when both have the same number of
axes, else no channel axis: a grey guide).

dtypes: uint8 and uint16 in, the same dtype out (rounded to nearest, clipped); float32 and
float64 computed in their own precision; float16 through float32. ``sigma_color`` is in the
guide's units (0–255 for a uint8 guide).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator

import numpy as np

from . import _api, _core, _nd
from ._namespace import array_module as _array_module
from ._namespace import delegate

__all__ = [
    "bilateral_filter",
    "joint_bilateral_filter",
    "joint_bilateral_upsample",
    "detail_preserving_pool",
    "default_radius",
    "default_sigma_color",
    "BORDERS",
    "Layout",
    "FilterPlan",
    "plan_joint_bilateral_filter",
    "plan_joint_bilateral_upsample",
    "plan_detail_preserving_pool",
    "compute_dtype",
]

BORDERS = ("reflect", "nearest", "constant", "renormalize")
_PAD_MODE = {"reflect": "reflect", "nearest": "edge", "constant": "constant"}
#: window radius in units of σ_s when none is given: the Gaussian is below 1.2 % beyond 3σ
RADIUS_PER_SIGMA = 3.0
#: names of the spatial axes in messages, per ``spatial_dims``
_AXES = {1: "L", 2: "H, W", 3: "D, H, W"}


# --------------------------------------------------------------------------- checks
_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)


def _check_dtype(fn, name, a):
    """``a``'s dtype is one the filters take (any array with ``shape`` and ``dtype``: NumPy,
    CuPy, Dask)."""
    if a is None:
        raise TypeError(f"{fn}: {name} is required, got None")
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"{fn}: {name} must be an array, got {type(a).__name__}")
    if np.dtype(a.dtype).newbyteorder("=") not in _DTYPES:  # byte-swapped arrays are fine
        raise TypeError(
            f"{fn}: {name} has dtype {a.dtype}; expected one of uint8, uint16, "
            f"float16, float32, float64"
        )


def compute_dtype(dtype):
    """The dtype the filters compute in for images of ``dtype``: float64 for float64, else
    float32 (integers, float16).

    Parameters
    ----------
    dtype : numpy dtype or type

    Returns
    -------
    numpy.dtype

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> filters.compute_dtype(np.uint8), filters.compute_dtype(np.float64)
    (dtype('float32'), dtype('float64'))
    """
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _positive(fn, name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_, str, bytes)):  # float("2") and float(True) would pass
        raise TypeError(f"{fn}: {name} must be a positive number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a positive number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{fn}: {name} must be a positive finite number, got {value!r}")
    return v


def _spatial_dims(fn, spatial_dims):
    """The number of spatial axes: 1, 2 or 3 (bools refused: True is not an axis count)."""
    if isinstance(spatial_dims, (bool, np.bool_)):
        raise TypeError(f"{fn}: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    try:
        nd = operator.index(spatial_dims)
    except TypeError:
        raise TypeError(f"{fn}: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}") from None
    if nd not in (1, 2, 3):
        raise ValueError(f"{fn}: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return nd


def _per_axis(fn, name, value, nd, check):
    """``value`` — one value for every spatial axis, or a sequence of ``nd`` — as a tuple of
    ``check(fn, name, v)`` per axis."""
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        if len(value) != nd:
            raise ValueError(
                f"{fn}: {name} must be a number or a sequence of {nd} (one per spatial axis, "
                f"spatial_dims={nd}), got {tuple(value)!r}"
            )
        return tuple(check(fn, name, v) for v in value)
    return (check(fn, name, value),) * nd


def _spacing(fn, spacing, nd):
    """The voxel size per spatial axis (None: 1 on every axis)."""
    if spacing is None:
        return (1.0,) * nd
    return _per_axis(fn, "spacing", spacing, nd, _positive)


def _radius_value(fn, name, radius):
    if isinstance(radius, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an integer >= 0, got {radius!r}")
    try:
        r = operator.index(radius)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer >= 0, got {radius!r}") from None
    if r < 0:
        raise ValueError(f"{fn}: {name} must be an integer >= 0, got {radius!r}")
    return _core.check_size(fn, name, r, radius)


def _radius(fn, radius, sigmas, reach):
    """The window radius per axis (given, or the default for the per-axis σ_s in voxels,
    ``sigmas``), checked; the window-size limit applies to what the window can reach,
    ``min(r, reach)`` per axis: beyond the image the filters clamp or fold the window (its cost
    is bounded by the image, whatever the radius)."""
    nd = len(sigmas)
    if radius is None:
        radii = tuple(default_radius(s) for s in sigmas)
        for r, s in zip(radii, sigmas):
            _core.check_size(fn, "the radius of sigma_spatial", r, s)
        _window(fn, "sigma_spatial", sigmas[0] if nd == 1 else sigmas, radii, reach)
        return radii
    radii = _per_axis(fn, "radius", radius, nd, _radius_value)
    _window(fn, "radius", radius, radii, reach)
    return radii


def _window(fn, name, shown, radii, reach):
    """The box window of radii ``radii`` (set by argument ``name``), clamped to ``reach`` on
    every axis, is one pacnp takes (``pacnp._core``'s limits), checked before anything of its
    size is allocated."""
    taps = 1
    for r in radii:
        taps *= 2 * min(r, reach) + 1
    _core.check_window(fn, name, shown, taps)


def _int(fn, name, value, minimum, what):
    """An integer argument >= ``minimum`` (bools refused: True is not a stride)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be {what}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be {what}, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{fn}: {name} must be {what}, got {value!r}")
    return _core.check_size(fn, name, v, value)


def default_radius(sigma_spatial, spacing=None):
    """The window radius used when none is given: ⌈3σ_s⌉ (window 2·radius + 1); with
    ``spacing``, ⌈3σ_s / spacing_a⌉ voxels on axis a (at least 1).

    Parameters
    ----------
    sigma_spatial : float
        σ_s in voxels, or in the units of ``spacing``.
    spacing : float, sequence of float or None, optional
        The voxel size per spatial axis.

    Returns
    -------
    radius : int, or tuple of int (one per axis) when ``spacing`` is a sequence

    Examples
    --------
    >>> from pacnp import filters
    >>> filters.default_radius(2.0), filters.default_radius(0.5)
    (6, 2)
    >>> filters.default_radius(1.5, spacing=(3.0, 1.0, 1.0))   # anisotropic voxels
    (2, 5, 5)
    """
    if spacing is not None:
        if isinstance(spacing, (list, tuple, np.ndarray)):
            return tuple(default_radius(float(sigma_spatial) / float(s)) for s in spacing)
        return default_radius(float(sigma_spatial) / float(spacing))
    r = RADIUS_PER_SIGMA * float(sigma_spatial) - 1e-9
    if not math.isfinite(r):  # refused by the callers' checks (σ_s must be finite)
        return _core.MAX_SIZE + 1
    return max(1, int(math.ceil(r)))


def _border(fn, border, allowed=BORDERS):
    if not isinstance(border, str) or border not in allowed:
        raise ValueError(f"{fn}: border must be one of {list(allowed)}, got {border!r}")
    return border


def _axis(fn, name, axis, ndim):
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an integer or None, got {axis!r}")
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer or None, got {axis!r}") from None
    if not -ndim <= a < ndim:
        raise ValueError(f"{fn}: {name}={axis} is out of range for an array with {ndim} axes")
    return a % ndim


def default_sigma_color(xp, guide, dtype):
    """σ_c when none is given — the one rule of the filters, ``pacnp.dask`` and the command
    line: the standard deviation of the guide's values in the compute ``dtype``, over its
    finite values when it holds NaN or ±inf (those pixels get NaN results either way; they
    must not set the colour scale of the others), and 1 when that is 0 or there is no finite
    value (a constant guide: every colour weight is 1 whatever σ_c is).

    Parameters
    ----------
    xp : module
        The guide's array module (NumPy, CuPy or ``dask.array``).
    guide : array
        The guide, any layout.
    dtype : numpy.dtype
        The compute dtype (:func:`compute_dtype` of the image's dtype).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> g = np.array([[0.0, 2.0], [np.nan, 4.0]])
    >>> round(filters.default_sigma_color(np, g, np.dtype(np.float64)), 4)  # over 0, 2, 4
    1.633
    >>> filters.default_sigma_color(np, np.ones((3, 3)), np.dtype(np.float32))  # constant
    1.0
    """
    # C order first: the sum's order — and so the last bits of σ_c — must not depend on the
    # memory layout of the caller's array (``astype`` alone keeps a Fortran-ordered layout)
    if guide.size == 0:  # an empty batch: no colour scale to measure, and none needed
        return 1.0
    g = guide.astype(dtype, order="C")
    s = float(g.std())
    if not math.isfinite(s):  # NaN or inf somewhere: the scale of the finite values
        finite = xp.isfinite(g)
        n = float(finite.sum())
        if n > 0:
            mean = float(xp.where(finite, g, 0).sum(dtype=np.float64)) / n
            d = xp.where(finite, g - dtype.type(mean), 0)
            s = math.sqrt(float((d * d).sum(dtype=np.float64)) / n)
    return s if s > 0 and math.isfinite(s) else 1.0


# --------------------------------------------------------------------------- layouts
class Layout:
    """Where an array's batch, channel and spatial axes are (``channel_axis`` as in
    scikit-image, ``spatial_dims`` spatial axes; module docstring), and the moves between that
    layout and the canonical ``(*batch, C, *spatial)`` the PAC operations take. Built from the
    shape alone, so the filters, ``pacnp.dask`` and the command line share it; the moves work
    on NumPy, CuPy and Dask arrays (``xp``: their module).

    Parameters
    ----------
    fn, name : str
        The function and argument named in errors.
    shape : tuple of int
    channel_axis : int or None
    spatial_dims : {1, 2, 3}, optional
        The number of spatial axes (default 2: images).

    Attributes
    ----------
    nd : int
        ``spatial_dims``.
    spatial_shape : tuple of int
        The sizes of the spatial axes (``hw``: the same, the name of the 2-D days).

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp.filters import Layout
    >>> lay = Layout("demo", "image", (4, 5, 6, 3), channel_axis=-1)  # a batch of 4 RGB images
    >>> lay.batch_shape, lay.channels, lay.hw
    ((4,), 3, (5, 6))
    >>> lay.to_bchw(np, np.zeros((4, 5, 6, 3))).shape
    (4, 3, 5, 6)
    >>> vol = Layout("demo", "image", (2, 10, 11, 12), channel_axis=0, spatial_dims=3)
    >>> vol.channels, vol.spatial_shape, vol.to_bchw(np, np.zeros((2, 10, 11, 12))).shape
    (2, (10, 11, 12), (1, 2, 10, 11, 12))
    """

    def __init__(self, fn, name, shape, channel_axis, spatial_dims=2):
        self.shape = tuple(int(n) for n in shape)
        self.nd = nd = _spatial_dims(fn, spatial_dims)
        ndim = len(self.shape)
        if channel_axis is None:
            if ndim < nd:
                raise ValueError(
                    f"{fn}: {name} must have at least {nd} axes ({_AXES[nd]}) for "
                    f"spatial_dims={nd}, got shape {self.shape}"
                )
            self.caxis = None
        else:
            if ndim < nd + 1:
                raise ValueError(
                    f"{fn}: {name} with channel_axis={channel_axis} needs at least {nd + 1}"
                    f" axes (channels, {_AXES[nd]}), got shape {self.shape}"
                )
            self.caxis = _axis(
                fn,
                "channel_axis" if name != "guide" else "guide_channel_axis",
                channel_axis,
                ndim,
            )
        others = [i for i in range(ndim) if i != self.caxis]
        self.spatial = others[-nd:]
        self.batch = others[:-nd]
        self.order = self.batch + ([self.caxis] if self.caxis is not None else []) + self.spatial
        if min(self.shape[i] for i in self.spatial) < 1:
            raise ValueError(f"{fn}: {name} has an empty image, shape {self.shape}")

    @property
    def batch_shape(self):
        return tuple(self.shape[i] for i in self.batch)

    @property
    def spatial_shape(self):
        return tuple(self.shape[i] for i in self.spatial)

    @property
    def hw(self):
        return self.spatial_shape

    @property
    def channels(self):
        return self.shape[self.caxis] if self.caxis is not None else 1

    def to_canonical(self, xp, a):
        """``a`` as ``(*batch, C, *spatial)`` (C = 1 without a channel axis); a view."""
        t = xp.transpose(a, self.order)
        if self.caxis is not None:
            return t
        return xp.expand_dims(t, axis=t.ndim - self.nd)

    def from_canonical(self, xp, t):
        """A canonical ``(*batch, C', *spatial')`` result back in this layout (C' and the
        spatial sizes may differ from the input's: pooling, upsampling)."""
        if self.caxis is None:
            t = xp.squeeze(t, axis=t.ndim - self.nd - 1)
        inverse = np.argsort(self.order)
        return xp.transpose(t, tuple(int(i) for i in inverse))

    def to_bchw(self, xp, a):
        """``a`` as ``[B, C, *spatial]``, the batch axes folded into one."""
        t = self.to_canonical(xp, a)
        nb = int(np.prod(self.batch_shape, dtype=np.int64))
        return t.reshape((nb,) + tuple(t.shape[-self.nd - 1 :]))

    def from_bchw(self, xp, t, hw=None):
        """Back to the caller's layout; ``hw``: new spatial size (pooling, upsampling)."""
        hw = self.spatial_shape if hw is None else tuple(hw)
        t = t.reshape(self.batch_shape + (t.shape[1],) + hw)
        return self.from_canonical(xp, t)


def _guide_layout(fn, image_layout, guide, guide_channel_axis, scale=1):
    """The guide's layout: the image's batch axes, its spatial axes ``scale`` times larger, any
    number of channels."""
    ndim = len(guide.shape)
    inum = len(image_layout.shape)
    if guide_channel_axis == "auto":
        if ndim == inum:
            guide_channel_axis = image_layout.caxis
        elif ndim == inum - 1 and image_layout.caxis is not None:
            guide_channel_axis = None
        else:
            raise ValueError(
                f"{fn}: guide has {ndim} axes, image {inum}: give guide_channel_axis "
                f"(the guide must share the image's batch and spatial axes)"
            )
    lay = Layout(fn, "guide", guide.shape, guide_channel_axis, image_layout.nd)
    want = image_layout.batch_shape + tuple(n * scale for n in image_layout.spatial_shape)
    got = lay.batch_shape + lay.spatial_shape
    if want != got:
        what = "" if scale == 1 else f" ({scale}× the image's spatial size)"
        raise ValueError(
            f"{fn}: guide has shape {tuple(guide.shape)}; the guide batch and spatial sizes "
            f"{got} do "
            f"not match the image's {want}{what} (image shape {image_layout.shape})"
        )
    return lay


def _finish(xp, out, dtype):
    """Back to the input dtype: integers rounded to nearest and clipped to their range."""
    if dtype.kind == "u":
        info = np.iinfo(dtype)
        return xp.clip(xp.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype, copy=False)


def _fits(shape, want):
    """``shape`` holds ``want``'s values: the same shape with axes of length 1 added or left
    out, or a shape that broadcasts to it."""
    if [n for n in shape if n != 1] == [n for n in want if n != 1]:
        return True
    try:
        return np.broadcast_shapes(shape, want) == want
    except ValueError:
        return False


# --------------------------------------------------------------------------- plans
@dataclasses.dataclass(frozen=True)
class FilterPlan:
    """Everything a filter decides before it computes: made once from the arguments' shapes
    and dtypes (so from NumPy, CuPy or Dask arrays alike) by :func:`plan_joint_bilateral_filter`,
    :func:`plan_joint_bilateral_upsample` or :func:`plan_detail_preserving_pool`, then used by
    the in-memory filter, by ``pacnp.dask`` (chunks and halos) and by the command line (row
    tiles).

    Per spatial axis (tuples of ``spatial_dims``): ``radii`` (window half-sizes, in output
    voxels), ``halos`` (the input voxels of context an output region needs on each side; for
    upsampling, low-resolution samples), ``spacing``, ``kernel_sizes`` and ``strides``
    (pooling). ``radius``, ``halo``, ``kernel_size`` and ``stride`` are their largest values
    (one number: what a tiling that treats every axis alike needs).

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> img = np.zeros((100, 120, 3), np.uint8)
    >>> plan = filters.plan_joint_bilateral_filter(img, img, sigma_spatial=2.0, channel_axis=-1)
    >>> plan.radius, plan.halo, plan.border, plan.compute_dtype, plan.out_shape
    (6, 6, 'reflect', dtype('float32'), (100, 120, 3))
    >>> plan.resolve_sigma_color(np, img).chunk_kwargs()["sigma_color"]  # a constant guide
    1.0
    >>> vol = np.zeros((20, 64, 64), np.float32)                         # 3-D, 4 × 1 × 1 mm
    >>> plan = filters.plan_joint_bilateral_filter(vol, None, sigma_spatial=2.0, spatial_dims=3,
    ...                                            spacing=(4.0, 1.0, 1.0))
    >>> plan.radii, plan.halos, plan.voxel_sigmas
    ((2, 6, 6), (2, 6, 6), (0.5, 2.0, 2.0))
    """

    fn: str
    op: str  # "bilateral", "upsample" or "pool"
    layout: Layout  # the image's (the low-res image's for upsampling)
    guide_layout: Layout | None  # None: no guide (pooling) or the image guides itself
    dtype: np.dtype  # the image's, and the result's
    compute_dtype: np.dtype
    border: str
    radii: tuple  # window half-sizes per axis, in output voxels
    halos: tuple  # per axis
    sigma_spatial: float | None = None  # in the units of spacing
    sigma_color: float | None = None  # None: default_sigma_color of the guide
    factor: int = 1
    kernel_sizes: tuple = ()
    strides: tuple = ()
    alpha: float = 0.0
    lam: float = 0.0
    spacing: tuple = ()

    @property
    def spatial_dims(self):
        return self.layout.nd

    @property
    def radius(self):
        return max(self.radii)

    @property
    def halo(self):
        return max(self.halos)

    @property
    def kernel_size(self):
        return max(self.kernel_sizes) if self.kernel_sizes else 1

    @property
    def stride(self):
        return max(self.strides) if self.strides else 1

    @property
    def voxel_sigmas(self):
        """σ_s in voxels per axis: σ_s / spacing_a."""
        if self.sigma_spatial is None:
            return None
        return tuple(self.sigma_spatial / s for s in self.spacing)

    @property
    def out_hw(self):
        """The output's spatial shape."""
        shape = self.layout.spatial_shape
        if self.op == "upsample":
            return tuple(n * self.factor for n in shape)
        if self.op == "pool":
            return tuple(-(-n // s) for n, s in zip(shape, self.strides))
        return shape

    @property
    def out_shape(self):
        shape = list(self.layout.shape)
        for ax, n in zip(self.layout.spatial, self.out_hw):
            shape[ax] = n
        return tuple(shape)

    def resolve_sigma_color(self, xp, guide_canonical):
        """This plan with σ_c fixed: the given one, else :func:`default_sigma_color` of the
        guide (canonical layout; its module ``xp``)."""
        if self.sigma_color is not None or self.op == "pool":
            return self
        s = default_sigma_color(xp, guide_canonical, self.compute_dtype)
        return dataclasses.replace(self, sigma_color=s)

    def sigma_color_in(self, dtype):
        """σ_c as a scalar of the compute ``dtype``, at least its smallest normal number: a σ_c
        that underflows to 0 there (1e-300 in float32) would make the centre tap 0/0 = NaN;
        at the floor every colour difference the dtype can hold still weighs exp(−∞) = 0, the
        limit the tiny σ_c asks for."""
        return dtype.type(max(self.sigma_color, float(np.finfo(dtype).tiny)))

    def chunk_kwargs(self):
        """Keywords that make the in-memory filter repeat this plan's decisions on one
        canonical ``[B, C, *spatial]`` tile or chunk (σ_c resolved first)."""
        nd = self.spatial_dims
        if self.op == "pool":
            return dict(
                stride=self.strides,
                alpha=self.alpha,
                lam=self.lam,
                border=self.border,
                channel_axis=1,
                spatial_dims=nd,
            )
        assert self.sigma_color is not None, "resolve_sigma_color first"
        kw = dict(
            sigma_spatial=self.sigma_spatial,
            sigma_color=self.sigma_color,
            radius=self.radii,
            border=self.border,
            channel_axis=1,
            spatial_dims=nd,
            spacing=self.spacing,
        )
        if self.op == "bilateral" and self.guide_layout is None:
            return kw
        return dict(kw, guide_channel_axis=1)


def plan_joint_bilateral_filter(
    image,
    guide,
    *,
    sigma_spatial=1.0,
    sigma_color=None,
    radius=None,
    border="reflect",
    channel_axis=None,
    guide_channel_axis="auto",
    spatial_dims=2,
    spacing=None,
    fn="joint_bilateral_filter",
):
    """Check the arguments of :func:`joint_bilateral_filter` (``guide=None``: of
    :func:`bilateral_filter`) and return its :class:`FilterPlan`. Only the arrays' ``shape``
    and ``dtype`` are read, so NumPy, CuPy and Dask arrays plan alike.

    Parameters
    ----------
    image, guide : array or None
        As :func:`joint_bilateral_filter` (``guide`` None: the image guides itself).
    sigma_spatial, sigma_color, radius, border, channel_axis, guide_channel_axis, spatial_dims, \
spacing
        As :func:`joint_bilateral_filter`.
    fn : str
        The function named in errors.

    Returns
    -------
    FilterPlan

    Raises
    ------
    TypeError, ValueError
        Exactly the errors :func:`joint_bilateral_filter` raises for these arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> plan = filters.plan_joint_bilateral_filter(np.zeros((8, 8)), None, sigma_spatial=1.0)
    >>> plan.radius, plan.out_shape
    (3, (8, 8))
    >>> sig = np.zeros((5, 1000, 3))                   # 5 signals of 1000 samples, 3 channels
    >>> plan = filters.plan_joint_bilateral_filter(sig, None, sigma_spatial=2.0, radius=7,
    ...                                            channel_axis=-1, spatial_dims=1)
    >>> plan.radii, plan.layout.batch_shape, plan.out_shape
    ((7,), (5,), (5, 1000, 3))
    """
    _check_dtype(fn, "image", image)
    nd = _spatial_dims(fn, spatial_dims)
    sigma_spatial = _positive(fn, "sigma_spatial", sigma_spatial)
    sigma_color = _positive(fn, "sigma_color", sigma_color, allow_none=True)
    spacing = _spacing(fn, spacing, nd)
    lay = Layout(fn, "image", image.shape, channel_axis, nd)
    sigmas = tuple(sigma_spatial / s for s in spacing)
    r = _radius(fn, radius, sigmas, max(lay.spatial_shape))
    border = _border(fn, border)
    glay = None
    if guide is not None:
        _check_dtype(fn, "guide", guide)
        glay = _guide_layout(fn, lay, guide, guide_channel_axis)
    return FilterPlan(
        fn,
        "bilateral",
        lay,
        glay,
        np.dtype(image.dtype),
        compute_dtype(image.dtype),
        border,
        r,
        r,
        sigma_spatial,
        sigma_color,
        spacing=spacing,
    )


def plan_joint_bilateral_upsample(
    low,
    guide,
    factor,
    *,
    sigma_spatial=None,
    sigma_color=None,
    radius=None,
    border="renormalize",
    channel_axis=None,
    guide_channel_axis="auto",
    confidence=None,
    spatial_dims=2,
    spacing=None,
    fn="joint_bilateral_upsample",
):
    """Check the arguments of :func:`joint_bilateral_upsample` and return its
    :class:`FilterPlan` (``halos`` in low-resolution samples).

    Parameters
    ----------
    low, guide, factor, sigma_spatial, sigma_color, radius, border, channel_axis,
    guide_channel_axis, confidence, spatial_dims, spacing
        As :func:`joint_bilateral_upsample` (only shapes and dtypes are read).
    fn : str
        The function named in errors.

    Returns
    -------
    FilterPlan

    Raises
    ------
    TypeError, ValueError
        Exactly the errors :func:`joint_bilateral_upsample` raises for these arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> plan = filters.plan_joint_bilateral_upsample(np.zeros((10, 12)), np.zeros((80, 96)), 8)
    >>> plan.radius, plan.sigma_spatial, plan.out_shape
    (12, 4.0, (80, 96))
    >>> plan = filters.plan_joint_bilateral_upsample(
    ...     np.zeros((4, 5, 6)), np.zeros((8, 10, 12)), 2, spatial_dims=3)
    >>> plan.radii, plan.halos, plan.out_shape
    ((3, 3, 3), (3, 3, 3), (8, 10, 12))
    """
    _check_dtype(fn, "low", low)
    _check_dtype(fn, "guide", guide)
    nd = _spatial_dims(fn, spatial_dims)
    f = _int(fn, "factor", factor, 2, "an integer >= 2")
    spacing = _spacing(fn, spacing, nd)
    if sigma_spatial is None:  # half the sample spacing, on the finest axis
        sigma_spatial = f / 2 * min(spacing)
    sigma_spatial = _positive(fn, "sigma_spatial", sigma_spatial)
    lay = Layout(fn, "low", low.shape, channel_axis, nd)
    reach = f * max(lay.spatial_shape)  # no output voxel is farther than this from every sample
    if radius is None:
        radii = (3 * f // 2,) * nd
        _window(fn, "factor", factor, radii, reach)
    else:
        radii = _radius(fn, radius, tuple(sigma_spatial / s for s in spacing), reach)
    o = (f - 1) // 2  # low-res sample n sits at high-res voxel n·f + o
    if min(radii) < f - 1 - o:
        raise ValueError(
            f"{fn}: radius={radius if radius is not None else min(radii)} leaves high-res "
            f"voxels without a sample in reach; need radius >= {f - 1 - o} for factor {f}"
        )
    _border(fn, border, ("renormalize",))
    sigma_color = _positive(fn, "sigma_color", sigma_color, allow_none=True)
    if guide_channel_axis == "auto" and len(guide.shape) != len(low.shape):
        guide_channel_axis = None
    glay = _guide_layout(fn, lay, guide, guide_channel_axis, scale=f)
    if confidence is not None:
        _check_dtype(fn, "confidence", confidence)
        want = lay.batch_shape + lay.spatial_shape
        fits = _fits(tuple(confidence.shape), want)
        if not fits:
            raise ValueError(
                f"{fn}: confidence has shape {tuple(confidence.shape)}; expected "
                f"low's batch and spatial shape {want} (axes of length 1 aside, "
                f"or a shape that broadcasts to it)"
            )
    # the samples an output row's window reaches, either side
    halos = tuple(-(-(r + o) // f) + 1 for r in radii)
    return FilterPlan(
        fn,
        "upsample",
        lay,
        glay,
        np.dtype(low.dtype),
        compute_dtype(low.dtype),
        border,
        radii,
        halos,
        sigma_spatial,
        sigma_color,
        factor=f,
        spacing=spacing,
    )


def _odd_size(fn, name, value):
    k = _int(fn, name, value, 1, "an odd integer >= 1")
    if k % 2 == 0:
        raise ValueError(f"{fn}: {name} must be an odd integer >= 1, got {value!r}")
    return k


def _stride_value(fn, name, value):
    return _int(fn, name, value, 1, "an integer >= 1")


def plan_detail_preserving_pool(
    image,
    kernel_size=3,
    *,
    stride=2,
    alpha=1.0,
    lam=1.0,
    border="renormalize",
    channel_axis=None,
    spatial_dims=2,
    fn="detail_preserving_pool",
):
    """Check the arguments of :func:`detail_preserving_pool` and return its
    :class:`FilterPlan` (``halos``: the window and the 3-tap smoothing of its centre).

    Parameters
    ----------
    image, kernel_size, stride, alpha, lam, border, channel_axis, spatial_dims
        As :func:`detail_preserving_pool` (only the shape and dtype are read).
    fn : str
        The function named in errors.

    Returns
    -------
    FilterPlan

    Raises
    ------
    TypeError, ValueError
        Exactly the errors :func:`detail_preserving_pool` raises for these arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> plan = filters.plan_detail_preserving_pool(np.zeros((9, 10)), 3, stride=2)
    >>> plan.out_shape, plan.halo
    ((5, 5), 1)
    >>> plan = filters.plan_detail_preserving_pool(np.zeros((9, 10, 11)), (1, 3, 5),
    ...                                            stride=(1, 2, 2), spatial_dims=3)
    >>> plan.out_shape, plan.halos
    ((9, 5, 6), (1, 1, 2))
    """
    _check_dtype(fn, "image", image)
    nd = _spatial_dims(fn, spatial_dims)
    ks = _per_axis(fn, "kernel_size", kernel_size, nd, _odd_size)
    ss = _per_axis(fn, "stride", stride, nd, _stride_value)
    for name, v in (("alpha", alpha), ("lam", lam)):
        if isinstance(v, (bool, np.bool_, str, bytes)):
            raise TypeError(f"{fn}: {name} must be a number, got {v!r}")
        try:
            float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: {name} must be a number, got {v!r}") from None
    alpha, lam = float(alpha), float(lam)
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"{fn}: alpha must be a finite number >= 0, got {alpha}")
    if not math.isfinite(lam):
        raise ValueError(f"{fn}: lam must be a finite number, got {lam}")
    border = _border(fn, border)
    lay = Layout(fn, "image", image.shape, channel_axis, nd)
    # the limit applies to what the window can reach: beyond the image it is folded
    reach = 2 * max(lay.spatial_shape) + 1
    _core.check_window(fn, "kernel_size", kernel_size, math.prod(min(k, reach) for k in ks))
    radii = tuple(k // 2 for k in ks)
    return FilterPlan(
        fn,
        "pool",
        lay,
        None,
        np.dtype(image.dtype),
        compute_dtype(image.dtype),
        border,
        radii,
        tuple(max(r, 1) for r in radii),  # the window, and the smoothing of its centre
        kernel_sizes=ks,
        strides=ss,
        alpha=alpha,
        lam=lam,
        spacing=(1.0,) * nd,
    )


def _gaussian_1d(radius, sigma, dtype):
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-0.5 * (d / sigma) ** 2).astype(dtype)


def _gaussian_window(radii, sigmas, dtype):
    """The separable spatial Gaussian over the box window of ``radii``: the outer product of
    the per-axis 1-D Gaussians of σ_s in voxels ``sigmas`` (exp(−Σ_a δ_a²/2σ_a²)), built in
    float64 and rounded once, so that it is exactly point-symmetric (the fused op's pair form
    needs that)."""
    w = functools.reduce(
        np.multiply.outer, [_gaussian_1d(r, s, np.float64) for r, s in zip(radii, sigmas)]
    )
    return np.asarray(w, dtype=dtype)


def _as_tuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _gaussian_taps(radius, sigma, dtype):
    """(r, w_s) of the spatial Gaussian over the window |t| ≤ ``radius``, cut at the taps whose
    weight is 0 in ``dtype`` (they weigh nothing in any sum): a radius far beyond σ_s costs no
    more than ~40·σ_s taps."""
    tiny = float(np.finfo(dtype).smallest_subnormal)
    # exp(−t²/2σ²) rounds to 0 in dtype beyond this t (one more tap for the rounding)
    reach = math.ceil(sigma * math.sqrt(-2.0 * (math.log(tiny) - math.log(2.0)))) + 1
    r = min(radius, reach)
    ws = _gaussian_1d(r, sigma, dtype)
    while r > 0 and ws[0] == 0:
        r, ws = r - 1, ws[1:-1]
    return r, ws


def _border_index(p, n, mode):
    """The image index (0 ≤ j < n) that padded position p (any integer array) repeats under
    ``mode`` ('edge' or 'reflect', as numpy.pad: reflect with repeated reflections mirrors with
    period 2(n − 1))."""
    if mode == "edge" or n == 1:
        return np.clip(p, 0, n - 1)
    period = 2 * (n - 1)
    q = np.mod(p, period)
    return np.where(q < n, q, period - q)


def _fold_axis(n, r, ws, mode):
    """Spatial weights of one axis folded onto the image: F[i, j] = Σ_t w_s(t) over the taps
    |t| ≤ r of output i whose padded position i + t is image pixel j (for 'edge' / 'reflect'
    every padded position is one), and out[i] = Σ_t w_s(t) over the taps falling outside the
    image (the zero pixels of 'constant'; 0 for the other modes). ``ws``: the 2r + 1 tap
    weights (float64). Cost n·(2r + 1)."""
    return _fold_centres(n, np.arange(n), np.arange(-r, r + 1), ws, mode)


def _outside_mass(ins, outs):
    """The window mass on the zero voxels of 'constant' per output, as an nd-array: all taps
    minus those inside, Π_a (in_a + out_a) − Π_a in_a, written as the sum over axes
    a of (Π_{b<a} in_b)·out_a·(Π_{b>a} (in_b + out_b)) so that nothing cancels."""
    total = 0
    for a in range(len(ins)):
        factors = list(ins[:a]) + [outs[a]] + [i + o for i, o in zip(ins[a + 1 :], outs[a + 1 :])]
        total = total + functools.reduce(np.multiply.outer, factors)
    return np.asarray(total)


def _direct_weighted_sum(xp, x, guide, sigma_color, r, sigma_spatial, border, ct):
    """Σ_j W·K·[x_j, 1] of :func:`_weighted_sum` for a window larger than the image, computed
    over the image's voxels instead of the window's taps: with a padding border every tap
    outside the image repeats an image voxel ('nearest', 'reflect') or is a zero voxel
    ('constant'), and the separable Π_a w_s(t_a) folds axis by axis onto the voxel it repeats
    (:func:`_fold_axis`), so (in 2-D)

        Σ_taps w_s K v = Σ_j Fy[iy, jy]·Fx[ix, jx]·K(g_i, g_j)·v_j  (+ K(g_i, 0)·(mass outside)
        for 'constant', in the denominator only: its pixels are 0 in the image and the guide),

    the same sum regrouped: exact up to rounding, at a cost of n² pairs (n voxels), independent
    of the radius (the window form costs n·Π(2r_a + 1) and pads the image by r). ``x`` [B, C,
    *S] (1 to 3 spatial axes), ``r`` and ``sigma_spatial`` (in voxels) one value or one per
    axis. Computed in float64, output voxels in blocks whose pairs take ≲ config.STRIPE_BYTES."""
    from . import config

    B, C = x.shape[:2]
    S = tuple(x.shape[2:])
    nd = len(S)
    mode = _PAD_MODE[border]
    Fs, Os = [], []
    for n, ra, sa in zip(S, _as_tuple(r, nd), _as_tuple(sigma_spatial, nd)):
        r_w, ws = _gaussian_taps(ra, sa, ct)
        F, mass_out = _fold_axis(n, r_w, ws.astype(np.float64), mode)
        Fs.append(F)
        Os.append(mass_out)
    n = math.prod(S)
    J = np.unravel_index(np.arange(n), S)
    v = xp.asarray(x, dtype=np.float64).reshape(B, C, n)
    g = v if guide is None else xp.asarray(guide, dtype=np.float64).reshape(B, -1, n)
    g = g / float(sigma_color)
    Cg = g.shape[1]
    num = xp.empty((B, C, n), dtype=np.float64)
    den = xp.empty((B, 1, n), dtype=np.float64)
    if border == "constant":
        Oxy = xp.asarray(_outside_mass([F.sum(1) for F in Fs], Os).reshape(n))
        g0 = xp.exp(-0.5 * (g * g).sum(axis=1))  # K(g_i, 0) [B, n]
    step = max(1, (config.STRIPE_BYTES // 8) // max(1, B * n * (Cg + 2)))
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        idx = np.unravel_index(np.arange(i0, i1), S)
        sp = functools.reduce(
            np.multiply, [F[i][:, j] for F, i, j in zip(Fs, idx, J)]
        )  # [m, n] folded spatial weights
        sp = xp.asarray(sp)
        d2 = xp.zeros((B, i1 - i0, n), dtype=np.float64)
        for c in range(Cg):
            diff = g[:, c, i0:i1, None] - g[:, c, None, :]
            d2 += diff * diff
        A = xp.exp(-0.5 * d2) * sp[None]
        num[:, :, i0:i1] = xp.einsum("bmj,bcj->bcm", A, v)
        den[:, 0, i0:i1] = A.sum(axis=2)
        if border == "constant":
            den[:, 0, i0:i1] += g0[:, i0:i1] * Oxy[None, i0:i1]
    return (
        num.reshape((B, C) + S).astype(ct, copy=False),
        den.reshape((B, 1) + S).astype(ct, copy=False),
    )


def _fold_centres(n, centres, offsets, weights, mode):
    """F[o, j] = Σ over the offsets t (weights w_t) with centres[o] + t on image pixel j (a
    padded position repeating it, for 'edge' / 'reflect'), and out[o] = the weight falling on
    the zero pixels of 'constant'. The general form of :func:`_fold_axis`."""
    F = np.zeros((len(centres), n))
    out = np.zeros(len(centres))
    for o, c in enumerate(centres):
        p = c + offsets
        if mode in ("edge", "reflect"):
            F[o] = np.bincount(_border_index(p, n, mode), weights=weights, minlength=n)
        else:
            inside = (p >= 0) & (p < n)
            np.add.at(F[o], p[inside], weights[inside])
            out[o] = weights[~inside].sum()
    return F, out


def _direct_pool(xp, x, plan):
    """:func:`pool` for a window larger than the image with a padding border, over the image's
    voxels: the window of output o (centre: image voxel o·stride) counts each image voxel j as
    often as padded taps repeat it, Π_a F_a[o_a, j_a] times (zero voxels of 'constant':
    value 0, counted apart), so

        out_o = Σ_j F·D_oj·v_j / (Σ_j F·D_oj + D_o(0)·(taps on zero voxels)),
        D_oj = α + ((v_j − ṽ_o)² + ε²)^λ per channel,

    ṽ_o the 3^d binomial smoothing of the padded image (zeros beyond it) at the centre
    (separable: the same folding with the offsets −1, 0, 1, one axis at a time).
    Exact up to rounding; the cost is (voxels)·(output voxels), not the window's
    Π k_a per output. Computed in float64."""
    from . import config

    B, C = x.shape[:2]
    S = tuple(x.shape[2:])
    mode = _PAD_MODE[plan.border]
    b3 = np.array([0.25, 0.5, 0.25])
    Fs, Os, Ss = [], [], []
    for n, r, s in zip(S, plan.radii, plan.strides):
        centres = np.arange(0, n, s)
        F, mass_out = _fold_centres(n, centres, np.arange(-r, r + 1), np.ones(2 * r + 1), mode)
        Fs.append(F)
        Os.append(mass_out)
        # the smoothing reads the padded image, zeros beyond it: an axis padded by r = 0
        # (kernel size 1) has zeros next to its edge voxels, not their border-mode repeats
        Ss.append(_fold_centres(n, centres, np.arange(-1, 2), b3, mode if r else "constant")[0])
    v = xp.asarray(x, dtype=np.float64)
    smooth = v  # ṽ [B, C, *S_out]: the folded binomial along each axis in turn
    for a, Sa in enumerate(Ss):
        smooth = xp.moveaxis(xp.tensordot(smooth, xp.asarray(Sa), axes=([2 + a], [1])), -1, 2 + a)
    S_out = tuple(F.shape[0] for F in Fs)
    n, n_out = math.prod(S), math.prod(S_out)
    J = np.unravel_index(np.arange(n), S)
    vf = v.reshape(B, C, 1, n)
    sm = smooth.reshape(B, C, n_out)
    alpha, lam, eps = plan.alpha, plan.lam, config.INV_EPS
    out = xp.empty((B, C, n_out), dtype=np.float64)
    if plan.border == "constant":
        zeros = xp.asarray(_outside_mass([F.sum(1) for F in Fs], Os).reshape(n_out))
    step = max(1, (config.STRIPE_BYTES // 8) // max(1, 3 * B * C * n))
    for o0 in range(0, n_out, step):
        o1 = min(n_out, o0 + step)
        idx = np.unravel_index(np.arange(o0, o1), S_out)
        cnt = xp.asarray(
            functools.reduce(np.multiply, [F[i][:, j] for F, i, j in zip(Fs, idx, J)])
        )  # [m, n] taps per voxel
        c = sm[:, :, o0:o1, None]
        D = alpha + ((vf - c) ** 2 + eps) ** lam
        D = D * cnt[None, None]
        num = (D * vf).sum(axis=3)
        den = D.sum(axis=3)
        if plan.border == "constant":
            den = den + (alpha + (c[..., 0] ** 2 + eps) ** lam) * zeros[None, None, o0:o1]
        out[:, :, o0:o1] = num / den
    return out.reshape((B, C) + S_out).astype(plan.compute_dtype, copy=False)


def _fill_border(xp, a, r, mode):
    """Fill the band of width r_a around the interior of ``a`` [..., *(S_a + 2r_a)] in place,
    as ``numpy.pad(interior, r, mode)`` would (modes 'reflect', 'edge', 'constant' = zeros).
    ``r``: one width for the last two axes (an image), or a tuple, one per trailing axis.

    Padding into a preallocated array instead of ``pad``-ing a copy saves the filters a pass
    over the image per padded array: the band is all that is written. One axis at a time over
    the whole extent of the others: a later axis overwrites the corners an earlier one filled
    from not-yet-filled bands, reading from its own interior, which is then complete."""
    radii = (r, r) if not isinstance(r, (tuple, list)) else tuple(r)
    lead = a.ndim - len(radii)
    sizes = [a.shape[lead + i] - 2 * p for i, p in enumerate(radii)]
    if not any(radii):
        return
    if mode == "reflect" and any(0 < p and n <= p for n, p in zip(sizes, radii)):
        inner = (Ellipsis,) + tuple(slice(p, p + n) for n, p in zip(sizes, radii))
        a[...] = xp.pad(a[inner], [(0, 0)] * lead + [(p, p) for p in radii], mode="reflect")
        return
    for i, (n, p) in enumerate(zip(sizes, radii)):
        if p == 0:
            continue
        ax = lead + i

        def at(s, ax=ax):
            idx = [slice(None)] * a.ndim
            idx[ax] = s
            return tuple(idx)

        if mode == "constant":
            a[at(slice(0, p))] = 0
            a[at(slice(p + n, None))] = 0
        elif mode == "edge":
            a[at(slice(0, p))] = a[at(slice(p, p + 1))]
            a[at(slice(p + n, None))] = a[at(slice(p + n - 1, p + n))]
        else:  # reflect: padded index p − 1 − k mirrors p + 1 + k (the edge voxel not repeated)
            a[at(slice(0, p))] = a[at(slice(2 * p, p, -1))]
            a[at(slice(p + n, None))] = a[at(slice(p + n - 2, n - 2, -1))]


def _public_op(name, nd):
    """The public PAC op ``name`` (e.g. "pacconv{}d_fused") for ``nd`` spatial axes:
    ``pacnp.pacconv1d_fused``, ``pacconv2d_fused`` or ``pacconv3d_fused``."""
    return getattr(_api if nd == 2 else _nd, name.format(nd))


def _fused_conv(nd):
    return _public_op("pacconv{}d_fused", nd)


def _fused_pool(nd):
    return _public_op("pacpool{}d_fused", nd)


def _weighted_sum(fn, xp, x, guide, sigma_color, w, border, radius, ct):
    """Σ_j W·K·[x_j, 1] for every voxel: ``x`` [B, C, *S], ``guide`` [B, Cg, *S] (views in
    any dtype; the guide is divided by σ_c on the way in; None: x guides itself), ``w`` the
    spatial weights over the window (shape 2·radius + 1 per axis; ``radius`` one value or one
    per axis); returns (numerator [B, C, *S], denominator [B, 1, *S])."""
    B, C = x.shape[:2]
    S = tuple(x.shape[2:])
    nd = len(S)
    radii = _as_tuple(radius, nd)
    # renormalize: PAC's zero padding; the others: the image padded by its border mode
    pads = (0,) * nd if border == "renormalize" else radii
    mode = _PAD_MODE.get(border)  # reflecting a 1-voxel axis repeats its voxel (numpy.pad)
    # [x, 1] and guide / σ_c written straight into their padded arrays (x is usually a
    # transposed view of an H×W×C image: this copy is the transposition)
    padded = tuple(n + 2 * p for n, p in zip(S, pads))
    xx = xp.empty((B, C + 1) + padded, dtype=ct)
    inner = (slice(None), slice(None)) + tuple(slice(p, p + n) for n, p in zip(S, pads))
    xx[:, :C][inner] = x
    xx[:, C] = 1  # the ones channel, border included: padded voxels count in the denominator
    if any(pads):
        _fill_border(xp, xx[:, :C], pads, mode)
    if guide is None:  # from the padded copy: contiguous, border done
        gg = xp.divide(xx[:, :C], sigma_color)
    else:
        gg = xp.empty((B, guide.shape[1]) + padded, dtype=ct)
        xp.divide(guide, sigma_color, out=gg[inner])
        if any(pads):
            _fill_border(xp, gg, pads, mode)
    weight = xp.asarray(np.asarray(w).reshape((1, 1) + w.shape).astype(ct))
    padding = tuple(r - p for r, p in zip(radii, pads))
    # (symmetric K and w_s, stride 1: the fused op takes its pair form, in any dimension)
    out, _ = _fused_conv(nd)(
        xx, gg, weight, padding=padding, shared_filters=True, kernel_type="gaussian"
    )
    return out[:, :C], out[:, C:]


# --------------------------------------------------------------------------- compute
def _xp_of(a):
    return np if isinstance(a, np.ndarray) else _array_module(a)


def _fold_instead(radii, S):
    """Whether the window of ``radii`` over spatial shape ``S`` is summed over the image's
    voxels (the folded forms, cost n² for n voxels, in NumPy) instead of over its taps (cost
    n·Π(2r_a + 1) in the PAC kernels, after padding every axis by r_a): when the window
    covers the image on every axis (the 2-D rule, r ≥ max(H, W), on every axis)."""
    return all(r >= n for r, n in zip(radii, S))


def bilateral(plan, image, guide=None):
    """The computing half of the (joint) bilateral filter: ``plan`` from
    :func:`plan_joint_bilateral_filter`, ``image`` / ``guide`` NumPy or CuPy arrays of the
    planned shapes (``guide`` None: the image guides itself)."""
    xp = _xp_of(image)
    lay, ct = plan.layout, plan.compute_dtype
    x = lay.to_bchw(xp, image)
    g = x if guide is None else plan.guide_layout.to_bchw(xp, guide)
    plan = plan.resolve_sigma_color(xp, g)
    S = tuple(x.shape[2:])
    sigmas = plan.voxel_sigmas
    # taps whose w_s is 0 in the compute dtype weigh nothing: a radius far beyond σ_s on an
    # axis costs no more than ~40·σ_s there (nor pads the image by more)
    radii = tuple(_gaussian_taps(r, sg, ct)[0] for r, sg in zip(plan.radii, sigmas))
    if plan.border == "renormalize":
        # taps beyond the image are left out: a radius past the axis' size − 1 adds none
        radii = tuple(min(r, n - 1) for r, n in zip(radii, S))
    if plan.border != "renormalize" and _fold_instead(radii, S):
        # a window larger than the image: the padded taps fold onto the voxels they repeat,
        # so the cost is bounded by the image, not the radius (no r-wide padding either)
        num, den = _direct_weighted_sum(
            xp,
            x,
            None if guide is None else g,
            plan.sigma_color_in(ct),
            radii,
            sigmas,
            plan.border,
            ct,
        )
    else:
        num, den = _weighted_sum(
            plan.fn,
            xp,
            x,
            None if guide is None else g,
            plan.sigma_color_in(ct),
            _gaussian_window(radii, sigmas, ct),
            plan.border,
            radii,
            ct,
        )
    # den ≥ the centre tap's weight w_s(0)·w_c(0) = 1 > 0 for every border mode
    return _finish(xp, lay.from_bchw(xp, num / den), plan.dtype)


def _phase_taps(f, o, r, ws):
    """Per output phase p (Y = q·f + p) the samples n = q − m in reach, |m·f + p − o| ≤ r:
    (taps [f, J] the offsets m, weights [f, J] their w_s(m·f + p − o) from ``ws`` (the 2r + 1
    window weights), counts [f] how many of row p's entries are used), for one axis of radius
    ``r`` and spatial weights ``ws`` (w_s is separable: one table per axis)."""
    lists = []
    for p in range(f):
        m_lo = -((r + p - o) // f)
        m_hi = (r - p + o) // f
        lists.append(range(m_lo, m_hi + 1))
    J = max(len(ms) for ms in lists)
    taps = np.zeros((f, J), dtype=np.int64)
    weights = np.zeros((f, J), dtype=ws.dtype)
    counts = np.zeros(f, dtype=np.int64)
    for p, ms in enumerate(lists):
        counts[p] = len(ms)
        for j, m in enumerate(ms):
            taps[p, j] = m
            weights[p, j] = ws[m * f + p - o + r]
    return taps, weights, counts


def _row_tables(f, o, radii, sigmas, s, dtype):
    """The low-res rows in reach of each high-res row, over the leading spatial axes folded
    into rows (``docs/development.md``, "Volumes and signals"): ``rtab`` [R, J] the folded
    low-res row (−1 where any axis has no sample: the sample lies outside the image, or the
    phase has fewer offsets than the longest), ``rw`` [R, J] the product of the axes' w_s.
    ``radii``, ``sigmas``, ``s``: one per leading axis (low-res lengths); none (a signal):
    one row reading row 0 with weight 1."""
    rtab = np.zeros((1, 1), dtype=np.int64)
    rw = np.ones((1, 1), dtype=np.float64)
    for r, sigma, n in zip(radii, sigmas, s):
        taps, weights, counts = _phase_taps(f, o, r, _gaussian_1d(r, sigma, np.float64))
        Y = np.arange(n * f)
        q, p = Y // f, Y % f
        lo = q[:, None] - taps[p]  # [n·f, J_a]: the sample of entry j of high-res index Y
        used = (np.arange(taps.shape[1])[None, :] < counts[p][:, None]) & (lo >= 0) & (lo < n)
        tab = np.where(used, lo, -1)
        wt = np.where(used, weights[p], 0.0)
        # row (.., Y_a) of the fold so far × entry (.., j_a): index·n + n_a, −1 if either is
        folded = np.where(
            (rtab[:, None, :, None] < 0) | (tab[None, :, None, :] < 0),
            -1,
            rtab[:, None, :, None] * n + tab[None, :, None, :],
        )
        R, J = rtab.shape[0] * tab.shape[0], rtab.shape[1] * tab.shape[1]
        rtab = folded.reshape(R, J)
        rw = (rw[:, None, :, None] * wt[None, :, None, :]).reshape(R, J)
    # the weights multiplied in float64 and rounded once, like the spatial window
    return np.ascontiguousarray(rtab), np.ascontiguousarray(rw, dtype=dtype)


def _upsample_kernel(xp):
    """The backend module computing :func:`upsample`'s sums for arrays of module ``xp``:
    ``pacnp.cpu.upsample`` for NumPy, its numba.cuda twin for device (CuPy) arrays."""
    if xp is np:
        from .cpu import upsample as kernels
    else:
        from .cuda import upsample as kernels
    return kernels


def _upsample_direct(xp, xx, g, f, r, sigma_spatial, out):
    """Run the direct kernel of :func:`upsample` (``pacnp.cpu.upsample``, or its CUDA twin for
    CuPy arrays) for any number of spatial axes: ``xx`` [B, C + 1, *s] values × confidence
    then the confidence, ``g`` [B, Cg, *(s·f)] the guide divided by σ_c (C-contiguous, one
    float dtype), radius ``r`` and σ_s in voxels ``sigma_spatial`` (a number, or one per
    spatial axis); writes ``out`` [B, C, *(s·f)] (C-contiguous; NaN where no weight), with
    C + 1 channels also the weight sum. The demo calls it for the weight sum."""
    s = tuple(xx.shape[2:])
    nd = len(s)
    B, C1 = xx.shape[:2]
    Cg = g.shape[1]
    o = (f - 1) // 2
    # no sample lies farther than this from any output voxel on axis a (samples beyond the
    # image do not exist, border 'renormalize'): a larger radius adds only pairs that meet
    # nothing, so clamping it is exact and bounds the tables (hence cost) by the image
    radii = tuple(
        min(ra, max((n - 1) * f + o, n * f - 1 - o)) for ra, n in zip(_as_tuple(r, nd), s)
    )
    sigmas = _as_tuple(sigma_spatial, nd)
    dt = np.dtype(out.dtype)
    rtab, rw = _row_tables(f, o, radii[:-1], sigmas[:-1], s[:-1], dt)
    ws = _gaussian_1d(radii[-1], sigmas[-1], dt)  # w_s(d), d = −r … r along the last axis
    taps, weights, counts = _phase_taps(f, o, radii[-1], ws)
    # the guide at the samples' voxels n·f + o on every axis (o < f: exactly s of them)
    gs = xp.ascontiguousarray(g[(slice(None), slice(None)) + (slice(o, None, f),) * nd])
    rows, cols = math.prod(s[:-1]), s[-1]
    args = (
        xx.reshape(B, C1, rows, cols),
        g.reshape(B, Cg, rows * f ** (nd - 1), cols * f),
        gs.reshape(B, Cg, rows, cols),
        f,
        rtab,
        rw,
        taps,
        weights,
        counts,
        out.reshape(out.shape[:2] + (rows * f ** (nd - 1), cols * f)),
    )
    kernels = _upsample_kernel(xp)
    if xp is np:
        kernels.joint_upsample(*args)
        return
    from .cuda import _launch

    stream = _launch.stream_from_pointer(xp.cuda.get_current_stream().ptr)
    with _launch.launch(stream):
        kernels.joint_upsample(*args)


def upsample(plan, low, guide, confidence=None):
    """The computing half of :func:`joint_bilateral_upsample` (``plan`` from
    :func:`plan_joint_bilateral_upsample`; NumPy or CuPy arrays).

    A direct sum over (high-res voxel, low-res sample) pairs (``pacnp.cpu.upsample``), any
    number of spatial axes, radius and σ_s per axis: each voxel visits the ≈ Π_a (2r_a/f + 1)
    samples in reach, not a transposed PAC's Π_a (2r_a + 1) taps — for the default radius
    3f/2 a cost independent of the factor."""
    xp = _xp_of(low)
    lay, ct, f = plan.layout, plan.compute_dtype, plan.factor
    x = lay.to_bchw(xp, low).astype(ct)
    B, C = x.shape[:2]
    s = tuple(x.shape[2:])
    S = tuple(n * f for n in s)
    g = plan.guide_layout.to_bchw(xp, guide)  # a view: cast and divided in one pass below
    if confidence is None:
        conf = xp.ones((B, 1) + s, dtype=ct)
    else:
        want = lay.batch_shape + lay.spatial_shape
        conf = xp.asarray(confidence, dtype=ct)
        if conf.size != B * math.prod(s):
            conf = xp.broadcast_to(conf, want)
        conf = conf.reshape((B, 1) + s)
        if bool((conf < 0).any()):
            raise ValueError(f"{plan.fn}: confidence must be >= 0")
    plan = plan.resolve_sigma_color(xp, g)
    gg = xp.empty((B, g.shape[1]) + S, dtype=ct)
    xp.divide(g.astype(ct, copy=False), plan.sigma_color_in(ct), out=gg)
    g = gg
    xx = xp.ascontiguousarray(xp.concatenate([x * conf, conf], axis=1))
    res = xp.empty((B, C) + S, dtype=ct)
    _upsample_direct(xp, xx, g, f, plan.radii, plan.voxel_sigmas, res)
    if plan.dtype.kind == "u":
        res = xp.nan_to_num(res, nan=0.0)
    return _finish(xp, lay.from_bchw(xp, res, S), plan.dtype)


def pool(plan, image):
    """The computing half of :func:`detail_preserving_pool` (``plan`` from
    :func:`plan_detail_preserving_pool`; a NumPy or CuPy array)."""
    xp = _xp_of(image)
    lay, radii = plan.layout, plan.radii
    nd = plan.spatial_dims
    x = xp.ascontiguousarray(lay.to_bchw(xp, image).astype(plan.compute_dtype))
    S = tuple(x.shape[2:])
    if plan.border != "renormalize" and _fold_instead(radii, S):
        # a window larger than the image: its padded taps fold onto the voxels they repeat
        # (no r-wide padding, cost bounded by the image); renormalize needs no such path: the
        # fused op drops the taps that never meet the image
        out = _direct_pool(xp, x, plan)
        return _finish(xp, lay.from_bchw(xp, out, out.shape[2:]), plan.dtype)
    pad = radii
    if plan.border != "renormalize":
        widths = ((0, 0), (0, 0)) + tuple((r, r) for r in radii)
        x = xp.ascontiguousarray(xp.pad(x, widths, mode=_PAD_MODE[plan.border]))
        pad = (0,) * nd
    # pacnp's inverse kernel is α + (s + ε²)^(λ'/2) with s = ‖Δ‖²: λ' = 2λ
    out, _ = _fused_pool(nd)(
        x,
        x,
        plan.kernel_sizes,
        stride=plan.strides,
        padding=pad,
        kernel_type=f"inv_{plan.alpha!r}_{2 * plan.lam!r}_fixed",
        smooth_kernel_type="gaussian",
        channel_wise=True,
        normalize_kernel=True,
    )
    return _finish(xp, lay.from_bchw(xp, out, out.shape[2:]), plan.dtype)


# --------------------------------------------------------------------------- public filters
@delegate("image", "guide", coerce=True)
def joint_bilateral_filter(
    image,
    guide,
    *,
    sigma_spatial=1.0,
    sigma_color=None,
    radius=None,
    border="reflect",
    channel_axis=None,
    guide_channel_axis="auto",
    spatial_dims=2,
    spacing=None,
):
    """Joint (cross) bilateral filter of ``image`` with edges taken from ``guide``, for
    signals, images and volumes (``spatial_dims`` 1, 2 or 3).

    ``out_i = Σ_j w_s(p_i − p_j) w_c(g_i − g_j) v_j / Σ_j w_s(p_i − p_j) w_c(g_i − g_j)`` over
    the box window ``|p_i − p_j|_a ≤ radius_a`` on every spatial axis a, with exact Gaussians
    ``w_s(δ) = exp(−Σ_a (δ_a·spacing_a)² / 2σ_s²)`` and ``w_c(Δ) = exp(−‖Δ‖² / 2σ_c²)``
    (Euclidean distance over the guide's channels). One fused PAC call (``pacconv1d_fused``,
    ``pacconv2d_fused`` or ``pacconv3d_fused``) computes numerator and denominator together;
    NumPy arrays run on the CPU, CuPy arrays on the GPU.

    Parameters
    ----------
    image : array
        uint8, uint16, float16, float32 or float64; layout set by ``channel_axis``.
    guide : array
        Same batch and spatial sizes as ``image``, any number of channels.
    sigma_spatial : float, optional
        σ_s of the spatial Gaussian, in voxels (in the units of ``spacing`` when given).
        Default 1.
    sigma_color : float or None, optional
        σ_c in guide units (0–255 for a uint8 guide) of the colour Gaussian.
        None: the standard deviation of the guide.
    radius : int, sequence of int or None, optional
        Window half-size in voxels, one for every axis or one per spatial axis (box window of
        side 2·radius_a + 1); None: ⌈3σ_s / spacing_a⌉ on axis a.
    border : {'reflect', 'nearest', 'constant', 'renormalize'}, optional
        ``reflect`` (default; the edge voxel is not repeated, OpenCV's BORDER_REFLECT_101),
        ``nearest`` (edge repeated), ``constant`` (zeros, image and guide), ``renormalize``
        (taps outside the image left out, the others renormalised).
    channel_axis : int or None, optional
        The image's channel axis (as in scikit-image): None — no channel axis, the last
        ``spatial_dims`` axes are spatial and any before them a batch; an integer — that axis
        holds the channels, the last ``spatial_dims`` *other* axes are spatial, the rest a
        batch.
    guide_channel_axis : int, None or 'auto', optional
        The guide's channel axis; 'auto': ``channel_axis`` when image and guide have the same
        number of axes, else None (a grey guide).
    spatial_dims : {1, 2, 3}, optional
        The number of spatial axes: 1 for signals, 2 for images (default), 3 for volumes.
    spacing : float, sequence of float or None, optional
        The physical size of a voxel, one for every axis or one per spatial axis (as
        scikit-image's ``spacing``): σ_s and the distances of w_s are then in those units.
        None: 1 (σ_s in voxels).

    Returns
    -------
    out : array
        ``image``'s shape, dtype and library (integers rounded to nearest and clipped).

    Raises
    ------
    TypeError
        A dtype other than uint8, uint16, float16, float32, float64, or arrays of different
        libraries.
    ValueError
        Shapes that do not fit together, a σ or radius out of range, an unknown ``border``.

    See Also
    --------
    bilateral_filter : guided by the image itself.
    pacnp.dask.joint_bilateral_filter : the same on Dask arrays, chunk by chunk.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> rng = np.random.default_rng(0)
    >>> guide = np.zeros((16, 16), np.float32); guide[:, 8:] = 1      # a vertical edge
    >>> noisy = guide + 0.1 * rng.standard_normal((16, 16), dtype=np.float32)
    >>> out = filters.joint_bilateral_filter(noisy, guide, sigma_spatial=2, sigma_color=0.1)
    >>> out.shape, out.dtype
    ((16, 16), dtype('float32'))
    >>> float(out[:, 8:].mean() - out[:, :8].mean()) > 0.9        # the edge is kept
    True
    >>> float(out[:, :7].std()) < float(noisy[:, :7].std()) / 2   # the noise is not
    True

    A 1-D signal with three channels, guided by its first channel:

    >>> sig = rng.random((1000, 3))
    >>> filters.joint_bilateral_filter(sig, sig[:, 0], sigma_spatial=3, sigma_color=0.2,
    ...                                channel_axis=-1, spatial_dims=1).shape
    (1000, 3)
    """
    plan = plan_joint_bilateral_filter(
        image,
        guide,
        sigma_spatial=sigma_spatial,
        sigma_color=sigma_color,
        radius=radius,
        border=border,
        channel_axis=channel_axis,
        guide_channel_axis=guide_channel_axis,
        spatial_dims=spatial_dims,
        spacing=spacing,
    )
    self_guided = guide is image and plan.guide_layout.order == plan.layout.order
    return bilateral(plan, image, None if self_guided else guide)


@delegate("image", coerce=True)
def bilateral_filter(
    image,
    *,
    sigma_spatial=1.0,
    sigma_color=None,
    radius=None,
    border="reflect",
    channel_axis=None,
    spatial_dims=2,
    spacing=None,
):
    """Bilateral filter: :func:`joint_bilateral_filter` guided by the image itself — of
    signals, images or volumes (``spatial_dims`` 1, 2 or 3).

    Parameters
    ----------
    image : array
        uint8, uint16, float16, float32 or float64; layout set by ``channel_axis``.
    sigma_spatial : float, optional
        σ_s in voxels (in the units of ``spacing`` when given). Default 1.
    sigma_color : float or None, optional
        σ_c in the image's units (0–255 for uint8); None: the image's standard deviation.
    radius : int, sequence of int or None, optional
        Window half-size in voxels (one per spatial axis, or one for all); None:
        ⌈3σ_s / spacing_a⌉ on axis a.
    border : {'reflect', 'nearest', 'constant', 'renormalize'}, optional
        As in :func:`joint_bilateral_filter`.
    channel_axis : int or None, optional
        The image's channel axis (as in scikit-image): None — no channel axis, the last
        ``spatial_dims`` axes are spatial and any before them a batch; an integer — that axis
        holds the channels, the last ``spatial_dims`` *other* axes are spatial, the rest a
        batch.
    spatial_dims : {1, 2, 3}, optional
        The number of spatial axes (default 2).
    spacing : float, sequence of float or None, optional
        The physical size of a voxel per spatial axis (as scikit-image's ``spacing``).

    Returns
    -------
    out : array
        ``image``'s shape, dtype and library.

    Raises
    ------
    TypeError
        A dtype other than uint8, uint16, float16, float32, float64, or arrays of different
        libraries.
    ValueError
        Shapes that do not fit together, a σ or radius out of range, an unknown ``border``.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> rng = np.random.default_rng(0)
    >>> photo = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)        # HWC, like skimage
    >>> out = filters.bilateral_filter(photo, sigma_spatial=2, sigma_color=25, channel_axis=-1)
    >>> out.shape, out.dtype
    ((32, 48, 3), dtype('uint8'))

    A volume of 3 × 1 × 1 mm voxels, σ_s = 2 mm (radius 2 voxels across the slices, 6 in
    them):

    >>> vol = rng.random((8, 24, 24), dtype=np.float32)
    >>> out = filters.bilateral_filter(vol, sigma_spatial=2.0, sigma_color=0.2,
    ...                                spatial_dims=3, spacing=(3.0, 1.0, 1.0))
    >>> out.shape, out.dtype
    ((8, 24, 24), dtype('float32'))
    """
    plan = plan_joint_bilateral_filter(
        image,
        None,
        sigma_spatial=sigma_spatial,
        sigma_color=sigma_color,
        radius=radius,
        border=border,
        channel_axis=channel_axis,
        spatial_dims=spatial_dims,
        spacing=spacing,
        fn="bilateral_filter",
    )
    return bilateral(plan, image)


@delegate("low", "guide", "confidence", coerce=True)
def joint_bilateral_upsample(
    low,
    guide,
    factor,
    *,
    sigma_spatial=None,
    sigma_color=None,
    radius=None,
    border="renormalize",
    channel_axis=None,
    guide_channel_axis="auto",
    confidence=None,
    spatial_dims=2,
    spacing=None,
):
    """Joint bilateral upsampling (Kopf et al. 2007) of ``low`` by an integer ``factor``,
    guided by the high-resolution ``guide`` — signals, images or volumes (``spatial_dims``).

    Low-res sample n stands for high-res voxel ``n·f + (f−1)//2`` (point sampling, per axis).
    Output voxel Y averages the samples n with ``|n_a·f + (f−1)//2 − Y_a| ≤ radius_a`` on every
    axis (high-res voxels), weighted by ``w_s(Y − n·f − (f−1)//2) · w_c(guide[Y] −
    guide[n·f + (f−1)//2])`` (and ``confidence[n]``): one transposed PAC. It runs as a direct
    kernel over (voxel, sample) pairs (``pacnp.cpu.upsample``, its CUDA twin on the GPU) in
    1, 2 and 3 dimensions, any radius and σ_s per axis: each voxel visits the ≈ Π_a (2r_a/f + 1)
    samples in reach, not the transposed PAC's Π_a (2r_a + 1) taps.

    Parameters
    ----------
    low : array
        ``[..., h, w]`` image (``[..., d, h, w]`` volume, ``[..., n]`` signal; layout as in
        :func:`joint_bilateral_filter`).
    guide : array
        ``[..., h·factor, w·factor]`` guide (any number of channels).
    factor : int
        The upsampling factor, ≥ 2 (the same on every spatial axis).
    sigma_spatial : float or None, optional
        σ_s in high-res voxels (in the units of ``spacing`` when given); None: factor / 2
        (half the sample spacing; with ``spacing``, factor / 2 · min(spacing)).
    sigma_color : float or None, optional
        σ_c in guide units; None: the guide's standard deviation.
    radius : int, sequence of int or None, optional
        In high-res voxels, one for all axes or one per axis; None: ⌊3·factor / 2⌋ on every
        axis (1.5 sample spacings).
    border : 'renormalize', optional
        Samples beyond the image are left out. Reflected or repeated samples would pair a
        value with the colour of a pixel it was not measured at, so no padding mode is offered.
    channel_axis : int or None, optional
        The image's channel axis (as in :func:`joint_bilateral_filter`).
    guide_channel_axis : int, None or 'auto', optional
        As in :func:`joint_bilateral_filter`.
    confidence : array or None, optional
        Per-sample weights ≥ 0 of ``low``'s batch and spatial shape (0: missing sample); where a
        voxel receives no weight at all the result is NaN for float inputs (0 for integers).
    spatial_dims : {1, 2, 3}, optional
        The number of spatial axes (default 2).
    spacing : float, sequence of float or None, optional
        The physical size of a high-res voxel per spatial axis (σ_s in those units).

    Returns
    -------
    out : array
        ``low``'s layout and dtype at the guide's spatial size.

    Raises
    ------
    TypeError
        A dtype other than uint8, uint16, float16, float32, float64, or arrays of different
        libraries.
    ValueError
        Shapes that do not fit together, a σ or radius out of range, an unknown ``border``.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> rgb = np.zeros((32, 32, 3), np.uint8); rgb[:, 16:] = 200        # the photo's edge
    >>> depth = np.where(np.arange(32) < 16, 1.0, 5.0)[None].repeat(32, 0).astype(np.float32)
    >>> low = depth[1::4, 1::4]                                          # 8 × 8 samples
    >>> up = filters.joint_bilateral_upsample(low, rgb, 4, sigma_color=10,
    ...                                       guide_channel_axis=-1)
    >>> up.shape, up.dtype
    ((32, 32), dtype('float32'))
    >>> np.round(up[0, 13:19], 3)                 # a sharp step, where the photo has it
    array([1., 1., 1., 5., 5., 5.], dtype=float32)

    A volume, ×2 on every axis:

    >>> vol_guide = np.zeros((8, 8, 8), np.float32); vol_guide[:, :, 4:] = 1
    >>> up = filters.joint_bilateral_upsample(vol_guide[::2, ::2, ::2], vol_guide, 2,
    ...                                       sigma_color=0.1, spatial_dims=3)
    >>> up.shape, float(abs(up - vol_guide).max()) < 1e-6
    ((8, 8, 8), True)
    """
    plan = plan_joint_bilateral_upsample(
        low,
        guide,
        factor,
        sigma_spatial=sigma_spatial,
        sigma_color=sigma_color,
        radius=radius,
        border=border,
        channel_axis=channel_axis,
        guide_channel_axis=guide_channel_axis,
        confidence=confidence,
        spatial_dims=spatial_dims,
        spacing=spacing,
    )
    return upsample(plan, low, guide, confidence)


@delegate("image", coerce=True)
def detail_preserving_pool(
    image,
    kernel_size=3,
    *,
    stride=2,
    alpha=1.0,
    lam=1.0,
    border="renormalize",
    channel_axis=None,
    spatial_dims=2,
):
    """Detail-preserving pooling (Saeedan et al. 2018) as PAC pooling, of signals, images or
    volumes (``spatial_dims`` 1, 2 or 3).

    ``out_i = Σ_j D_ij v_j / Σ_j D_ij``, ``D_ij = α + (‖v_j − ṽ_i‖² + ε²)^λ`` per channel, over
    the box window of output i (side ``kernel_size`` per axis, stride ``stride``, centred,
    ``padding = kernel_size // 2``); ṽ: the input smoothed by the binomial filter
    ``[1 2 1]/4`` along every spatial axis (pacnp's 'gaussian' smoothing; 3 × 3 in 2-D),
    ε = 0.01 (pacnp's fixed ε² = 10⁻⁴). There is no ``spacing``: nothing here is a distance.
    λ > 0 favours voxels unlike their neighbourhood (details), λ < 0 smooth
    regions; α ≥ 0 blends in average pooling.

    Parameters
    ----------
    image : array
        uint8, uint16, float16, float32 or float64; layout set by ``channel_axis``.
    kernel_size : int or sequence of int, optional
        The odd window size, one for all spatial axes or one per axis. Default 3.
    stride : int or sequence of int, optional
        One for all spatial axes or one per axis. Default 2.
    alpha, lam : float, optional
        α and λ. Default 1, 1.
    border : {'renormalize', 'reflect', 'nearest', 'constant'}, optional
        'renormalize' (outside taps left out; default) or a padding mode.
    channel_axis : int or None, optional
        The image's channel axis (as in :func:`joint_bilateral_filter`).
    spatial_dims : {1, 2, 3}, optional
        The number of spatial axes (default 2).

    Returns
    -------
    out : array
        ``image``'s dtype, spatial size ⌈S_a / stride_a⌉ on every spatial axis a.

    Raises
    ------
    TypeError
        A dtype other than uint8, uint16, float16, float32, float64, or arrays of different
        libraries.
    ValueError
        Shapes that do not fit together, a σ or radius out of range, an unknown ``border``.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import filters
    >>> img = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)   # CHW
    >>> out = filters.detail_preserving_pool(img, 3, stride=2, channel_axis=0)
    >>> out.shape, out.dtype
    ((3, 8, 8), dtype('float32'))
    >>> vol = np.random.default_rng(0).random((9, 16, 16))                     # D H W
    >>> filters.detail_preserving_pool(vol, 3, stride=(1, 2, 2), spatial_dims=3).shape
    (9, 8, 8)
    """
    plan = plan_detail_preserving_pool(
        image,
        kernel_size,
        stride=stride,
        alpha=alpha,
        lam=lam,
        border=border,
        channel_axis=channel_axis,
        spatial_dims=spatial_dims,
    )
    return pool(plan, image)
