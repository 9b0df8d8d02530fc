"""The public, array-API style functions: arrays of any array library in, arrays of the
caller's library (and device) out.

Each public function names its array arguments in a ``pacnp._namespace.Namespace`` (the one
module that knows array libraries and devices), which converts them to NumPy views (DLPack for
torch / JAX / array-API libraries — zero-copy where the layout allows); the function validates
in ``_core``, runs a backend through ``_ops`` and hands the results back through the namespace
(``from_dlpack`` again, zero-copy).

Arrays on a CUDA device (CuPy, torch CUDA tensors, numba device arrays, JAX GPU arrays) take the
CUDA backend instead: they become numba device views (``__cuda_array_interface__``, zero-copy),
the kernels of ``pacnp.cuda`` run on the caller's current stream, and the results — allocated on
the same device — go back to the caller's library zero-copy. ``pacnp.cuda`` (and so
``numba.cuda``) is imported only then.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core, _ops
from ._namespace import Namespace

__all__ = [
    "packernel2d",
    "packernel2d_backward",
    "pacconv2d",
    "pacconv2d_backward",
    "pacconv_transpose2d",
    "pacconv_transpose2d_backward",
    "pacpool2d",
    "pacpool2d_backward",
    "pacconv2d_fused",
    "pacconv2d_fused_backward",
    "pacconv_transpose2d_fused",
    "pacconv_transpose2d_fused_backward",
    "pacpool2d_fused",
    "pacpool2d_fused_backward",
]


# --------------------------------------------------------------------------- conversions
def _required(fn, name, a):
    """A backward's output gradient must be given: without it the call would be a forward."""
    if a is None:
        raise TypeError(
            f"{fn}: {name} is required (the gradient of the forward's output), got None"
        )
    return a


def _given(fn, **arrays):
    """Arrays a function cannot run without: None is a TypeError naming the argument (inside,
    ``kernel=None`` means "the fused path" and ``weight=None`` "pooling": a caller's None must
    not select either)."""
    for name, a in arrays.items():
        if a is None:
            raise TypeError(f"{fn}: {name} is required (an array), got None")


def _prepare(ns, a, name, dtype=None, small=False):
    """C-contiguous, native-byte-order, writeable NumPy array of the compute dtype (on a GPU:
    a contiguous device array; a host copy for the ``small`` parameter arrays).

    Copies only when needed: a non-contiguous, byte-swapped or read-only input is copied (the
    kernels are compiled for one memory layout; the caller's array is never written).
    """
    arr = ns.to_backend(a, name, small)
    if arr is None:
        return None
    if getattr(ns, "dry", False):  # a shape-only stand-in: the dtype checks, no copy
        own = _core.compute_dtype(arr, name, ns.fn)
        if dtype is not None and own != dtype:
            _core.check_array(arr, name, ns.fn, dtype=dtype)
        return arr
    if ns.be is not None and not isinstance(arr, np.ndarray):
        own = _core.compute_dtype(arr, name, ns.fn)
        if dtype is not None and own != dtype:
            _core.check_array(arr, name, ns.fn, dtype=dtype)
        return arr
    own = _core.compute_dtype(arr, name, ns.fn)
    if dtype is None:
        dtype = own
    elif own != dtype:
        _core.check_array(arr, name, ns.fn, dtype=dtype)
    out = np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d arrays 0-d
    if not out.flags.writeable:
        out = out.copy()
    return out


class _ShapeOnly:
    """What the checks need of a :class:`~pacnp._namespace.Namespace` when there is no data to
    compute on (the adapters' checks at trace or graph-building time): every array becomes a
    zero-stride NumPy view of its shape and dtype, so nothing of its size is allocated."""

    be = None
    dry = True

    def __init__(self, fn):
        self.fn = fn

    def to_backend(self, a, name, small=False):
        if a is None:
            return None
        shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
        if shape is None or dtype is None or isinstance(a, (str, bytes)):
            raise TypeError(
                f"{self.fn}: {name} must be an array (NumPy, or any library "
                f"supporting DLPack or the array API), got {type(a).__name__}"
            )
        try:
            dt = np.dtype(dtype)
        except TypeError:
            try:  # torch.float32 and the like: by name
                dt = np.dtype(str(dtype).rsplit(".", 1)[-1])
            except TypeError:
                raise TypeError(
                    f"{self.fn}: {name} has dtype {dtype}; expected float32 or float64"
                ) from None
        try:
            shape = tuple(int(n) for n in shape)
        except (TypeError, ValueError):  # e.g. a Dask array of unknown chunk sizes
            raise ValueError(
                f"{self.fn}: {name} has shape {tuple(shape)}; its sizes must be "
                f"known (compute the chunk sizes first)"
            ) from None
        return np.broadcast_to(np.zeros((), dt), shape)


def _scalar_or_array(ns, v, name, dtype):
    if v is None or isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
        return v
    return _prepare(ns, v, name, dtype, small=True)


def _backend(ns):
    """``pacnp.cpu`` or ``pacnp.cuda`` (both ``pacnp._backend.Backend``)."""
    if ns.be is not None:
        return ns.be
    from . import cpu

    return cpu


