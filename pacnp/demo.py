"""Joint depth upsampling with pixel-adaptive convolution, the first use case of Su et al. (2019),
done the classic, untrained way (a joint bilateral upsampler written as one transposed PAC).

    python -m pacnp.demo [--out DIR] [--factors 4 8 16] [--downsample nearest|mean]
                         [--only upsampling denoising crf volume]

(The tour's other parts, each a function below: ``run_denoise``, a bilateral filter of a noisy
photo; ``run_crf``, CRF refinement of a speckled segmentation; ``run_volume``, the 3-D bilateral
filter of a noisy MRI volume shipped inside nibabel, with the voxel size of its header.)

Data
    The Middlebury 2014 *motorcycle* pair shipped with scikit-image
    (``skimage.data.stereo_motorcycle()``: left RGB, right RGB, ground-truth disparity of the left
    view in pixels; non-finite disparities are invalid, ~7 %). Image and disparity are
    centre-cropped to a multiple of every factor (their lcm: 16 for the defaults,
    500 × 741 → 496 × 736).

Downsampling (``downsample``): low-res sample ``n`` stands for high-res position ``s_n = n·f + o``
    * ``nearest`` (default): point sampling, ``lo[n] = d[n·f + (f-1)//2]``, valid iff that pixel
      is valid, ``o = (f-1)//2``. That is exactly the guide pixel ``g_n`` the transposed PAC
      kernel compares against for sample ``n`` (below), so every low-res disparity is paired
      with the colour of the very pixel it was measured at, which is what a joint bilateral
      upsampler assumes.
    * ``mean``: masked f × f block mean (mean of the valid pixels of the block, valid iff the
      block holds one), ``o = (f-1)/2``, the block centre. Closer to a real low-res sensor, but at
      a depth edge a block mixes foreground and background into a value that belongs to neither
      side, while PAC still pairs it with the colour of one pixel. Kept as an option: with it PAC
      wins at ×4 and ×8 but loses at ×16 (RMSE bilinear / PAC: 1.796 / 1.643, 2.820 / 2.792,
      4.048 / 4.194), and ``main`` then exits with 1.

Guided-filter baseline (``upsample_guided``)
    The usual fast alternative: the bilinear map refined by He et al.'s guided filter of the RGB
    (radius 8, ε = σ_c²); OpenCV's ``ximgproc.guidedFilter`` when installed, else
    ``guided_filter_numpy``. Reported as a second column, whatever it shows.

Bilinear baseline (``upsample_bilinear``)
    Separable bilinear interpolation between the sample positions ``s_n`` (constant extrapolation
    at the borders), applied to ``[d·v, v]`` and divided: invalid low-res samples get no weight
    and the valid ones among the 2 × 2 neighbours are re-normalised. Where all four neighbours are
    invalid it takes the nearest valid low-res sample.

PAC joint bilateral upsampling (``upsample_pac``)
    A normalised joint bilateral filter. By default (``nearest`` downsampling, or an odd f) its
    sums come from the direct kernel of ``pacnp.filters.joint_bilateral_upsample`` (each pixel
    visits only the samples in reach; ``direct=False`` forces the form below); with ``mean``
    and an even f the spatial weight sits half a pixel off the guide pixel, which only the
    transposed PAC expresses. As pacnp's transposed PAC::

        D(Y) = Σ_n K(Y, n) w(Y - s_n) v_n d_n  /  Σ_n K(Y, n) w(Y - s_n) v_n

        K(Y, n) = exp(-½ |I(Y) - I(g_n)|² / σ_c²)   packernel2d(RGB/σ_c, k, transposed=True, …)
        w(δ)    = exp(-½ |δ|² / σ_s²)                the shared k × k weight, pacconv_transpose2d

    ``Y`` is a high-res pixel, ``I`` the left RGB image (0–255), ``v_n``, ``d_n`` the low-res
    validity and disparity (the two input channels are ``[d·v, v]``), ``g_n = n·f + (f-1)//2``
    (per axis) the guide pixel PAC reads for sample ``n``. The sums run over the samples with
    ``|g_n - Y| ≤ r = (k-1)/2`` on both axes. Where the denominator is (numerically) zero, i.e.
    no valid sample in reach or every colour weight underflowed, the bilinear value is used.

    Geometry: ``k = 2·⌊3f/2⌋ + 1`` (3f + 1 for even f), ``padding p = r - (f-1)//2``,
    ``output_padding = (f-1) % 2``. Then ``(h-1)·f - 2p + (k-1) + op + 1 = h·f`` (exactly f × the
    low-res size), sample ``n`` reaches the output pixels ``Y = n·f - p + j`` through weight index
    ``j`` with the guide pixel ``g_n`` (docs/semantics.md, transposed geometry), and the weight is
    ``w(j - p - o)``, centred on ``s_n`` (symmetric for ``nearest``; half a pixel off-centre for
    ``mean`` with even f). A constant disparity comes back exactly constant and a plane comes
    back without shift (tests/test_demo.py). The dense kernel tensor ``K`` is
    ``[1, 1, k, k, H, W]`` (3.5 GB at ×16 in float32), so the image is processed in strips
    (``TILE_WIDTH``, ``MAX_KERNEL_BYTES``) with a halo of low-res samples covering the window;
    the result does not depend on the tiling.

Parameters (reasoned, not tuned on the RMSE)
    ``σ_s = f/2`` high-res pixels, half the low-res sample spacing. Per axis a sample f/2 away
    gets 0.61, one f away 0.14, one 3f/2 away 0.011: the 2 × 2 samples around a pixel dominate,
    the next ring still offers the colour term a few candidates at a depth edge, and nothing
    reaches across whole objects. The window radius 3f/2 = 3 σ_s cuts the Gaussian at 1 %;
    k = 3f + 1 lies in the usual 2f+1 … 4f+1 range.
    ``σ_c = 25`` grey levels (Euclidean distance over the three 0–255 channels), from the colour
    statistics of this image pair: between pixels 4–8 px apart on the same surface (disparity
    change < 0.25 px per px) the colour distance has median 10–14 and 75th percentile 28–47
    (concrete, shelves and metal are textured); across depth jumps of > 5 px its median is 84–89.
    σ_c = 25 keeps a weight of ~0.5 for a typical textured same-surface pair (~30) and 0.003 for
    a typical pair across an edge (~85). A first guess of σ_c = 12, made before measuring these
    statistics, was too narrow: texture then breaks surfaces up and PAC loses to bilinear.

Everything runs in float32 (the guide, hence K, and the disparities: ~1e-5 px precision).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pacnp

__all__ = [
    "SIGMA_COLOR",
    "SPATIAL_SIGMA_PER_FACTOR",
    "DOWNSAMPLING",
    "load_motorcycle",
    "sample_offset",
    "downsample",
    "upsample_bilinear",
    "pac_geometry",
    "spatial_weight",
    "upsample_pac",
    "GUIDED_RADIUS",
    "GUIDED_EPS",
    "guided_filter",
    "guided_filter_numpy",
    "upsample_guided",
    "rmse",
    "colorize",
    "render_panel",
    "run",
    "load_mri",
    "orthogonal_slices",
    "run_volume",
    "main",
]

#: Colour bandwidth on the 0–255 RGB scale (the guide handed to packernel2d is RGB / SIGMA_COLOR).
SIGMA_COLOR = 25.0
#: The spatial bandwidth in high-res pixels is this times the factor (half a low-res pixel).
SPATIAL_SIGMA_PER_FACTOR = 0.5
#: Default downsampling: "nearest" (point sampling) or "mean" (masked block mean).
DOWNSAMPLING = "nearest"
#: Bound on the bytes of the kernel tensor K of one tile.
MAX_KERNEL_BYTES = 1 << 30
#: Width in high-res pixels of the tiles (halo included). packernel2d is several times faster per
#: kernel entry on narrow inputs (it works row by row on k·k·W scratch buffers), so the image is
#: cut into strips about this wide rather than into square tiles.
TILE_WIDTH = 192
DEFAULT_FACTORS = (4, 8, 16)
#: the parts of the tour ``main`` runs (``--only``)
TOUR = ("upsampling", "denoising", "crf", "volume")
DTYPE = np.float32
_METHODS = ("nearest", "mean")


# --------------------------------------------------------------------------- data
def load_motorcycle(multiple=16):
    """Left RGB (float32 0–255, [H, W, 3]), disparity (float32, 0 where invalid) and validity
    (bool) of the Middlebury motorcycle pair, centre-cropped to a multiple of ``multiple``."""
    from skimage import data

    left, _right, disp = data.stereo_motorcycle()
    H, W = disp.shape
    Hc, Wc = H - H % multiple, W - W % multiple
    if Hc == 0 or Wc == 0:
        raise ValueError(f"the {H}x{W} image has no crop that is a multiple of {multiple}")
    y0, x0 = (H - Hc) // 2, (W - Wc) // 2
    left = left[y0 : y0 + Hc, x0 : x0 + Wc].astype(DTYPE)
    disp = disp[y0 : y0 + Hc, x0 : x0 + Wc]
    valid = np.isfinite(disp)
    return left, np.where(valid, disp, 0).astype(DTYPE), valid


# --------------------------------------------------------------------------- down / bilinear
def _check_method(method):
    if method not in _METHODS:
        raise ValueError(f"downsampling method must be one of {_METHODS}, got {method!r}")


def sample_offset(f, method=DOWNSAMPLING):
    """High-res position of low-res sample 0 (sample n sits at n·f + offset, per axis)."""
    _check_method(method)
    return (f - 1) / 2.0 if method == "mean" else float((f - 1) // 2)


def downsample(disp, valid, f, method=DOWNSAMPLING):
    """Low-res disparity (0 where invalid) and validity, by ``nearest`` point sampling at
    ``n·f + (f-1)//2`` or by the ``mean`` of the valid pixels of each f × f block."""
    _check_method(method)
    H, W = disp.shape
    if H % f or W % f:
        raise ValueError(f"downsample: image {H}x{W} is not a multiple of the factor {f}")
    valid = np.asarray(valid, dtype=bool)
    d = np.where(valid, disp, 0)
    if method == "nearest":
        o = (f - 1) // 2
        return np.ascontiguousarray(d[o::f, o::f]), np.ascontiguousarray(valid[o::f, o::f])
    count = valid.reshape(H // f, f, W // f, f).sum(axis=(1, 3))
    total = d.astype(np.float64).reshape(H // f, f, W // f, f).sum(axis=(1, 3))
    lo_valid = count > 0
    lo = np.where(lo_valid, total / np.maximum(count, 1), 0.0)
    return lo.astype(disp.dtype), lo_valid


def _bilinear_axis(n_lo, f, off):
    """For every high-res index: the two low-res neighbours and their weights."""
    u = (np.arange(n_lo * f) - off) / f  # position in low-res sample units
    n0 = np.floor(u).astype(np.int64)
    t = u - n0
    i0 = np.clip(n0, 0, n_lo - 1)  # clipping both ends: constant extrapolation at the borders
    i1 = np.clip(n0 + 1, 0, n_lo - 1)
    return i0, i1, 1.0 - t, t


def _bilinear(a, f, off):
    """Plain separable bilinear upsampling of a 2-D array by the integer factor f."""
    y0, y1, wy0, wy1 = _bilinear_axis(a.shape[0], f, off)
    x0, x1, wx0, wx1 = _bilinear_axis(a.shape[1], f, off)
    rows = a[y0] * wy0[:, None] + a[y1] * wy1[:, None]
    return rows[:, x0] * wx0[None, :] + rows[:, x1] * wx1[None, :]


def upsample_bilinear(lo, lo_valid, f, method=DOWNSAMPLING):
    """Validity-normalised bilinear upsampling (float64 inside, returned in lo's dtype)."""
    from scipy import ndimage

    lo_valid = np.asarray(lo_valid, dtype=bool)
    if not lo_valid.any():
        raise ValueError("upsample_bilinear: no valid low-res sample")
    off = sample_offset(f, method)
    v = lo_valid.astype(np.float64)
    num = _bilinear(np.where(lo_valid, lo, 0.0) * v, f, off)
    den = _bilinear(v, f, off)
    # nearest valid sample, for the pixels whose four neighbours are all invalid
    idx = ndimage.distance_transform_edt(~lo_valid, return_distances=False, return_indices=True)
    nearest = _bilinear(np.asarray(lo, dtype=np.float64)[idx[0], idx[1]], f, off)
    ok = den > 1e-9
    return np.where(ok, num / np.where(ok, den, 1.0), nearest).astype(np.asarray(lo).dtype)


# --------------------------------------------------------------------------- PAC
def pac_geometry(f, kernel_size=None):
    """(kernel_size, padding, output_padding) of the transposed PAC that upsamples by f with the
    guide pixel of sample n at n·f + (f-1)//2. Default kernel size 2·⌊3f/2⌋ + 1 (3f + 1 for
    even f): the window radius is 1.5 low-res samples."""
    if f < 2:
        raise ValueError(f"the upsampling factor must be >= 2, got {f}")
    k = 2 * (3 * f // 2) + 1 if kernel_size is None else int(kernel_size)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {k}")
    p = (k - 1) // 2 - (f - 1) // 2
    if p < 0:
        raise ValueError(f"kernel_size {k} is too small for factor {f} (need >= {f - 1})")
    return k, p, (f - 1) % 2


def spatial_weight(f, sigma, kernel_size=None, method=DOWNSAMPLING):
    """The shared [1, 1, k, k] weight: Gaussian of Y - s_n, the offset of output pixel Y from
    the position of the sample it receives through weight index j (Y - s_n = j - p - o)."""
    k, p, _ = pac_geometry(f, kernel_size)
    delta = np.arange(k) - p - sample_offset(f, method)
    g = np.exp(-0.5 * (delta / sigma) ** 2)
    return np.outer(g, g).astype(DTYPE).reshape(1, 1, k, k)


def _halo(f, k):
    """Low-res samples needed beyond a tile [a, b) on each side: sample n reaches Y iff
    |n·f + o - Y| <= r, o = (f-1)//2; for Y in [a·f, b·f) that is a - lo <= n <= b - 1 + hi."""
    r, o = (k - 1) // 2, (f - 1) // 2
    return (r + o) // f, (r - o - 1) // f + 1


def _spans(n, size, before, after):
    """(start, stop) of the kept part and (start0, stop0) with the halo, along one axis."""
    return [
        ((a, min(a + size, n)), (max(0, a - before), min(n, a + size + after)))
        for a in range(0, n, size)
    ]


def upsample_pac(
    lo,
    lo_valid,
    rgb,
    f,
    *,
    sigma_spatial=None,
    sigma_color=SIGMA_COLOR,
    kernel_size=None,
    method=DOWNSAMPLING,
    fallback=None,
    max_kernel_bytes=MAX_KERNEL_BYTES,
    tile_width=TILE_WIDTH,
    return_weight=False,
    direct=None,
):
    """PAC joint bilateral upsampling of ``lo`` ([h, w]) guided by ``rgb`` ([h·f, w·f, 3], 0–255).

    ``fallback`` ([h·f, w·f]) is taken where the weight sum is (numerically) zero; default: the
    bilinear result. ``tile_width`` (high-res pixels) and ``max_kernel_bytes`` (bytes of K) set
    the tile size; the result does not depend on them. Returns the float32 map, and with
    ``return_weight`` also the weight sum (the denominator).

    ``direct`` (default: whenever it applies) computes the same sums with the direct kernel of
    :func:`pacnp.filters.joint_bilateral_upsample` (each pixel visits the ≈ (2r/f + 1)² samples
    in reach, no K, no tiles): it applies when the spatial weight is centred on the guide pixel
    of each sample, i.e. ``nearest`` downsampling or an odd f. ``direct=False`` forces the
    transposed PAC (packernel2d + pacconv_transpose2d, in tiles).
    """
    lo_valid = np.asarray(lo_valid, dtype=bool)
    h, wd = lo.shape
    H, W = h * f, wd * f
    if rgb.shape != (H, W, 3):
        raise ValueError(f"upsample_pac: guide has shape {rgb.shape}, expected {(H, W, 3)}")
    if sigma_spatial is None:
        sigma_spatial = SPATIAL_SIGMA_PER_FACTOR * f
    k, p, op = pac_geometry(f, kernel_size)
    w = spatial_weight(f, sigma_spatial, k, method)
    v = lo_valid.astype(DTYPE)
    x = np.stack([np.where(lo_valid, lo, 0).astype(DTYPE) * v, v])[None]  # [1, 2, h, w]
    guide = (np.asarray(rgb, dtype=DTYPE) / DTYPE(sigma_color)).transpose(2, 0, 1)[None]

    centred = sample_offset(f, method) == (f - 1) // 2
    if direct is None:
        direct = centred
    if direct and not centred:
        raise ValueError(
            f"upsample_pac: direct=True needs the weight centred on the guide pixel "
            f"('nearest' downsampling or an odd factor; got {method!r}, f={f})"
        )
    if direct:
        from pacnp import filters

        sums = np.empty((1, 2, H, W), dtype=DTYPE)
        filters._upsample_direct(
            np,
            np.ascontiguousarray(x, dtype=DTYPE),
            np.ascontiguousarray(guide, dtype=DTYPE),
            f,
            (k - 1) // 2,
            sigma_spatial,
            sums,
        )
        res, den = sums[0]
        if fallback is None:
            fallback = upsample_bilinear(lo, lo_valid, f, method)
        out = np.where(np.isnan(res), fallback, res).astype(DTYPE)
        return (out, den) if return_weight else out

    # tiles: strips about tile_width px wide (halo included), as tall as the memory bound allows
    before, after = _halo(f, k)
    tw = max(1, -(-tile_width // f) - before - after)
    row_bytes = f * f * (tw + before + after) * k * k * np.dtype(DTYPE).itemsize
    th = max(1, max_kernel_bytes // row_bytes - before - after)
    sums = np.empty((2, H, W), dtype=DTYPE)
    for (a, b), (a0, b0) in _spans(h, th, before, after):
        for (c, d), (c0, d0) in _spans(wd, tw, before, after):
            g = np.ascontiguousarray(guide[:, :, a0 * f : b0 * f, c0 * f : d0 * f])
            K, _ = pacnp.packernel2d(g, k, stride=f, padding=p, output_padding=op, transposed=True)
            part = pacnp.pacconv_transpose2d(
                np.ascontiguousarray(x[:, :, a0:b0, c0:d0]),
                K,
                w,
                stride=f,
                padding=p,
                output_padding=op,
                shared_filters=True,
            )[0]
            del K
            sums[:, a * f : b * f, c * f : d * f] = part[
                :, (a - a0) * f : (b - a0) * f, (c - c0) * f : (d - c0) * f
            ]
    num, den = sums
    if fallback is None:
        fallback = upsample_bilinear(lo, lo_valid, f, method)
    # below the smallest normal float32 the quotient of two sums loses its precision
    ok = den >= np.finfo(DTYPE).tiny
    out = np.where(ok, num / np.where(ok, den, 1), fallback).astype(DTYPE)
    return (out, den) if return_weight else out


# --------------------------------------------------------------------------- guided filter
#: The guided filter baseline (He et al., "Guided Image Filtering", ECCV 2010 / TPAMI 2013):
#: window radius in high-res pixels, and ε = σ_c² (on the 0–255 scale, as the PAC colour term).
GUIDED_RADIUS = 8
GUIDED_EPS = SIGMA_COLOR**2


def _box_mean(a, r):
    """Mean of ``a`` ([H, W] or [H, W, C]) over the (2r + 1)² window of each pixel, the image
    mirrored at its borders with the edge pixel repeated (OpenCV's BORDER_REFLECT, as its
    guided filter): cumulative sums, O(1) per pixel whatever r."""
    pad = [(r, r), (r, r)] + [(0, 0)] * (a.ndim - 2)
    c = np.pad(np.asarray(a, dtype=np.float64), pad, mode="symmetric")
    for ax in (0, 1):
        c = np.cumsum(c, axis=ax)
        zero = np.zeros_like(np.take(c, [0], axis=ax))
        c = np.concatenate([zero, c], axis=ax)
        n = c.shape[ax] - 2 * r - 1
        c = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=ax) - np.take(
            c, np.arange(n), axis=ax
        )
    return c / float((2 * r + 1) ** 2)


def guided_filter_numpy(guide, src, radius, eps):
    """He et al.'s guided filter with a colour guide ([H, W, 3]) of a one-channel ``src``
    ([H, W]), in NumPy (float64): per window the linear model q = a·I + b that fits src best
    with the ridge ε on a (a = (Σ_I + εU)⁻¹ cov(I, p), b = p̄ − a·Ī), the models of the windows
    covering a pixel averaged. Box means by cumulative sums."""
    g = np.asarray(guide, dtype=np.float64)
    p = np.asarray(src, dtype=np.float64)
    r = int(radius)
    mean_I = _box_mean(g, r)
    mean_p = _box_mean(p, r)
    cov_Ip = _box_mean(g * p[..., None], r) - mean_I * mean_p[..., None]
    var = np.empty(g.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            v = _box_mean(g[..., i] * g[..., j], r) - mean_I[..., i] * mean_I[..., j]
            var[..., i, j] = var[..., j, i] = v
    var += eps * np.eye(3)
    a = np.linalg.solve(var, cov_Ip[..., None])[..., 0]
    b = mean_p - (a * mean_I).sum(axis=-1)
    return (_box_mean(a, r) * g).sum(axis=-1) + _box_mean(b, r)


def guided_filter(guide, src, radius=GUIDED_RADIUS, eps=GUIDED_EPS):
    """(result float32, implementation name): OpenCV's ``cv2.ximgproc.guidedFilter`` when
    opencv-contrib is installed, else :func:`guided_filter_numpy`."""
    try:
        import cv2

        gf = cv2.ximgproc.guidedFilter
    except (ImportError, AttributeError):
        return guided_filter_numpy(guide, src, radius, eps).astype(DTYPE), "numpy"
    out = gf(np.asarray(guide, np.float32), np.asarray(src, np.float32), int(radius), float(eps))
    return np.asarray(out, dtype=DTYPE), "opencv"


def upsample_guided(
    lo,
    lo_valid,
    rgb,
    f,
    *,
    radius=GUIDED_RADIUS,
    eps=GUIDED_EPS,
    method=DOWNSAMPLING,
    bilinear=None,
):
    """The usual fast alternative to joint bilateral upsampling: bilinear upsampling
    (:func:`upsample_bilinear`, or ``bilinear`` when given) refined by the guided filter of
    the high-res RGB. Returns (float32 map, implementation name)."""
    if bilinear is None:
        bilinear = upsample_bilinear(lo, lo_valid, f, method)
    return guided_filter(rgb, bilinear, radius, eps)


# --------------------------------------------------------------------------- evaluation
def rmse(pred, gt, valid):
    """Root mean square error over the pixels where ``valid`` (the ground truth) is true."""
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise ValueError("rmse: no valid pixel")
    d = np.asarray(pred, dtype=np.float64)[valid] - np.asarray(gt, dtype=np.float64)[valid]
    return float(np.sqrt(np.mean(d * d)))


# --------------------------------------------------------------------------- pictures
# A sequential colour map of my own: dark blue-violet, magenta, orange, pale yellow (lightness
# rising throughout, so near = bright). Invalid pixels are black.
_SEQ_ANCHORS = np.array(
    [
        [30, 20, 90],
        [80, 30, 150],
        [150, 40, 150],
        [215, 70, 100],
        [245, 135, 50],
        [250, 200, 70],
        [252, 250, 190],
    ],
    dtype=np.float64,
)
# Diverging map for error differences, low to high: blue (PAC better), white, red (PAC worse).
_DIV_ANCHORS = np.array([[40, 80, 200], [255, 255, 255], [210, 50, 40]], dtype=np.float64)


def colorize(a, lo, hi, valid=None, anchors=_SEQ_ANCHORS):
    """Map a 2-D array linearly from [lo, hi] onto the colour anchors: uint8 RGB [..., 3],
    black where ``valid`` is false."""
    a = np.asarray(a, dtype=np.float64)
    t = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0) * (len(anchors) - 1)
    i = np.minimum(t.astype(np.int64), len(anchors) - 2)
    u = (t - i)[..., None]
    rgb = anchors[i] * (1.0 - u) + anchors[i + 1] * u
    if valid is not None:
        rgb[~np.asarray(valid, dtype=bool)] = 0.0
    return np.round(rgb).astype(np.uint8)


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def render_panel(
    path,
    f,
    rgb,
    lo,
    lo_valid,
    bil,
    pac,
    gt,
    valid,
    rmse_bil,
    rmse_pac,
    *,
    method=DOWNSAMPLING,
    err_range=5.0,
):
    """Write a PNG: guide | low-res input (shown nearest-upscaled) | ground truth over
    bilinear | PAC | |err PAC| - |err bilinear|, disparities in one shared colour map."""
    from PIL import Image, ImageDraw

    H, W = gt.shape
    vmin, vmax = float(gt[valid].min()), float(gt[valid].max())
    up = np.repeat(np.repeat(lo, f, axis=0), f, axis=1)
    up_valid = np.repeat(np.repeat(lo_valid, f, axis=0), f, axis=1)
    worse = np.abs(pac - gt) - np.abs(bil - gt)  # < 0 where PAC is better
    how = "point samples" if method == "nearest" else "block means"
    tiles = [
        (np.clip(rgb, 0, 255).astype(np.uint8), "guide: left RGB"),
        (colorize(up, vmin, vmax, up_valid), f"input: {lo.shape[1]}x{lo.shape[0]} {how} (1/{f})"),
        (colorize(gt, vmin, vmax, valid), f"ground truth {W}x{H}"),
        (colorize(bil, vmin, vmax), f"bilinear: RMSE {rmse_bil:.3f}"),
        (colorize(pac, vmin, vmax), f"PAC joint bilateral: RMSE {rmse_pac:.3f}"),
        (
            colorize(worse, -err_range, err_range, valid, _DIV_ANCHORS),
            "|err PAC| - |err bilinear|  (blue: PAC better)",
        ),
    ]
    gap, label_h, head_h, bar_h, cols = 8, 26, 36, 50, 3
    canvas = Image.new(
        "RGB",
        (cols * W + (cols + 1) * gap, head_h + 2 * (label_h + H + gap) + bar_h),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (gap, 6),
        f"PAC joint depth upsampling x{f}, Middlebury motorcycle (disparity in px; black: invalid)",
        fill=(0, 0, 0),
        font=_font(22),
    )
    font = _font(18)
    for idx, (img, label) in enumerate(tiles):
        row, col = divmod(idx, cols)
        x0, y0 = gap + col * (W + gap), head_h + row * (label_h + H + gap)
        draw.text((x0, y0 + 3), label, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(img), (x0, y0 + label_h))
    # colour bars: disparity under the first two columns, error difference under the third
    y0 = head_h + 2 * (label_h + H + gap)
    for x0, width, v0, v1, anchors in (
        (gap, 2 * W + gap, vmin, vmax, _SEQ_ANCHORS),
        (gap + 2 * (W + gap), W, -err_range, err_range, _DIV_ANCHORS),
    ):
        ramp = np.repeat(np.linspace(v0, v1, width)[None, :], 14, axis=0)
        canvas.paste(Image.fromarray(colorize(ramp, v0, v1, anchors=anchors)), (x0, y0))
        for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
            xt = x0 + round(frac * (width - 1))
            draw.line([(xt, y0 + 14), (xt, y0 + 19)], fill=(0, 0, 0))
            text = f"{v0 + frac * (v1 - v0):.1f}"
            tw = draw.textlength(text, font=font)
            draw.text(
                (min(max(xt - tw / 2, x0), x0 + width - tw), y0 + 21),
                text,
                fill=(0, 0, 0),
                font=font,
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# --------------------------------------------------------------------------- driver
@dataclass
class Result:
    factor: int
    lo_shape: tuple
    rmse_bilinear: float
    rmse_pac: float
    pac_seconds: float
    png: Path
    rmse_guided: float = float("nan")
    guided_seconds: float = float("nan")
    guided_impl: str = ""


def _warm_up():
    """Compile the kernels (or load them from numba's disk cache) on a tiny float32 input, so
    that the timings measure the computation only."""
    rng = np.random.default_rng(0)
    upsample_pac(
        rng.random((2, 2)).astype(DTYPE), np.ones((2, 2), bool), rng.random((4, 4, 3)) * 255, 2
    )


def run(factors=DEFAULT_FACTORS, out="demo-output", method=DOWNSAMPLING, log=print):
    """Run the comparison for every factor, write the panels, return a list of Result."""
    factors = [int(f) for f in factors]
    rgb, gt, valid = load_motorcycle(math.lcm(*factors))
    t0 = time.perf_counter()
    _warm_up()
    log(f"numba warm-up (compile or disk-cache load): {time.perf_counter() - t0:.1f} s")
    log(
        f"motorcycle {gt.shape[1]}x{gt.shape[0]}, {valid.mean():.1%} valid ground truth; "
        f"downsampling: {method}; sigma_color {SIGMA_COLOR:g}, "
        f"sigma_spatial {SPATIAL_SIGMA_PER_FACTOR:g}*f, kernel 3f+1 (3f for odd f)"
    )
    results = []
    for f in factors:
        lo, lo_valid = downsample(gt, valid, f, method)
        bil = upsample_bilinear(lo, lo_valid, f, method)
        t0 = time.perf_counter()
        pac = upsample_pac(lo, lo_valid, rgb, f, method=method, fallback=bil)
        secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        gdf, gimpl = upsample_guided(lo, lo_valid, rgb, f, method=method, bilinear=bil)
        gsecs = time.perf_counter() - t0
        r_bil, r_pac = rmse(bil, gt, valid), rmse(pac, gt, valid)
        r_gdf = rmse(gdf, gt, valid)
        png = render_panel(
            Path(out) / f"upsampling_x{f}.png",
            f,
            rgb,
            lo,
            lo_valid,
            bil,
            pac,
            gt,
            valid,
            r_bil,
            r_pac,
            method=method,
        )
        results.append(Result(f, lo.shape, r_bil, r_pac, secs, png, r_gdf, gsecs, gimpl))
    log("")
    log(
        f"{'factor':>6}  {'low-res':>8}  {'RMSE bilinear':>13}  {'RMSE PAC':>8}  "
        f"{'RMSE guided':>11}  {'PAC time':>8}  {'guided time':>11}"
    )
    for r in results:
        log(
            f"{r.factor:>6}  {f'{r.lo_shape[1]}x{r.lo_shape[0]}':>8}  {r.rmse_bilinear:>13.4f}  "
            f"{r.rmse_pac:>8.4f}  {r.rmse_guided:>11.4f}  {r.pac_seconds:>7.3f}s  "
            f"{r.guided_seconds:>10.3f}s"
        )
    impl = results[0].guided_impl if results else ""
    log(
        "RMSE in disparity pixels over the valid ground-truth pixels. PAC: joint bilateral "
        "upsampling (the direct kernel of filters.joint_bilateral_upsample for 'nearest' "
        "downsampling or odd f, else packernel2d + pacconv_transpose2d), time incl. "
        "normalisation; guided: bilinear + guided filter (He et al.; radius "
        f"{GUIDED_RADIUS}, eps {GUIDED_EPS:g}; {impl}), time excl. the bilinear step"
    )
    for r in results:
        log(f"wrote {r.png}")
    return results


# --------------------------------------------------------------------------- tour: denoising
#: Noise added to the photo (std. dev. on the 0–255 scale), and the bilateral filter's σ's. Two
#: noisy pixels of one colour differ by ‖Δ‖ ≈ σ_n·√6 ≈ 49 (three channels, two samples), so
#: σ_c = 2.5·σ_n keeps weight ≈ 0.6 for them and < 0.15 across edges of ‖Δ‖ ≥ 100. (On a 3 × 4
#: grid of σ_c ∈ 30…60, σ_s ∈ 1.5…3 the PSNR spans 27.6–30.1 dB; the chosen pair gives 30.0.)
DENOISE_NOISE = 20.0
DENOISE_SIGMA_COLOR = 2.5 * DENOISE_NOISE
DENOISE_SIGMA_SPATIAL = 2.0


def psnr(a, b, peak=255.0):
    """Peak signal-to-noise ratio in dB of ``a`` against the reference ``b``."""
    err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(peak * peak / err))


def render_strip(path, title, tiles):
    """A PNG of labelled uint8 RGB tiles side by side under a title."""
    from PIL import Image, ImageDraw

    gap, label_h, head_h = 8, 26, 36
    h = max(t.shape[0] for t, _ in tiles)
    w = sum(t.shape[1] for t, _ in tiles) + gap * (len(tiles) + 1)
    canvas = Image.new("RGB", (w, head_h + label_h + h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 6), title, fill=(0, 0, 0), font=_font(20))
    x0 = gap
    for img, label in tiles:
        draw.text((x0, head_h + 3), label, fill=(0, 0, 0), font=_font(16))
        canvas.paste(Image.fromarray(img), (x0, head_h + label_h))
        x0 += img.shape[1] + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def run_denoise(out="demo-output", log=print, seed=0):
    """Edge-preserving denoising of a real photo (scikit-image's astronaut, 512 × 512 RGB):
    Gaussian noise of σ_n = 20, then ``pacnp.filters.bilateral_filter`` on the uint8 image.
    Returns (PSNR noisy, PSNR filtered, seconds, png path)."""
    from skimage import data

    from . import filters

    clean = data.astronaut()
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0.0, DENOISE_NOISE, clean.shape), 0, 255)
    noisy = np.rint(noisy).astype(np.uint8)
    filters.bilateral_filter(noisy[:8, :8], channel_axis=-1)  # compile / cache load, untimed
    t0 = time.perf_counter()
    den = filters.bilateral_filter(
        noisy, sigma_spatial=DENOISE_SIGMA_SPATIAL, sigma_color=DENOISE_SIGMA_COLOR, channel_axis=-1
    )
    secs = time.perf_counter() - t0
    p0, p1 = psnr(noisy, clean), psnr(den, clean)
    crop = (slice(40, 296), slice(128, 384))  # the face and the helmet's edges, 256 × 256
    png = render_strip(
        Path(out) / "denoising.png",
        f"Bilateral filter (pacnp.filters), astronaut + noise sigma {DENOISE_NOISE:g}",
        [
            (noisy[crop], f"noisy: PSNR {p0:.2f} dB"),
            (den[crop], f"filtered: PSNR {p1:.2f} dB"),
            (clean[crop], "clean"),
        ],
    )
    log(
        f"denoising: astronaut 512x512 RGB uint8, noise sigma {DENOISE_NOISE:g}; bilateral "
        f"sigma_spatial {DENOISE_SIGMA_SPATIAL:g}, sigma_color {DENOISE_SIGMA_COLOR:g}: "
        f"PSNR {p0:.2f} dB -> {p1:.2f} dB ({secs:.2f} s)"
    )
    log(f"wrote {png}")
    return p0, p1, secs, png


# --------------------------------------------------------------------------- tour: CRF
#: The CRF part: a photo taken with sensor noise (σ CRF_NOISE on 0–255) is segmented pixel by
#: pixel into CRF_LABELS colour classes (a soft nearest-centre classifier, temperature
#: CRF_TEMPERATURE: p ∝ exp(−‖I − centre‖²/2T²)), which speckles every region; crf_refine,
#: guided by the same noisy photo, cleans it up. σ_c: two same-class pixels differ by about
#: CRF_NOISE·√6 ≈ 73 ≈ 0.29 on the [0, 1] scale, so σ_c = 0.2 (crf_refine's default 0.1 suits a
#: clean photo) keeps them together. The reference labels are the same classifier on the clean
#: photo smoothed by a 5 × 5 box (regions, not texture).
CRF_LABELS = 4
CRF_NOISE = 30.0
CRF_TEMPERATURE = 60.0
CRF_SIGMA_COLOR = 0.2


def _cluster_centres(pixels, k, seed=0, iters=20):
    """k-means (Lloyd, fixed iterations) of [N, 3] colours: [k, 3] centres."""
    rng = np.random.default_rng(seed)
    centres = pixels[rng.choice(len(pixels), k, replace=False)].astype(np.float64)
    for _ in range(iters):
        lab = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for c in range(k):
            if np.any(lab == c):
                centres[c] = pixels[lab == c].mean(axis=0)
    return centres


def _sq_dist(img, centres):
    return ((np.asarray(img, np.float64)[..., None, :] - centres) ** 2).sum(-1)


def _label_colours(labels, centres):
    return np.clip(centres[labels], 0, 255).astype(np.uint8)


def run_crf(out="demo-output", log=print, seed=0):
    """CRF refinement of a speckled per-pixel segmentation of a real photo (scikit-image's
    coffee, 600 × 400 RGB) with ``pacnp.crf.crf_refine``. Returns (pixel accuracy before,
    after, seconds, png path)."""
    from skimage import data, transform

    from . import crf

    photo = data.coffee()
    H, W = photo.shape[:2]
    box = transform.resize(photo, (H // 5, W // 5), anti_aliasing=True, preserve_range=True)
    smooth = transform.resize(box, (H, W), order=1, preserve_range=True)
    centres = _cluster_centres(smooth.reshape(-1, 3)[::37], CRF_LABELS, seed)
    truth = np.argmin(_sq_dist(smooth, centres), axis=-1)
    rng = np.random.default_rng(seed)
    noisy = np.rint(np.clip(photo + rng.normal(0.0, CRF_NOISE, photo.shape), 0, 255))
    noisy = noisy.astype(np.uint8)
    logits = -_sq_dist(noisy, centres) / (2 * CRF_TEMPERATURE**2)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = np.ascontiguousarray(
        (p / p.sum(axis=-1, keepdims=True)).transpose(2, 0, 1), dtype=np.float32
    )
    crf.crf_refine(probs[:, :16, :16], noisy[:16, :16])  # compile / cache load, untimed
    t0 = time.perf_counter()
    refined = crf.crf_refine(probs, noisy, sigma_color=CRF_SIGMA_COLOR)
    secs = time.perf_counter() - t0
    before = np.argmax(probs, axis=0)
    after = np.argmax(np.asarray(refined), axis=0)
    acc0, acc1 = float((before == truth).mean()), float((after == truth).mean())
    png = render_strip(
        Path(out) / "crf.png",
        f"CRF refinement (pacnp.crf.crf_refine), coffee + noise sigma "
        f"{CRF_NOISE:g}, {CRF_LABELS} colour labels",
        [
            (noisy, "noisy photo (the guide)"),
            (_label_colours(before, centres), f"per-pixel: {acc0:.1%} right"),
            (_label_colours(after, centres), f"after crf_refine: {acc1:.1%} right"),
            (_label_colours(truth, centres), "reference"),
        ],
    )
    log(
        f"CRF: coffee {W}x{H} with noise sigma {CRF_NOISE:g}, {CRF_LABELS} colour labels: "
        f"pixel accuracy {acc0:.2%} (per-pixel classifier) -> {acc1:.2%} after crf_refine "
        f"(sigma_color {CRF_SIGMA_COLOR:g}, other defaults; {secs:.2f} s)"
    )
    log(f"wrote {png}")
    return acc0, acc1, secs, png


# --------------------------------------------------------------------------- tour: volume
#: The 3-D part: a real T1-weighted MRI shipped inside nibabel's wheel (its test file
#: ``anatomical.nii``: 33 × 41 × 25 voxels of 2 mm, int16, an SPM-normalised brain crop with
#: ventricles, grey and white matter), so nothing is downloaded. Gaussian noise of σ_n =
#: VOLUME_NOISE × the clean volume's intensity range (1550 of 31003) is added, then the 3-D
#: bilateral filter runs with the voxel size of the NIfTI header as ``spacing``, so that σ_s
#: is in millimetres. σ_s = 2 mm (one voxel; radius ⌈3σ_s⌉ = 3 voxels per axis, a 7³ window)
#: and σ_c = 2σ_n: two voxels of one tissue differ by about σ_n·√2 ≈ 0.7σ_c and keep a colour
#: weight of ≈ 0.78, a step of 4σ_n between tissues gets < 0.14. (On a grid of σ_s ∈ 1.5…3 mm
#: and σ_c ∈ 1.5…2.5 σ_n the 3-D PSNR spans 29.9–31.2 dB; the chosen pair gives 31.0.) The same
#: σ's slice by slice in 2-D, the usual workaround, are printed beside it.
VOLUME_FILE = "anatomical.nii"
VOLUME_NOISE = 0.05
VOLUME_SIGMA_SPATIAL = 2.0
VOLUME_SIGMA_COLOR_PER_NOISE = 2.0
#: on screen, the smallest voxel edge becomes this many pixels (nearest neighbour)
VOLUME_ZOOM = 4


def load_mri(crop=None):
    """The T1 MRI of nibabel's test data as float32 in RAS+ orientation (array axes: left to
    right, posterior to anterior, inferior to superior) and its voxel size in mm per array
    axis, from the NIfTI header. ``crop``: a tuple of slices to keep (tests).

    Examples
    --------
    >>> from pacnp import demo
    >>> vol, spacing = demo.load_mri()
    >>> vol.shape, vol.dtype, spacing
    ((33, 41, 25), dtype('float32'), (2.0, 2.0, 2.0))
    """
    from importlib.resources import as_file, files

    import nibabel

    # the file inside the installed package; nibabel.testing.data_path would need pytest
    with as_file(files("nibabel.tests") / "data" / VOLUME_FILE) as path:
        img = nibabel.as_closest_canonical(nibabel.load(path))
        vol = np.asarray(img.dataobj, dtype=DTYPE)  # read now: the path may be temporary
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    if crop is not None:
        vol = np.ascontiguousarray(vol[crop])
    return vol, spacing


def orthogonal_slices(vol, spacing, lo, hi, zoom=VOLUME_ZOOM, at=None):
    """Sagittal, coronal and axial slices through ``at`` (default: the centre) of a RAS+
    volume, stacked top to bottom as one uint8 grey image (``lo``…``hi`` → 0…255), superior
    (anterior for the axial slice) up, each axis enlarged in proportion to its voxel size.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import demo
    >>> vol = np.zeros((4, 5, 6), np.float32)            # x, y, z; slices 2 mm thick in z
    >>> demo.orthogonal_slices(vol, (1.0, 1.0, 2.0), 0.0, 1.0, zoom=2).shape  # 24 + 24 + 10 rows
    (70, 10)
    """
    at = [n // 2 for n in vol.shape] if at is None else at
    unit = min(spacing)
    scale = [max(1, round(zoom * s / unit)) for s in spacing]

    def show(plane, row_axis, col_axis):
        # rows: the upward axis, flipped so that it grows upwards; columns as stored
        img = np.flipud(plane.T)
        img = np.repeat(np.repeat(img, scale[row_axis], axis=0), scale[col_axis], axis=1)
        return np.clip((img - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)

    views = [
        show(vol[at[0], :, :], 2, 1),  # sagittal: (anterior →, superior ↑)
        show(vol[:, at[1], :], 2, 0),  # coronal: (right →, superior ↑)
        show(vol[:, :, at[2]], 1, 0),  # axial: (right →, anterior ↑)
    ]
    width, gap = max(v.shape[1] for v in views), 6
    out = np.full((sum(v.shape[0] for v in views) + gap * (len(views) - 1), width), 255, np.uint8)
    y = 0
    for v in views:
        out[y : y + v.shape[0], : v.shape[1]] = v
        y += v.shape[0] + gap
    return out


@dataclass
class VolumeResult:
    shape: tuple
    spacing: tuple
    noise: float
    psnr_noisy: float
    psnr_3d: float
    psnr_2d: float
    seconds: float
    png: Path


def run_volume(out="demo-output", log=print, seed=0, crop=None):
    """3-D edge-preserving denoising of a real MRI volume (:func:`load_mri`): Gaussian noise,
    then ``pacnp.filters.bilateral_filter(..., spatial_dims=3, spacing=voxel size)``, against
    the same filter slice by slice in 2-D. Writes ``volume.png`` (three orthogonal slices of
    the noisy, 2-D, 3-D and clean volumes) and returns a :class:`VolumeResult`.

    Examples
    --------
    >>> from pacnp import demo
    >>> r = demo.run_volume("demo-output")  # doctest: +SKIP
    volume: T1 MRI 33x41x25 voxels of 2x2x2 mm (nibabel's anatomical.nii), ... -> 30.83 dB ...
    wrote demo-output/volume.png
    """
    from . import filters

    clean, spacing = load_mri(crop)
    lo, hi = float(clean.min()), float(clean.max())
    sigma_n = VOLUME_NOISE * (hi - lo)
    rng = np.random.default_rng(seed)
    noisy = (clean + rng.normal(0.0, sigma_n, clean.shape)).astype(DTYPE)
    opts = dict(
        sigma_spatial=VOLUME_SIGMA_SPATIAL, sigma_color=VOLUME_SIGMA_COLOR_PER_NOISE * sigma_n
    )
    # compile (or load from numba's cache) on a small corner, untimed
    filters.bilateral_filter(noisy[:8, :8, :8], spatial_dims=3, spacing=spacing, **opts)
    t0 = time.perf_counter()
    den3 = filters.bilateral_filter(noisy, spatial_dims=3, spacing=spacing, **opts)
    secs = time.perf_counter() - t0
    # the 2-D workaround: every axial slice on its own (a batch of 2-D images, z first)
    axial = np.moveaxis(noisy, 2, 0)
    den2 = np.moveaxis(filters.bilateral_filter(axial, spacing=spacing[:2], **opts), 0, 2)
    peak = hi - lo
    p0, p2, p3 = (psnr(v, clean, peak) for v in (noisy, den2, den3))
    # grey levels of the picture: the clean volume's 0.5–99.5 % range (a few bright vessels
    # would otherwise darken everything else)
    wlo, whi = (float(v) for v in np.percentile(clean, [0.5, 99.5]))
    png = render_strip(
        Path(out) / "volume.png",
        f"3-D bilateral filter, T1 MRI (nibabel's {VOLUME_FILE}) + noise",
        [
            (orthogonal_slices(noisy, spacing, wlo, whi), f"noisy: {p0:.2f} dB"),
            (orthogonal_slices(den2, spacing, wlo, whi), f"2-D slices: {p2:.2f} dB"),
            (orthogonal_slices(den3, spacing, wlo, whi), f"3-D: {p3:.2f} dB"),
            (orthogonal_slices(clean, spacing, wlo, whi), "clean"),
        ],
    )
    size = "x".join(str(n) for n in clean.shape)
    voxel = "x".join(f"{v:g}" for v in spacing)
    log(
        f"volume: T1 MRI {size} voxels of {voxel} mm (nibabel's {VOLUME_FILE}), Gaussian noise "
        f"sigma {sigma_n:.0f} ({VOLUME_NOISE:.0%} of the range); 3-D bilateral sigma_spatial "
        f"{VOLUME_SIGMA_SPATIAL:g} mm, sigma_color {opts['sigma_color']:.0f}: PSNR {p0:.2f} dB "
        f"-> {p3:.2f} dB ({secs:.2f} s); the same filter slice by slice in 2-D: {p2:.2f} dB"
    )
    log(f"wrote {png}")
    return VolumeResult(clean.shape, spacing, sigma_n, p0, p3, p2, secs, png)


def main(argv=None):
    """Command line entry point; returns the exit code (0: PAC beat bilinear at every factor)."""
    parser = argparse.ArgumentParser(
        prog="python -m pacnp.demo",
        description="Joint depth upsampling of the Middlebury motorcycle disparity: PAC joint "
        "bilateral upsampling (guided by the left image) against bilinear.",
    )
    parser.add_argument("--out", default="demo-output", help="folder for the PNG panels")
    parser.add_argument(
        "--factors",
        type=int,
        nargs="+",
        default=list(DEFAULT_FACTORS),
        metavar="F",
        help="upsampling factors, each >= 2 (default: 4 8 16)",
    )
    parser.add_argument(
        "--downsample",
        choices=_METHODS,
        default=DOWNSAMPLING,
        help=f"how the low-res input is made (default: {DOWNSAMPLING})",
    )
    parser.add_argument(
        "--only",
        choices=TOUR,
        nargs="+",
        default=list(TOUR),
        help="parts of the tour to run (default: all)",
    )
    try:
        args = parser.parse_args(argv)
        if any(f < 2 for f in args.factors):
            parser.error("every factor must be >= 2")
    except SystemExit as exc:  # --help, or a usage error already reported by argparse
        return exc.code if isinstance(exc.code, int) else 2
    failures = []
    try:
        if "upsampling" in args.only:
            results = run(args.factors, args.out, args.downsample)
            failures += [
                f"at factor {r.factor} PAC (RMSE {r.rmse_pac:.4f}) does not beat "
                f"bilinear (RMSE {r.rmse_bilinear:.4f})"
                for r in results
                if not r.rmse_pac < r.rmse_bilinear
            ]
        if "denoising" in args.only:
            print()
            p0, p1, _, _ = run_denoise(args.out)
            if not p1 > p0:
                failures.append(f"denoising lowered the PSNR ({p0:.2f} -> {p1:.2f} dB)")
        if "crf" in args.only:
            print()
            acc0, acc1, _, _ = run_crf(args.out)
            if not acc1 > acc0:
                failures.append(
                    f"CRF refinement did not raise the accuracy ({acc0:.4f} -> {acc1:.4f})"
                )
        if "volume" in args.only:
            print()
            v = run_volume(args.out)
            if not v.psnr_3d > v.psnr_noisy:
                failures.append(
                    f"3-D denoising lowered the PSNR ({v.psnr_noisy:.2f} -> {v.psnr_3d:.2f} dB)"
                )
    except ImportError as exc:
        print(f"pacnp.demo needs the demo extra (pip install -e '.[demo]'): {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. factors whose lcm exceeds the image
        print(f"pacnp.demo: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    for msg in failures:
        print(f"FAIL: {msg}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
