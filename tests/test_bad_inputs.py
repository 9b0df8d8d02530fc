"""Generated bad input over every public function family (issue 14): pacnp's core functions,
``pacnp.filters``, ``pacnp.crf``, ``pacnp.torch`` (functional and layers), ``pacnp.jax`` and
``pacnp.dask``.

Each example takes one valid call and replaces one argument by something wrong — None, a wrong
kind (string, dict, object, complex, bool, list), a zero-size or wrongly shaped array, a wrong
dtype (int, complex, bool, object), a huge or negative int (2**31, 2**63, −1, 0), NaN or ±inf, a
bad option string ('average_99999', 'inv_x', '') — and asserts the contract:

* the call returns normally, or raises ValueError / TypeError / MemoryError;
* a ValueError / TypeError names the public function, and (for an option) the argument, or
  (for an array) one of the function's arguments;
* never another exception type (IndexError, AttributeError, ZeroDivisionError, OverflowError,
  numba's TypingError, SystemError, RuntimeError, JAX's or torch's own errors …);
* the caller's arrays are never modified;
* nothing huge is allocated before an error: the examples run under an address-space limit of
  the process's size after warm-up + ``HEADROOM`` (RLIMIT_AS, Linux), so a 32 GiB window or
  table fails fast with MemoryError — which the first bullet still has to be, and the pinned
  examples at the end must be ValueErrors raised before any allocation;
* no hang: small shapes, and every call has ``HANG_S`` seconds (SIGALRM; generous, because a
  first call may compile a kernel variant: hypothesis' own deadline would call that flaky).

The valid parts stay float32 (numba compiles no new signatures for this file). The last test
prints the number of calls per family (run with ``-s``) and writes them to the pytest temporary
directory (``bad_input_counts.txt``).
"""

from __future__ import annotations

import collections
import contextlib
import re
import signal
import sys

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pacnp  # noqa: E402
from pacnp import crf, filters  # noqa: E402

try:
    import resource
except ImportError:  # not on Windows: the allocation guard is then off
    resource = None

#: seconds a call may take before it counts as a hang (compiling a new variant included)
HANG_S = 120
#: address space the examples may add to the warmed-up process (allocations beyond it fail)
HEADROOM = 1 << 30
#: calls each family must have made for the suite to count (the issue's note gives the counts)
MIN_CALLS = 500
ALLOWED = (ValueError, TypeError, MemoryError)
COUNTS = collections.Counter()
RUN = set()

F32 = np.float32


def rng():
    return np.random.default_rng(14)


# --------------------------------------------------------------------------- bad values
NAN, INF = float("nan"), float("inf")
BAD_OPTIONS = [
    None,
    "abc",
    "",
    {},
    object(),
    1j,
    True,
    False,
    1.5,
    [1, 2, 3],
    (1,),
    (1, 0),
    (0, 1),
    (2**63, 1),
    2**31,
    2**31 + 1,
    2**63,
    -1,
    0,
    -(2**63),
    NAN,
    INF,
    -INF,
    np.int64(2**40),
    np.float32(NAN),
    "average_99999",
    "full_99999",
    "inv_x",
    "inv",
    "average_2",
    "gaussian_1",
    "inv_1_1_sym",
    "none ",
    b"gaussian",
]


def _np_variants(a):
    """Wrong versions of the NumPy array ``a``: dtype, shape, size, kind."""
    a = np.asarray(a)
    out = [
        None,
        "abc",
        3.0,
        a.tolist(),
        a.astype(np.int32),
        a.astype(np.complex64),
        a.astype(bool),
        a.astype(object),
        a.astype(np.float16),
        a.astype(np.uint8),
        a[None],
        np.zeros((2,) * 7, F32),
    ]
    if a.ndim:
        out += [
            a[0],
            a[..., :0],
            np.zeros((0,) + a.shape[1:], a.dtype),
            np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype),
            np.full(a.shape, np.nan, a.dtype),
            np.full(a.shape, np.inf, a.dtype),
        ]
    return out


def _torch_variants(t):
    import torch

    out = [
        None,
        "abc",
        3.0,
        t.numpy().copy(),
        t.to(torch.int32),
        t.to(torch.complex64),
        t.to(torch.bool),
        t.to(torch.float16),
        t[None],
    ]
    if t.dim():
        out += [
            t[0],
            t[..., :0],
            torch.zeros((0,) + tuple(t.shape[1:])),
            torch.zeros(tuple(t.shape[:-1]) + (t.shape[-1] + 1,)),
            torch.full(tuple(t.shape), float("nan")),
        ]
    return out