def _run(ns, driver, *args):
    """Run a driver of ``_ops`` on the backend of the caller's arrays (on a GPU: on the
    caller's device and stream), after checking that no compile-time tunable of ``config``
    changed since the kernels were built (``pacnp._jit``)."""
    from ._jit import check_frozen

    be = _backend(ns)
    check_frozen()
    with be.blas_guard(), ns.on_device():
        return driver(be, *args)


# --------------------------------------------------------------------------- packernel2d
def _kernel_arrays(kw):
    """The array arguments among packernel2d's keywords (α/λ may also be Python numbers)."""
    arrays = dict(smooth_kernel=kw["smooth_kernel"], mask=kw["mask"])
    for name in ("inv_alpha", "inv_lambda"):
        v = kw[name]
        if v is not None and not isinstance(v, numbers.Real):
            arrays[name] = v
    return arrays


def _shaped(a, shape):
    """A folded result (``_core.fold_tables``) in the caller's N-D shape (a view)."""
    return None if a is None else a.reshape(tuple(shape))


def _kernel_plan(fn, ns, guide, kernel_size, kw, nd=2):
    g = _prepare(ns, guide, "guide")
    dt = g.dtype
    opts = dict(kw)
    opts["smooth_kernel"] = (
        _prepare(ns, kw["smooth_kernel"], "smooth_kernel", dt, small=True)
        if kw["smooth_kernel"] is not None
        else None
    )
    opts["inv_alpha"] = _scalar_or_array(ns, kw["inv_alpha"], "inv_alpha", dt)
    opts["inv_lambda"] = _scalar_or_array(ns, kw["inv_lambda"], "inv_lambda", dt)
    mask = kw["mask"]
    if mask is not None:
        mask = ns.to_backend(mask, "mask", small=True)
        if mask.dtype.kind == "f" and not getattr(ns, "dry", False):
            mask = mask.astype(dt)  # any float width is fine for a 0/1 mask
    opts["mask"] = mask
    dry = getattr(ns, "dry", False)
    return _core.plan_packernel(fn, g, kernel_size, values=not dry, nd=nd, **opts)


_KERNEL_NEEDS = ("guide", "inv_alpha", "inv_lambda", "smooth_kernel")


def _packernel(fn, nd, guide, kernel_size, **kw):
    """packernel1d/2d/3d: validate, run, return K (and the output mask) in N-D shape."""
    _given(fn, guide=guide)
    ns = Namespace(fn, dict(guide=guide, **_kernel_arrays(kw)))
    plan = _kernel_plan(fn, ns, guide, kernel_size, kw, nd)
    K, out_mask = _run(ns, _ops.packernel_forward, plan)
    return (
        ns.from_backend(_shaped(K, plan.out_shape)),
        ns.from_backend(_shaped(out_mask, plan.mask_shape)),
    )


def _packernel_backward(fn, nd, grad_kernel, guide, kernel_size, *, needs=None, **kw):
    """packernel1d/2d/3d_backward."""
    _required(fn, "grad_kernel", grad_kernel)
    _given(fn, guide=guide)
    needs = _core.check_needs(fn, needs, _KERNEL_NEEDS)
    ns = Namespace(fn, dict(guide=guide, grad_kernel=grad_kernel, **_kernel_arrays(kw)))
    plan = _kernel_plan(fn, ns, guide, kernel_size, kw, nd)
    dK = _prepare(ns, grad_kernel, "grad_kernel", plan.guide.dtype)
    _core.check_grad(fn, "grad_kernel", dK, plan.out_shape, plan.guide.dtype)
    dK = _shaped(dK, plan.out_shape[:2] + plan.k + plan.geo.out_hw)
    d_guide, *rest = _run(ns, _ops.packernel_backward, plan, dK, needs)
    return tuple(ns.from_backend(gr) for gr in [_shaped(d_guide, plan.guide_shape), *rest])


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
    """Compute the pixel-adaptive kernel K of Su et al. (2019), Eq. 3, from guide features.

    Parameters
    ----------
    guide : array, shape (B, Cg, H, W), float32 or float64
        Guidance features f. Bandwidths are set by scaling the features.
    kernel_size : int or (int, int)
        Odd window size.
    stride, padding, output_padding, dilation : int or (int, int), keyword-only
        Geometry of the convolution the kernel is for (``output_padding`` with ``transposed``).
        ``padding`` may not exceed ``dilation * (kernel_size - 1) // 2``.
    kernel_type : str
        ``"gaussian"``: K = exp(-½ Σ_c Δ_c²). ``"inv_{α}_{λ}"`` with optional ``_asym`` and
        ``_fixed``: K = α + (Σ_c Δ_c² + 1e-4)^(λ/2).
    smooth_kernel_type : str
        ``"none"``, ``"gaussian"``, ``"average_N"`` or ``"full_N"`` (learnable ``smooth_kernel``):
        the centre feature is taken from the guide smoothed with that kernel.
    smooth_kernel : array, shape (N, N) or (1, 1, N, N), optional
        For ``full_N``.
    inv_alpha, inv_lambda : float or array, optional
        α and λ of the ``inv`` kernels (scalars, or one per channel with ``channel_wise``);
        default: the numbers in ``kernel_type``.
    channel_wise : bool
        One kernel per guide channel (no sum over channels).
    normalize_kernel : bool
        Divide K by its sum over the window's valid taps (0 where that sum is 0).
    mask : array, shape (B, 1, H, W), 0/1, optional
        Multiplies K at the guide positions; partial-convolution re-weighting without
        normalisation.
    transposed : bool
        The guide is at the output resolution of a transposed convolution.

    Returns
    -------
    K : array, shape (B, 1 or Cg, kh, kw, H_out, W_out)
        In the guide's library, device and dtype.
    output_mask : array, shape (B, 1, H_out, W_out), or None without ``mask``
        1 where the window held any masked-in tap.

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    See Also
    --------
    pacconv2d, pacconv_transpose2d, pacpool2d : the operations that take K.
    pacconv2d_fused : K computed on the fly, never stored.

    Notes
    -----
    The exact geometry (valid taps, centres, the transposed case) is in the documentation's
    *Semantics* page.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> guide = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    >>> K, mask = pacnp.packernel2d(guide, 3, padding=1)
    >>> K.shape, K.dtype, mask
    ((1, 1, 3, 3, 8, 8), dtype('float32'), None)
    >>> float(K[0, 0, 1, 1, 4, 4])        # the centre tap compares a pixel with itself
    1.0
    >>> K, _ = pacnp.packernel2d(guide, 3, padding=1, normalize_kernel=True)
    >>> round(float(K[0, 0, :, :, 4, 4].sum()), 6)
    1.0
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _packernel("packernel2d", 2, **locals())


def packernel2d_backward(
    grad_kernel,
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
    needs=None,
):
    """Gradients of :func:`packernel2d` given the gradient of K.

    Parameters
    ----------
    grad_kernel : array, shape of K
        Gradient of a loss with respect to the K that :func:`packernel2d` returned.
    guide, kernel_size, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 4 bool, optional
        Which gradients to compute (None: all); the others come back as None.

    Returns
    -------
    d_guide : array or None
    d_inv_alpha, d_inv_lambda : array or None
        None unless α / λ were passed as arrays and the kernel type is not ``_fixed``.
    d_smooth_kernel : array or None
        None unless ``smooth_kernel_type="full_N"``.

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> guide = np.random.default_rng(0).random((1, 2, 6, 6))
    >>> K, _ = pacnp.packernel2d(guide, 3, padding=1)
    >>> d_guide, d_alpha, d_lambda, d_smooth = pacnp.packernel2d_backward(
    ...     np.ones_like(K), guide, 3, padding=1)
    >>> d_guide.shape, d_alpha, d_smooth
    ((1, 2, 6, 6), None, None)
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _packernel_backward("packernel2d_backward", 2, **locals())


