"""pacnp on Dask arrays: images and volumes larger than memory, many frames, clusters.

Every function here takes Dask arrays (chunked over batch and/or space), returns Dask arrays, and
runs the in-memory pacnp function once per chunk through :func:`dask.array.map_overlap`, each
chunk extended by a halo from its neighbours. The result equals the in-memory call on the whole
array to float rounding — the same arithmetic runs on the same numbers, only in pieces:

* **Halo.** An output pixel whose window centre lies in a chunk reads the input within the window
  radius ``r = dilation·(k−1)//2`` of that centre (and within the smoothing kernel's radius when
  ``smooth_kernel_type`` smooths the guide, 1 for the toolkit's detail-preserving pooling). Each
  chunk is extended by exactly that many pixels (rounded up to a multiple of the stride for
  strided ops, so every chunk sees the global sampling grid); the outputs of the extended chunk
  near its *interior* edges are wrong (they miss pixels) and are cut off.
* **Image borders.** ``boundary='none'``: a chunk at the image border is not extended there, so
  the in-memory function applies its own border handling (``reflect`` / ``nearest`` /
  ``constant`` padding, ``renormalize``, or the PAC ops' zero padding) at exactly the place it
  applies it to the whole image. This reproduces every border mode, including ``reflect`` on
  images thinner than the radius (such an axis is one chunk, see below).
* **Chunks.** ``map_overlap`` needs every chunk at least as large as the halo, and strided ops
  need chunk starts on the stride grid (multiples of ``stride``). Spatial chunks are therefore
  rechunked: boundaries rounded down to that grid, chunks smaller than the halo merged into a
  neighbour; an axis smaller than that is one chunk and needs no halo (1-pixel images included).
  Transposed ops (upsampling) chunk the low-resolution input; each chunk owns the ``stride``×
  larger output block, and the guide (at the output resolution) is rechunked to those blocks.
  Channel axes become one chunk; batch axes keep any chunking. ``plan_chunks`` shows the result.
* **Dimensions.** The filters take ``spatial_dims`` (1, 2 or 3) as in memory: every spatial axis
  of a signal, image or volume is chunked and extended by its own halo (the window radius on
  that axis — per-axis with ``spacing`` or a per-axis ``radius``), independently of the others.
* **Global statistics.** ``sigma_color=None`` means the guide's standard deviation, a statistic
  of the whole image: it is computed by Dask first (an extra pass over the guide) and then used
  by every chunk. Pass ``sigma_color`` to avoid that pass.

Threads. Dask already runs one task per core (threaded and process schedulers default to one
worker per core, ``distributed.LocalCluster`` splits the cores between workers × threads), so
numba's own thread pool would multiply the threads by the core count again. Each chunk is
therefore computed with **one** numba thread by default (``numba_threads=None``); the
environment variable ``PACNP_DASK_NUMBA_THREADS`` or the ``numba_threads`` argument overrides
it — e.g. ``numba_threads=4`` with a cluster of one single-threaded worker per 4 cores. Both
are read when the graph is built (in the client, not in the workers). The setting is restored
after each chunk (numba's thread count is per calling thread).

GPU. Blocks of a CuPy-backed Dask array are handed to pacnp as they are, and pacnp runs device
arrays on its CUDA backend; small host parameters (weights, bias, α, λ, smoothing kernel) are
moved to the block's device first. (Not exercised by the tests: the project's machine has no GPU.)
"""

from __future__ import annotations

import functools
import numbers
import os

import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array

from . import _api, _core
from . import filters as _filters
from ._namespace import array_module as _xp
from ._namespace import like as _like_block

__all__ = [
    "joint_bilateral_filter",
    "bilateral_filter",
    "joint_bilateral_upsample",
    "detail_preserving_pool",
    "pacconv2d_fused",
    "pacconv_transpose2d_fused",
    "pacpool2d_fused",
    "paccrf",
    "plan_chunks",
    "ENV_NUMBA_THREADS",
]

#: environment variable with the numba threads per Dask task (default 1, module docstring)
ENV_NUMBA_THREADS = "PACNP_DASK_NUMBA_THREADS"


# --------------------------------------------------------------------------- threads, devices
def _numba_threads(requested, fn="pacnp.dask"):
    """Threads for one chunk: the argument, else the environment variable, else 1."""
    if requested is None:
        requested = os.environ.get(ENV_NUMBA_THREADS, 1)
    elif isinstance(requested, (bool, np.bool_)) or not isinstance(requested, numbers.Integral):
        raise TypeError(
            f"{fn}: numba_threads must be a positive integer or None, got {requested!r}"
        )
    try:
        n = int(requested)
    except (TypeError, ValueError):
        raise ValueError(
            f"{fn}: numba_threads (or ${ENV_NUMBA_THREADS}) must be a "
            f"positive integer, got {requested!r}"
        ) from None
    if n < 1:
        raise ValueError(f"{fn}: numba_threads must be >= 1, got {n}")
    return n


def _run_with_threads(n, call):
    import numba

    # numba refuses more threads than its pool was started with (NUMBA_NUM_THREADS)
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return call()
    finally:
        numba.set_num_threads(before)