def _jax_variants(a):
    import jax.numpy as jnp

    out = [
        None,
        "abc",
        3.0,
        np.asarray(a).tolist(),
        a.astype(jnp.int32),
        a.astype(jnp.complex64),
        a.astype(bool),
        a.astype(jnp.float16),
        a[None],
    ]
    if a.ndim:
        out += [
            a[0],
            a[..., :0],
            jnp.zeros((0,) + tuple(a.shape[1:])),
            jnp.zeros(tuple(a.shape[:-1]) + (a.shape[-1] + 1,)),
            jnp.full(a.shape, jnp.nan),
        ]
    return out


def _dask_variants(a):
    import dask.array as da

    x = np.asarray(a)
    out = [
        None,
        "abc",
        x,
        da.from_array(x.astype(np.int32)),
        da.from_array(x.astype(complex)),
        a[None],
    ]
    if a.ndim:
        out += [
            a[0],
            a[..., :0],
            da.zeros((0,) + tuple(a.shape[1:]), dtype=F32),
            da.zeros(tuple(a.shape[:-1]) + (a.shape[-1] + 1,), dtype=F32),
        ]
    return out


# --------------------------------------------------------------------------- targets
class Target:
    """One valid call: ``call(**args)``; ``arrays``: the array arguments (corrupted with the
    family's array variants), ``options``: the others; ``names``: what a message may call the
    function; ``alias``: other names a message may use for an argument."""

    def __init__(self, name, call, args, arrays, options, names=None, alias=None):
        self.name, self.call, self.args = name, call, args
        self.arrays, self.options = tuple(arrays), tuple(options)
        self.names = tuple(names or (name,))
        self.alias = alias or {}

    def __repr__(self):
        return self.name


KERNEL_OPTS = (
    "kernel_type",
    "smooth_kernel_type",
    "inv_alpha",
    "inv_lambda",
    "channel_wise",
    "normalize_kernel",
)
GEOMETRY = ("stride", "padding", "dilation")


def core_targets():
    r = rng()
    x = r.random((2, 2, 5, 5), dtype=F32)
    g = r.random((2, 3, 5, 5), dtype=F32)
    w = r.random((3, 2, 3, 3), dtype=F32)
    wt = r.random((2, 3, 3, 3), dtype=F32)
    b = r.random(3, dtype=F32)
    mask = np.ones((2, 1, 5, 5), F32)
    K, _ = pacnp.packernel2d(g, 3, padding=1)
    gt = r.random((2, 3, 9, 9), dtype=F32)
    Kt, _ = pacnp.packernel2d(gt, 3, stride=2, padding=1, transposed=True)
    out = pacnp.pacconv2d(x, K, w, b, padding=1)
    outt = pacnp.pacconv_transpose2d(x, Kt, wt, stride=2, padding=1)
    pool = pacnp.pacpool2d(x, K, 3, padding=1)
    kopt = KERNEL_OPTS + GEOMETRY + ("kernel_size", "output_padding", "transposed", "needs")
    T = []
    T.append(
        Target(
            "packernel2d",
            pacnp.packernel2d,
            dict(guide=g, kernel_size=3, padding=1, mask=mask),
            ("guide", "mask"),
            kopt[:-1],
        )
    )
    T.append(
        Target(
            "packernel2d_backward",
            pacnp.packernel2d_backward,
            dict(grad_kernel=K, guide=g, kernel_size=3, padding=1),
            ("grad_kernel", "guide"),
            kopt,
        )
    )
    conv = dict(input=x, kernel=K, weight=w, bias=b, padding=1)
    T.append(
        Target(
            "pacconv2d",
            pacnp.pacconv2d,
            conv,
            ("input", "kernel", "weight", "bias"),
            GEOMETRY + ("shared_filters",),
        )
    )
    T.append(
        Target(
            "pacconv2d_backward",
            pacnp.pacconv2d_backward,
            dict(conv, grad_output=out),
            ("grad_output", "input", "kernel", "weight"),
            GEOMETRY + ("shared_filters", "needs"),
        )
    )
    tconv = dict(input=x, kernel=Kt, weight=wt, stride=2, padding=1)
    T.append(
        Target(
            "pacconv_transpose2d",
            pacnp.pacconv_transpose2d,
            tconv,
            ("input", "kernel", "weight"),
            GEOMETRY + ("output_padding", "shared_filters"),
        )
    )
    T.append(
        Target(
            "pacconv_transpose2d_backward",
            pacnp.pacconv_transpose2d_backward,
            dict(tconv, grad_output=outt),
            ("grad_output", "input", "kernel"),
            GEOMETRY + ("output_padding", "needs"),
        )
    )
    pl = dict(input=x, kernel=K, kernel_size=3, padding=1)
    T.append(
        Target("pacpool2d", pacnp.pacpool2d, pl, ("input", "kernel"), GEOMETRY + ("kernel_size",))
    )
    T.append(
        Target(
            "pacpool2d_backward",
            pacnp.pacpool2d_backward,
            dict(pl, grad_output=pool),
            ("grad_output", "input", "kernel"),
            GEOMETRY + ("kernel_size", "needs"),
        )
    )
    fused = dict(input=x, guide=g, weight=w, bias=b, padding=1, mask=mask)
    T.append(
        Target(
            "pacconv2d_fused",
            pacnp.pacconv2d_fused,
            fused,
            ("input", "guide", "weight", "bias", "mask"),
            GEOMETRY + KERNEL_OPTS + ("shared_filters",),
        )
    )
    T.append(
        Target(
            "pacconv2d_fused_backward",
            pacnp.pacconv2d_fused_backward,
            dict(fused, grad_output=out),
            ("grad_output", "input", "guide", "weight"),
            GEOMETRY + KERNEL_OPTS + ("needs",),
        )
    )
    tf = dict(input=x, guide=gt, weight=wt, stride=2, padding=1)
    T.append(
        Target(
            "pacconv_transpose2d_fused",
            pacnp.pacconv_transpose2d_fused,
            tf,
            ("input", "guide", "weight"),
            GEOMETRY + KERNEL_OPTS + ("output_padding",),
        )
    )
    pf = dict(input=x, guide=g, kernel_size=3, padding=1)
    T.append(
        Target(
            "pacpool2d_fused",
            pacnp.pacpool2d_fused,
            pf,
            ("input", "guide"),
            GEOMETRY + KERNEL_OPTS + ("kernel_size",),
        )
    )
    T.append(
        Target(
            "pacpool2d_fused_backward",
            pacnp.pacpool2d_fused_backward,
            dict(pf, grad_output=pool),
            ("grad_output", "input", "guide"),
            GEOMETRY + ("kernel_size", "needs", "smooth_kernel_type"),
        )
    )
    return T