# --------------------------------------------------------------------------- ops
def _op_plan(fn, ns, arrays, grad=None, nd=2, **opts):
    """Convert and validate the arrays of an op call; return (plan, grad) — the gradient
    folded like the plan's arrays."""
    x = _prepare(ns, arrays["input"], "input")
    dt = x.dtype
    conv = {
        name: _prepare(ns, arrays.get(name), name, dt, small=name != "kernel")
        for name in ("kernel", "weight", "bias")
    }
    plan = _core.plan_op(fn, x, conv["kernel"], conv["weight"], conv["bias"], nd=nd, **opts)
    g = None
    if grad is not None:
        g = _prepare(ns, grad, "grad_output", dt)
        _core.check_grad(fn, "grad_output", g, plan.out_shape, dt)
        g = _shaped(g, plan.folded_out_shape)
    return plan, g


def _op_call(fn, arrays, grad=None, nd=2, **opts):
    _given(fn, **{n: a for n, a in arrays.items() if n != "bias"})
    all_arrays = dict(arrays)
    if grad is not None:
        all_arrays["grad_output"] = grad
    ns = Namespace(fn, all_arrays)
    plan, g = _op_plan(fn, ns, arrays, grad, nd, **opts)
    return ns, plan, g


def _op_arrays(op, input, kernel, weight, bias):
    arrays = dict(input=input, kernel=kernel)
    if op != "pool":
        arrays.update(weight=weight, bias=bias)
    return arrays


def _op_forward(fn, nd, op, input, kernel, weight=None, bias=None, **opts):
    """pacconv / pacconv_transpose / pacpool (``op``: 'conv', 'transpose', 'pool'), any nd."""
    if op == "transpose":
        opts["transposed"] = True
    ns, plan, _ = _op_call(fn, _op_arrays(op, input, kernel, weight, bias), nd=nd, **opts)
    return ns.from_backend(_shaped(_run(ns, _ops.op_forward, plan), plan.out_shape))


def _op_backward(
    fn, nd, op, grad_output, input, kernel, weight=None, bias=None, *, needs=None, **opts
):
    """The gradients of :func:`_op_forward`: (input, kernel, weight, bias), or (input, kernel)
    for pooling."""
    _required(fn, "grad_output", grad_output)
    names = ("input", "kernel") if op == "pool" else ("input", "kernel", "weight", "bias")
    needs = _core.check_needs(fn, needs, names)
    if op == "transpose":
        opts["transposed"] = True
    arrays = _op_arrays(op, input, kernel, weight, bias)
    ns, plan, g = _op_call(fn, arrays, grad_output, nd=nd, **opts)
    dx, dK, *rest = _run(ns, _ops.op_backward, plan, g, needs, op == "pool")
    grads = [_shaped(dx, plan.x_shape), _shaped(dK, plan.K_shape), *rest]
    return tuple(ns.from_backend(a) for a in grads)