# --------------------------------------------------------------------------- chunk plans
def _ceil_div(a, b):
    return -(-a // b)


def _cuts(n, chunks, grid, minimum):
    """Chunk sizes along an axis of size ``n``: the caller's boundaries moved down onto multiples
    of ``grid``, chunks shorter than ``minimum`` merged into the previous one (the first into the
    next); an axis shorter than ``minimum`` becomes one chunk."""
    starts = [0]
    for b in np.cumsum(chunks)[:-1]:
        b = int(b) - int(b) % grid
        if b - starts[-1] >= minimum and n - b >= 1:
            starts.append(b)
    if len(starts) > 1 and n - starts[-1] < minimum:
        starts.pop()
    bounds = starts + [n]
    return tuple(int(bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1))


class _Axis:
    """How one spatial axis is cut: input chunks and halo, guide chunks and halo (they differ
    only for transposed ops, whose guide is at the output resolution), output chunks, and for
    every chunk the slice of the extended chunk's output that belongs to it (``keep``), all
    in that order of chunks."""

    def __init__(self, in_chunks, depth, guide_chunks, guide_depth, out_chunks, keep):
        self.in_chunks, self.depth = in_chunks, depth
        self.guide_chunks, self.guide_depth = guide_chunks, guide_depth
        self.out_chunks, self.keep = out_chunks, keep

    def __repr__(self):
        return (
            f"_Axis(in_chunks={self.in_chunks}, depth={self.depth}, "
            f"guide_chunks={self.guide_chunks}, guide_depth={self.guide_depth}, "
            f"out_chunks={self.out_chunks})"
        )


def _forward_axis(n, chunks, s, p, r, halo):
    """Plan for a convolution / pooling axis: size ``n``, stride ``s``, padding ``p`` (≤ r),
    window radius ``r``; ``halo`` ≥ r is what a window centre needs around it.

    Output y has its window centre at ``c = y·s + r − p`` (docs/semantics.md) and belongs to the
    chunk holding c. With chunk starts and the halo multiples of s, an extended chunk starting
    at e computes, with the caller's padding, exactly the global outputs y = e/s + y′.
    """
    depth = _ceil_div(halo, s) * s
    n_out = (n + 2 * p - 2 * r - 1) // s + 1
    bounds = list(np.cumsum((0,) + _cuts(n, chunks, s, max(depth, s, 1))))

    def n_centres(a, b):  # outputs whose window centre y·s + r − p lies in [a, b)
        return min(n_out, max(0, _ceil_div(b - r + p, s))) - min(
            n_out, max(0, _ceil_div(a - r + p, s))
        )

    # with padding < r the first and last centres are inside the image: an edge chunk holding
    # none would also be too short for one window, so it joins its neighbour
    while len(bounds) > 2 and n_centres(bounds[0], bounds[1]) == 0:
        del bounds[1]
    while len(bounds) > 2 and n_centres(bounds[-2], bounds[-1]) == 0:
        del bounds[-2]
    in_chunks = tuple(int(bounds[j + 1] - bounds[j]) for j in range(len(bounds) - 1))
    if len(in_chunks) == 1:
        depth = 0
    out_chunks, keep, a = [], [], 0
    for j, size in enumerate(in_chunks):
        b = a + size
        e = a - (depth if j > 0 else 0)
        lo = min(n_out, max(0, _ceil_div(a - r + p, s)))
        hi = min(n_out, max(0, _ceil_div(b - r + p, s)))
        out_chunks.append(hi - lo)
        keep.append((lo - e // s, hi - e // s))
        a = b
    return _Axis(
        in_chunks, (depth, depth), in_chunks, (depth, depth), tuple(out_chunks), tuple(keep)
    )


def _transposed_axis(n, chunks, s, p, r, op, guide_halo):
    """Plan for a transposed-convolution axis: input size ``n``, output (and guide) size
    ``n·s + c`` with ``c = 2r − 2p + op + 1 − s``.

    Input chunk [a, b) owns outputs [a·s, b·s) (from 0 for the first chunk, to the end for the
    last). Output Y receives input samples n with ``n·s ∈ [Y + p − 2r, Y + p]``, hence the input
    halo ``dl = ⌊(2r − p)/s⌋`` on the left and ``⌊(p − 1)/s⌋ + 1`` on the right, and the guide,
    read within ``guide_halo`` of Y, must be the extended input chunk's output range: it starts at
    ``(a − dl)·s`` and is ``(L − 1)·s − 2p + 2r + op + 1`` long for an extended chunk of L
    samples — so its halo is ``dl·s`` on the left and ``dr·s + c`` on the right.
    """
    c = 2 * r - 2 * p + op + 1 - s
    dl = max((2 * r - p) // s, _ceil_div(guide_halo, s), 0)
    dr = max((p - 1) // s + 1, _ceil_div(guide_halo - c, s), 0)
    gdl, gdr = dl * s, dr * s + c
    g = max(gdl, gdr)
    minimum = max(dl, dr, _ceil_div(g, s), _ceil_div(g - c, s), 1)
    in_chunks = _cuts(n, chunks, 1, minimum)
    if len(in_chunks) == 1:
        dl = dr = gdl = gdr = 0
    bounds = [0]
    for size in in_chunks[:-1]:
        bounds.append(bounds[-1] + size * s)
    bounds.append(n * s + c)
    out_chunks = tuple(bounds[j + 1] - bounds[j] for j in range(len(in_chunks)))
    keep = tuple(
        ((gdl if j > 0 else 0), (gdl if j > 0 else 0) + out_chunks[j])
        for j in range(len(in_chunks))
    )
    return _Axis(in_chunks, (dl, dr), out_chunks, (gdl, gdr), out_chunks, keep)


def plan_chunks(kind, shape, chunks, **geometry):
    """The chunking a wrapper will use along one spatial axis (for inspection and docs).

    Parameters
    ----------
    kind : {'forward', 'transposed'}
        'forward': convolution / pooling / filtering (``stride``, ``padding``, ``radius``,
        ``halo``); 'transposed': transposed convolution / upsampling (``stride``, ``padding``,
        ``radius``, ``output_padding``, ``halo`` of the guide).
    shape : int
        Axis size (of the input; of the low-resolution input for 'transposed').
    chunks : tuple of int
        The caller's chunk sizes along the axis.

    Returns
    -------
    dict with ``input_chunks``, ``input_depth``, ``guide_chunks``, ``guide_depth``,
    ``output_chunks``.

    Examples
    --------
    >>> import pacnp.dask as pd
    >>> plan = pd.plan_chunks("forward", 4096, (1000,) * 4 + (96,), stride=2, radius=3)
    >>> plan["input_chunks"], plan["output_chunks"]
    ((1000, 1000, 1000, 1000, 96), (499, 500, 500, 500, 46))
    """
    s = geometry.get("stride", 1)
    p = geometry.get("padding", 0)
    r = geometry.get("radius", 0)
    halo = geometry.get("halo", r)
    if kind == "forward":
        ax = _forward_axis(shape, chunks, s, p, r, halo)
    elif kind == "transposed":
        ax = _transposed_axis(shape, chunks, s, p, r, geometry.get("output_padding", 0), halo)
    else:
        raise ValueError(f"plan_chunks: kind must be 'forward' or 'transposed', got {kind!r}")
    return dict(
        input_chunks=ax.in_chunks,
        input_depth=ax.depth,
        guide_chunks=ax.guide_chunks,
        guide_depth=ax.guide_depth,
        output_chunks=ax.out_chunks,
    )


# --------------------------------------------------------------------------- the engine
def _cut_block(out, block_id, axes, keep):
    """The part of an extended chunk's result that belongs to the chunk (its spatial axes)."""
    sl = [slice(None)] * out.ndim
    for ax, k in zip(axes, keep):
        lo, hi = k[block_id[ax]]
        sl[ax] = slice(lo, hi)
    return out[tuple(sl)]


def _block(*blocks, block_id=None, call, spatial, keep, threads):
    """One chunk: run ``call`` on the extended blocks, keep the chunk's own outputs."""
    out = _run_with_threads(threads, lambda: call(*blocks))
    return _cut_block(out, block_id, spatial, keep)


def _map(call, arrays, depths, plans, out_chunks_rest, dtype, numba_threads):
    """map_overlap ``call`` over ``arrays`` (all with the same batch chunks and the spatial axes
    last, as many as ``plans``: one _Axis per spatial axis), cut by the plans; ``depths[i]``:
    'in' or 'guide' for array i (which halo of the plans it gets); ``out_chunks_rest``: chunks
    of the output's non-spatial axes."""
    ndim = arrays[0].ndim
    spatial = tuple(range(ndim - len(plans), ndim))
    depth = []
    for a, which in zip(arrays, depths):
        d = {ax: 0 for ax in range(a.ndim)}
        for ax, plan in zip(spatial, plans):
            lo, hi = plan.depth if which == "in" else plan.guide_depth
            d[ax] = (lo, hi)
        depth.append(d)
    out_chunks = tuple(out_chunks_rest) + tuple(plan.out_chunks for plan in plans)
    fn = functools.partial(
        _block,
        call=call,
        spatial=spatial,
        keep=tuple(plan.keep for plan in plans),
        threads=_numba_threads(numba_threads),
    )
    if all(v == (0, 0) for d in depth for v in d.values()):
        # nothing to share: map_overlap itself would take this path (map_blocks)
        depth = 0
    return da.map_overlap(
        fn,
        *arrays,
        depth=depth,
        boundary="none",
        trim=False,
        align_arrays=False,
        allow_rechunk=False,
        chunks=out_chunks,
        dtype=dtype,
        meta=meta_from_array(arrays[0], ndim=ndim, dtype=dtype),
    )


def _as_dask(fn, name, a):
    if a is None:
        raise TypeError(f"{fn}: {name} is required, got None")
    if not isinstance(a, da.Array):
        raise TypeError(
            f"{fn}: {name} must be a dask array (dask.array.from_array / "
            f"from_zarr / ...), got {type(a).__name__}"
        )
    return a


def _smooth_radius(fn, smooth_kernel_type):
    """Radius of the guide smoothing (docs/semantics.md): 0, 1 (gaussian 3×3), N//2 — from
    pacnp's own parser of the type."""
    kind, n = _core.parse_smooth_type(smooth_kernel_type, fn)
    return 0 if kind == "none" else n // 2


# --------------------------------------------------------------------------- fused PAC ops
_KERNEL_DEFAULTS = dict(
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
)


def _fused_call(fn, op, x, guide, mask, params, geometry, kernel_kw, numba_threads):
    numba_threads = _numba_threads(numba_threads, fn)
    x = _as_dask(fn, "input", x)
    guide = _as_dask(fn, "guide", guide)
    if mask is not None:
        mask = _as_dask(fn, "mask", mask)
    # pacnp's own checks and messages on the whole arrays' shapes, before any graph is built
    # (an error inside a task would surface late, wrapped, once per chunk)
    kplan, oplan = _api.check_fused(
        fn,
        op,
        x,
        guide,
        *params,
        mask=mask,
        kernel_size=geometry.get("kernel_size"),
        stride=geometry["stride"],
        padding=geometry["padding"],
        output_padding=geometry.get("output_padding", 0),
        dilation=geometry["dilation"],
        shared_filters=geometry.get("shared_filters", False),
        **kernel_kw,
    )
    s, p, d = kplan.geo.stride, kplan.geo.padding, kplan.geo.dilation
    k = kplan.k
    r = tuple(d[a] * (k[a] - 1) // 2 for a in range(2))
    sm = _smooth_radius(fn, kernel_kw["smooth_kernel_type"])
    halo = tuple(max(r[a], sm) for a in range(2))
    if op == "transpose":
        o = _core.pair(geometry["output_padding"], "output_padding", fn)
        plans = [
            _transposed_axis(x.shape[2 + a], x.chunks[2 + a], s[a], p[a], r[a], o[a], halo[a])
            for a in range(2)
        ]
        expect = tuple(
            x.shape[2 + a] * s[a] + 2 * r[a] - 2 * p[a] + o[a] + 1 - s[a] for a in range(2)
        )
    else:
        plans = [
            _forward_axis(x.shape[2 + a], x.chunks[2 + a], s[a], p[a], r[a], halo[a])
            for a in range(2)
        ]
        expect = tuple(x.shape[2:])
    if (guide.shape[0], tuple(guide.shape[2:])) != (x.shape[0], expect):
        raise ValueError(
            f"{fn}: guide has shape {guide.shape}; expected batch {x.shape[0]} and "
            f"spatial size {expect} for input {x.shape}"
        )
    # the chunks the plans were made for: channels whole, batch as the input's
    x = x.rechunk({1: -1, 2: plans[0].in_chunks, 3: plans[1].in_chunks})
    gchunks = {0: x.chunks[0], 1: -1, 2: plans[0].guide_chunks, 3: plans[1].guide_chunks}
    arrays = [x, guide.rechunk(gchunks)]
    if mask is not None:
        arrays.append(mask.rechunk(gchunks))
    dtype = x.dtype
    fused = {
        "conv": _api.pacconv2d_fused,
        "transpose": _api.pacconv_transpose2d_fused,
        "pool": _api.pacpool2d_fused,
    }[op]
    opts = {
        key: geometry[key]
        for key in ("stride", "padding", "dilation", "output_padding", "shared_filters")
        if key in geometry
    }
    if op == "pool":
        opts["kernel_size"] = geometry["kernel_size"]
    c_out = oplan.Cout
    with_mask = mask is not None

    def call(xb, gb, mb=None):
        kw = {key: _like_block(xb, v) for key, v in kernel_kw.items()}
        if with_mask:
            kw["mask"] = mb
        if op == "pool":
            out, om = fused(
                xb,
                gb,
                opts["kernel_size"],
                **{key: v for key, v in opts.items() if key != "kernel_size"},
                **kw,
            )
        else:
            w, b = (_like_block(xb, v) for v in params)
            out, om = fused(xb, gb, w, b, **opts, **kw)
        if om is None:
            return out
        # one array per chunk out of map_overlap: the mask rides along as an extra channel
        return _xp(out).concatenate([out, om.astype(out.dtype)], axis=1)

    res = _map(
        call,
        arrays,
        ["in", "guide"] + (["guide"] if with_mask else []),
        plans,
        (x.chunks[0], (c_out + (1 if with_mask else 0),)),
        dtype,
        numba_threads,
    )
    if with_mask:
        return res[:, :c_out], res[:, c_out:]
    return res, None


def pacconv2d_fused(
    input,
    guide,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    mask=None,
    numba_threads=None,
    **kernel_kw,
):
    """:func:`pacnp.pacconv2d_fused` on Dask arrays, chunk by chunk.

    Parameters
    ----------
    input, guide : dask.array.Array
        ``[B, C_in, H, W]`` and ``[B, C_g, H, W]``, chunked over batch and/or space.
    weight, bias : array
        Small in-memory arrays (NumPy, or CuPy for CuPy-backed inputs), as in pacnp.
    stride, padding, dilation, shared_filters
        As :func:`pacnp.pacconv2d_fused`.
    mask : dask.array.Array or None
        ``[B, 1, H, W]`` at guide positions.
    numba_threads : int or None
        numba threads per chunk (None: ``$PACNP_DASK_NUMBA_THREADS``, else 1; module docstring).
    **kernel_kw
        ``kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, channel_wise,
        normalize_kernel`` as in :func:`pacnp.packernel2d`.

    Returns
    -------
    (output, output_mask or None) : dask arrays
        Equal to the in-memory call to float rounding. Compute both together
        (``dask.compute(out, mask)``): they come from the same tasks.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp
    >>> import pacnp.dask as pd
    >>> rng = np.random.default_rng(0)
    >>> x, guide = rng.random((1, 2, 32, 32)), rng.random((1, 3, 32, 32))
    >>> w = rng.random((4, 2, 5, 5))
    >>> out, mask = pd.pacconv2d_fused(da.from_array(x, chunks=(1, 2, 8, 8)),
    ...                                da.from_array(guide, chunks=(1, 3, 8, 8)), w, padding=2)
    >>> out.shape, mask
    ((1, 4, 32, 32), None)
    >>> direct, _ = pacnp.pacconv2d_fused(x, guide, w, padding=2)
    >>> bool(np.allclose(out.compute(scheduler="sync"), direct))
    True
    """
    fn = "pacnp.dask.pacconv2d_fused"
    kernel_kw = _kernel_kw(fn, kernel_kw)
    geometry = dict(
        stride=stride, padding=padding, dilation=dilation, shared_filters=shared_filters
    )
    return _fused_call(
        fn, "conv", input, guide, mask, (weight, bias), geometry, kernel_kw, numba_threads
    )


def pacconv_transpose2d_fused(
    input,
    guide,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
    mask=None,
    numba_threads=None,
    **kernel_kw,
):
    """:func:`pacnp.pacconv_transpose2d_fused` on Dask arrays, chunk by chunk.

    ``guide`` (and ``mask``) are at the output resolution. The input's spatial chunks are
    rechunked so that each holds at least the halo; the guide is rechunked to the output chunks
    (input chunk boundaries times the stride). Parameters and return value as
    :func:`pacconv2d_fused`.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp.dask as pd
    >>> x = da.ones((1, 1, 16, 16), chunks=(1, 1, 8, 8))
    >>> guide = da.zeros((1, 3, 32, 32), chunks=(1, 3, 16, 16))
    >>> out, _ = pd.pacconv_transpose2d_fused(x, guide, np.ones((1, 1, 3, 3)), stride=2,
    ...                                       padding=1, output_padding=1)
    >>> out.shape
    (1, 1, 32, 32)
    """
    fn = "pacnp.dask.pacconv_transpose2d_fused"
    kernel_kw = _kernel_kw(fn, kernel_kw)
    geometry = dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        shared_filters=shared_filters,
    )
    return _fused_call(
        fn, "transpose", input, guide, mask, (weight, bias), geometry, kernel_kw, numba_threads
    )


def pacpool2d_fused(
    input,
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    dilation=1,
    mask=None,
    numba_threads=None,
    **kernel_kw,
):
    """:func:`pacnp.pacpool2d_fused` on Dask arrays, chunk by chunk.

    Spatial chunk boundaries are moved onto multiples of ``stride`` (so every chunk samples the
    global output grid). Parameters and return value as :func:`pacconv2d_fused`.

    Examples
    --------
    >>> import dask.array as da
    >>> import pacnp.dask as pd
    >>> x = da.ones((1, 2, 32, 32), chunks=(1, 2, 10, 10))
    >>> out, _ = pd.pacpool2d_fused(x, da.zeros((1, 1, 32, 32), chunks=(1, 1, 10, 10)), 3,
    ...                             stride=2, padding=1, normalize_kernel=True)
    >>> out.shape, float(out.mean().compute(scheduler="sync"))
    ((1, 2, 16, 16), 1.0)
    """
    fn = "pacnp.dask.pacpool2d_fused"
    kernel_kw = _kernel_kw(fn, kernel_kw)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, kernel_size=kernel_size)
    return _fused_call(fn, "pool", input, guide, mask, (), geometry, kernel_kw, numba_threads)


def _kernel_kw(fn, given):
    unknown = set(given) - set(_KERNEL_DEFAULTS)
    if unknown:
        raise TypeError(f"{fn}: unexpected keyword arguments {sorted(unknown)}")
    return {**_KERNEL_DEFAULTS, **given}


# --------------------------------------------------------------------------- filters
# Each wrapper asks the in-memory filter for its plan (pacnp.filters.plan_*): the same checks
# and messages, the same layout, radius, border and σ_c rule; then runs the filter's own
# keywords (FilterPlan.chunk_kwargs) on every extended chunk.
def _canonical(plan, a):
    """The planned image as [B, C, *spatial] (batch axes folded) and the function that puts an
    output of that form back into the caller's layout."""
    lay = plan.layout
    t = lay.to_canonical(da, a)
    batch = t.shape[: -lay.nd - 1]

    def back(out):
        return lay.from_canonical(da, out.reshape(batch + out.shape[1:]))

    return _flat(t, lay.nd), back


def _spatial_rechunk(a, plans, guide=False):
    """Channels whole, the plans' spatial chunks (one plan per trailing spatial axis); batch
    chunks untouched."""
    nd = len(plans)
    chunks = {a.ndim - nd - 1: -1}
    for ax, plan in zip(range(a.ndim - nd, a.ndim), plans):
        chunks[ax] = plan.guide_chunks if guide else plan.in_chunks
    return a.rechunk(chunks)


def _flat(a, nd=2):
    """Canonical (*batch, C, *spatial) as [B, C, *spatial]: the engine wants one batch axis."""
    return a.reshape((-1,) + a.shape[-nd - 1 :]) if a.ndim != nd + 2 else a


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
    numba_threads=None,
):
    """:func:`pacnp.filters.joint_bilateral_filter` on Dask arrays, chunk by chunk — signals,
    images or volumes (``spatial_dims``), chunked along any of their axes.

    The halo on each spatial axis is the window radius there; every ``border`` mode is
    reproduced exactly (module docstring). ``sigma_color=None`` computes the guide's standard
    deviation first (one extra pass over the guide). Other parameters as the in-memory filter;
    ``numba_threads`` as :func:`pacconv2d_fused`.

    Returns
    -------
    dask.array.Array of ``image``'s shape and dtype.

    Raises
    ------
    TypeError, ValueError
        As the in-memory filter, when the graph is built (shapes and dtypes are known).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp.dask as pd
    >>> from pacnp import filters
    >>> img = np.random.default_rng(0).random((64, 48, 3), dtype=np.float32)
    >>> lazy = pd.joint_bilateral_filter(da.from_array(img, chunks=(16, 16, 3)),
    ...                                  da.from_array(img.mean(-1), chunks=16),
    ...                                  sigma_spatial=2, sigma_color=0.2, channel_axis=-1)
    >>> lazy.shape, lazy.chunks[:2]
    ((64, 48, 3), ((16, 16, 16, 16), (16, 16, 16)))
    >>> direct = filters.joint_bilateral_filter(img, img.mean(-1), sigma_spatial=2,
    ...                                         sigma_color=0.2, channel_axis=-1)
    >>> float(abs(lazy.compute(scheduler="sync") - direct).max()) < 1e-6
    True

    A volume in 16³ chunks, 2 × 1 × 1 mm voxels (halos of 2, 3 and 3 voxels):

    >>> vol = np.random.default_rng(1).random((32, 32, 32), dtype=np.float32)
    >>> lazy = pd.bilateral_filter(da.from_array(vol, chunks=16), sigma_spatial=1.0,
    ...                            sigma_color=0.2, spatial_dims=3, spacing=(2.0, 1.0, 1.0))
    >>> lazy.numblocks
    (2, 2, 2)
    >>> direct = filters.bilateral_filter(vol, sigma_spatial=1.0, sigma_color=0.2,
    ...                                   spatial_dims=3, spacing=(2.0, 1.0, 1.0))
    >>> float(abs(lazy.compute(scheduler="sync") - direct).max()) < 1e-6
    True
    """
    fn = "pacnp.dask.joint_bilateral_filter"
    numba_threads = _numba_threads(numba_threads, fn)
    image = _as_dask(fn, "image", image)
    guide = _as_dask(fn, "guide", guide)
    plan = _filters.plan_joint_bilateral_filter(
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
        fn=fn,
    )
    nd = plan.spatial_dims
    x, back = _canonical(plan, image)
    g = _flat(plan.guide_layout.to_canonical(da, guide), nd)
    plan = plan.resolve_sigma_color(da, g)
    kw = plan.chunk_kwargs()
    axes = [
        _forward_axis(x.shape[2 + a], x.chunks[2 + a], 1, r, r, r) for a, r in enumerate(plan.halos)
    ]
    x = _spatial_rechunk(x, axes)
    g = _spatial_rechunk(g, axes).rechunk({0: x.chunks[0]})

    def call(xb, gb):
        return _filters.joint_bilateral_filter(xb, gb, **kw)

    out = _map(
        call, [x, g], ["in", "in"], axes, (x.chunks[0], (x.shape[1],)), image.dtype, numba_threads
    )
    return back(out)


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
    numba_threads=None,
):
    """Bilateral filter on Dask arrays: :func:`joint_bilateral_filter` guided by the image
    (signals, images or volumes: ``spatial_dims``).

    Returns
    -------
    dask.array.Array of ``image``'s shape and dtype.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp.dask as pd
    >>> img = da.from_array(np.zeros((40, 40), np.uint8), chunks=10)
    >>> out = pd.bilateral_filter(img, sigma_spatial=1.5, sigma_color=20)
    >>> out.dtype, out.numblocks, int(out.max().compute(scheduler="sync"))
    (dtype('uint8'), (4, 4), 0)
    """
    return joint_bilateral_filter(
        image,
        image,
        sigma_spatial=sigma_spatial,
        sigma_color=sigma_color,
        radius=radius,
        border=border,
        channel_axis=channel_axis,
        spatial_dims=spatial_dims,
        spacing=spacing,
        numba_threads=numba_threads,
    )


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
    numba_threads=None,
):
    """:func:`pacnp.filters.joint_bilateral_upsample` on Dask arrays, chunk by chunk (signals,
    images or volumes: ``spatial_dims``).

    The in-memory function on the low-resolution chunks: each low-res chunk is extended by
    ⌈radius/factor⌉ samples per axis (a little more on the left for even factors) and owns the
    ``factor``× larger high-res block; the guide is rechunked to those blocks, so its chunk
    boundaries are multiples of ``factor``. ``confidence`` (optional) is a Dask array of
    ``low``'s batch and spatial shape. Other parameters as the in-memory function.

    Returns
    -------
    dask.array.Array
        ``low``'s layout and dtype at the guide's spatial size.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp.dask as pd
    >>> low = da.ones((8, 8), np.float32, chunks=4)
    >>> guide = da.zeros((32, 32), np.float32, chunks=16)
    >>> up = pd.joint_bilateral_upsample(low, guide, 4, sigma_color=0.1)
    >>> up.shape, float(up.mean().compute(scheduler="sync"))
    ((32, 32), 1.0)
    """
    fn = "pacnp.dask.joint_bilateral_upsample"
    numba_threads = _numba_threads(numba_threads, fn)
    low = _as_dask(fn, "low", low)
    guide = _as_dask(fn, "guide", guide)
    if confidence is not None:
        confidence = _as_dask(fn, "confidence", confidence)
    plan = _filters.plan_joint_bilateral_upsample(
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
        fn=fn,
    )
    f, nd = plan.factor, plan.spatial_dims
    x, back = _canonical(plan, low)
    g = _flat(plan.guide_layout.to_canonical(da, guide), nd)
    plan = plan.resolve_sigma_color(da, g)
    kw = plan.chunk_kwargs()
    # the in-memory geometry (pacnp.filters): kernel 2r+1, stride f, padding r − o,
    # output_padding (f − 1) % 2 — the output is exactly f× the input (per axis)
    o = (f - 1) // 2
    axes = [
        _transposed_axis(x.shape[2 + a], x.chunks[2 + a], f, r - o, r, (f - 1) % 2, r)
        for a, r in enumerate(plan.radii)
    ]
    x = _spatial_rechunk(x, axes)
    g = _spatial_rechunk(g, axes, guide=True).rechunk({0: x.chunks[0]})
    arrays, depths = [x, g], ["in", "guide"]
    if confidence is not None:
        cf = confidence
        if cf.size != x.shape[0] * int(np.prod(x.shape[2:])):
            cf = da.broadcast_to(cf, plan.layout.batch_shape + plan.layout.spatial_shape)
        cf = cf.reshape((x.shape[0], 1) + tuple(x.shape[2:]))
        arrays.append(_spatial_rechunk(cf, axes).rechunk({0: x.chunks[0]}))
        depths.append("in")

    def call(xb, gb, cb=None):
        return _filters.joint_bilateral_upsample(xb, gb, f, confidence=cb, **kw)

    out = _map(call, arrays, depths, axes, (x.chunks[0], (x.shape[1],)), low.dtype, numba_threads)
    return back(out)


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
    numba_threads=None,
):
    """:func:`pacnp.filters.detail_preserving_pool` on Dask arrays, chunk by chunk (signals,
    images or volumes: ``spatial_dims``).

    The halo on each axis is max(kernel_size // 2, 1) — the window, and the 3-tap smoothing of
    the window centre — rounded up to a multiple of ``stride``; chunk boundaries are moved onto
    multiples of ``stride``. Output size ⌈S_a/stride_a⌉ per axis as in memory.

    Returns
    -------
    dask.array.Array
        ``image``'s dtype, spatial size ⌈H/stride⌉ × ⌈W/stride⌉.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp.dask as pd
    >>> img = da.from_array(np.random.default_rng(0).random((3, 32, 32)), chunks=(3, 10, 10))
    >>> out = pd.detail_preserving_pool(img, 3, stride=2, channel_axis=0)
    >>> out.shape, out.chunks[1]                      # boundaries moved onto the stride grid
    ((3, 16, 16), (5, 5, 5, 1))
    """
    fn = "pacnp.dask.detail_preserving_pool"
    numba_threads = _numba_threads(numba_threads, fn)
    image = _as_dask(fn, "image", image)
    plan = _filters.plan_detail_preserving_pool(
        image,
        kernel_size,
        stride=stride,
        alpha=alpha,
        lam=lam,
        border=border,
        channel_axis=channel_axis,
        spatial_dims=spatial_dims,
        fn=fn,
    )
    x, back = _canonical(plan, image)
    k = plan.kernel_sizes
    kw = plan.chunk_kwargs()
    axes = [
        _forward_axis(x.shape[2 + a], x.chunks[2 + a], s, r, r, h)
        for a, (s, r, h) in enumerate(zip(plan.strides, plan.radii, plan.halos))
    ]
    x = _spatial_rechunk(x, axes)

    def call(xb):
        return _filters.detail_preserving_pool(xb, k, **kw)

    out = _map(call, [x], ["in"], axes, (x.chunks[0], (x.shape[1],)), image.dtype, numba_threads)
    return back(out)