def filter_targets():
    r = rng()
    img = r.random((6, 5, 3), dtype=F32)
    guide = r.random((6, 5), dtype=F32)
    low = r.random((3, 3), dtype=F32)
    hi = r.random((6, 6), dtype=F32)
    opts = ("sigma_spatial", "sigma_color", "radius", "border", "channel_axis")
    return [
        Target(
            "bilateral_filter",
            filters.bilateral_filter,
            dict(image=img, channel_axis=-1, radius=2),
            ("image",),
            opts,
        ),
        Target(
            "joint_bilateral_filter",
            filters.joint_bilateral_filter,
            dict(image=img, guide=guide, channel_axis=-1, radius=2),
            ("image", "guide"),
            opts + ("guide_channel_axis",),
        ),
        Target(
            "joint_bilateral_upsample",
            filters.joint_bilateral_upsample,
            dict(low=low, guide=hi, factor=2, confidence=np.ones((3, 3), F32)),
            ("low", "guide", "confidence"),
            opts + ("factor", "guide_channel_axis"),
        ),
        Target(
            "detail_preserving_pool",
            filters.detail_preserving_pool,
            dict(image=img, channel_axis=-1),
            ("image",),
            ("kernel_size", "stride", "alpha", "lam", "border", "channel_axis"),
        ),
    ]