def pacconv2d(
    input, kernel, weight, bias=None, *, stride=1, padding=0, dilation=1, shared_filters=False
):
    """Pixel-adaptive convolution (cross-correlation, like ``torch.nn.functional.conv2d``).

    ``out[b,o,y,x] = Σ_{c,i,j} K[b,c|0,i,j,y,x] · W[o,c,i,j] · input[b,c,y·s-p+i·d,x·s-p+j·d]
    + bias[o]``.

    Parameters
    ----------
    input : array, shape (B, C_in, H, W), float32 or float64
    kernel : array, shape (B, 1 or C_in, kh, kw, H_out, W_out)
        From :func:`packernel2d` with the same geometry.
    weight : array, shape (C_out, C_in, kh, kw), or (1, 1, kh, kw) with ``shared_filters``
    bias : array, shape (C_out,), optional
    stride, padding, dilation : int or (int, int), optional
        Geometry, as in ``torch.nn.functional.conv2d`` (zero padding). Default 1, 0, 1.
    shared_filters : bool, optional
        One kh×kw filter applied to every channel separately (C_out = C_in).

    Returns
    -------
    out : array, shape (B, C_out, H_out, W_out)
        In the caller's library and device; sizes as ``conv2d``'s.

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    See Also
    --------
    pacconv2d_fused : the same from the guide, without storing K.
    pacconv2d_backward : its gradients.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((1, 2, 8, 8), dtype=np.float32)
    >>> K, _ = pacnp.packernel2d(rng.random((1, 3, 8, 8), dtype=np.float32), 3, padding=1)
    >>> out = pacnp.pacconv2d(x, K, np.ones((4, 2, 3, 3), np.float32), padding=1)
    >>> out.shape, out.dtype
    ((1, 4, 8, 8), dtype('float32'))

    With K ≡ 1 it is an ordinary convolution:

    >>> ones = np.ones_like(K)
    >>> w = np.zeros((1, 2, 3, 3), np.float32); w[0, :, 1, 1] = 1   # sum of the channels
    >>> bool(np.allclose(pacnp.pacconv2d(x, ones, w, padding=1)[0, 0], x[0].sum(0)))
    True
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _op_forward("pacconv2d", 2, "conv", **locals())


def pacconv2d_backward(
    grad_output,
    input,
    kernel,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    needs=None,
):
    """Gradients ``(d_input, d_kernel, d_weight, d_bias)`` of :func:`pacconv2d`.

    Parameters
    ----------
    grad_output : array, shape (B, C_out, H_out, W_out)
        Gradient of a loss with respect to the output of :func:`pacconv2d`.
    input, kernel, weight, bias, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 4 bool, optional
        Which gradients to compute (None: all); the others come back as None.

    Returns
    -------
    d_input, d_kernel, d_weight, d_bias : array or None
        Shaped like the arguments; ``d_bias`` is None when ``bias`` is None.

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.random((1, 2, 6, 6)), rng.random((3, 2, 3, 3))
    >>> K, _ = pacnp.packernel2d(rng.random((1, 1, 6, 6)), 3, padding=1)
    >>> g = np.ones((1, 3, 6, 6))
    >>> dx, dK, dw, db = pacnp.pacconv2d_backward(g, x, K, w, padding=1)
    >>> dx.shape, dK.shape, dw.shape, db
    ((1, 2, 6, 6), (1, 1, 3, 3, 6, 6), (3, 2, 3, 3), None)
    >>> dx, dK, dw, db = pacnp.pacconv2d_backward(g, x, K, w, padding=1,
    ...                                           needs=(False, False, True, False))
    >>> dx is None, dw.shape
    (True, (3, 2, 3, 3))
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _op_backward("pacconv2d_backward", 2, "conv", **locals())


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
    """Pixel-adaptive transposed convolution (``torch.nn.functional.conv_transpose2d`` layout).

    With K ≡ 1 the result equals ``conv_transpose2d`` with the same weights (the 2019
    reference code applied them flipped: see the migration guide).

    Parameters
    ----------
    input : array, shape (B, C_in, H, W), float32 or float64
    kernel : array, shape (B, 1 or C_in, kh, kw, H_out, W_out)
        From ``packernel2d(guide, ..., transposed=True)`` with a guide at the output resolution.
    weight : array, shape (C_in, C_out, kh, kw), or (1, 1, kh, kw) with ``shared_filters``
    bias : array, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int), optional
        As ``conv_transpose2d``'s.
    shared_filters : bool, optional
        One kh×kw filter applied to every channel separately.

    Returns
    -------
    out : array, shape (B, C_out, H_out, W_out)
        ``H_out = (H - 1)·stride - 2·padding + dilation·(kh - 1) + output_padding + 1``.

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((1, 2, 4, 4), dtype=np.float32)
    >>> guide = rng.random((1, 3, 8, 8), dtype=np.float32)      # at the output resolution
    >>> K, _ = pacnp.packernel2d(guide, 3, stride=2, padding=1, output_padding=1,
    ...                          transposed=True)
    >>> w = rng.random((2, 5, 3, 3), dtype=np.float32)
    >>> out = pacnp.pacconv_transpose2d(x, K, w, stride=2, padding=1, output_padding=1)
    >>> out.shape
    (1, 5, 8, 8)
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _op_forward("pacconv_transpose2d", 2, "transpose", **locals())


def pacconv_transpose2d_backward(
    grad_output,
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
    needs=None,
):
    """Gradients ``(d_input, d_kernel, d_weight, d_bias)`` of :func:`pacconv_transpose2d`.

    Parameters
    ----------
    grad_output : array, shape (B, C_out, H_out, W_out)
    input, kernel, weight, bias, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 4 bool, optional
        Which gradients to compute (None: all).

    Returns
    -------
    d_input, d_kernel, d_weight, d_bias : array or None

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.random((1, 2, 4, 4)), rng.random((2, 3, 3, 3))
    >>> K, _ = pacnp.packernel2d(rng.random((1, 1, 8, 8)), 3, stride=2, padding=1,
    ...                          output_padding=1, transposed=True)
    >>> grads = pacnp.pacconv_transpose2d_backward(np.ones((1, 3, 8, 8)), x, K, w, stride=2,
    ...                                            padding=1, output_padding=1)
    >>> [None if g is None else g.shape for g in grads]
    [(1, 2, 4, 4), (1, 1, 3, 3, 8, 8), (2, 3, 3, 3), None]
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _op_backward("pacconv_transpose2d_backward", 2, "transpose", **locals())