# --------------------------------------------------------------------------- CRF
def paccrf(
    unary,
    edge_feat,
    terms,
    *,
    num_steps,
    unary_weight=1.0,
    final_output="log_Q",
    logQ=None,
    numba_threads=None,
):
    """:func:`pacnp.crf.paccrf` (mean-field inference) on Dask arrays, chunk by chunk.

    Each mean-field step passes messages over every term's window, so after ``num_steps``
    steps a pixel depends on the pixels within ``num_steps · max_m dilation_m·(k_m − 1)/2``: that
    is the halo. Terms with ``blur > 1`` are not supported (their coarse grid is laid out from
    the whole image's size), nor precomputed ``kernels``.

    Parameters
    ----------
    unary : dask.array.Array
        ``(B, C, H, W)``.
    edge_feat : dask.array.Array, list of them (None for ``'na'`` terms)
        ``(B, F, H, W)``, as :func:`pacnp.crf.paccrf`.
    terms, num_steps, unary_weight, final_output
        As :func:`pacnp.crf.paccrf`.
    logQ : dask.array.Array or None
        Initial ``L_0``, ``unary``'s shape.
    numba_threads : int or None
        As :func:`pacconv2d_fused`.

    Returns
    -------
    dask.array.Array ``(B, C, H, W)``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import pacnp.dask as pd
    >>> from pacnp import crf
    >>> rng = np.random.default_rng(0)
    >>> unary = rng.standard_normal((1, 3, 32, 32))
    >>> feats = crf.create_YXRGB(rng.random((1, 3, 32, 32)), yx_scale=3.0, rgb_scale=0.2)
    >>> term = crf.PairwiseTerm("potts", filter=np.ones((1, 1, 3, 3)), weight=1.0)
    >>> lazy = pd.paccrf(da.from_array(unary, chunks=(1, 3, 16, 16)),
    ...                  da.from_array(feats, chunks=(1, 5, 16, 16)), [term], num_steps=2)
    >>> direct = crf.paccrf(unary, feats, [term], num_steps=2)
    >>> bool(np.allclose(lazy.compute(scheduler="sync"), direct))
    True
    """
    from . import crf

    fn = "pacnp.dask.paccrf"
    numba_threads = _numba_threads(numba_threads, fn)
    unary = _as_dask(fn, "unary", unary)
    if unary.ndim != 4 or 0 in unary.shape:
        raise ValueError(
            f"{fn}: unary must be a non-empty (B, C, H, W) array, got shape {unary.shape}"
        )
    for name, a in ([("logQ", logQ)] if logQ is not None else []) + [
        (f"edge_feat[{i}]" if isinstance(edge_feat, (list, tuple)) else "edge_feat", f)
        for i, f in enumerate(edge_feat if isinstance(edge_feat, (list, tuple)) else [edge_feat])
        if f is not None
    ]:
        a = _as_dask(fn, name, a)
        want = unary.shape if name == "logQ" else (unary.shape[0], "F") + unary.shape[2:]
        if (
            a.ndim != 4
            or a.shape[0] != unary.shape[0]
            or a.shape[2:] != unary.shape[2:]
            or (name == "logQ" and a.shape != unary.shape)
        ):
            raise ValueError(
                f"{fn}: {name} has shape {a.shape}; expected {want}, the "
                f"unary's batch and image size"
            )
    from .crf._checks import _check_positive_int, _check_reach, _check_steps

    steps = _check_steps(fn, num_steps)
    if isinstance(terms, (crf.PairwiseTerm, dict)):
        terms = [terms]
    if not isinstance(terms, (list, tuple)):
        raise TypeError(f"{fn}: terms must be a list of PairwiseTerm, got {type(terms).__name__}")
    reach = [0, 0]
    for i, t in enumerate(terms):
        if not isinstance(t, (crf.PairwiseTerm, dict)):
            raise TypeError(
                f"{fn}: terms[{i}] must be a PairwiseTerm (or a dict of its "
                f"fields), got {type(t).__name__}"
            )
        get = t.get if isinstance(t, dict) else functools.partial(getattr, t)
        b = _check_positive_int(fn, f"terms[{i}].blur", get("blur", 1))
        if b != 1:
            raise ValueError(
                f"{fn}: terms with blur > 1 are not supported on Dask arrays (the "
                f"coarse grid depends on the whole image's size); use blur=1"
            )
        dd = _check_positive_int(fn, f"terms[{i}].dilation", get("dilation", 1))
        shape = tuple(getattr(get("filter", None), "shape", ()))
        if len(shape) != 4:
            raise ValueError(
                f"{fn}: terms[{i}].filter must be a 4-D array (C or 1, C or 1, kh, "
                f"kw), got shape {shape}"
            )
        k = tuple(int(v) for v in shape[2:])
        _check_reach(fn, f"terms[{i}]", k, dd, 1)
        d = (dd, dd)
        for a in range(2):
            reach[a] = max(reach[a], d[a] * (k[a] - 1) // 2)
    halo = [steps * v for v in reach]
    # "same" zero padding and stride 1: output pixel = window centre
    plans = [
        _forward_axis(unary.shape[2 + a], unary.chunks[2 + a], 1, halo[a], halo[a], halo[a])
        for a in range(2)
    ]
    chunks = {1: -1, 2: plans[0].in_chunks, 3: plans[1].in_chunks}
    u = unary.rechunk(chunks)
    feats = edge_feat if isinstance(edge_feat, (list, tuple)) else [edge_feat]
    present = [f is not None for f in feats]
    arrays = [u] + [
        _as_dask(fn, "edge_feat", f).rechunk(chunks).rechunk({0: u.chunks[0]})
        for f in feats
        if f is not None
    ]
    with_logq = logQ is not None
    if with_logq:
        arrays.append(_as_dask(fn, "logQ", logQ).rechunk(chunks).rechunk({0: u.chunks[0]}))
    as_list = isinstance(edge_feat, (list, tuple))

    def call(ub, *rest):
        rest = list(rest)
        lq = rest.pop() if with_logq else None
        it = iter(rest)
        fb = [next(it) if has else None for has in present]
        return crf.paccrf(
            ub,
            fb if as_list else fb[0],
            terms,
            num_steps=steps,
            unary_weight=unary_weight,
            final_output=final_output,
            logQ=lq,
        )

    return _map(
        call,
        arrays,
        ["in"] * len(arrays),
        plans,
        (u.chunks[0], (u.shape[1],)),
        u.dtype,
        numba_threads,
    )