def crf_targets():
    r = rng()
    U = r.random((1, 3, 5, 5), dtype=F32)
    feat = r.random((1, 2, 5, 5), dtype=F32)
    filt = np.full((1, 1, 3, 3), 0.1, F32)
    term = crf.PairwiseTerm("potts", filt, 1.0)
    P = r.random((3, 5, 5), dtype=F32)
    img = r.random((5, 5, 3), dtype=F32)

    def term_call(compat_type="potts", filter=filt, weight=1.0, dilation=1, blur=1, **kw):
        t = crf.PairwiseTerm(compat_type, filter, weight, None, dilation, blur)
        return crf.paccrf(U, feat, [t], num_steps=1, **kw)

    def model(
        channels=3,
        num_steps=1,
        final_output="log_Q",
        kernel_size=3,
        dilation=1,
        blur=1,
        compat_type="4d",
        pairwise_weight=1.0,
        unary=U,
        edge_feat=feat,
    ):
        m = crf.PacCRF(channels, num_steps, final_output, dtype=np.float32, seed=0)
        m.add_pairwise_kernel(
            kernel_size, dilation, blur, compat_type, pairwise_weight=pairwise_weight
        )
        return m(unary, edge_feat)

    K, _ = pacnp.packernel2d(feat, 3, padding=1)

    def given_kernel(kernel=K, **kw):
        return crf.paccrf(U, None, [term], num_steps=1, kernels=[kernel], **kw)

    run = dict(unary=U, edge_feat=feat, terms=[term], num_steps=1)
    return [
        Target(
            "paccrf",
            crf.paccrf,
            run,
            ("unary", "edge_feat", "logQ"),
            ("terms", "num_steps", "unary_weight", "final_output", "on_step"),
        ),
        Target(
            "paccrf_backward",
            crf.paccrf_backward,
            dict(run, grad_output=U),
            ("grad_output", "unary", "edge_feat"),
            ("num_steps", "needs", "final_output"),
        ),
        Target(
            "paccrf(term)",
            term_call,
            {},
            ("filter",),
            ("compat_type", "weight", "dilation", "blur"),
            names=("paccrf",),
            alias={
                "filter": ("terms[0]",),
                "weight": ("terms[0]",),
                "dilation": ("terms[0]",),
                "blur": ("terms[0]",),
                "compat_type": ("terms[0]",),
            },
        ),
        Target(
            "paccrf(kernels)",
            given_kernel,
            dict(kernel=K),
            ("kernel",),
            ("final_output", "unary_weight"),
            names=("paccrf",),
            alias={"kernel": ("kernels[0]",)},
        ),
        Target(
            "PacCRF",
            model,
            {},
            ("unary", "edge_feat"),
            (
                "channels",
                "num_steps",
                "final_output",
                "kernel_size",
                "dilation",
                "blur",
                "compat_type",
                "pairwise_weight",
            ),
            names=("PacCRF", "paccrf", "packernel2d"),
        ),
        Target(
            "crf_refine",
            crf.crf_refine,
            dict(probabilities=P, image=img, num_steps=1),
            ("probabilities", "image"),
            (
                "num_steps",
                "kernel_size",
                "dilation",
                "sigma_xy",
                "sigma_color",
                "weight",
                "smoothness_weight",
                "smoothness_kernel_size",
                "unary_weight",
                "blur",
                "channel_axis",
                "eps",
            ),
        ),
        Target(
            "create_YXRGB",
            crf.create_YXRGB,
            dict(img=P),
            ("img",),
            ("yx_scale", "rgb_scale", "scales"),
        ),
        Target(
            "create_position_feats",
            crf.create_position_feats,
            dict(shape=(3, 4)),
            (),
            ("shape", "scales", "bs"),
        ),
    ]


def torch_targets():
    import torch

    import pacnp.torch as pt

    g = torch.Generator().manual_seed(14)
    x = torch.rand(1, 2, 5, 5, generator=g)
    gd = torch.rand(1, 3, 5, 5, generator=g)
    gt = torch.rand(1, 3, 9, 9, generator=g)
    w = torch.rand(2, 2, 3, 3, generator=g)
    wt = torch.rand(2, 2, 3, 3, generator=g)
    K, _ = pt.packernel2d(gd, kernel_size=3, padding=1)
    geo = ("stride", "padding", "dilation")

    def layer(cls, ctor, inputs):
        def call(**kw):
            c = {k: kw.pop(k) for k in list(kw) if k in ctor}
            return cls(**{**ctor, **c})(**{**inputs, **kw})

        return call

    conv_ctor = dict(in_channels=2, out_channels=2, kernel_size=3, padding=1)
    tconv_ctor = dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1)
    pool_ctor = dict(kernel_size=3, padding=1)
    layer_opts = (
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "kernel_type",
        "smooth_kernel_type",
        "normalize_kernel",
        "shared_filters",
        "filler",
        "bias",
    )
    return [
        Target(
            "packernel2d",
            pt.packernel2d,
            dict(input=gd, kernel_size=3, padding=1),
            ("input",),
            geo + KERNEL_OPTS + ("kernel_size", "transposed"),
            alias={"input": ("guide",)},
        ),
        Target(
            "pacconv2d",
            pt.pacconv2d,
            dict(input=x, kernel=K, weight=w, padding=1),
            ("input", "kernel", "weight"),
            geo + ("shared_filters",),
        ),
        Target(
            "pacpool2d",
            pt.pacpool2d,
            dict(input=x, kernel=K, kernel_size=3, padding=1),
            ("input", "kernel"),
            geo + ("kernel_size",),
        ),
        Target(
            "pacconv2d_fused",
            pt.pacconv2d_fused,
            dict(input=x, guide=gd, weight=w, padding=1),
            ("input", "guide", "weight"),
            geo + KERNEL_OPTS + ("shared_filters",),
        ),
        Target(
            "pacconv_transpose2d_fused",
            pt.pacconv_transpose2d_fused,
            dict(input=x, guide=gt, weight=wt, stride=2, padding=1),
            ("input", "guide", "weight"),
            geo + ("output_padding", "kernel_type"),
        ),
        Target(
            "pacpool2d_fused",
            pt.pacpool2d_fused,
            dict(input=x, guide=gd, kernel_size=3, padding=1),
            ("input", "guide"),
            geo + KERNEL_OPTS + ("kernel_size",),
        ),
        Target(
            "PacConv2d",
            layer(pt.PacConv2d, conv_ctor, dict(input=x, guide=gd)),
            {},
            ("input", "guide"),
            layer_opts + ("in_channels", "out_channels"),
            names=("PacConv2d", "pacconv2d"),
        ),
        Target(
            "PacConvTranspose2d",
            layer(pt.PacConvTranspose2d, tconv_ctor, dict(input=x, guide=gt)),
            {},
            ("input", "guide"),
            layer_opts + ("output_padding",),
            names=("PacConvTranspose2d", "pacconv_transpose2d"),
        ),
        Target(
            "PacPool2d",
            layer(pt.PacPool2d, pool_ctor, dict(input=x, guide=gd)),
            {},
            ("input", "guide"),
            (
                "kernel_size",
                "stride",
                "padding",
                "dilation",
                "kernel_type",
                "smooth_kernel_type",
                "normalize_kernel",
            ),
            names=("PacPool2d", "pacpool2d"),
        ),
    ]