def pacpool2d(input, kernel, kernel_size, *, stride=1, padding=0, dilation=1):
    """Pixel-adaptive pooling: ``out[b,c,y,x] = Σ_{i,j} K[b,c|0,i,j,y,x] · input[b,c,·]``.

    With a normalised kernel from a constant guide this is ``avg_pool2d(count_include_pad=False)``.

    Parameters
    ----------
    input : array, shape (B, C, H, W), float32 or float64
    kernel : array, shape (B, 1 or C, kh, kw, H_out, W_out)
        From :func:`packernel2d` with the same geometry.
    kernel_size : int or (int, int)
        The window (odd), as K's.
    stride, padding, dilation : int or (int, int), optional
        Geometry, as in ``torch.nn.functional.conv2d`` (zero padding). Default 1, 0, 1.

    Returns
    -------
    out : array, shape (B, C, H_out, W_out)

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> K, _ = pacnp.packernel2d(np.zeros((1, 1, 4, 4)), 3, stride=2, padding=1,
    ...                          normalize_kernel=True)
    >>> pacnp.pacpool2d(x, K, 3, stride=2, padding=1)      # avg_pool2d, padding not counted
    array([[[[ 2.5,  4. ],
             [ 8.5, 10. ]]]])
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _op_forward("pacpool2d", 2, "pool", **locals())


def pacpool2d_backward(
    grad_output, input, kernel, kernel_size, *, stride=1, padding=0, dilation=1, needs=None
):
    """Gradients ``(d_input, d_kernel)`` of :func:`pacpool2d`.

    Parameters
    ----------
    grad_output : array, shape (B, C, H_out, W_out)
    input, kernel, kernel_size, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 2 bool, optional
        Which gradients to compute (None: both).

    Returns
    -------
    d_input, d_kernel : array or None

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> x = np.ones((1, 1, 4, 4))
    >>> K, _ = pacnp.packernel2d(np.zeros((1, 1, 4, 4)), 3, padding=1)
    >>> dx, dK = pacnp.pacpool2d_backward(np.ones((1, 1, 4, 4)), x, K, 3, padding=1)
    >>> dx[0, 0]                 # how many windows read each pixel
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]])
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _op_backward("pacpool2d_backward", 2, "pool", **locals())


# --------------------------------------------------------------------------- fused path
_KERNEL_DEFAULTS = dict(
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
)


def _fused(
    fn,
    op,
    input,
    guide,
    weight,
    bias,
    kernel_size,
    geometry,
    kernel_kw,
    grad=None,
    needs=None,
    nd=2,
):
    """Validate a fused call; run its forward, or its backward when ``grad`` is given."""
    _given(fn, input=input, guide=guide, **({} if op == "pool" else dict(weight=weight)))
    arrays = dict(input=input, guide=guide, **_kernel_arrays(kernel_kw))
    if op != "pool":
        arrays.update(weight=weight, bias=bias)
    if grad is not None:
        arrays["grad_output"] = grad
    ns = Namespace(fn, arrays)
    kplan, oplan, g = _fused_plans(
        fn, op, ns, input, guide, weight, bias, kernel_size, geometry, kernel_kw, grad, nd
    )
    if oplan.x.shape[0] == 0:
        out = _empty_batch(_backend(ns), kplan, oplan, grad is not None, needs, op == "pool")
        return tuple(ns.from_backend(a) for a in out)
    if grad is None:
        out, out_mask = _run(ns, _ops.fused_forward, kplan, oplan)
        return (
            ns.from_backend(_shaped(out, oplan.out_shape)),
            ns.from_backend(_shaped(out_mask, kplan.mask_shape)),
        )
    dx, dg, *rest = _run(ns, _ops.fused_backward, kplan, oplan, g, needs, op == "pool")
    grads = [_shaped(dx, oplan.x_shape), _shaped(dg, kplan.guide_shape), *rest]
    return tuple(ns.from_backend(a) for a in grads)


def _fused_forward(
    fn,
    nd,
    op,
    input,
    guide,
    weight=None,
    bias=None,
    kernel_size=None,
    *,
    stride,
    padding,
    dilation,
    output_padding=0,
    shared_filters=False,
    **kernel_kw,
):
    """pacconv / pacconv_transpose / pacpool _fused, any nd."""
    geometry = _fused_geometry(op, stride, padding, dilation, output_padding, shared_filters)
    return _fused(fn, op, input, guide, weight, bias, kernel_size, geometry, kernel_kw, nd=nd)


