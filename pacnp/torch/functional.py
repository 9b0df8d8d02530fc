"""Functional PAC for torch tensors, with the 2019 reference code's signatures.

``packernel2d``, ``pacconv2d``, ``pacconv_transpose2d``, ``pacpool2d`` keep the reference code's
argument names and order (``native_impl`` accepted and ignored); ``pacconv2d_fused``,
``pacconv_transpose2d_fused``, ``pacpool2d_fused`` go from the guide straight to the output.
The ``1d`` and ``3d`` functions are the same with one or three spatial axes (layout N, C, *S as
torch's conv1d/conv3d; every geometry option an int or one int per axis).

These functions only convert, then call a custom op of ``_ops``: they check that tensor
arguments are tensors, turn geometry into int lists (one per spatial axis), float16/bfloat16
into float32 (autocast; the result is cast back) and Python-number α/λ into 0-d tensors. All
other validation is pacnp's own, inside the op: its ``ValueError`` / ``TypeError`` propagate
unchanged. Each public function is a thin name over one private function that takes the number
of spatial axes ``nd``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor

from .. import _adapt, _api
from ._ops import pac_fused_op, pac_op, packernel_op

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

# pacnp's kernels compute in float32 or float64; these dtypes are computed in float32
_REDUCED = (torch.float16, torch.bfloat16)


def _tensor(fn, name, value, optional=True):
    if value is None and optional:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(
            f"pacnp.torch.{fn}: {name} must be a torch.Tensor"
            + (" or None" if optional else "")
            + f", got {type(value).__name__}"
        )
    return value


def _up(t):
    """float16/bfloat16 → float32 (autocast): pacnp's kernels accumulate in float32 at least.
    The cast is a torch op, so autograd casts the gradient back: no dtype mismatch in backward."""
    return t.float() if t is not None and t.dtype in _REDUCED else t


def _down(out, like):
    """A result back in the caller's reduced precision (``like`` is the data input)."""
    return out.to(like.dtype) if like.dtype in _REDUCED else out


