"""JAX adapter: pacnp's kernels as differentiable JAX functions (``jax.custom_vjp``).

Each function runs pacnp's public forward through ``jax.pure_callback`` and registers pacnp's
public backward as its VJP, so it works eagerly, under ``jax.jit``, ``jax.grad`` / ``jax.vjp``
and (one call per batch element) ``jax.vmap``. The callback hands pacnp NumPy views of JAX's CPU
buffers (no copy on the way in); ``pure_callback`` copies the results into JAX's buffers once.

Signatures are pacnp's (``docs/semantics.md``): arrays positional, options keyword-only, the
geometry and kernel options static (Python values; they select the computation). ``inv_alpha`` /
``inv_lambda`` may be Python numbers (static, not differentiated) or arrays (differentiated).
Validation is pacnp's own; an error raised inside the callback reaches the caller as a
``jax.errors.JaxRuntimeError`` whose message contains pacnp's message. float16/bfloat16 inputs
are computed in float32 and the result cast back. Float64 needs ``jax_enable_x64``.

The ``1d`` and ``3d`` functions are the ``2d`` ones with one and three spatial axes (layout
N, C, *S). Each public function is a thin name over one private function of the number of
spatial axes ``nd``; the custom_vjp functions built from the static options read ``nd`` as the
length of the geometry tuples and call pacnp's function for that many axes.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from . import _adapt, _api

__all__ = [
    "packernel1d",
    "packernel2d",
    "packernel3d",
    "pacconv1d",
    "pacconv2d",
    "pacconv3d",
    "pacconv_transpose1d",
    "pacconv_transpose2d",
    "pacconv_transpose3d",
    "pacpool1d",
    "pacpool2d",
    "pacpool3d",
    "pacconv1d_fused",
    "pacconv2d_fused",
    "pacconv3d_fused",
    "pacconv_transpose1d_fused",
    "pacconv_transpose2d_fused",
    "pacconv_transpose3d_fused",
    "pacpool1d_fused",
    "pacpool2d_fused",
    "pacpool3d_fused",
]

_REDUCED = (jnp.float16, jnp.bfloat16)


def _call(fn, specs, *args):
    """Run the pacnp function ``fn`` on NumPy views of ``args``; results as ``specs``.

    ``fn`` returns a tuple of arrays or Nones; the Nones (outputs not asked for, or not
    differentiable) are dropped here, and ``specs`` lists only the others.
    """

    def host(*arrays):
        out = [np.asarray(a) for a in fn(*arrays) if a is not None]
        return tuple(out)

    return jax.pure_callback(host, tuple(specs), *args, vmap_method="sequential")


def _spec(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _up(a):
    if a is None:
        return None
    a = jnp.asarray(a)
    return a.astype(jnp.float32) if a.dtype in _REDUCED else a


def _down(out, like):
    return out.astype(like.dtype) if like.dtype in _REDUCED else out


def _static_param(v):
    """α/λ: a Python number is static (hashable); an array is a differentiable argument."""
    if v is None or isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
        return v, None
    return None, _up(v)


def _zeros_or(g, like):
    """A cotangent for every array argument: pacnp's gradient, or zeros where pacnp says None
    (not differentiable, e.g. α/λ with ``_fixed``); None for absent arguments."""
    if like is None:
        return None
    return jnp.zeros_like(like) if g is None else g


# --------------------------------------------------------------------------- packernel
@functools.cache
def _kernel_fn(static):
    """The custom_vjp function of ``packernel{nd}d`` for one set of static options."""
    opts = dict(static)
    k_alpha, k_lambda = opts.pop("inv_alpha"), opts.pop("inv_lambda")
    geo = {name: opts.pop(name) for name in _adapt.GEOMETRY}
    kernel_size = geo.pop("kernel_size")
    nd = len(kernel_size)
    forward_fn = _adapt.function("packernel{}d", kernel_size)
    backward_fn = _adapt.function("packernel{}d_backward", kernel_size)

    def kw(smooth_kernel, inv_alpha, inv_lambda, mask):
        return dict(
            geo,
            **opts,
            smooth_kernel=smooth_kernel,
            mask=mask,
            inv_alpha=k_alpha if inv_alpha is None else inv_alpha,
            inv_lambda=k_lambda if inv_lambda is None else inv_lambda,
        )

    def forward(guide, mask, smooth_kernel, inv_alpha, inv_lambda):
        shape = _adapt.kernel_shape(
            guide.shape,
            kernel_size,
            geo["stride"],
            geo["padding"],
            geo["dilation"],
            opts["channel_wise"],
            opts["transposed"],
        )
        specs = [_spec(shape, guide.dtype)]
        if mask is not None:
            specs.append(_spec((shape[0], 1) + shape[-nd:], guide.dtype))

        def host(g, m, s, a, lam):
            return forward_fn(g, kernel_size, **kw(s, a, lam, m))

        out = _call(host, specs, guide, mask, smooth_kernel, inv_alpha, inv_lambda)
        return out[0], (out[1] if mask is not None else None)

    f = jax.custom_vjp(forward)

    def fwd(guide, mask, smooth_kernel, inv_alpha, inv_lambda):
        res = (guide, mask, smooth_kernel, inv_alpha, inv_lambda)
        return forward(*res), res

    def bwd(res, cts):
        guide, mask, smooth_kernel, inv_alpha, inv_lambda = res
        grad_K = cts[0]
        # pacnp's order: (guide, inv_alpha, inv_lambda, smooth_kernel)
        likes = (guide, inv_alpha, inv_lambda, smooth_kernel)
        needs = tuple(a is not None for a in likes)

        def host(gk, g, m, s, a, lam):
            grads = backward_fn(gk, g, kernel_size, needs=needs, **kw(s, a, lam, m))
            return tuple(_host_fill(grads, (g, a, lam, s), needs))

        out = iter(
            _call(
                host,
                [_spec(a.shape, a.dtype) for a in likes if a is not None],
                grad_K,
                guide,
                mask,
                smooth_kernel,
                inv_alpha,
                inv_lambda,
            )
        )
        d_guide, d_alpha, d_lambda, d_smooth = (next(out) if a is not None else None for a in likes)
        d_mask = None if mask is None else jnp.zeros_like(mask)
        return d_guide, d_mask, d_smooth, d_alpha, d_lambda

    f.defvjp(fwd, bwd)
    return f


def _host_fill(grads, likes, needs):
    """On the host: pacnp's gradients of the needed inputs, zeros where pacnp gave None."""
    return [
        np.zeros_like(like) if g is None else g
        for g, like, need in zip(grads, likes, needs)
        if need
    ]