def jax_targets():
    import jax.numpy as jnp

    import pacnp.jax as pj

    r = rng()
    x = jnp.asarray(r.random((1, 2, 5, 5), dtype=F32))
    g = jnp.asarray(r.random((1, 3, 5, 5), dtype=F32))
    gt = jnp.asarray(r.random((1, 3, 9, 9), dtype=F32))
    w = jnp.asarray(r.random((2, 2, 3, 3), dtype=F32))
    K, _ = pj.packernel2d(g, 3, padding=1)
    geo = ("stride", "padding", "dilation")
    return [
        Target(
            "packernel2d",
            pj.packernel2d,
            dict(guide=g, kernel_size=3, padding=1),
            ("guide",),
            geo + KERNEL_OPTS + ("kernel_size", "transposed"),
        ),
        Target(
            "pacconv2d",
            pj.pacconv2d,
            dict(input=x, kernel=K, weight=w, padding=1),
            ("input", "kernel", "weight"),
            geo + ("shared_filters",),
        ),
        Target(
            "pacpool2d",
            pj.pacpool2d,
            dict(input=x, kernel=K, kernel_size=3, padding=1),
            ("input", "kernel"),
            geo + ("kernel_size",),
        ),
        Target(
            "pacconv2d_fused",
            pj.pacconv2d_fused,
            dict(input=x, guide=g, weight=w, padding=1),
            ("input", "guide", "weight"),
            geo + KERNEL_OPTS + ("shared_filters",),
        ),
        Target(
            "pacconv_transpose2d_fused",
            pj.pacconv_transpose2d_fused,
            dict(input=x, guide=gt, weight=w, stride=2, padding=1),
            ("input", "guide", "weight"),
            geo + ("output_padding", "kernel_type"),
        ),
        Target(
            "pacpool2d_fused",
            pj.pacpool2d_fused,
            dict(input=x, guide=g, kernel_size=3, padding=1),
            ("input", "guide"),
            geo + KERNEL_OPTS + ("kernel_size",),
        ),
    ]


def dask_targets():
    import dask.array as da

    import pacnp.dask as pd

    r = rng()
    x = da.from_array(r.random((2, 2, 6, 6), dtype=F32), chunks=(1, 2, 3, 3))
    g = da.from_array(r.random((2, 3, 6, 6), dtype=F32), chunks=(1, 3, 3, 3))
    w = r.random((2, 2, 3, 3), dtype=F32)
    img = da.from_array(r.random((6, 6), dtype=F32), chunks=3)
    low = da.from_array(r.random((3, 3), dtype=F32), chunks=2)
    hi = da.from_array(r.random((6, 6), dtype=F32), chunks=3)
    U = da.from_array(r.random((1, 2, 6, 6), dtype=F32), chunks=(1, 2, 3, 3))
    feat = da.from_array(r.random((1, 2, 6, 6), dtype=F32), chunks=(1, 2, 3, 3))
    term = crf.PairwiseTerm("potts", np.full((1, 1, 3, 3), 0.1, F32), 1.0)
    geo = ("stride", "padding", "dilation", "numba_threads")
    fopts = ("sigma_spatial", "sigma_color", "radius", "border", "numba_threads")
    return [
        Target(
            "pacconv2d_fused",
            pd.pacconv2d_fused,
            dict(input=x, guide=g, weight=w, padding=1),
            ("input", "guide", "weight"),
            geo + KERNEL_OPTS + ("shared_filters",),
        ),
        Target(
            "pacpool2d_fused",
            pd.pacpool2d_fused,
            dict(input=x, guide=g, kernel_size=3, padding=1),
            ("input", "guide"),
            geo + KERNEL_OPTS + ("kernel_size",),
        ),
        Target(
            "pacconv_transpose2d_fused",
            pd.pacconv_transpose2d_fused,
            dict(
                input=x,
                guide=da.zeros((2, 3, 11, 11), dtype=F32, chunks=6),
                weight=w,
                stride=2,
                padding=1,
            ),
            ("input", "guide"),
            geo + ("output_padding",),
        ),
        Target(
            "bilateral_filter", pd.bilateral_filter, dict(image=img, radius=1), ("image",), fopts
        ),
        Target(
            "joint_bilateral_filter",
            pd.joint_bilateral_filter,
            dict(image=img, guide=img, radius=1),
            ("image", "guide"),
            fopts + ("guide_channel_axis", "channel_axis"),
        ),
        Target(
            "joint_bilateral_upsample",
            pd.joint_bilateral_upsample,
            dict(low=low, guide=hi, factor=2),
            ("low", "guide"),
            fopts + ("factor",),
        ),
        Target(
            "detail_preserving_pool",
            pd.detail_preserving_pool,
            dict(image=img),
            ("image",),
            ("kernel_size", "stride", "alpha", "lam", "border"),
        ),
        Target(
            "paccrf",
            pd.paccrf,
            dict(unary=U, edge_feat=feat, terms=[term], num_steps=1),
            ("unary", "edge_feat"),
            ("num_steps", "terms", "final_output", "numba_threads"),
        ),
    ]