def _fused_backward(
    fn,
    nd,
    op,
    grad_output,
    input,
    guide,
    weight=None,
    bias=None,
    kernel_size=None,
    *,
    stride,
    padding,
    dilation,
    output_padding=0,
    shared_filters=False,
    needs=None,
    **kernel_kw,
):
    """The gradients of :func:`_fused_forward`."""
    _required(fn, "grad_output", grad_output)
    needs = _core.check_needs(fn, needs, _FUSED_POOL_NEEDS if op == "pool" else _FUSED_NEEDS)
    geometry = _fused_geometry(op, stride, padding, dilation, output_padding, shared_filters)
    return _fused(
        fn,
        op,
        input,
        guide,
        weight,
        bias,
        kernel_size,
        geometry,
        kernel_kw,
        grad_output,
        needs,
        nd,
    )


def _fused_geometry(op, stride, padding, dilation, output_padding, shared_filters):
    geometry = dict(stride=stride, padding=padding, dilation=dilation)
    if op != "pool":
        geometry["shared_filters"] = shared_filters
    if op == "transpose":
        geometry["output_padding"] = output_padding
    return geometry


def _empty_batch(be, kplan, oplan, backward, needs, pool):
    """A fused call on an empty batch: empty results, zero parameter gradients (no pixel
    contributes); the same Nones as the drivers (``_ops``) give."""
    xp = be.arrays
    dt = oplan.x.dtype
    if not backward:
        mask = xp.zeros(kplan.mask_shape, dt) if kplan.mask is not None else None
        return xp.zeros(oplan.out_shape, dt), mask
    if pool:
        need_x, need_g, need_a, need_l, need_s = needs
        need_w = need_b = False
    else:
        need_x, need_g, need_w, need_b, need_a, need_l, need_s = needs

    def zeros(need, shape):
        return xp.zeros(shape, dt) if need and shape is not None else None

    grads = (
        zeros(need_x, oplan.x_shape),
        zeros(need_g, kplan.guide_shape),
        zeros(need_w, oplan.weight_shape),
        zeros(need_b, None if oplan.bias is None else oplan.bias.shape),
        zeros(need_a, kplan.alpha_shape),
        zeros(need_l, kplan.lam_shape),
        zeros(need_s, kplan.S_shape),
    )
    return grads[:2] + grads[4:] if pool else grads


def _fused_plans(
    fn, op, ns, input, guide, weight, bias, kernel_size, geometry, kernel_kw, grad=None, nd=2
):
    """The kernel and op plans of a fused call (and the converted output gradient)."""
    transposed = op == "transpose"
    op_arrays = dict(input=input)
    if op != "pool":
        op_arrays.update(weight=weight, bias=bias)
    opts = dict(
        stride=geometry["stride"], padding=geometry["padding"], dilation=geometry["dilation"]
    )
    if op == "pool":
        opts["kernel_size"] = kernel_size
    else:
        opts["shared_filters"] = geometry["shared_filters"]
    if transposed:
        opts.update(transposed=True, output_padding=geometry["output_padding"])
    oplan, g = _op_plan(fn, ns, op_arrays, grad, nd, **opts)
    kplan = _kernel_plan(
        fn,
        ns,
        guide,
        oplan.kernel_size,
        dict(
            kernel_kw,
            stride=geometry["stride"],
            padding=geometry["padding"],
            output_padding=geometry.get("output_padding", 0),
            dilation=geometry["dilation"],
            transposed=transposed,
        ),
        nd,
    )
    _core.check_fused(fn, kplan, oplan, transposed)
    if kplan.guide.dtype != oplan.x.dtype:
        _core.check_array(kplan.guide, "guide", fn, dtype=oplan.x.dtype)
    return kplan, oplan, g


# --------------------------------------------------------------------------- checks alone
# The adapters (pacnp.jax, pacnp.dask, pacnp.torch) must tell their framework a result's shape
# before pacnp computes it, and an error raised later (inside a JAX callback, a Dask task) would
# reach the caller wrapped in another exception type, or late. They call these first: pacnp's
# own checks, with its messages, on shape-only stand-ins of the arrays (module ``_ShapeOnly``).
def check_packernel2d(
    guide,
    kernel_size,
    *,
    fn="packernel2d",
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
    nd=2,
):
    """:func:`packernel2d`'s checks without computing (errors name ``fn``); returns the plan.
    ``nd``: the number of spatial axes (packernel1d / 3d)."""
    _given(fn, guide=guide)
    kw = dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        kernel_type=kernel_type,
        smooth_kernel_type=smooth_kernel_type,
        smooth_kernel=smooth_kernel,
        inv_alpha=inv_alpha,
        inv_lambda=inv_lambda,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=mask,
        transposed=transposed,
    )
    return _kernel_plan(fn, _ShapeOnly(fn), guide, kernel_size, kw, nd)