def _param(fn, name, value, like):
    """α/λ: a Python number becomes a 0-d tensor (op schemas take tensors); tensors pass."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        dtype = torch.float32 if like.dtype in _REDUCED else like.dtype
        return torch.tensor(float(value), dtype=dtype, device=like.device)
    return _up(_tensor(fn, name, value))


def _kernel_tensors(fn, guide, mask, smooth_kernel, inv_alpha, inv_lambda, smooth_kernel_type):
    smooth_kernel_type, smooth_kernel = _adapt.smooth_for_pacnp(
        smooth_kernel_type, _up(_tensor(fn, "smooth_kernel", smooth_kernel))
    )
    mask = _tensor(fn, "mask", mask)
    if mask is not None and mask.dtype in _REDUCED:
        mask = mask.float()
    return (
        mask,
        smooth_kernel,
        _param(fn, "inv_alpha", inv_alpha, guide),
        _param(fn, "inv_lambda", inv_lambda, guide),
        smooth_kernel_type,
    )


def _check(check, *args, **kwargs):
    """pacnp's own checks (``pacnp._api.check_*``) before the op: a bad option must not reach
    the op schema (which would coerce ``None`` to False or raise its own RuntimeError).
    Skipped while torch.compile traces (the op checks again when it runs)."""
    if not torch.compiler.is_compiling():
        check(*args, **kwargs)


def _mask_or_none(out_mask, mask):
    return None if mask is None else out_mask


def _packernel(
    nd,
    fn,
    input,
    mask,
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
    transposed,
):
    guide = _tensor(fn, "input", input, optional=False)
    g = _up(guide)
    mask, sk, a, lam, skt = _kernel_tensors(
        fn, g, mask, smooth_kernel, inv_alpha, inv_lambda, smooth_kernel_type
    )
    _check(
        _api.check_packernel2d,
        g,
        kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        kernel_type=kernel_type,
        smooth_kernel_type=skt,
        smooth_kernel=sk,
        inv_alpha=a,
        inv_lambda=lam,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=mask,
        transposed=transposed,
        fn=fn,
        nd=nd,
    )
    geo = _adapt.tuples(
        fn,
        nd,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    K, out_mask = packernel_op(
        g,
        mask,
        sk,
        a,
        lam,
        geo["kernel_size"],
        geo["stride"],
        geo["padding"],
        geo["output_padding"],
        geo["dilation"],
        kernel_type,
        skt,
        channel_wise,
        normalize_kernel,
        transposed,
    )
    return _down(K, guide), _mask_or_none(_down(out_mask, guide), mask)


def packernel2d(
    input,
    mask=None,
    kernel_size=0,
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
    transposed=False,
    native_impl=False,
):
    """The adapting kernel K of a PAC layer, differentiable (reference-code signature).

    Parameters
    ----------
    input : Tensor (B, Cg, H, W)
        Guidance features (the reference code's name for the guide).
    mask : Tensor (B, 1, H, W) of 0/1, optional
        Masked-out guide pixels do not contribute; see docs/semantics.md.
    kernel_size, stride, padding, output_padding, dilation : int or (int, int)
    kernel_type : str
        ``'gaussian'`` or ``'inv_{alpha}_{lambda}[_asym][_fixed]'``.
    smooth_kernel_type : str
        ``'none'``, ``'gaussian'``, ``'average_N'`` or ``'full_N'``. As in the reference code, a
        ``smooth_kernel`` passed with any type but ``'none'`` is the kernel that is used.
    smooth_kernel : Tensor (N, N) or (1, 1, N, N), optional
    inv_alpha, inv_lambda : float or Tensor, optional
        Scalars (or one per channel with ``channel_wise``); default: the numbers in the string.
    channel_wise, normalize_kernel, transposed : bool
    native_impl : bool
        Accepted for compatibility with the reference code and ignored.

    Returns
    -------
    K : Tensor (B, 1 or Cg, kh, kw, Ho, Wo)
    output_mask : Tensor (B, 1, Ho, Wo) or None
        None without ``mask``. (The reference code returned it as (B, ·, 1, 1, Ho, Wo).)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> guide = torch.rand(1, 3, 8, 8, requires_grad=True)
    >>> K, mask = pac.packernel2d(guide, kernel_size=3, padding=1)
    >>> tuple(K.shape), K.dtype, mask
    ((1, 1, 3, 3, 8, 8), torch.float32, None)
    >>> K.sum().backward(); tuple(guide.grad.shape)
    (1, 3, 8, 8)
    """
    return _packernel(
        2,
        "packernel2d",
        input,
        mask,
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
        transposed,
    )


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
    x = _tensor(fn, "input", input, optional=False)
    kernel = _tensor(fn, "kernel", kernel, optional=False)
    if op == "pool":
        ks = kernel_size
    else:
        weight = _tensor(fn, "weight", weight, optional=False)
        # pacnp takes the kernel size from the weight; the fake implementation needs it here
        ks = tuple(weight.shape[-nd:]) if weight.dim() >= nd else 1
    bias = _tensor(fn, "bias", bias)
    _check(
        _api.check_op,
        fn,
        op,
        _up(x),
        _up(kernel),
        _up(weight),
        _up(bias),
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        shared_filters=shared_filters,
        nd=nd,
    )
    geo = _adapt.tuples(
        fn,
        nd,
        kernel_size=ks,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    out = pac_op(
        _up(x),
        _up(kernel),
        _up(weight),
        _up(_tensor(fn, "bias", bias)),
        op,
        geo["kernel_size"],
        geo["stride"],
        geo["padding"],
        geo["output_padding"],
        geo["dilation"],
        shared_filters,
    )
    return _down(out, x)


def pacconv2d(
    input,
    kernel,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    native_impl=False,
):
    """Pixel-adaptive convolution with a precomputed ``kernel`` (reference-code signature).

    ``input`` (B, C_in, H, W), ``kernel`` (B, 1 or C_in, kh, kw, Ho, Wo) from
    :func:`packernel2d`, ``weight`` (C_out, C_in, kh, kw) or (1, 1, kh, kw) with
    ``shared_filters``, ``bias`` (C_out,). ``native_impl`` is accepted and ignored.
    Returns the (B, C_out, Ho, Wo) output; differentiable in every tensor argument.

    Returns
    -------
    Tensor (B, C_out, Ho, Wo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> x, guide = torch.rand(1, 2, 8, 8), torch.rand(1, 3, 8, 8)
    >>> K, _ = pac.packernel2d(guide, kernel_size=3, padding=1)
    >>> w = torch.rand(4, 2, 3, 3, requires_grad=True)
    >>> out = pac.pacconv2d(x, K, w, padding=1)
    >>> tuple(out.shape)
    (1, 4, 8, 8)
    >>> out.sum().backward(); tuple(w.grad.shape)
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
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
    native_impl=False,
):
    """Pixel-adaptive transposed convolution (reference-code signature).

    ``weight`` is (C_in, C_out, kh, kw) **in torch's ``ConvTranspose2d`` orientation**: with
    K ≡ 1 the result is ``F.conv_transpose2d`` with the same weight. The reference code applied
    its weights flipped; convert such weights with ``weight.flip(-2, -1)`` (or a whole checkpoint
    with :func:`convert_reference_state_dict`). ``native_impl`` is accepted and ignored.

    Returns
    -------
    Tensor (B, C_out, Ho, Wo)
        Sizes as ``F.conv_transpose2d``'s.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel2d(torch.rand(1, 3, 8, 8), kernel_size=3, stride=2, padding=1,
    ...                        output_padding=1, transposed=True)
    >>> out = pac.pacconv_transpose2d(torch.rand(1, 2, 4, 4), K, torch.rand(2, 5, 3, 3),
    ...                               stride=2, padding=1, output_padding=1)
    >>> tuple(out.shape)
    (1, 5, 8, 8)
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


def pacpool2d(input, kernel, kernel_size, stride=1, padding=0, dilation=1, native_impl=False):
    """Pixel-adaptive pooling ``Σ_taps K·x`` (reference-code signature; ``native_impl``
    ignored). With a normalised kernel from a constant guide this is
    ``F.avg_pool2d(..., count_include_pad=False)``.

    Returns
    -------
    Tensor (B, C, Ho, Wo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel2d(torch.zeros(1, 1, 4, 4), kernel_size=3, stride=2, padding=1,
    ...                        normalize_kernel=True)
    >>> pac.pacpool2d(torch.arange(16.0).reshape(1, 1, 4, 4), K, 3, stride=2, padding=1)
    tensor([[[[ 2.5000,  4.0000],
              [ 8.5000, 10.0000]]]])
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
    x = _tensor(fn, "input", input, optional=False)
    g = _up(_tensor(fn, "guide", guide, optional=False))
    if op == "pool":
        ks = kernel_size
    else:
        weight = _tensor(fn, "weight", weight, optional=False)
        ks = tuple(weight.shape[-nd:]) if weight.dim() >= nd else 1
    mask, sk, a, lam, skt = _kernel_tensors(
        fn, g, mask, smooth_kernel, inv_alpha, inv_lambda, smooth_kernel_type
    )
    _check(
        _api.check_fused,
        fn,
        op,
        _up(x),
        g,
        _up(weight),
        _up(_tensor(fn, "bias", bias)),
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        shared_filters=shared_filters,
        kernel_type=kernel_type,
        smooth_kernel_type=skt,
        smooth_kernel=sk,
        inv_alpha=a,
        inv_lambda=lam,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=mask,
        nd=nd,
    )
    geo = _adapt.tuples(
        fn,
        nd,
        kernel_size=ks,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    out, out_mask = pac_fused_op(
        _up(x),
        g,
        _up(weight),
        _up(_tensor(fn, "bias", bias)),
        sk,
        a,
        lam,
        mask,
        op,
        geo["kernel_size"],
        geo["stride"],
        geo["padding"],
        geo["output_padding"],
        geo["dilation"],
        shared_filters,
        kernel_type,
        skt,
        channel_wise,
        normalize_kernel,
    )
    return _down(out, x), _mask_or_none(_down(out_mask, x), mask)


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
    """:func:`packernel2d` + :func:`pacconv2d` in one op, K never materialised whole.

    ``guide`` is (B, Cg, H, W) at the input's resolution; the kernel keywords are
    :func:`packernel2d`'s. Returns ``(output, output_mask or None)``. Differentiable in input,
    guide, weight, bias, α/λ tensors and the smoothing kernel; the backward recomputes K.

    Returns
    -------
    output : Tensor (B, C_out, Ho, Wo)
    output_mask : Tensor (B, 1, Ho, Wo) or None
        None without ``mask``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> x, guide = torch.rand(1, 2, 8, 8), torch.rand(1, 3, 8, 8, requires_grad=True)
    >>> out, mask = pac.pacconv2d_fused(x, guide, torch.rand(4, 2, 3, 3), padding=1)
    >>> tuple(out.shape), mask
    ((1, 4, 8, 8), None)
    >>> out.sum().backward(); tuple(guide.grad.shape)
    (1, 3, 8, 8)
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
    """:func:`pacconv_transpose2d` straight from the guide (at the *output* resolution).
    Returns ``(output, output_mask or None)``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> out, _ = pac.pacconv_transpose2d_fused(torch.rand(1, 1, 4, 4), torch.rand(1, 3, 8, 8),
    ...                                        torch.ones(1, 1, 3, 3), stride=2, padding=1,
    ...                                        output_padding=1)
    >>> tuple(out.shape)
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
    """:func:`pacpool2d` straight from the guide. Returns ``(output, output_mask or None)``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> out, _ = pac.pacpool2d_fused(torch.rand(1, 2, 8, 8), torch.rand(1, 3, 8, 8), 3,
    ...                              stride=2, padding=1)
    >>> tuple(out.shape)
    (1, 2, 4, 4)
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
# above (one implementation for every ``nd``). Layout N, C, *S as torch's conv1d / conv3d;
# every geometry option is an int or a tuple of one int per axis.
def packernel1d(
    input,
    mask=None,
    kernel_size=0,
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
    transposed=False,
    native_impl=False,
):
    """:func:`packernel2d` for signals: guide (B, Cg, L), mask (B, 1, L).

    The arguments are :func:`packernel2d`'s; geometry options are ints (or 1-tuples) and a
    ``full_N`` smoothing kernel is (N,) or (1, 1, N).

    Returns
    -------
    K : Tensor (B, 1 or Cg, k, Lo)
    output_mask : Tensor (B, 1, Lo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> guide = torch.rand(2, 3, 16, requires_grad=True)
    >>> K, _ = pac.packernel1d(guide, kernel_size=5, padding=2)
    >>> tuple(K.shape)
    (2, 1, 5, 16)
    >>> K.sum().backward(); tuple(guide.grad.shape)
    (2, 3, 16)
    """
    return _packernel(
        1,
        "packernel1d",
        input,
        mask,
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
        transposed,
    )


def packernel3d(
    input,
    mask=None,
    kernel_size=0,
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
    transposed=False,
    native_impl=False,
):
    """:func:`packernel2d` for volumes: guide (B, Cg, D, H, W), mask (B, 1, D, H, W).

    The arguments are :func:`packernel2d`'s; geometry options are ints or (d, h, w) triples
    and a ``full_N`` smoothing kernel is (N, N, N) or (1, 1, N, N, N).

    Returns
    -------
    K : Tensor (B, 1 or Cg, kd, kh, kw, Do, Ho, Wo)
    output_mask : Tensor (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> guide = torch.rand(1, 2, 4, 5, 6)
    >>> K, mask = pac.packernel3d(guide, torch.ones(1, 1, 4, 5, 6), kernel_size=3, padding=1)
    >>> tuple(K.shape), tuple(mask.shape)
    ((1, 1, 3, 3, 3, 4, 5, 6), (1, 1, 4, 5, 6))
    """
    return _packernel(
        3,
        "packernel3d",
        input,
        mask,
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
        transposed,
    )


def pacconv1d(
    input,
    kernel,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    native_impl=False,
):
    """:func:`pacconv2d` for signals: input (B, C_in, L), kernel (B, 1 or C_in, k, Lo) from
    :func:`packernel1d`, weight (C_out, C_in, k) or (1, 1, k) with ``shared_filters``.

    Returns
    -------
    Tensor (B, C_out, Lo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel1d(torch.rand(1, 3, 16), kernel_size=3, padding=1)
    >>> out = pac.pacconv1d(torch.rand(1, 2, 16), K, torch.rand(4, 2, 3), padding=1)
    >>> tuple(out.shape)
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
    input,
    kernel,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
    native_impl=False,
):
    """:func:`pacconv2d` for volumes: input (B, C_in, D, H, W), kernel
    (B, 1 or C_in, kd, kh, kw, Do, Ho, Wo) from :func:`packernel3d`, weight
    (C_out, C_in, kd, kh, kw) or (1, 1, kd, kh, kw) with ``shared_filters``.

    Returns
    -------
    Tensor (B, C_out, Do, Ho, Wo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel3d(torch.rand(1, 3, 6, 6, 6), kernel_size=3, stride=2, padding=1)
    >>> out = pac.pacconv3d(torch.rand(1, 2, 6, 6, 6), K, torch.rand(4, 2, 3, 3, 3),
    ...                     stride=2, padding=1)
    >>> tuple(out.shape)
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
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
    native_impl=False,
):
    """:func:`pacconv_transpose2d` for signals: weight (C_in, C_out, k) in
    ``nn.ConvTranspose1d``'s orientation; with K ≡ 1 this is ``F.conv_transpose1d``.

    Returns
    -------
    Tensor (B, C_out, Lo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel1d(torch.rand(1, 3, 16), kernel_size=3, stride=2, padding=1,
    ...                        output_padding=1, transposed=True)
    >>> out = pac.pacconv_transpose1d(torch.rand(1, 2, 8), K, torch.rand(2, 5, 3),
    ...                               stride=2, padding=1, output_padding=1)
    >>> tuple(out.shape)
    (1, 5, 16)
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
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
    native_impl=False,
):
    """:func:`pacconv_transpose2d` for volumes: weight (C_in, C_out, kd, kh, kw) in
    ``nn.ConvTranspose3d``'s orientation; with K ≡ 1 this is ``F.conv_transpose3d``.

    Returns
    -------
    Tensor (B, C_out, Do, Ho, Wo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel3d(torch.rand(1, 3, 8, 8, 8), kernel_size=3, stride=2, padding=1,
    ...                        output_padding=1, transposed=True)
    >>> out = pac.pacconv_transpose3d(torch.rand(1, 2, 4, 4, 4), K, torch.rand(2, 5, 3, 3, 3),
    ...                               stride=2, padding=1, output_padding=1)
    >>> tuple(out.shape)
    (1, 5, 8, 8, 8)
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


def pacpool1d(input, kernel, kernel_size, stride=1, padding=0, dilation=1, native_impl=False):
    """:func:`pacpool2d` for signals: input (B, C, L), kernel (B, 1 or C, k, Lo).

    Returns
    -------
    Tensor (B, C, Lo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel1d(torch.zeros(1, 1, 4), kernel_size=3, stride=2, padding=1,
    ...                        normalize_kernel=True)
    >>> pac.pacpool1d(torch.arange(4.0).reshape(1, 1, 4), K, 3, stride=2, padding=1)
    tensor([[[0.5000, 2.0000]]])
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


def pacpool3d(input, kernel, kernel_size, stride=1, padding=0, dilation=1, native_impl=False):
    """:func:`pacpool2d` for volumes: input (B, C, D, H, W), kernel
    (B, 1 or C, kd, kh, kw, Do, Ho, Wo).

    Returns
    -------
    Tensor (B, C, Do, Ho, Wo)

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> K, _ = pac.packernel3d(torch.zeros(1, 1, 4, 4, 4), kernel_size=3, stride=2, padding=1,
    ...                        normalize_kernel=True)
    >>> out = pac.pacpool3d(torch.ones(1, 2, 4, 4, 4), K, 3, stride=2, padding=1)
    >>> tuple(out.shape), float(out.mean())
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
    """:func:`pacconv2d_fused` for signals: input (B, C_in, L), guide (B, Cg, L), weight
    (C_out, C_in, k). Returns ``(output, output_mask or None)``.

    Returns
    -------
    output : Tensor (B, C_out, Lo)
    output_mask : Tensor (B, 1, Lo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> guide = torch.rand(1, 3, 32, requires_grad=True)
    >>> out, _ = pac.pacconv1d_fused(torch.rand(1, 2, 32), guide, torch.rand(4, 2, 5), padding=2)
    >>> tuple(out.shape)
    (1, 4, 32)
    >>> out.sum().backward(); tuple(guide.grad.shape)
    (1, 3, 32)
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
    """:func:`pacconv2d_fused` for volumes: input (B, C_in, D, H, W), guide (B, Cg, D, H, W),
    weight (C_out, C_in, kd, kh, kw). Returns ``(output, output_mask or None)``.

    Returns
    -------
    output : Tensor (B, C_out, Do, Ho, Wo)
    output_mask : Tensor (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> x, guide = torch.rand(1, 2, 5, 6, 7), torch.rand(1, 1, 5, 6, 7)
    >>> out, _ = pac.pacconv3d_fused(x, guide, torch.rand(3, 2, 3, 3, 3), padding=1)
    >>> tuple(out.shape)
    (1, 3, 5, 6, 7)
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
    """:func:`pacconv_transpose2d_fused` for signals (guide (B, Cg, Lo) at the *output*
    resolution). Returns ``(output, output_mask or None)``.

    Returns
    -------
    output : Tensor (B, C_out, Lo)
    output_mask : Tensor (B, 1, Lo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> out, _ = pac.pacconv_transpose1d_fused(torch.rand(1, 1, 8), torch.rand(1, 3, 16),
    ...                                        torch.ones(1, 1, 3), stride=2, padding=1,
    ...                                        output_padding=1)
    >>> tuple(out.shape)
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
    """:func:`pacconv_transpose2d_fused` for volumes (guide (B, Cg, Do, Ho, Wo) at the
    *output* resolution). Returns ``(output, output_mask or None)``.

    Returns
    -------
    output : Tensor (B, C_out, Do, Ho, Wo)
    output_mask : Tensor (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> out, _ = pac.pacconv_transpose3d_fused(torch.rand(1, 1, 2, 3, 4),
    ...                                        torch.rand(1, 3, 4, 6, 8),
    ...                                        torch.ones(1, 1, 3, 3, 3), stride=2, padding=1,
    ...                                        output_padding=1)
    >>> tuple(out.shape)
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
    """:func:`pacpool2d_fused` for signals. Returns ``(output, output_mask or None)``.

    Returns
    -------
    output : Tensor (B, C, Lo)
    output_mask : Tensor (B, 1, Lo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> out, _ = pac.pacpool1d_fused(torch.rand(1, 2, 16), torch.rand(1, 3, 16), 3,
    ...                              stride=2, padding=1)
    >>> tuple(out.shape)
    (1, 2, 8)
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
    """:func:`pacpool2d_fused` for volumes. Returns ``(output, output_mask or None)``.

    Returns
    -------
    output : Tensor (B, C, Do, Ho, Wo)
    output_mask : Tensor (B, 1, Do, Ho, Wo) or None

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> out, _ = pac.pacpool3d_fused(torch.rand(1, 2, 4, 6, 6), torch.rand(1, 3, 4, 6, 6), 3,
    ...                              stride=(1, 2, 2), padding=1)
    >>> tuple(out.shape)
    (1, 2, 4, 3, 3)
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