def _kernel_static(
    fn,
    nd,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    kernel_type,
    smooth_kernel_type,
    inv_alpha,
    inv_lambda,
    channel_wise,
    normalize_kernel,
    transposed=False,
):
    geo = _adapt.tuples(
        fn,
        nd,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    return dict(
        {k: tuple(v) for k, v in geo.items()},
        kernel_type=kernel_type,
        smooth_kernel_type=smooth_kernel_type,
        inv_alpha=inv_alpha,
        inv_lambda=inv_lambda,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        transposed=transposed,
    )


def _mask(mask, like):
    # a 0/1 mask in the compute dtype: a float primal gets an ordinary (zero) cotangent
    return None if mask is None else jnp.asarray(mask).astype(like.dtype)


def _c(a):
    return _adapt.checkable(a, _REDUCED)


def _packernel(
    nd,
    fn,
    guide,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    kernel_type,
    smooth_kernel_type,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    channel_wise,
    normalize_kernel,
    mask,
    transposed,
):
    skt, sk = _adapt.smooth_for_pacnp(smooth_kernel_type, smooth_kernel)
    _api.check_packernel2d(  # pacnp's own checks and messages, before JAX sees anything
        _c(guide),
        kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        kernel_type=kernel_type,
        smooth_kernel_type=skt,
        smooth_kernel=_c(sk),
        inv_alpha=_c(inv_alpha),
        inv_lambda=_c(inv_lambda),
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=_c(mask),
        transposed=transposed,
        fn=fn,
        nd=nd,
    )
    g = _up(guide)
    a_static, a_arr = _static_param(inv_alpha)
    l_static, l_arr = _static_param(inv_lambda)
    skt, sk = _adapt.smooth_for_pacnp(smooth_kernel_type, _up(smooth_kernel))
    static = _kernel_static(
        fn,
        nd,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        kernel_type,
        skt,
        a_static,
        l_static,
        channel_wise,
        normalize_kernel,
        transposed,
    )
    K, out_mask = _kernel_fn(tuple(static.items()))(g, _mask(mask, g), sk, a_arr, l_arr)
    return _down(K, jnp.asarray(guide)), out_mask


def packernel2d(
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
    transposed=False,
):
    """:func:`pacnp.packernel2d` for JAX arrays, differentiable in ``guide``, array
    ``inv_alpha`` / ``inv_lambda`` and ``smooth_kernel``.

    Returns
    -------
    (K, output_mask or None)
        K is (B, 1 or Cg, kh, kw, Ho, Wo); see :func:`pacnp.packernel2d`.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> guide = jax.random.uniform(jax.random.PRNGKey(0), (1, 3, 8, 8))
    >>> K, mask = pj.packernel2d(guide, 3, padding=1)
    >>> K.shape, K.dtype, mask
    ((1, 1, 3, 3, 8, 8), dtype('float32'), None)
    >>> g = jax.grad(lambda f: pj.packernel2d(f, 3, padding=1)[0].sum())(guide)
    >>> g.shape
    (1, 3, 8, 8)
    """
    return _packernel(
        2,
        "packernel2d",
        guide,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
        transposed,
    )


# --------------------------------------------------------------------------- two-step ops
_OP_NAMES = {"conv": "pacconv{}d", "transpose": "pacconv_transpose{}d", "pool": "pacpool{}d"}


@functools.cache
def _op_fn(op, static):
    """The custom_vjp function of one two-step op for one set of static options."""
    opts = dict(static)
    kernel_size = opts.pop("kernel_size")
    forward_fn = _adapt.function(_OP_NAMES[op], kernel_size)
    backward_fn = _adapt.function(_OP_NAMES[op] + "_backward", kernel_size)
    output_padding = opts.pop("output_padding")
    shared_filters = opts.pop("shared_filters")
    if op == "transpose":
        opts["output_padding"] = output_padding
    if op != "pool":
        opts["shared_filters"] = shared_filters
    pool = op == "pool"
    pos = (kernel_size,) if pool else ()

    def arrays(x, k, w, b):
        return (x, k) if pool else (x, k, w, b)

    def forward(x, k, w, b):
        hw = _adapt.op_out_hw(
            op,
            x.shape[2:],
            kernel_size,
            opts["stride"],
            opts["padding"],
            output_padding,
            opts["dilation"],
        )
        c = _adapt.op_out_channels(op, x.shape[1], None if w is None else w.shape, shared_filters)
        return _call(
            lambda *a: (forward_fn(*a, *pos, **opts),),
            [_spec((x.shape[0], c) + tuple(hw), x.dtype)],
            *arrays(x, k, w, b),
        )[0]

    f = jax.custom_vjp(forward)

    def fwd(x, k, w, b):
        return forward(x, k, w, b), (x, k, w, b)

    def bwd(res, grad):
        likes = arrays(*res)
        needs = tuple(a is not None for a in likes)

        def host(g, *a):
            grads = backward_fn(g, *a, *pos, needs=needs, **opts)
            return tuple(_host_fill(grads, a, needs))

        out = iter(
            _call(host, [_spec(a.shape, a.dtype) for a in likes if a is not None], grad, *likes)
        )
        grads = tuple(next(out) if a is not None else None for a in likes)
        return grads + (None, None) if pool else grads

    f.defvjp(fwd, bwd)
    return f


def _op(
    nd,
    fn,
    op,
    input,
    kernel,
    weight,
    bias,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
):
    _api.check_op(
        fn,
        op,
        _c(input),
        _c(kernel),
        _c(weight),
        _c(bias),
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        shared_filters=shared_filters,
        nd=nd,
    )
    x = jnp.asarray(input)
    if op != "pool":
        weight = jnp.asarray(weight)
        kernel_size = tuple(weight.shape[-nd:]) if weight.ndim >= nd else 1
    geo = _adapt.tuples(
        fn,
        nd,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    static = tuple({k: tuple(v) for k, v in geo.items()}.items()) + (
        ("shared_filters", shared_filters),
    )
    out = _op_fn(op, static)(_up(x), _up(kernel), _up(weight), _up(bias))
    return _down(out, x)


def pacconv2d(
    input, kernel, weight, bias=None, *, stride=1, padding=0, dilation=1, shared_filters=False
):
    """:func:`pacnp.pacconv2d` for JAX arrays; differentiable in every array argument.

    Parameters
    ----------
    *arrays, **options
        As :func:`pacnp.pacconv2d`: jax.Array arguments (CPU); geometry and
        kernel options are static Python values.

    Returns
    -------
    Array (B, C_out, Ho, Wo)

    Raises
    ------
    jax.errors.JaxRuntimeError
        Carrying pacnp's ``TypeError`` / ``ValueError`` message when an argument is wrong
        (the error is raised inside the host callback).

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> x, guide = jnp.ones((1, 2, 8, 8)), jnp.zeros((1, 1, 8, 8))
    >>> K, _ = pj.packernel2d(guide, 3, padding=1)
    >>> pj.pacconv2d(x, K, jnp.ones((4, 2, 3, 3)), padding=1).shape
    (1, 4, 8, 8)
    >>> dw = jax.grad(lambda w: pj.pacconv2d(x, K, w, padding=1).sum())(jnp.ones((4, 2, 3, 3)))
    >>> dw.shape
    (4, 2, 3, 3)
    """
    return _op(
        2,
        "pacconv2d",
        "conv",
        input,
        kernel,
        weight,
        bias,
        None,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
    )


def pacconv_transpose2d(
    input,
    kernel,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
):
    """:func:`pacnp.pacconv_transpose2d` for JAX arrays (weights in ``conv_transpose``
    orientation, (C_in, C_out, kh, kw)); differentiable in every array argument.

    Parameters
    ----------
    *arrays, **options
        As :func:`pacnp.pacconv_transpose2d`: jax.Array arguments (CPU); geometry and
        kernel options are static Python values.

    Returns
    -------
    Array (B, C_out, Ho, Wo)

    Raises
    ------
    jax.errors.JaxRuntimeError
        Carrying pacnp's ``TypeError`` / ``ValueError`` message when an argument is wrong
        (the error is raised inside the host callback).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel2d(jnp.zeros((1, 1, 8, 8)), 3, stride=2, padding=1,
    ...                       output_padding=1, transposed=True)
    >>> pj.pacconv_transpose2d(jnp.ones((1, 2, 4, 4)), K, jnp.ones((2, 3, 3, 3)), stride=2,
    ...                        padding=1, output_padding=1).shape
    (1, 3, 8, 8)
    """
    return _op(
        2,
        "pacconv_transpose2d",
        "transpose",
        input,
        kernel,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
    )


def pacpool2d(input, kernel, kernel_size, *, stride=1, padding=0, dilation=1):
    """:func:`pacnp.pacpool2d` for JAX arrays; differentiable in ``input`` and ``kernel``.

    Parameters
    ----------
    *arrays, **options
        As :func:`pacnp.pacpool2d`: jax.Array arguments (CPU); geometry and
        kernel options are static Python values.

    Returns
    -------
    Array (B, C, Ho, Wo)

    Raises
    ------
    jax.errors.JaxRuntimeError
        Carrying pacnp's ``TypeError`` / ``ValueError`` message when an argument is wrong
        (the error is raised inside the host callback).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel2d(jnp.zeros((1, 1, 4, 4)), 3, stride=2, padding=1,
    ...                       normalize_kernel=True)
    >>> pj.pacpool2d(jnp.arange(16.0).reshape(1, 1, 4, 4), K, 3, stride=2, padding=1)[0, 0]
    Array([[ 2.5,  4. ],
           [ 8.5, 10. ]], dtype=float32)
    """
    return _op(
        2,
        "pacpool2d",
        "pool",
        input,
        kernel,
        None,
        None,
        kernel_size,
        stride,
        padding,
        0,
        dilation,
        False,
    )


# --------------------------------------------------------------------------- fused ops


@functools.cache
def _fused_fn(op, static):
    opts = dict(static)
    k_alpha, k_lambda = opts.pop("inv_alpha"), opts.pop("inv_lambda")
    kernel_size = opts.pop("kernel_size")
    forward_fn = _adapt.function(_OP_NAMES[op] + "_fused", kernel_size)
    backward_fn = _adapt.function(_OP_NAMES[op] + "_fused_backward", kernel_size)
    output_padding = opts.pop("output_padding")
    shared_filters = opts.pop("shared_filters")
    opts.pop("transposed")
    pool = op == "pool"
    if op == "transpose":
        opts["output_padding"] = output_padding
    if not pool:
        opts["shared_filters"] = shared_filters

    def call_args(x, g, w, b):
        return (x, g, kernel_size) if pool else (x, g, w, b)

    def kw(s, a, lam, m):
        return dict(
            opts,
            smooth_kernel=s,
            mask=m,
            inv_alpha=k_alpha if a is None else a,
            inv_lambda=k_lambda if lam is None else lam,
        )

    def forward(x, g, w, b, s, a, lam, m):
        hw = tuple(
            _adapt.op_out_hw(
                op,
                x.shape[2:],
                kernel_size,
                opts["stride"],
                opts["padding"],
                output_padding,
                opts["dilation"],
            )
        )
        c = _adapt.op_out_channels(op, x.shape[1], None if w is None else w.shape, shared_filters)
        specs = [_spec((x.shape[0], c) + hw, x.dtype)]
        if m is not None:
            specs.append(_spec((x.shape[0], 1) + hw, x.dtype))

        def host(x_, g_, w_, b_, s_, a_, l_, m_):
            return forward_fn(*call_args(x_, g_, w_, b_), **kw(s_, a_, l_, m_))

        out = _call(host, specs, x, g, w, b, s, a, lam, m)
        return out[0], (out[1] if m is not None else None)

    f = jax.custom_vjp(forward)

    def fwd(*args):
        return forward(*args), args

    def bwd(res, cts):
        x, g, w, b, s, a, lam, m = res
        # pacnp's order: (x, guide, [weight, bias,] inv_alpha, inv_lambda, smooth_kernel)
        likes = (x, g, a, lam, s) if pool else (x, g, w, b, a, lam, s)
        needs = tuple(v is not None for v in likes)

        def host(gr, x_, g_, w_, b_, s_, a_, l_, m_):
            grads = backward_fn(gr, *call_args(x_, g_, w_, b_), needs=needs, **kw(s_, a_, l_, m_))
            host_likes = (x_, g_, a_, l_, s_) if pool else (x_, g_, w_, b_, a_, l_, s_)
            return tuple(_host_fill(grads, host_likes, needs))

        out = iter(
            _call(
                host,
                [_spec(v.shape, v.dtype) for v in likes if v is not None],
                cts[0],
                x,
                g,
                w,
                b,
                s,
                a,
                lam,
                m,
            )
        )
        grads = [next(out) if v is not None else None for v in likes]
        if pool:
            d_x, d_g, d_a, d_l, d_s = grads
            d_w = d_b = None
        else:
            d_x, d_g, d_w, d_b, d_a, d_l, d_s = grads
        d_m = None if m is None else jnp.zeros_like(m)
        return d_x, d_g, d_w, d_b, d_s, d_a, d_l, d_m

    f.defvjp(fwd, bwd)
    return f


def _fused(
    nd,
    fn,
    op,
    input,
    guide,
    weight,
    bias,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
    kernel_type,
    smooth_kernel_type,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    channel_wise,
    normalize_kernel,
    mask,
):
    skt, sk = _adapt.smooth_for_pacnp(smooth_kernel_type, smooth_kernel)
    _api.check_fused(
        fn,
        op,
        _c(input),
        _c(guide),
        _c(weight),
        _c(bias),
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        shared_filters=shared_filters,
        kernel_type=kernel_type,
        smooth_kernel_type=skt,
        smooth_kernel=_c(sk),
        inv_alpha=_c(inv_alpha),
        inv_lambda=_c(inv_lambda),
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=_c(mask),
        nd=nd,
    )
    x = jnp.asarray(input)
    g = _up(guide)
    if op != "pool":
        weight = jnp.asarray(weight)
        kernel_size = tuple(weight.shape[-nd:]) if weight.ndim >= nd else 1
    a_static, a_arr = _static_param(inv_alpha)
    l_static, l_arr = _static_param(inv_lambda)
    skt, sk = _adapt.smooth_for_pacnp(smooth_kernel_type, _up(smooth_kernel))
    static = _kernel_static(
        fn,
        nd,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        kernel_type,
        skt,
        a_static,
        l_static,
        channel_wise,
        normalize_kernel,
    )
    static["shared_filters"] = shared_filters
    out, out_mask = _fused_fn(op, tuple(static.items()))(
        _up(x), g, _up(weight), _up(bias), sk, a_arr, l_arr, _mask(mask, g)
    )
    return _down(out, x), out_mask


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
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacconv2d_fused` for JAX arrays: ``(output, output_mask or None)``,
    differentiable in input, guide, weight, bias, array α/λ and ``smooth_kernel``.

    Parameters
    ----------
    *arrays, **options
        As :func:`pacnp.pacconv2d_fused`: jax.Array arguments (CPU); geometry and
        kernel options are static Python values.

    Returns
    -------
    output : Array (B, C_out, Ho, Wo)
    output_mask : Array (B, 1, Ho, Wo) or None

    Raises
    ------
    jax.errors.JaxRuntimeError
        Carrying pacnp's ``TypeError`` / ``ValueError`` message when an argument is wrong
        (the error is raised inside the host callback).

    Examples
    --------
    A gradient with respect to the colour bandwidth, through the guide:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> x = jax.random.uniform(jax.random.PRNGKey(0), (1, 1, 8, 8))
    >>> def loss(sigma):
    ...     out, _ = pj.pacconv2d_fused(x, x / sigma, jnp.ones((1, 1, 3, 3)), padding=1)
    ...     return jnp.mean(out)
    >>> g = jax.jit(jax.grad(loss))(jnp.float32(0.5))
    >>> g.shape, g.dtype, bool(g > 0)                 # a wider σ keeps more of every window
    ((), dtype('float32'), True)
    """
    return _fused(
        2,
        "pacconv2d_fused",
        "conv",
        input,
        guide,
        weight,
        bias,
        None,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
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
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacconv_transpose2d_fused` for JAX arrays (guide at the output
    resolution): ``(output, output_mask or None)``.

    Parameters
    ----------
    *arrays, **options
        As :func:`pacnp.pacconv_transpose2d_fused`: jax.Array arguments (CPU); geometry and
        kernel options are static Python values.

    Returns
    -------
    output : Array (B, C_out, Ho, Wo)
    output_mask : Array (B, 1, Ho, Wo) or None

    Raises
    ------
    jax.errors.JaxRuntimeError
        Carrying pacnp's ``TypeError`` / ``ValueError`` message when an argument is wrong
        (the error is raised inside the host callback).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacconv_transpose2d_fused(jnp.ones((1, 1, 4, 4)), jnp.zeros((1, 3, 8, 8)),
    ...                                       jnp.ones((1, 1, 3, 3)), stride=2, padding=1,
    ...                                       output_padding=1)
    >>> out.shape
    (1, 1, 8, 8)
    """
    return _fused(
        2,
        "pacconv_transpose2d_fused",
        "transpose",
        input,
        guide,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


def pacpool2d_fused(
    input,
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacpool2d_fused` for JAX arrays: ``(output, output_mask or None)``.

    Parameters
    ----------
    *arrays, **options
        As :func:`pacnp.pacpool2d_fused`: jax.Array arguments (CPU); geometry and
        kernel options are static Python values.

    Returns
    -------
    output : Array (B, C, Ho, Wo)
    output_mask : Array (B, 1, Ho, Wo) or None

    Raises
    ------
    jax.errors.JaxRuntimeError
        Carrying pacnp's ``TypeError`` / ``ValueError`` message when an argument is wrong
        (the error is raised inside the host callback).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacpool2d_fused(jnp.ones((1, 2, 8, 8)), jnp.zeros((1, 1, 8, 8)), 3,
    ...                             stride=2, padding=1, normalize_kernel=True)
    >>> out.shape, float(out.mean())
    ((1, 2, 4, 4), 1.0)
    """
    return _fused(
        2,
        "pacpool2d_fused",
        "pool",
        input,
        guide,
        None,
        None,
        kernel_size,
        stride,
        padding,
        0,
        dilation,
        False,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


# --------------------------------------------------------------------------- 1-D and 3-D
# The same functions with one and three spatial axes: thin names over the private functions
# above. Layout N, C, *S; every geometry option is an int or a tuple of one int per axis.
def packernel1d(
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
    transposed=False,
):
    """:func:`pacnp.packernel1d` for JAX arrays: guide (B, Cg, L); differentiable as
    :func:`packernel2d`.

    Returns
    -------
    (K, output_mask or None)
        K is (B, 1 or Cg, k, Lo), the mask (B, 1, Lo).

    Examples
    --------
    >>> import jax
    >>> import pacnp.jax as pj
    >>> guide = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 16))
    >>> K, _ = pj.packernel1d(guide, 5, padding=2)
    >>> K.shape
    (2, 1, 5, 16)
    >>> jax.grad(lambda f: pj.packernel1d(f, 5, padding=2)[0].sum())(guide).shape
    (2, 3, 16)
    """
    return _packernel(
        1,
        "packernel1d",
        guide,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
        transposed,
    )


def packernel3d(
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
    transposed=False,
):
    """:func:`pacnp.packernel3d` for JAX arrays: guide (B, Cg, D, H, W); differentiable as
    :func:`packernel2d`.

    Returns
    -------
    (K, output_mask or None)
        K is (B, 1 or Cg, kd, kh, kw, Do, Ho, Wo), the mask (B, 1, Do, Ho, Wo).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, mask = pj.packernel3d(jnp.zeros((1, 2, 4, 5, 6)), 3, padding=1,
    ...                          mask=jnp.ones((1, 1, 4, 5, 6)))
    >>> K.shape, mask.shape
    ((1, 1, 3, 3, 3, 4, 5, 6), (1, 1, 4, 5, 6))
    """
    return _packernel(
        3,
        "packernel3d",
        guide,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
        transposed,
    )


def pacconv1d(
    input, kernel, weight, bias=None, *, stride=1, padding=0, dilation=1, shared_filters=False
):
    """:func:`pacnp.pacconv1d` for JAX arrays: input (B, C_in, L), kernel (B, 1 or C_in, k, Lo),
    weight (C_out, C_in, k); differentiable in every array argument.

    Returns
    -------
    Array (B, C_out, Lo)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel1d(jnp.zeros((1, 1, 16)), 3, padding=1)
    >>> pj.pacconv1d(jnp.ones((1, 2, 16)), K, jnp.ones((4, 2, 3)), padding=1).shape
    (1, 4, 16)
    """
    return _op(
        1,
        "pacconv1d",
        "conv",
        input,
        kernel,
        weight,
        bias,
        None,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
    )


def pacconv3d(
    input, kernel, weight, bias=None, *, stride=1, padding=0, dilation=1, shared_filters=False
):
    """:func:`pacnp.pacconv3d` for JAX arrays: input (B, C_in, D, H, W), kernel
    (B, 1 or C_in, kd, kh, kw, Do, Ho, Wo), weight (C_out, C_in, kd, kh, kw); differentiable
    in every array argument.

    Returns
    -------
    Array (B, C_out, Do, Ho, Wo)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel3d(jnp.zeros((1, 1, 6, 6, 6)), 3, stride=2, padding=1)
    >>> pj.pacconv3d(jnp.ones((1, 2, 6, 6, 6)), K, jnp.ones((4, 2, 3, 3, 3)), stride=2,
    ...              padding=1).shape
    (1, 4, 3, 3, 3)
    """
    return _op(
        3,
        "pacconv3d",
        "conv",
        input,
        kernel,
        weight,
        bias,
        None,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
    )


def pacconv_transpose1d(
    input,
    kernel,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
):
    """:func:`pacnp.pacconv_transpose1d` for JAX arrays (weight (C_in, C_out, k) in
    ``conv_transpose`` orientation); differentiable in every array argument.

    Returns
    -------
    Array (B, C_out, Lo)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel1d(jnp.zeros((1, 1, 16)), 3, stride=2, padding=1, output_padding=1,
    ...                       transposed=True)
    >>> pj.pacconv_transpose1d(jnp.ones((1, 2, 8)), K, jnp.ones((2, 3, 3)), stride=2,
    ...                        padding=1, output_padding=1).shape
    (1, 3, 16)
    """
    return _op(
        1,
        "pacconv_transpose1d",
        "transpose",
        input,
        kernel,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
    )


def pacconv_transpose3d(
    input,
    kernel,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
):
    """:func:`pacnp.pacconv_transpose3d` for JAX arrays (weight (C_in, C_out, kd, kh, kw) in
    ``conv_transpose`` orientation); differentiable in every array argument.

    Returns
    -------
    Array (B, C_out, Do, Ho, Wo)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel3d(jnp.zeros((1, 1, 4, 6, 8)), 3, stride=2, padding=1,
    ...                       output_padding=1, transposed=True)
    >>> pj.pacconv_transpose3d(jnp.ones((1, 2, 2, 3, 4)), K, jnp.ones((2, 3, 3, 3, 3)),
    ...                        stride=2, padding=1, output_padding=1).shape
    (1, 3, 4, 6, 8)
    """
    return _op(
        3,
        "pacconv_transpose3d",
        "transpose",
        input,
        kernel,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
    )


def pacpool1d(input, kernel, kernel_size, *, stride=1, padding=0, dilation=1):
    """:func:`pacnp.pacpool1d` for JAX arrays; differentiable in ``input`` and ``kernel``.

    Returns
    -------
    Array (B, C, Lo)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel1d(jnp.zeros((1, 1, 4)), 3, stride=2, padding=1,
    ...                       normalize_kernel=True)
    >>> pj.pacpool1d(jnp.arange(4.0).reshape(1, 1, 4), K, 3, stride=2, padding=1)[0, 0]
    Array([0.5, 2. ], dtype=float32)
    """
    return _op(
        1,
        "pacpool1d",
        "pool",
        input,
        kernel,
        None,
        None,
        kernel_size,
        stride,
        padding,
        0,
        dilation,
        False,
    )


def pacpool3d(input, kernel, kernel_size, *, stride=1, padding=0, dilation=1):
    """:func:`pacnp.pacpool3d` for JAX arrays; differentiable in ``input`` and ``kernel``.

    Returns
    -------
    Array (B, C, Do, Ho, Wo)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> K, _ = pj.packernel3d(jnp.zeros((1, 1, 4, 4, 4)), 3, stride=2, padding=1,
    ...                       normalize_kernel=True)
    >>> out = pj.pacpool3d(jnp.ones((1, 2, 4, 4, 4)), K, 3, stride=2, padding=1)
    >>> out.shape, float(out.mean())
    ((1, 2, 2, 2, 2), 1.0)
    """
    return _op(
        3,
        "pacpool3d",
        "pool",
        input,
        kernel,
        None,
        None,
        kernel_size,
        stride,
        padding,
        0,
        dilation,
        False,
    )


def pacconv1d_fused(
    input,
    guide,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacconv1d_fused` for JAX arrays: ``(output, output_mask or None)``,
    differentiable as :func:`pacconv2d_fused`.

    Returns
    -------
    output : Array (B, C_out, Lo)
    output_mask : Array (B, 1, Lo) or None

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> x = jax.random.uniform(jax.random.PRNGKey(0), (1, 1, 32))
    >>> loss = lambda s: jnp.mean(pj.pacconv1d_fused(x, x / s, jnp.ones((1, 1, 5)), padding=2)[0])
    >>> bool(jax.jit(jax.grad(loss))(jnp.float32(0.5)) > 0)
    True
    """
    return _fused(
        1,
        "pacconv1d_fused",
        "conv",
        input,
        guide,
        weight,
        bias,
        None,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


def pacconv3d_fused(
    input,
    guide,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacconv3d_fused` for JAX arrays: ``(output, output_mask or None)``,
    differentiable as :func:`pacconv2d_fused`.

    Returns
    -------
    output : Array (B, C_out, Do, Ho, Wo)
    output_mask : Array (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacconv3d_fused(jnp.ones((1, 2, 4, 5, 6)), jnp.zeros((1, 1, 4, 5, 6)),
    ...                             jnp.ones((3, 2, 3, 3, 3)), padding=1)
    >>> out.shape
    (1, 3, 4, 5, 6)
    """
    return _fused(
        3,
        "pacconv3d_fused",
        "conv",
        input,
        guide,
        weight,
        bias,
        None,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


def pacconv_transpose1d_fused(
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
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacconv_transpose1d_fused` for JAX arrays (guide at the output
    resolution): ``(output, output_mask or None)``.

    Returns
    -------
    output : Array (B, C_out, Lo)
    output_mask : Array (B, 1, Lo) or None

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacconv_transpose1d_fused(jnp.ones((1, 1, 8)), jnp.zeros((1, 3, 16)),
    ...                                       jnp.ones((1, 1, 3)), stride=2, padding=1,
    ...                                       output_padding=1)
    >>> out.shape
    (1, 1, 16)
    """
    return _fused(
        1,
        "pacconv_transpose1d_fused",
        "transpose",
        input,
        guide,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


def pacconv_transpose3d_fused(
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
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacconv_transpose3d_fused` for JAX arrays (guide at the output
    resolution): ``(output, output_mask or None)``.

    Returns
    -------
    output : Array (B, C_out, Do, Ho, Wo)
    output_mask : Array (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacconv_transpose3d_fused(jnp.ones((1, 1, 2, 3, 4)),
    ...                                       jnp.zeros((1, 3, 4, 6, 8)),
    ...                                       jnp.ones((1, 1, 3, 3, 3)), stride=2, padding=1,
    ...                                       output_padding=1)
    >>> out.shape
    (1, 1, 4, 6, 8)
    """
    return _fused(
        3,
        "pacconv_transpose3d_fused",
        "transpose",
        input,
        guide,
        weight,
        bias,
        None,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


def pacpool1d_fused(
    input,
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacpool1d_fused` for JAX arrays: ``(output, output_mask or None)``.

    Returns
    -------
    output : Array (B, C, Lo)
    output_mask : Array (B, 1, Lo) or None

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacpool1d_fused(jnp.ones((1, 2, 16)), jnp.zeros((1, 1, 16)), 3, stride=2,
    ...                             padding=1, normalize_kernel=True)
    >>> out.shape, float(out.mean())
    ((1, 2, 8), 1.0)
    """
    return _fused(
        1,
        "pacpool1d_fused",
        "pool",
        input,
        guide,
        None,
        None,
        kernel_size,
        stride,
        padding,
        0,
        dilation,
        False,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )


def pacpool3d_fused(
    input,
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
):
    """:func:`pacnp.pacpool3d_fused` for JAX arrays: ``(output, output_mask or None)``.

    Returns
    -------
    output : Array (B, C, Do, Ho, Wo)
    output_mask : Array (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import pacnp.jax as pj
    >>> out, _ = pj.pacpool3d_fused(jnp.ones((1, 2, 4, 6, 6)), jnp.zeros((1, 1, 4, 6, 6)), 3,
    ...                             stride=(1, 2, 2), padding=1, normalize_kernel=True)
    >>> out.shape, float(out.mean())
    ((1, 2, 4, 3, 3), 1.0)
    """
    return _fused(
        3,
        "pacpool3d_fused",
        "pool",
        input,
        guide,
        None,
        None,
        kernel_size,
        stride,
        padding,
        0,
        dilation,
        False,
        kernel_type,
        smooth_kernel_type,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        channel_wise,
        normalize_kernel,
        mask,
    )