FAMILIES = {
    "core": (core_targets, _np_variants),
    "filters": (filter_targets, _np_variants),
    "crf": (crf_targets, _np_variants),
    "torch": (torch_targets, _torch_variants),
    "jax": (jax_targets, _jax_variants),
    "dask": (dask_targets, _dask_variants),
}
NEEDS = {"torch": "torch", "jax": "jax", "dask": "dask.array"}


@pytest.fixture(scope="module")
def targets():
    """Every family's targets (built once), after one valid call of each: numba, JAX and
    torch have compiled and started their threads before the allocation guard goes on."""
    out = {}
    for fam, (make, variants) in FAMILIES.items():
        if fam in NEEDS:
            try:
                __import__(NEEDS[fam])
            except ImportError:
                continue
        out[fam] = (make(), variants)
        for t in out[fam][0]:
            _compute(fam, t.call(**dict(t.args)))
    return out


def _compute(fam, result):
    """Dask results are lazy: compute them, so errors of the tasks count too."""
    if fam == "dask":
        import dask

        leaves = [a for a in (result if isinstance(result, tuple) else (result,)) if a is not None]
        dask.compute(*leaves, scheduler="synchronous")
    return result


class Hang(Exception):
    pass


@contextlib.contextmanager
def hang_guard():
    """SIGALRM after HANG_S seconds: a call that does not come back fails as a hang."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise Hang(f"no result after {HANG_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def allocation_guard():
    """RLIMIT_AS at the process's current size + HEADROOM: an allocation of gigabytes fails at
    once (MemoryError) instead of swapping or being killed. Restored afterwards."""
    if resource is None or not sys.platform.startswith("linux"):
        yield
        return
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------- the checks
def _snapshot(v):
    """A copy of every array inside ``v`` (NumPy, torch; JAX and Dask arrays are immutable)."""
    if isinstance(v, np.ndarray):
        return v.copy()
    if type(v).__module__.startswith("torch"):
        return v.clone()
    return None


def _same(a, b):
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            return all(x is y or x == y for x, y in zip(a.ravel(), b.ravel()))
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    import torch

    return torch.equal(a, b) or bool(
        torch.isnan(a).eq(torch.isnan(b)).all()
        and torch.nan_to_num(a).eq(torch.nan_to_num(b)).all()
    )


def _named(msg, names):
    return any(
        re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg) or n in msg
        for n in names
    )


def check_call(fam, target, arg, value):
    """Call ``target`` with ``arg`` replaced by ``value``; assert the contract."""
    kwargs = dict(target.args)
    kwargs[arg] = value
    before = {k: _snapshot(v) for k, v in kwargs.items()}
    COUNTS[fam] += 1
    try:
        with hang_guard(), allocation_guard():
            _compute(fam, target.call(**kwargs))
    except ALLOWED as exc:
        msg = str(exc)
        if not isinstance(exc, MemoryError):
            assert _named(msg, target.names), (
                f"{fam}.{target.name}({arg}={value!r}): {type(exc).__name__} does not name "
                f"the function: {msg!r}"
            )
            # the argument itself; or, when a (possibly valid) value makes the arrays
            # disagree, the array whose shape no longer fits
            arrays = target.arrays + tuple(k for k, v in target.args.items() if hasattr(v, "shape"))
            wanted = (arg,) + tuple(target.alias.get(arg, ())) + arrays
            for a in arrays:
                wanted += tuple(target.alias.get(a, ()))
            assert _named(msg, wanted), (
                f"{fam}.{target.name}({arg}={value!r}): {type(exc).__name__} names none of "
                f"{wanted}: {msg!r}"
            )
    except Exception as exc:  # noqa: BLE001 — any other type is the defect this suite hunts
        raise AssertionError(
            f"{fam}.{target.name}({arg}={value!r}) raised {type(exc).__module__}."
            f"{type(exc).__name__}: {str(exc)[:400]}"
        ) from exc
    for k, v in before.items():
        if v is not None:
            assert _same(kwargs[k], v), f"{fam}.{target.name}({arg}={value!r}) modified {k}"


def _family_test(fam, targets, data):
    if fam not in targets:
        pytest.skip(f"{NEEDS[fam]} is not installed")
    ts, variants = targets[fam]
    RUN.add(fam)
    t = data.draw(st.sampled_from(ts), label="target")
    names = t.arrays + t.options
    arg = data.draw(st.sampled_from(names), label="argument")
    if arg in t.arrays:
        base = t.args.get(arg)
        pool = variants(base) if base is not None else [None, "abc", np.zeros(3, F32)]
        pool = pool + [None]
    else:
        pool = BAD_OPTIONS
    value = data.draw(st.sampled_from(pool), label="value")
    check_call(fam, t, arg, value)


SETTINGS = dict(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@settings(max_examples=4000, **SETTINGS)
@given(data=st.data())
def test_core(targets, data):
    _family_test("core", targets, data)


@settings(max_examples=2000, **SETTINGS)
@given(data=st.data())
def test_filters(targets, data):
    _family_test("filters", targets, data)


@settings(max_examples=2000, **SETTINGS)
@given(data=st.data())
def test_crf(targets, data):
    _family_test("crf", targets, data)


@settings(max_examples=2000, **SETTINGS)
@given(data=st.data())
def test_torch(targets, data):
    _family_test("torch", targets, data)


@settings(max_examples=1200, **SETTINGS)
@given(data=st.data())
def test_jax(targets, data):
    _family_test("jax", targets, data)


@settings(max_examples=1000, **SETTINGS)
@given(data=st.data())
def test_dask(targets, data):
    _family_test("dask", targets, data)


def test_allocation_guard_fails_fast():
    """The guard the examples run under turns a 2 GiB allocation into a MemoryError."""
    if resource is None or not sys.platform.startswith("linux"):
        pytest.skip("RLIMIT_AS is Linux-only")
    with allocation_guard(), pytest.raises(MemoryError):
        np.ones(1 << 31, np.uint8)
    assert np.ones(1 << 20, np.uint8).sum() == 1 << 20  # and is lifted afterwards


# --------------------------------------------------------------------------- pinned examples
# The instances issue 14 lists: each a ValueError or TypeError naming function and argument,
# raised before anything of the absurd size is allocated (under the guard a 32 GiB allocation
# would be a MemoryError, which these do not accept).
def _g():
    return np.random.default_rng(0).random((1, 2, 5, 5), dtype=F32)


def _w():
    return np.ones((2, 2, 3, 3), F32)


PINNED = [
    (
        "zero-size batch",
        lambda: pacnp.pacconv2d_fused(
            np.zeros((0, 2, 5, 5), F32), np.zeros((0, 2, 5, 5), F32), _w()
        ),
        None,
        None,
    ),
    (
        "stride 2**63",
        lambda: pacnp.pacconv2d_fused(_g(), _g(), _w(), stride=2**63),
        ValueError,
        "stride",
    ),
    (
        "padding 2**31",
        lambda: pacnp.pacconv2d_fused(_g(), _g(), _w(), padding=2**31),
        ValueError,
        "padding",
    ),
    (
        "padding 2**31 - 1",
        lambda: pacnp.pacconv2d_fused(_g(), _g(), _w(), padding=2**31 - 1),
        ValueError,
        "padding",
    ),
    (
        "kernel_size 2**32 + 1",
        lambda: pacnp.packernel2d(_g(), 2**32 + 1, padding=2**31),
        ValueError,
        "kernel_size",
    ),
    (
        "average_99999",
        lambda: pacnp.packernel2d(_g(), 3, smooth_kernel_type="average_99999"),
        ValueError,
        "smooth_kernel_type",
    ),
    (
        "radius 2**31 + 1",
        lambda: filters.bilateral_filter(np.ones((6, 4), F32), radius=2**31 + 1),
        ValueError,
        "radius",
    ),
    (
        "sigma_spatial 2**31",
        lambda: filters.bilateral_filter(np.ones((6, 4), F32), sigma_spatial=2**31),
        ValueError,
        "sigma_spatial",
    ),
    (
        "detail_preserving_pool kernel_size 2**31 + 1",
        lambda: filters.detail_preserving_pool(np.ones((6, 4), F32), 2**31 + 1),
        ValueError,
        "kernel_size",
    ),
    (
        "guide_channel_axis=-9",
        lambda: filters.joint_bilateral_filter(
            np.ones((6, 4, 3), F32), np.ones((6, 4, 3), F32), channel_axis=-1, guide_channel_axis=-9
        ),
        ValueError,
        "guide_channel_axis",
    ),
    (
        "create_YXRGB yx_scale=0",
        lambda: crf.create_YXRGB(np.ones((3, 4, 4), F32), yx_scale=0),
        ValueError,
        "create_YXRGB: yx_scale",
    ),
    (
        "crf_refine num_steps=1j",
        lambda: crf.crf_refine(np.ones((2, 4, 4), F32), np.ones((4, 4, 3), F32), num_steps=1j),
        ValueError,
        "crf_refine: num_steps",
    ),
    (
        "pacconv2d kernel None",
        lambda: pacnp.pacconv2d(_g(), None, _w()),
        TypeError,
        "pacconv2d: kernel",
    ),
    (
        "confidence shape",
        lambda: filters.joint_bilateral_upsample(
            np.ones((3, 2), F32), np.ones((6, 4), F32), 2, confidence=np.ones((2, 3), F32)
        ),
        ValueError,
        "confidence",
    ),
    (
        "pacpool2d_fused guide resolution",
        lambda: pacnp.pacpool2d_fused(_g(), np.ones((1, 2, 10, 10), F32), 3, padding=1),
        ValueError,
        "guide",
    ),
    (
        "create_position_feats bs=1.5",
        lambda: crf.create_position_feats((3, 3), bs=1.5),
        TypeError,
        "bs",
    ),
    (
        "create_position_feats scales=nan",
        lambda: crf.create_position_feats((3, 3), scales=NAN),
        ValueError,
        "scales",
    ),
]


@pytest.mark.parametrize("label, call, exc, words", PINNED, ids=[p[0] for p in PINNED])
def test_issue_14_instances(label, call, exc, words):
    with allocation_guard():
        if exc is None:
            call()  # returns normally
            return
        with pytest.raises(exc) as info:
            call()
    assert words in str(info.value), str(info.value)


def test_adapter_instances():
    """The adapters' instances: the JAX and Dask wrappers validate as the core does, with the
    same messages; torch refuses shared_filters=None."""
    g = _g()
    msgs = []
    with pytest.raises(ValueError) as info:
        pacnp.packernel2d(g, 4)
    msgs.append(str(info.value))
    jax = pytest.importorskip("jax")
    import pacnp.jax as pj

    with pytest.raises(ValueError) as info:
        pj.packernel2d(jax.numpy.asarray(g), 4)
    assert str(info.value) == msgs[0]
    with pytest.raises(ValueError, match=r"^pacconv2d_fused: stride"):
        pj.pacconv2d_fused(
            jax.numpy.asarray(g), jax.numpy.asarray(g), jax.numpy.asarray(_w()), stride=0
        )
    da = pytest.importorskip("dask.array")
    import pacnp.dask as pd

    with pytest.raises(ValueError, match=r"^pacnp\.dask\.pacconv2d_fused: stride"):
        pd.pacconv2d_fused(da.from_array(g), da.from_array(g), _w(), stride=(1, 0))
    torch = pytest.importorskip("torch")
    import pacnp.torch as pt

    t = torch.from_numpy(g)
    with pytest.raises(TypeError, match="shared_filters"):
        pt.pacconv2d_fused(t, t, torch.from_numpy(_w()), shared_filters=None)


# --------------------------------------------------------------------------- the counts
def test_counts(tmp_path_factory):
    """Every family that ran made at least MIN_CALLS calls; the table goes to stdout (-s) and
    to ``bad_input_counts.txt`` in the pytest temporary directory."""
    if not RUN:
        pytest.skip("no family test ran in this session (select them with the counts)")
    lines = [f"{fam:8s} {COUNTS[fam]:6d}" for fam in FAMILIES if fam in RUN]
    lines.append(f"{'total':8s} {sum(COUNTS[f] for f in RUN):6d}")
    table = "generated bad-input calls per family\n" + "\n".join(lines)
    print("\n" + table)
    (tmp_path_factory.getbasetemp() / "bad_input_counts.txt").write_text(table + "\n")
    for fam in RUN:
        assert COUNTS[fam] >= MIN_CALLS, (fam, COUNTS[fam])