def check_op(
    fn,
    op,
    input,
    kernel,
    weight=None,
    bias=None,
    *,
    kernel_size=None,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
    nd=2,
):
    """The checks of the two-step op ``op`` ('conv', 'transpose' or 'pool') over ``nd``
    spatial axes without computing (errors name ``fn``); returns the plan."""
    arrays = dict(input=input, kernel=kernel)
    if op != "pool":
        arrays.update(weight=weight, bias=bias)
    _given(fn, **{n: a for n, a in arrays.items() if n != "bias"})
    opts = dict(stride=stride, padding=padding, dilation=dilation)
    if op == "pool":
        opts["kernel_size"] = kernel_size
    else:
        opts["shared_filters"] = shared_filters
    if op == "transpose":
        opts.update(transposed=True, output_padding=output_padding)
    return _op_plan(fn, _ShapeOnly(fn), arrays, None, nd, **opts)[0]


def check_fused(
    fn,
    op,
    input,
    guide,
    weight=None,
    bias=None,
    *,
    kernel_size=None,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
    nd=2,
    **kernel_kw,
):
    """The checks of the fused op ``op`` ('conv', 'transpose' or 'pool') over ``nd`` spatial
    axes without computing (errors name ``fn``); returns (kernel plan, op plan)."""
    _given(fn, input=input, guide=guide, **({} if op == "pool" else dict(weight=weight)))
    unknown = set(kernel_kw) - set(_KERNEL_DEFAULTS)
    if unknown:
        raise TypeError(f"{fn}: unexpected keyword arguments {sorted(unknown)}")
    geometry = dict(
        stride=stride, padding=padding, dilation=dilation, shared_filters=shared_filters
    )
    if op == "transpose":
        geometry["output_padding"] = output_padding
    kplan, oplan, _ = _fused_plans(
        fn,
        op,
        _ShapeOnly(fn),
        input,
        guide,
        weight,
        bias,
        kernel_size,
        geometry,
        {**_KERNEL_DEFAULTS, **kernel_kw},
        None,
        nd,
    )
    return kplan, oplan


_FUSED_NEEDS = ("input", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel")
_FUSED_POOL_NEEDS = ("input", "guide", "inv_alpha", "inv_lambda", "smooth_kernel")


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
    """:func:`pacconv2d` straight from the guide: ``packernel2d`` + ``pacconv2d`` in one call,
    K computed on the fly, one stripe of rows at a time, never materialised whole.

    The result equals the two-step path to float rounding. Symmetric cases (a Gaussian or
    ``inv`` kernel on one channel and a point-symmetric shared filter, stride 1: the bilateral
    filters) run in the pair form, which evaluates each pair of pixels once.

    Parameters
    ----------
    input : array, shape (B, C_in, H, W), float32 or float64
    guide : array, shape (B, Cg, H, W)
        Guidance features at the input's resolution.
    weight : array, shape (C_out, C_in, kh, kw), or (1, 1, kh, kw) with ``shared_filters``
        The kernel size is the weight's.
    bias : array, shape (C_out,), optional
    stride, padding, dilation : int or (int, int), optional
        Geometry, as in ``torch.nn.functional.conv2d`` (zero padding). Default 1, 0, 1.
    shared_filters : bool, optional
        One kh×kw filter applied to every channel separately.
    **kernel_options
        The kernel keywords of :func:`packernel2d` (``kernel_type``, ``smooth_kernel_type``,
        ``smooth_kernel``, ``inv_alpha``, ``inv_lambda``, ``channel_wise``,
        ``normalize_kernel``, ``mask``): K is computed from ``guide`` with them.

    Returns
    -------
    out : array, shape (B, C_out, H_out, W_out)
    output_mask : array, shape (B, 1, H_out, W_out), or None without ``mask``

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((1, 2, 8, 8), dtype=np.float32)
    >>> guide = rng.random((1, 3, 8, 8), dtype=np.float32)
    >>> w = rng.random((4, 2, 3, 3), dtype=np.float32)
    >>> out, mask = pacnp.pacconv2d_fused(x, guide, w, padding=1)
    >>> out.shape, mask
    ((1, 4, 8, 8), None)
    >>> K, _ = pacnp.packernel2d(guide, 3, padding=1)            # the two-step path
    >>> bool(np.allclose(out, pacnp.pacconv2d(x, K, w, padding=1), atol=1e-5))
    True
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _fused_forward("pacconv2d_fused", 2, "conv", **locals())


def pacconv2d_fused_backward(
    grad_output,
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
    needs=None,
):
    """Gradients of :func:`pacconv2d_fused`.

    Parameters
    ----------
    grad_output : array, shape (B, C_out, H_out, W_out)
    input, guide, weight, bias, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 7 bool, optional
        Which gradients to compute (None: all).

    Returns
    -------
    d_input, d_guide, d_weight, d_bias, d_inv_alpha, d_inv_lambda, d_smooth_kernel : array or None
        None where not asked for or not differentiable (``bias=None``; α / λ not passed as
        arrays or ``_fixed``; no learnable smoothing kernel).

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x, guide, w = rng.random((1, 2, 6, 6)), rng.random((1, 3, 6, 6)), rng.random((2, 2, 3, 3))
    >>> grads = pacnp.pacconv2d_fused_backward(np.ones((1, 2, 6, 6)), x, guide, w, padding=1)
    >>> [None if g is None else g.shape for g in grads]
    [(1, 2, 6, 6), (1, 3, 6, 6), (2, 2, 3, 3), None, None, None, None]
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _fused_backward("pacconv2d_fused_backward", 2, "conv", **locals())


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
    """:func:`pacconv_transpose2d` straight from the guide (at the *output* resolution):
    ``packernel2d(..., transposed=True)`` + ``pacconv_transpose2d`` fused.

    Parameters
    ----------
    input : array, shape (B, C_in, H, W), float32 or float64
    guide : array, shape (B, Cg, H_out, W_out)
        Guidance features at the output's resolution.
    weight : array, shape (C_in, C_out, kh, kw), or (1, 1, kh, kw) with ``shared_filters``
    bias : array, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int), optional
        As ``conv_transpose2d``'s.
    shared_filters : bool, optional
    **kernel_options
        The kernel keywords of :func:`packernel2d` (``kernel_type``, ``smooth_kernel_type``,
        ``smooth_kernel``, ``inv_alpha``, ``inv_lambda``, ``channel_wise``,
        ``normalize_kernel``, ``mask``): K is computed from ``guide`` with them.

    Returns
    -------
    out : array, shape (B, C_out, H_out, W_out)
    output_mask : array, shape (B, 1, H_out, W_out), or None without ``mask``

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x, guide = rng.random((1, 1, 4, 4)), rng.random((1, 3, 8, 8))
    >>> out, _ = pacnp.pacconv_transpose2d_fused(x, guide, np.ones((1, 1, 3, 3)), stride=2,
    ...                                          padding=1, output_padding=1)
    >>> out.shape
    (1, 1, 8, 8)
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _fused_forward("pacconv_transpose2d_fused", 2, "transpose", **locals())


def pacconv_transpose2d_fused_backward(
    grad_output,
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
    needs=None,
):
    """Gradients of :func:`pacconv_transpose2d_fused`, as :func:`pacconv2d_fused_backward`.

    Parameters
    ----------
    grad_output : array, shape (B, C_out, H_out, W_out)
    input, guide, weight, bias, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 7 bool, optional
        Which gradients to compute (None: all).

    Returns
    -------
    d_input, d_guide, d_weight, d_bias, d_inv_alpha, d_inv_lambda, d_smooth_kernel : array or None

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x, guide = rng.random((1, 1, 4, 4)), rng.random((1, 3, 8, 8))
    >>> grads = pacnp.pacconv_transpose2d_fused_backward(
    ...     np.ones((1, 1, 8, 8)), x, guide, np.ones((1, 1, 3, 3)), stride=2, padding=1,
    ...     output_padding=1, needs=(True, True, False, False, False, False, False))
    >>> [None if g is None else g.shape for g in grads]
    [(1, 1, 4, 4), (1, 3, 8, 8), None, None, None, None, None]
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _fused_backward("pacconv_transpose2d_fused_backward", 2, "transpose", **locals())


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
    """:func:`pacpool2d` straight from the guide, K computed on the fly.

    Parameters
    ----------
    input : array, shape (B, C, H, W), float32 or float64
    guide : array, shape (B, Cg, H, W)
    kernel_size : int or (int, int)
        The window (odd).
    stride, padding, dilation : int or (int, int), optional
        Geometry, as in ``torch.nn.functional.conv2d`` (zero padding). Default 1, 0, 1.
    **kernel_options
        The kernel keywords of :func:`packernel2d` (``kernel_type``, ``smooth_kernel_type``,
        ``smooth_kernel``, ``inv_alpha``, ``inv_lambda``, ``channel_wise``,
        ``normalize_kernel``, ``mask``): K is computed from ``guide`` with them.

    Returns
    -------
    out : array, shape (B, C, H_out, W_out)
    output_mask : array, shape (B, 1, H_out, W_out), or None without ``mask``

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> out, _ = pacnp.pacpool2d_fused(x, np.zeros((1, 1, 4, 4)), 3, stride=2, padding=1,
    ...                                normalize_kernel=True)
    >>> out
    array([[[[ 2.5,  4. ],
             [ 8.5, 10. ]]]])
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _fused_forward("pacpool2d_fused", 2, "pool", **locals())


def pacpool2d_fused_backward(
    grad_output,
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
    needs=None,
):
    """Gradients of :func:`pacpool2d_fused`.

    Parameters
    ----------
    grad_output : array, shape (B, C, H_out, W_out)
    input, guide, kernel_size, **options
        Exactly the arguments and keywords of the forward call.
    needs : tuple of 5 bool, optional
        Which gradients to compute (None: all).

    Returns
    -------
    d_input, d_guide, d_inv_alpha, d_inv_lambda, d_smooth_kernel : array or None

    Raises
    ------
    TypeError
        Arrays of different libraries or devices in one call, or a dtype other than float32 /
        float64 (all floating arrays of a call share one dtype).
    ValueError
        A shape, size or option that does not fit the others; the message names the function,
        the argument, what was seen and what was expected.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
    >>> x, guide = rng.random((1, 2, 6, 6)), rng.random((1, 1, 6, 6))
    >>> grads = pacnp.pacpool2d_fused_backward(np.ones((1, 2, 6, 6)), x, guide, 3, padding=1)
    >>> [None if g is None else g.shape for g in grads]
    [(1, 2, 6, 6), (1, 1, 6, 6), None, None, None]
    """
    # every parameter, by name, to the one N-D implementation (first statement: locals()
    # holds exactly the parameters)
    return _fused_backward("pacpool2d_fused_backward", 2, "pool", **locals())
