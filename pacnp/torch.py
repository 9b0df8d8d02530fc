"""PyTorch adapter: pacnp's kernels as autograd-aware torch operators, functions and layers.

A drop-in for the PAC layers of the 2019 reference code (``pac.py`` / ``paccrf.py`` of
NVlabs/pacnet, which stopped working at PyTorch 1.2), on today's PyTorch (≥ 2.4):

* functional ``packernel2d``, ``pacconv2d``, ``pacconv_transpose2d``, ``pacpool2d`` with the
  reference code's argument names (``native_impl`` accepted and ignored), plus the fused
  ``pacconv2d_fused``, ``pacconv_transpose2d_fused``, ``pacpool2d_fused`` (guide → output);
* layers ``PacConv2d``, ``PacConvTranspose2d``, ``PacPool2d`` (same constructor arguments and
  defaults, same parameter/buffer names, so state dicts line up), ``from_conv`` hot-swapping;
* ``PacCRF``, ``PacCRFLoose``, ``create_YXRGB``, ``create_position_feats``;
* ``convert_reference_state_dict`` / ``load_reference_state_dict`` for checkpoints of the
  reference code (its transposed-convolution weights are spatially flipped).

Every op is a ``torch.library.custom_op`` (``pacnp::*``) with a fake implementation and an
autograd formula whose backward is again a custom op, so ``torch.compile(fullgraph=True)`` traces
through forward and backward without graph breaks. The ops hand the tensors themselves to pacnp's
public functions, which read them through DLPack (no copy for contiguous tensors) and return
torch tensors wrapping pacnp's result buffers (DLPack again, no copy). Validation is pacnp's own:
its ``ValueError`` / ``TypeError`` propagate unchanged. The adapter only converts: it turns
geometry into int pairs, float16/bfloat16 into float32 (autocast; the result is cast back), and
Python-number α/λ into 0-d tensors.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from . import _adapt, _api, _core

__all__ = [
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pacconv2d_fused", "pacconv_transpose2d_fused", "pacpool2d_fused",
    "PacConv2d", "PacConvTranspose2d", "PacPool2d", "PacCRF", "PacCRFLoose",
    "create_YXRGB", "create_position_feats",
    "convert_reference_state_dict", "load_reference_state_dict",
]

_REDUCED = (torch.float16, torch.bfloat16)


# =========================================================================== custom operators
# Tensors first (their positions index ctx.needs_input_grad), then the static options. Optional
# outputs cannot be None in an op schema: an absent output mask / unneeded gradient is an empty
# tensor, which the Python wrappers turn back into None.

def _empty(like):
    return like.new_empty((0,))


def _grads_out(grads, likes, needs):
    """pacnp's gradient tuple as an op result: a tensor per input, empty where not needed,
    zeros where needed but not differentiable (pacnp says None, e.g. α/λ with ``_fixed``)."""
    base = next(t for t in likes if t is not None)
    out = []
    for g, like, need in zip(grads, likes, needs):
        if not need:
            out.append(_empty(base))
        elif g is None:
            out.append(torch.zeros_like(like))
        else:
            out.append(g)
    return out


def _grads_fake(likes, needs):
    base = next(t for t in likes if t is not None)
    return [torch.empty_like(like) if need else _empty(base) for like, need in zip(likes, needs)]


def _kernel_kw(smooth_kernel, inv_alpha, inv_lambda, mask, kernel_type, smooth_kernel_type,
               channel_wise, normalize_kernel):
    return dict(kernel_type=kernel_type, smooth_kernel_type=smooth_kernel_type,
                smooth_kernel=smooth_kernel, inv_alpha=inv_alpha, inv_lambda=inv_lambda,
                channel_wise=channel_wise, normalize_kernel=normalize_kernel, mask=mask)


# --------------------------------------------------------------------------- packernel2d
@torch.library.custom_op("pacnp::packernel2d", mutates_args=())
def _kernel_op(guide: Tensor, mask: Optional[Tensor], smooth_kernel: Optional[Tensor],
               inv_alpha: Optional[Tensor], inv_lambda: Optional[Tensor], kernel_size: list[int],
               stride: list[int], padding: list[int], output_padding: list[int],
               dilation: list[int], kernel_type: str, smooth_kernel_type: str,
               channel_wise: bool, normalize_kernel: bool,
               transposed: bool) -> tuple[Tensor, Tensor]:
    K, out_mask = _api.packernel2d(
        guide, kernel_size, stride=stride, padding=padding, output_padding=output_padding,
        dilation=dilation, transposed=transposed,
        **_kernel_kw(smooth_kernel, inv_alpha, inv_lambda, mask, kernel_type,
                     smooth_kernel_type, channel_wise, normalize_kernel))
    return K, (_empty(guide) if out_mask is None else out_mask)


@_kernel_op.register_fake
def _(guide, mask, smooth_kernel, inv_alpha, inv_lambda, kernel_size, stride, padding,
      output_padding, dilation, kernel_type, smooth_kernel_type, channel_wise, normalize_kernel,
      transposed):
    shape = _adapt.kernel_shape(guide.shape, kernel_size, stride, padding, dilation,
                                channel_wise, transposed)
    out_mask = _empty(guide) if mask is None else guide.new_empty(
        (shape[0], 1) + tuple(shape[4:]))
    return guide.new_empty(shape), out_mask


@torch.library.custom_op("pacnp::packernel2d_backward", mutates_args=())
def _kernel_bwd_op(grad: Tensor, guide: Tensor, mask: Optional[Tensor],
                   smooth_kernel: Optional[Tensor], inv_alpha: Optional[Tensor],
                   inv_lambda: Optional[Tensor], kernel_size: list[int], stride: list[int],
                   padding: list[int], output_padding: list[int], dilation: list[int],
                   kernel_type: str, smooth_kernel_type: str, channel_wise: bool,
                   normalize_kernel: bool, transposed: bool, needs: list[bool]) -> list[Tensor]:
    # pacnp's order: (d_guide, d_inv_alpha, d_inv_lambda, d_smooth_kernel)
    grads = _api.packernel2d_backward(
        grad, guide, kernel_size, stride=stride, padding=padding, output_padding=output_padding,
        dilation=dilation, transposed=transposed, needs=tuple(needs),
        **_kernel_kw(smooth_kernel, inv_alpha, inv_lambda, mask, kernel_type,
                     smooth_kernel_type, channel_wise, normalize_kernel))
    return _grads_out(grads, (guide, inv_alpha, inv_lambda, smooth_kernel), needs)


@_kernel_bwd_op.register_fake
def _(grad, guide, mask, smooth_kernel, inv_alpha, inv_lambda, *static_and_needs):
    return _grads_fake((guide, inv_alpha, inv_lambda, smooth_kernel), static_and_needs[-1])


def _kernel_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:5])
    ctx.static = inputs[5:]
    ctx.mark_non_differentiable(output[1])


def _kernel_backward(ctx, grad_K, _grad_mask):
    guide, mask, smooth_kernel, inv_alpha, inv_lambda = ctx.saved_tensors
    ng = ctx.needs_input_grad
    needs = [ng[0], ng[3], ng[4], ng[2]]
    none = (None,) * len(ctx.static)
    if grad_K is None or not any(needs):
        return (None,) * 5 + none
    d_guide, d_alpha, d_lambda, d_smooth = _kernel_bwd_op(
        grad_K, guide, mask, smooth_kernel, inv_alpha, inv_lambda, *ctx.static, needs)
    return (d_guide if needs[0] else None, None, d_smooth if needs[3] else None,
            d_alpha if needs[1] else None, d_lambda if needs[2] else None) + none


_kernel_op.register_autograd(_kernel_backward, setup_context=_kernel_setup)


# --------------------------------------------------------------------------- two-step ops
def _op_forward(op, input, kernel, weight, bias, kernel_size, stride, padding, output_padding,
                dilation, shared_filters):
    if op == "conv":
        return _api.pacconv2d(input, kernel, weight, bias, stride=stride, padding=padding,
                              dilation=dilation, shared_filters=shared_filters)
    if op == "transpose":
        return _api.pacconv_transpose2d(input, kernel, weight, bias, stride=stride,
                                        padding=padding, output_padding=output_padding,
                                        dilation=dilation, shared_filters=shared_filters)
    return _api.pacpool2d(input, kernel, kernel_size, stride=stride, padding=padding,
                          dilation=dilation)


@torch.library.custom_op("pacnp::pac_op", mutates_args=())
def _op_op(input: Tensor, kernel: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
           op: str, kernel_size: list[int], stride: list[int], padding: list[int],
           output_padding: list[int], dilation: list[int], shared_filters: bool) -> Tensor:
    return _op_forward(op, input, kernel, weight, bias, kernel_size, stride, padding,
                       output_padding, dilation, shared_filters)


@_op_op.register_fake
def _(input, kernel, weight, bias, op, kernel_size, stride, padding, output_padding, dilation,
      shared_filters):
    hw = _adapt.op_out_hw(op, input.shape[2:], kernel_size, stride, padding, output_padding,
                          dilation)
    c = _adapt.op_out_channels(op, input.shape[1], None if weight is None else weight.shape,
                               shared_filters)
    return input.new_empty((input.shape[0], c) + tuple(hw))


@torch.library.custom_op("pacnp::pac_op_backward", mutates_args=())
def _op_bwd_op(grad: Tensor, input: Tensor, kernel: Tensor, weight: Optional[Tensor],
               bias: Optional[Tensor], op: str, kernel_size: list[int], stride: list[int],
               padding: list[int], output_padding: list[int], dilation: list[int],
               shared_filters: bool, needs: list[bool]) -> list[Tensor]:
    # always four results (input, kernel, weight, bias); pooling has no weight or bias
    likes = (input, kernel, weight, bias)
    if op == "conv":
        grads = _api.pacconv2d_backward(grad, input, kernel, weight, bias, stride=stride,
                                        padding=padding, dilation=dilation,
                                        shared_filters=shared_filters, needs=tuple(needs))
    elif op == "transpose":
        grads = _api.pacconv_transpose2d_backward(
            grad, input, kernel, weight, bias, stride=stride, padding=padding,
            output_padding=output_padding, dilation=dilation, shared_filters=shared_filters,
            needs=tuple(needs))
    else:
        grads = _api.pacpool2d_backward(grad, input, kernel, kernel_size, stride=stride,
                                        padding=padding, dilation=dilation,
                                        needs=tuple(needs[:2])) + (None, None)
    return _grads_out(grads, likes, needs)


@_op_bwd_op.register_fake
def _(grad, input, kernel, weight, bias, *static_and_needs):
    return _grads_fake((input, kernel, weight, bias), static_and_needs[-1])


def _op_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])
    ctx.static = inputs[4:]


def _op_backward(ctx, grad):
    input, kernel, weight, bias = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:4])
    none = (None,) * len(ctx.static)
    if grad is None or not any(needs):
        return (None,) * 4 + none
    grads = _op_bwd_op(grad, input, kernel, weight, bias, *ctx.static, needs)
    return tuple(g if n else None for g, n in zip(grads, needs)) + none


_op_op.register_autograd(_op_backward, setup_context=_op_setup)


# --------------------------------------------------------------------------- fused ops
def _fused_call(backward, op, input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda,
                mask, kernel_size, stride, padding, output_padding, dilation, shared_filters,
                kernel_type, smooth_kernel_type, channel_wise, normalize_kernel, **extra):
    kw = dict(stride=stride, padding=padding, dilation=dilation, **extra,
              **_kernel_kw(smooth_kernel, inv_alpha, inv_lambda, mask, kernel_type,
                           smooth_kernel_type, channel_wise, normalize_kernel))
    if op == "pool":
        fn = _api.pacpool2d_fused_backward if backward else _api.pacpool2d_fused
        return fn(*backward, input, guide, kernel_size, **kw)
    kw["shared_filters"] = shared_filters
    if op == "transpose":
        kw["output_padding"] = output_padding
        fn = _api.pacconv_transpose2d_fused_backward if backward else \
            _api.pacconv_transpose2d_fused
    else:
        fn = _api.pacconv2d_fused_backward if backward else _api.pacconv2d_fused
    return fn(*backward, input, guide, weight, bias, **kw)


@torch.library.custom_op("pacnp::pac_fused", mutates_args=())
def _fused_op(input: Tensor, guide: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
              smooth_kernel: Optional[Tensor], inv_alpha: Optional[Tensor],
              inv_lambda: Optional[Tensor], mask: Optional[Tensor], op: str,
              kernel_size: list[int], stride: list[int], padding: list[int],
              output_padding: list[int], dilation: list[int], shared_filters: bool,
              kernel_type: str, smooth_kernel_type: str, channel_wise: bool,
              normalize_kernel: bool) -> tuple[Tensor, Tensor]:
    out, out_mask = _fused_call(
        (), op, input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, mask,
        kernel_size, stride, padding, output_padding, dilation, shared_filters, kernel_type,
        smooth_kernel_type, channel_wise, normalize_kernel)
    return out, (_empty(input) if out_mask is None else out_mask)


@_fused_op.register_fake
def _(input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, mask, op, kernel_size,
      stride, padding, output_padding, dilation, shared_filters, *kernel_options):
    hw = tuple(_adapt.op_out_hw(op, input.shape[2:], kernel_size, stride, padding,
                                output_padding, dilation))
    c = _adapt.op_out_channels(op, input.shape[1], None if weight is None else weight.shape,
                               shared_filters)
    out_mask = _empty(input) if mask is None else input.new_empty((input.shape[0], 1) + hw)
    return input.new_empty((input.shape[0], c) + hw), out_mask


@torch.library.custom_op("pacnp::pac_fused_backward", mutates_args=())
def _fused_bwd_op(grad: Tensor, input: Tensor, guide: Tensor, weight: Optional[Tensor],
                  bias: Optional[Tensor], smooth_kernel: Optional[Tensor],
                  inv_alpha: Optional[Tensor], inv_lambda: Optional[Tensor],
                  mask: Optional[Tensor], op: str, kernel_size: list[int], stride: list[int],
                  padding: list[int], output_padding: list[int], dilation: list[int],
                  shared_filters: bool, kernel_type: str, smooth_kernel_type: str,
                  channel_wise: bool, normalize_kernel: bool,
                  needs: list[bool]) -> list[Tensor]:
    # ``needs`` and the result follow this op's input order (input, guide, weight, bias,
    # smooth_kernel, inv_alpha, inv_lambda); pacnp's order puts α, λ before smooth_kernel and
    # has no weight/bias for pooling.
    n_x, n_g, n_w, n_b, n_s, n_a, n_l = needs
    pool = op == "pool"
    pac_needs = (n_x, n_g, n_a, n_l, n_s) if pool else (n_x, n_g, n_w, n_b, n_a, n_l, n_s)
    grads = _fused_call(
        (grad,), op, input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, mask,
        kernel_size, stride, padding, output_padding, dilation, shared_filters, kernel_type,
        smooth_kernel_type, channel_wise, normalize_kernel, needs=pac_needs)
    if pool:
        d_x, d_g, d_a, d_l, d_s = grads
        d_w = d_b = None
    else:
        d_x, d_g, d_w, d_b, d_a, d_l, d_s = grads
    return _grads_out((d_x, d_g, d_w, d_b, d_s, d_a, d_l),
                      (input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda), needs)


@_fused_bwd_op.register_fake
def _(grad, input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, mask,
      *static_and_needs):
    return _grads_fake((input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda),
                       static_and_needs[-1])


def _fused_setup(ctx, inputs, output):
    # the backward recomputes K from the guide: only the inputs are kept, never K
    ctx.save_for_backward(*inputs[:8])
    ctx.static = inputs[8:]
    ctx.mark_non_differentiable(output[1])


def _fused_backward(ctx, grad, _grad_mask):
    saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:7])
    none = (None,) * (1 + len(ctx.static))  # the mask, then the options
    if grad is None or not any(needs):
        return (None,) * 7 + none
    grads = _fused_bwd_op(grad, *saved, *ctx.static, needs)
    return tuple(g if n else None for g, n in zip(grads, needs)) + none


_fused_op.register_autograd(_fused_backward, setup_context=_fused_setup)


# =========================================================================== functional API
def _tensor(fn, name, value, optional=True):
    if value is None and optional:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(f"pacnp.torch.{fn}: {name} must be a torch.Tensor"
                        + (" or None" if optional else "") + f", got {type(value).__name__}")
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
        smooth_kernel_type, _up(_tensor(fn, "smooth_kernel", smooth_kernel)))
    mask = _tensor(fn, "mask", mask)
    if mask is not None and mask.dtype in _REDUCED:
        mask = mask.float()
    return (mask, smooth_kernel, _param(fn, "inv_alpha", inv_alpha, guide),
            _param(fn, "inv_lambda", inv_lambda, guide), smooth_kernel_type)


def _mask_or_none(out_mask, mask):
    return None if mask is None else out_mask


def packernel2d(input, mask=None, kernel_size=0, stride=1, padding=0, output_padding=0,
                dilation=1, kernel_type="gaussian", smooth_kernel_type="none", smooth_kernel=None,
                inv_alpha=None, inv_lambda=None, channel_wise=False, normalize_kernel=False,
                transposed=False, native_impl=False):
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
    """
    fn = "packernel2d"
    guide = _tensor(fn, "input", input, optional=False)
    g = _up(guide)
    mask, sk, a, lam, skt = _kernel_tensors(fn, g, mask, smooth_kernel, inv_alpha, inv_lambda,
                                            smooth_kernel_type)
    geo = _adapt.pairs(fn, kernel_size=kernel_size, stride=stride, padding=padding,
                       output_padding=output_padding, dilation=dilation)
    K, out_mask = _kernel_op(g, mask, sk, a, lam, geo["kernel_size"], geo["stride"],
                             geo["padding"], geo["output_padding"], geo["dilation"],
                             kernel_type, skt, channel_wise, normalize_kernel, transposed)
    return _down(K, guide), _mask_or_none(_down(out_mask, guide), mask)


def _op(fn, op, input, kernel, weight, bias, kernel_size, stride, padding, output_padding,
        dilation, shared_filters):
    x = _tensor(fn, "input", input, optional=False)
    kernel = _tensor(fn, "kernel", kernel, optional=False)
    if op == "pool":
        ks = kernel_size
    else:
        weight = _tensor(fn, "weight", weight, optional=False)
        # pacnp takes the kernel size from the weight; the fake implementation needs it here
        ks = tuple(weight.shape[-2:]) if weight.dim() >= 2 else 1
    geo = _adapt.pairs(fn, kernel_size=ks, stride=stride, padding=padding,
                       output_padding=output_padding, dilation=dilation)
    out = _op_op(_up(x), _up(kernel), _up(weight), _up(_tensor(fn, "bias", bias)), op,
                 geo["kernel_size"], geo["stride"], geo["padding"], geo["output_padding"],
                 geo["dilation"], shared_filters)
    return _down(out, x)


def pacconv2d(input, kernel, weight, bias=None, stride=1, padding=0, dilation=1,
              shared_filters=False, native_impl=False):
    """Pixel-adaptive convolution with a precomputed ``kernel`` (reference-code signature).

    ``input`` (B, C_in, H, W), ``kernel`` (B, 1 or C_in, kh, kw, Ho, Wo) from
    :func:`packernel2d`, ``weight`` (C_out, C_in, kh, kw) or (1, 1, kh, kw) with
    ``shared_filters``, ``bias`` (C_out,). ``native_impl`` is accepted and ignored.
    Returns the (B, C_out, Ho, Wo) output; differentiable in every tensor argument.
    """
    return _op("pacconv2d", "conv", input, kernel, weight, bias, None, stride, padding, 0,
               dilation, shared_filters)


def pacconv_transpose2d(input, kernel, weight, bias=None, stride=1, padding=0, output_padding=0,
                        dilation=1, shared_filters=False, native_impl=False):
    """Pixel-adaptive transposed convolution (reference-code signature).

    ``weight`` is (C_in, C_out, kh, kw) **in torch's ``ConvTranspose2d`` orientation**: with
    K ≡ 1 the result is ``F.conv_transpose2d`` with the same weight. The reference code applied
    its weights flipped; convert such weights with ``weight.flip(-2, -1)`` (or a whole checkpoint
    with :func:`convert_reference_state_dict`). ``native_impl`` is accepted and ignored.
    """
    return _op("pacconv_transpose2d", "transpose", input, kernel, weight, bias, None, stride,
               padding, output_padding, dilation, shared_filters)


def pacpool2d(input, kernel, kernel_size, stride=1, padding=0, dilation=1, native_impl=False):
    """Pixel-adaptive pooling ``Σ_taps K·x`` (reference-code signature; ``native_impl``
    ignored). With a normalised kernel from a constant guide this is
    ``F.avg_pool2d(..., count_include_pad=False)``."""
    return _op("pacpool2d", "pool", input, kernel, None, None, kernel_size, stride, padding, 0,
               dilation, False)


def _fused(fn, op, input, guide, weight, bias, kernel_size, stride, padding, output_padding,
           dilation, shared_filters, kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha,
           inv_lambda, channel_wise, normalize_kernel, mask):
    x = _tensor(fn, "input", input, optional=False)
    g = _up(_tensor(fn, "guide", guide, optional=False))
    if op == "pool":
        ks = kernel_size
    else:
        weight = _tensor(fn, "weight", weight, optional=False)
        ks = tuple(weight.shape[-2:]) if weight.dim() >= 2 else 1
    mask, sk, a, lam, skt = _kernel_tensors(fn, g, mask, smooth_kernel, inv_alpha, inv_lambda,
                                            smooth_kernel_type)
    geo = _adapt.pairs(fn, kernel_size=ks, stride=stride, padding=padding,
                       output_padding=output_padding, dilation=dilation)
    out, out_mask = _fused_op(
        _up(x), g, _up(weight), _up(_tensor(fn, "bias", bias)), sk, a, lam, mask, op,
        geo["kernel_size"], geo["stride"], geo["padding"], geo["output_padding"],
        geo["dilation"], shared_filters, kernel_type, skt, channel_wise, normalize_kernel)
    return _down(out, x), _mask_or_none(_down(out_mask, x), mask)


def pacconv2d_fused(input, guide, weight, bias=None, *, stride=1, padding=0, dilation=1,
                    shared_filters=False, kernel_type="gaussian", smooth_kernel_type="none",
                    smooth_kernel=None, inv_alpha=None, inv_lambda=None, channel_wise=False,
                    normalize_kernel=False, mask=None):
    """:func:`packernel2d` + :func:`pacconv2d` in one op, K never materialised whole.

    ``guide`` is (B, Cg, H, W) at the input's resolution; the kernel keywords are
    :func:`packernel2d`'s. Returns ``(output, output_mask or None)``. Differentiable in input,
    guide, weight, bias, α/λ tensors and the smoothing kernel; the backward recomputes K.
    """
    return _fused("pacconv2d_fused", "conv", input, guide, weight, bias, None, stride, padding,
                  0, dilation, shared_filters, kernel_type, smooth_kernel_type, smooth_kernel,
                  inv_alpha, inv_lambda, channel_wise, normalize_kernel, mask)


def pacconv_transpose2d_fused(input, guide, weight, bias=None, *, stride=1, padding=0,
                              output_padding=0, dilation=1, shared_filters=False,
                              kernel_type="gaussian", smooth_kernel_type="none",
                              smooth_kernel=None, inv_alpha=None, inv_lambda=None,
                              channel_wise=False, normalize_kernel=False, mask=None):
    """:func:`pacconv_transpose2d` straight from the guide (at the *output* resolution).
    Returns ``(output, output_mask or None)``."""
    return _fused("pacconv_transpose2d_fused", "transpose", input, guide, weight, bias, None,
                  stride, padding, output_padding, dilation, shared_filters, kernel_type,
                  smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, channel_wise,
                  normalize_kernel, mask)


def pacpool2d_fused(input, guide, kernel_size, *, stride=1, padding=0, dilation=1,
                    kernel_type="gaussian", smooth_kernel_type="none", smooth_kernel=None,
                    inv_alpha=None, inv_lambda=None, channel_wise=False, normalize_kernel=False,
                    mask=None):
    """:func:`pacpool2d` straight from the guide. Returns ``(output, output_mask or None)``."""
    return _fused("pacpool2d_fused", "pool", input, guide, None, None, kernel_size, stride,
                  padding, 0, dilation, False, kernel_type, smooth_kernel_type, smooth_kernel,
                  inv_alpha, inv_lambda, channel_wise, normalize_kernel, mask)


# =========================================================================== layers
_FILLERS = ("uniform", "linear", "crf", "crf_perturbed", "pool", "crf_pool")


def _gaussian_2d(width):
    """Truncated Gaussian of σ = width/4, normalised to sum 1 (the CRF filler's spatial term)."""
    r = np.arange(width, dtype=np.float64) - width // 2
    g = np.exp(-0.5 * (r / (width / 4.0)) ** 2)
    g2 = np.outer(g, g)
    return g2 / g2.sum()


def _linear_taps(k, s, normalize):
    """One axis of bilinear upsampling by ``s`` as a transposed-convolution filter of ``k`` taps:
    the triangle ``1 - |t|/s`` (width 2s−1) centred in the window. With ``normalize_kernel`` the
    layer divides by the sum of K over the valid taps (1 per valid tap for a constant guide); the
    taps valid together are those congruent mod s, so each tap is multiplied by their count."""
    r = k // 2
    t = np.arange(k) - r
    w = np.clip(1.0 - np.abs(t) / s, 0.0, None)
    if normalize:
        j = np.arange(k)
        w = w * (j // s + (k - 1 - j) // s + 1)
    return w


class _PacConvNd(nn.Module):
    """Shared construction of the PAC layers: parameters and buffers under the reference code's
    names (``weight``, ``bias``, ``inv_alpha``, ``inv_lambda``, ``smooth_kernel``), so state dicts
    map one to one; argument checks reuse pacnp's own parsers."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 transposed, output_padding, bias, pool_only, kernel_type, smooth_kernel_type,
                 channel_wise, normalize_kernel, shared_filters, filler):
        super().__init__()
        fn = type(self).__name__
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _core.pair(kernel_size, "kernel_size", fn, minimum=1, odd=True)
        self.stride = _core.pair(stride, "stride", fn, minimum=1)
        self.padding = _core.pair(padding, "padding", fn)
        self.dilation = _core.pair(dilation, "dilation", fn, minimum=1)
        self.output_padding = _core.pair(output_padding, "output_padding", fn)
        self.transposed = transposed
        self.pool_only = pool_only
        self.kernel_type = kernel_type
        self.smooth_kernel_type = smooth_kernel_type
        self.channel_wise = channel_wise
        self.normalize_kernel = normalize_kernel
        self.shared_filters = shared_filters
        self.filler = filler
        kh, kw = self.kernel_size
        if not pool_only:
            if filler not in _FILLERS:
                raise ValueError(f"{fn}: filler={filler!r}; expected one of {list(_FILLERS)}")
            if shared_filters and in_channels != out_channels:
                raise ValueError(f"{fn}: shared_filters=True applies one filter to every channel, "
                                 f"so in_channels ({in_channels}) must equal out_channels "
                                 f"({out_channels})")
            if filler in ("pool", "crf_pool"):
                if not shared_filters:
                    raise ValueError(f"{fn}: filler={filler!r} is a fixed pooling filter and "
                                     f"needs shared_filters=True")
                # fixed, not learnt (a buffer, as in the reference code)
                self.register_buffer("weight", torch.ones(1, 1, kh, kw))
            elif shared_filters:
                self.weight = Parameter(torch.empty(1, 1, kh, kw))
            elif transposed:
                self.weight = Parameter(torch.empty(in_channels, out_channels, kh, kw))
            else:
                self.weight = Parameter(torch.empty(out_channels, in_channels, kh, kw))
            if bias:
                self.bias = Parameter(torch.empty(out_channels))
            else:
                self.register_parameter("bias", None)
        spec = _core.parse_kernel_type(kernel_type, fn)
        self._inv_init = None
        if spec.kind == 1:  # inv_{α}_{λ}: α, λ start from the numbers in the string
            if spec.alpha is None:
                raise ValueError(f"{fn}: kernel_type={kernel_type!r} needs the initial α and λ "
                                 f"in the string, e.g. 'inv_0.5_-1'")
            self._inv_init = (spec.alpha, spec.lam)
            shape = ()
            if channel_wise and not spec.fixed:
                if out_channels is None or out_channels <= 0:
                    raise ValueError(f"{fn}: channel_wise=True with a learnable {kernel_type!r} "
                                     f"kernel needs out_channels (one α, λ per channel), got "
                                     f"out_channels={out_channels}")
                shape = (out_channels,)
            alpha = torch.full(shape, spec.alpha)
            lam = torch.full(shape, spec.lam)
            if spec.fixed:
                self.register_buffer("inv_alpha", alpha)
                self.register_buffer("inv_lambda", lam)
            else:
                self.inv_alpha = Parameter(alpha)
                self.inv_lambda = Parameter(lam)
        kind, n = _core.parse_smooth_type(smooth_kernel_type, fn)
        if kind == "full":
            self.smooth_kernel = Parameter(torch.empty(1, 1, n, n))
        elif kind != "none":
            fixed = _core.smoothing_kernel(kind, n, np.float32).reshape(1, 1, n, n)
            self.register_buffer("smooth_kernel", torch.from_numpy(fixed.copy()))
        self.reset_parameters()

    def reset_parameters(self):
        """Initialise the weights with the layer's ``filler`` (and α/λ, smoothing kernel)."""
        fn = type(self).__name__
        with torch.no_grad():
            if not self.pool_only:
                self._fill(fn)
            if isinstance(getattr(self, "inv_alpha", None), Parameter):
                self.inv_alpha.fill_(self._inv_init[0])
                self.inv_lambda.fill_(self._inv_init[1])
            if isinstance(getattr(self, "smooth_kernel", None), Parameter):
                self.smooth_kernel.fill_(1.0 / self.smooth_kernel[0, 0].numel())

    def _fill(self, fn):
        kh, kw = self.kernel_size
        w = self.weight
        if self.filler == "pool":
            w.fill_(1.0)
        elif self.filler == "crf_pool":
            w.fill_(1.0)
            w[0, 0, kh // 2, kw // 2] = 0.0  # no message from a pixel to itself (DenseCRF)
        elif self.filler == "uniform":
            # as nn.Conv2d's classic init: U(±1/√fan_in); a shared filter sees one channel
            bound = 1.0 / math.sqrt(self.in_channels * kh * kw)
            if self.shared_filters:
                bound *= self.in_channels
            w.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)
        elif self.filler == "linear":
            if not self.transposed or self.in_channels != self.out_channels:
                raise ValueError(f"{fn}: filler='linear' (bilinear upsampling) needs a transposed "
                                 f"layer with in_channels == out_channels, got transposed="
                                 f"{self.transposed}, {self.in_channels} → {self.out_channels}")
            if any(k < 2 * s - 1 for k, s in zip(self.kernel_size, self.stride)):
                raise ValueError(f"{fn}: filler='linear' needs kernel_size >= 2*stride-1, got "
                                 f"kernel_size={self.kernel_size}, stride={self.stride}")
            taps = [_linear_taps(k, s, self.normalize_kernel)
                    for k, s in zip(self.kernel_size, self.stride)]
            filt = torch.from_numpy(np.outer(*taps)).to(w)
            w.zero_()
            for c in range(1 if self.shared_filters else self.in_channels):
                w[c, c] = filt
            if self.bias is not None:
                self.bias.zero_()
        else:  # crf, crf_perturbed: Gaussian spatial filter, no self-message, Potts compat.
            if kh != kw or self.in_channels != self.out_channels:
                raise ValueError(f"{fn}: filler={self.filler!r} needs a square kernel and "
                                 f"in_channels == out_channels, got kernel_size="
                                 f"{self.kernel_size}, {self.in_channels} → {self.out_channels}")
            g = _gaussian_2d(kh) * kh * kw
            g[kh // 2, kw // 2] = 0.0
            g = torch.from_numpy(g).to(w)
            if self.shared_filters:
                w[0, 0] = g
            else:
                compat = 1.0 - torch.eye(self.in_channels, dtype=w.dtype, device=w.device)
                w.copy_(compat[:, :, None, None] * g)
            if self.filler == "crf_perturbed":
                w.add_((torch.rand_like(w) - 0.5) * 1e-3)
            if self.bias is not None:
                self.bias.zero_()

    def _kernel_kwargs(self):
        return dict(kernel_type=self.kernel_type, smooth_kernel_type=self.smooth_kernel_type,
                    smooth_kernel=getattr(self, "smooth_kernel", None),
                    inv_alpha=getattr(self, "inv_alpha", None),
                    inv_lambda=getattr(self, "inv_lambda", None),
                    channel_wise=self.channel_wise, normalize_kernel=self.normalize_kernel)

    def compute_kernel(self, input_for_kernel, input_mask=None):
        """K (and the output mask, or None) of this layer for a guide, as :func:`packernel2d`."""
        return packernel2d(input_for_kernel, input_mask, kernel_size=self.kernel_size,
                           stride=self.stride, padding=self.padding,
                           output_padding=self.output_padding, dilation=self.dilation,
                           transposed=self.transposed, **self._kernel_kwargs())

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}" \
            if not self.pool_only else f"kernel_size={self.kernel_size}"
        s += f", kernel_type={self.kernel_type}"
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)),
                              ("output_padding", (0, 0))):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if not self.pool_only and self.bias is None:
            s += ", bias=False"
        if self.smooth_kernel_type != "none":
            s += f", smooth_kernel_type={self.smooth_kernel_type}"
        for flag in ("channel_wise", "normalize_kernel", "shared_filters"):
            if getattr(self, flag):
                s += f", {flag}=True"
        return s


def _from_conv_args(fn, conv, transposed):
    """Constructor arguments of a PAC layer equivalent to ``conv`` (an nn.Conv2d or
    nn.ConvTranspose2d); the hot-swap of the paper's Sec. 6."""
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    if not isinstance(conv, cls):  # (ConvTranspose2d is not a Conv2d subclass)
        raise TypeError(f"{fn}: conv must be a torch.nn.{cls.__name__}, got "
                        f"{type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"{fn}: conv has groups={conv.groups}; only groups=1 has a PAC "
                         f"equivalent")
    if conv.padding_mode != "zeros":
        raise ValueError(f"{fn}: conv has padding_mode={conv.padding_mode!r}; PAC pads with "
                         f"zeros, so only padding_mode='zeros' keeps the output identical")
    padding = conv.padding
    if isinstance(padding, str):  # 'valid' / 'same' (odd kernels: 'same' is symmetric)
        padding = (0, 0) if padding == "valid" else tuple(
            d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
    kw = dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
              kernel_size=conv.kernel_size, stride=conv.stride, padding=padding,
              dilation=conv.dilation, bias=conv.bias is not None)
    if transposed:
        kw["output_padding"] = conv.output_padding
    return kw


def _copy_from_conv(layer, conv):
    layer = layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(conv.weight)
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
    return layer


class PacConv2d(_PacConvNd):
    """Pixel-adaptive convolution layer (reference-code constructor and defaults).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias
        As ``nn.Conv2d`` (odd kernel sizes; ``padding <= dilation*(kernel_size-1)/2``).
    kernel_type : str
        ``'gaussian'`` | ``'inv_{alpha}_{lambda}[_asym][_fixed]'`` (α, λ learnable unless
        ``_fixed``). Default ``'gaussian'``.
    smooth_kernel_type : str
        ``'none'`` | ``'gaussian'`` | ``'average_N'`` | ``'full_N'`` (learnable N×N).
    normalize_kernel, shared_filters : bool
    filler : str
        Weight initialisation: ``'uniform'`` (default), ``'crf'``, ``'crf_perturbed'``,
        ``'pool'``, ``'crf_pool'`` (the last two: fixed filters, need ``shared_filters``).
    native_impl : bool
        Accepted for compatibility and ignored.

    ``forward(input, guide, kernel=None, mask=None)`` returns the output, or
    ``(output, output_mask)`` when a mask is given and the kernel computed here. Without a
    precomputed ``kernel`` the fused path runs (K is never materialised whole).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, kernel_type="gaussian", smooth_kernel_type="none",
                 normalize_kernel=False, shared_filters=False, filler="uniform",
                 native_impl=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False,
                         0, bias, False, kernel_type, smooth_kernel_type, False, normalize_kernel,
                         shared_filters, filler)
        self.native_impl = native_impl

    def forward(self, input, guide, kernel=None, mask=None):
        if kernel is not None:
            return pacconv2d(input, kernel, self.weight, self.bias, self.stride, self.padding,
                             self.dilation, self.shared_filters)
        out, out_mask = pacconv2d_fused(input, guide, self.weight, self.bias,
                                        stride=self.stride, padding=self.padding,
                                        dilation=self.dilation,
                                        shared_filters=self.shared_filters, mask=mask,
                                        **self._kernel_kwargs())
        return out if out_mask is None else (out, out_mask)

    @classmethod
    def from_conv(cls, conv, *, kernel_type="gaussian", smooth_kernel_type="none",
                  normalize_kernel=False):
        """A PAC layer initialised from ``conv`` (``nn.Conv2d``, groups=1, zero padding).

        Its weight and bias are copies of ``conv``'s; with a constant guide (K ≡ 1 at every
        valid tap, ``normalize_kernel=False``) the output equals ``conv``'s to float rounding,
        so a trained network can be made pixel-adaptive layer by layer (paper, Sec. 6).
        """
        kw = _from_conv_args("PacConv2d.from_conv", conv, False)
        layer = cls(**kw, kernel_type=kernel_type, smooth_kernel_type=smooth_kernel_type,
                    normalize_kernel=normalize_kernel)
        return _copy_from_conv(layer, conv)


class PacConvTranspose2d(_PacConvNd):
    """Pixel-adaptive transposed convolution layer (reference-code constructor and defaults;
    ``filler`` also ``'linear'``: bilinear upsampling).

    The weight is (in_channels, out_channels, kh, kw) in ``nn.ConvTranspose2d``'s orientation;
    checkpoints of the reference code, which applied it flipped, load through
    :func:`load_reference_state_dict`. ``forward(input, guide, kernel=None, mask=None)``: the
    guide is at the *output* resolution.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, bias=True, kernel_type="gaussian",
                 smooth_kernel_type="none", normalize_kernel=False, shared_filters=False,
                 filler="uniform", native_impl=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True,
                         output_padding, bias, False, kernel_type, smooth_kernel_type, False,
                         normalize_kernel, shared_filters, filler)
        self.native_impl = native_impl

    def forward(self, input, guide, kernel=None, mask=None):
        if kernel is not None:
            return pacconv_transpose2d(input, kernel, self.weight, self.bias, self.stride,
                                       self.padding, self.output_padding, self.dilation,
                                       self.shared_filters)
        out, out_mask = pacconv_transpose2d_fused(
            input, guide, self.weight, self.bias, stride=self.stride, padding=self.padding,
            output_padding=self.output_padding, dilation=self.dilation,
            shared_filters=self.shared_filters, mask=mask, **self._kernel_kwargs())
        return out if out_mask is None else (out, out_mask)

    @classmethod
    def from_conv(cls, conv, *, kernel_type="gaussian", smooth_kernel_type="none",
                  normalize_kernel=False):
        """A PAC layer initialised from ``conv`` (``nn.ConvTranspose2d``, groups=1); with a
        constant guide its output equals ``conv``'s to float rounding."""
        kw = _from_conv_args("PacConvTranspose2d.from_conv", conv, True)
        layer = cls(**kw, kernel_type=kernel_type, smooth_kernel_type=smooth_kernel_type,
                    normalize_kernel=normalize_kernel)
        return _copy_from_conv(layer, conv)


class PacPool2d(_PacConvNd):
    """Pixel-adaptive pooling layer (reference-code constructor and defaults).

    ``out_channels`` is needed only for ``channel_wise`` learnable ``inv_*`` kernels (one α, λ
    per channel). ``forward(input, guide, kernel=None, mask=None)``.
    """

    def __init__(self, kernel_size, stride=1, padding=0, dilation=1, kernel_type="gaussian",
                 smooth_kernel_type="none", channel_wise=False, normalize_kernel=False,
                 out_channels=-1, native_impl=False):
        super().__init__(-1, out_channels, kernel_size, stride, padding, dilation, False, 0,
                         False, True, kernel_type, smooth_kernel_type, channel_wise,
                         normalize_kernel, False, None)
        self.native_impl = native_impl

    def forward(self, input, guide, kernel=None, mask=None):
        if kernel is not None:
            return pacpool2d(input, kernel, self.kernel_size, self.stride, self.padding,
                             self.dilation)
        out, out_mask = pacpool2d_fused(input, guide, self.kernel_size, stride=self.stride,
                                        padding=self.padding, dilation=self.dilation, mask=mask,
                                        **self._kernel_kwargs())
        return out if out_mask is None else (out, out_mask)


# =========================================================================== checkpoints
def convert_reference_state_dict(state_dict, model):
    """Convert a state dict saved from the 2019 reference code's layers for ``model``.

    The names and shapes of parameters and buffers are the same; the one difference is that
    the reference ``PacConvTranspose2d`` applied its weight spatially flipped relative to
    ``nn.ConvTranspose2d`` (and pacnp), so the weight of every :class:`PacConvTranspose2d` in
    ``model`` is flipped on its last two axes. Everything else is passed through unchanged.

    Parameters
    ----------
    state_dict : Mapping[str, Tensor]
        As saved by the reference code (``model.state_dict()`` there).
    model : nn.Module
        The pacnp.torch model it is for (only its module names and types are used).

    Returns
    -------
    dict
        A new state dict for ``model.load_state_dict``; the input is not modified.
    """
    out = type(state_dict)(state_dict) if isinstance(state_dict, dict) else dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, PacConvTranspose2d):
            key = f"{name}.weight" if name else "weight"
            if key in out:
                out[key] = out[key].flip(-2, -1)
    return out


def load_reference_state_dict(model, state_dict, strict=True):
    """``model.load_state_dict(convert_reference_state_dict(state_dict, model), strict)``."""
    return model.load_state_dict(convert_reference_state_dict(state_dict, model), strict=strict)


# =========================================================================== CRF
def create_position_feats(shape, scales=None, bs=1, device=None):
    """Pixel coordinates as features: ``[bs, len(shape), *shape]`` float32, coordinate ``a`` of
    every pixel divided by ``scales[a]`` (no scaling when None)."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in shape]
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    if scales is not None:
        scales = torch.as_tensor(scales, dtype=torch.float32, device=mesh.device)
        mesh = mesh / scales.reshape(-1, *([1] * len(shape)))
    return mesh.unsqueeze(0).expand(bs, *mesh.shape).contiguous()


def create_YXRGB(img, yx_scale=None, rgb_scale=None, scales=None):
    """The bilateral features of DenseCRF: ``[y/σ_y, x/σ_x, r/σ_r, g/σ_g, b/σ_b]`` per pixel.

    ``img`` is (B, C, H, W) (or (C, H, W)); ``scales`` = ``yx_scale + rgb_scale`` in one
    sequence (give either it or the two parts). Returns (B, 2 + C, H, W).
    """
    img = img.reshape(-1, *img.shape[-3:])
    if scales is not None:
        if yx_scale is not None or rgb_scale is not None:
            raise ValueError("create_YXRGB: give scales or yx_scale/rgb_scale, not both")
        yx_scale, rgb_scale = scales[:2], scales[2:]
    mesh = create_position_feats(img.shape[-2:], yx_scale, img.shape[0], img.device)
    if rgb_scale is not None:
        rgb_scale = torch.as_tensor(rgb_scale, dtype=img.dtype, device=img.device)
        img = img / rgb_scale.reshape(-1, 1, 1)
    return torch.cat([mesh.to(img.dtype), img], dim=1)


def _blur_pad(sizes, factor):
    """Padding that makes ``sizes`` multiples of ``factor`` (split over both sides)."""
    return tuple(((-sz) % factor + 1) // 2 for sz in sizes)


_COMPAT_TYPES = ("na", "2d", "4d", "potts")
_FINAL_OUTPUTS = ("log_softmax", "softmax", "log_Q")


def _final(fn, final_output, logQ):
    if final_output == "softmax":
        return F.softmax(logQ, dim=1)
    if final_output == "log_softmax":
        return F.log_softmax(logQ, dim=1)
    return logQ


def _edge_kernels(messengers, blurs, edge_feat, edge_kernel):
    """K of every pairwise kernel: given (one tensor for all, or a list), or computed from the
    edge features (one tensor for all, a list, or a dict keyed by blur factor), each blurred
    (block-averaged) by its kernel's factor."""
    n = len(messengers)
    if isinstance(edge_kernel, Tensor):
        return [edge_kernel] * n
    if edge_kernel is not None:
        return list(edge_kernel)
    kernels = [None] * n
    shared = isinstance(edge_feat, Tensor)
    feats = {1: edge_feat} if shared else edge_feat
    for i, (messenger, blur) in enumerate(zip(messengers, blurs)):
        if not isinstance(messenger, _PacConvNd):
            continue  # a plain nn.Conv2d messenger ('na') needs no K
        if shared and blur in feats:
            feat = feats[blur]
        elif blur == 1:
            feat = feats[i]
        else:
            feat = feats[1] if shared else feats[i]
            feat = F.avg_pool2d(feat, kernel_size=blur, padding=_blur_pad(feat.shape[2:], blur),
                                count_include_pad=False)
            if shared:
                feats[blur] = feat
        kernels[i], _ = messenger.compute_kernel(feat)
    return kernels


class PacCRF(nn.Module):
    """Mean-field inference of a CRF whose pairwise terms are PAC layers (Su et al., Sec. 5).

    Parameters
    ----------
    channels : int
        Number of labels.
    num_steps : int
        Mean-field iterations.
    final_output : str
        ``'log_softmax'`` | ``'softmax'`` | ``'log_Q'`` (default: the last logits).
    perturbed_init : bool
        Perturb the Potts-style initial compatibilities slightly (breaks symmetry).
    native_impl : bool
        Accepted and ignored.
    fixed_weighting : bool
        Unary and pairwise weights fixed (not learnt).
    unary_weight : float
    pairwise_kernels : dict or list of dict, optional
        Arguments of :meth:`add_pairwise_kernel`.

    Notes
    -----
    Every pairwise weight takes part in the update ``logQ ← w_u·unary − Σ_k w_k·msg_k`` and is a
    learnable Parameter unless ``fixed_weighting``. (The reference code kept the weight of most
    kernel kinds at its initial value while still declaring it a Parameter; a checkpoint of it
    holds that initial value, so it loads and computes the same here.)
    """

    def __init__(self, channels, num_steps, final_output="log_Q", perturbed_init=True,
                 native_impl=False, fixed_weighting=False, unary_weight=1.0,
                 pairwise_kernels=None):
        super().__init__()
        if final_output not in _FINAL_OUTPUTS:
            raise ValueError(f"PacCRF: final_output={final_output!r}; expected one of "
                             f"{list(_FINAL_OUTPUTS)}")
        self.channels = channels
        self.num_steps = num_steps
        self.final_output = final_output
        self.perturbed_init = perturbed_init
        self.native_impl = native_impl
        self.fixed_weighting = fixed_weighting
        self.init_unary_weight = unary_weight
        self.messengers = nn.ModuleList()
        self.compat = nn.ModuleList()
        self.init_pairwise_weights = []
        self.pairwise_weights = nn.ParameterList()
        self.unary_weight = unary_weight if fixed_weighting else \
            Parameter(torch.tensor(float(unary_weight)))
        self.blur = []
        self.pairwise_repr = []
        if pairwise_kernels is not None:
            for spec in ([pairwise_kernels] if isinstance(pairwise_kernels, dict)
                         else pairwise_kernels):
                self.add_pairwise_kernel(**spec)

    def reset_parameters(self, pairwise_idx=None):
        """Re-initialise all pairwise kernels (and the unary weight), or only one."""
        if pairwise_idx is None:
            idxs = range(len(self.messengers))
            if not self.fixed_weighting:
                with torch.no_grad():
                    self.unary_weight.fill_(self.init_unary_weight)
        else:
            idxs = [pairwise_idx]
        with torch.no_grad():
            for i in idxs:
                self.messengers[i].reset_parameters()
                compat = self.compat[i]
                if compat is not None:
                    eye = torch.eye(self.channels, dtype=compat.weight.dtype)
                    compat.weight[:, :, 0, 0] = 1.0 - eye
                    if self.perturbed_init:
                        compat.weight.add_((torch.rand_like(compat.weight) - 0.5) * 1e-3)
                self.pairwise_weights[i].fill_(self.init_pairwise_weights[i])

    def extra_repr(self):
        s = f"categories={self.channels}, num_steps={self.num_steps}, " \
            f"final_output={self.final_output}"
        if self.perturbed_init:
            s += ", perturbed_init=True"
        if self.fixed_weighting:
            s += ", fixed_weighting=True"
        if self.pairwise_repr:
            s += f", pairwise_kernels=({', '.join(self.pairwise_repr)})"
        return s

    def add_pairwise_kernel(self, kernel_size=3, dilation=1, blur=1, compat_type="4d",
                            spatial_filter=True, pairwise_weight=1.0):
        """Add a pairwise term.

        Parameters
        ----------
        kernel_size, dilation : int
            Window of the messages (odd size; zero-padded "same" geometry).
        blur : int
            Messages are passed on a grid ``blur`` times coarser (features and Q block-averaged,
            messages bilinearly upsampled back).
        compat_type : str
            ``'na'``: a plain learnt convolution (no PAC); ``'4d'``: a learnt PAC filter per
            label pair; ``'2d'``: a shared spatial PAC filter, then a learnt label compatibility
            (1×1 convolution); ``'potts'``: a shared PAC filter and the Potts model.
        spatial_filter : bool
            For ``'2d'``/``'potts'``: a learnt spatial filter (Gaussian init) instead of a fixed
            box without the centre.
        pairwise_weight : float
            Initial weight of the term.
        """
        fn = "PacCRF.add_pairwise_kernel"
        if compat_type not in _COMPAT_TYPES:
            raise ValueError(f"{fn}: compat_type={compat_type!r}; expected one of "
                             f"{list(_COMPAT_TYPES)}")
        ks = _core.pair(kernel_size, "kernel_size", fn, minimum=1, odd=True)
        dil = _core.pair(dilation, "dilation", fn, minimum=1)
        if not isinstance(blur, numbers.Integral) or blur < 1:
            raise ValueError(f"{fn}: blur must be a positive int, got {blur!r}")
        self.pairwise_repr.append(
            f"{'0d' if compat_type == 'potts' else compat_type}{'s' if spatial_filter else ''}"
            f"_{kernel_size}_{dilation}_{blur}")
        if compat_type == "potts":
            # Potts energy: the message is the agreement with the same label, so it enters
            # with the opposite sign of a compatibility-weighted message
            pairwise_weight = -pairwise_weight
        weight = Parameter(torch.tensor(float(pairwise_weight)),
                           requires_grad=not self.fixed_weighting)
        self.pairwise_weights.append(weight)
        self.init_pairwise_weights.append(float(pairwise_weight))
        self.blur.append(int(blur))
        self.compat.append(nn.Conv2d(self.channels, self.channels, 1, bias=False)
                           if compat_type == "2d" else None)
        pad = tuple(d * (k // 2) for k, d in zip(ks, dil))
        C = self.channels
        if compat_type == "na":
            messenger = nn.Conv2d(C, C, ks, padding=pad, dilation=dil, bias=False)
        else:
            if compat_type == "4d" or spatial_filter:
                filler = "crf_perturbed" if self.perturbed_init else "crf"
            else:
                filler = "crf_pool"
            messenger = PacConv2d(C, C, ks, padding=pad, dilation=dil, bias=False,
                                  shared_filters=compat_type != "4d", filler=filler)
        self.messengers.append(messenger)
        self.reset_parameters(len(self.messengers) - 1)

    def num_pairwise_kernels(self):
        return len(self.messengers)

    def forward(self, unary, edge_feat, edge_kernel=None, logQ=None):
        """Run ``num_steps`` mean-field updates from ``logQ`` (default: ``unary``).

        ``edge_feat``: guide features (one tensor for all pairwise kernels, a list, or a dict
        keyed by blur factor); ``edge_kernel``: precomputed K instead (one tensor or a list).
        """
        kernels = _edge_kernels(self.messengers, self.blur, edge_feat, edge_kernel)
        if logQ is None:
            logQ = unary
        H, W = unary.shape[2:]
        for _ in range(self.num_steps):
            Q = F.softmax(logQ, dim=1)
            blurred = {1: Q}
            logQ = unary * self.unary_weight
            for i, messenger in enumerate(self.messengers):
                blur = self.blur[i]
                pad = _blur_pad(Q.shape[2:], blur)
                if blur not in blurred:
                    blurred[blur] = F.avg_pool2d(Q, kernel_size=blur, padding=pad,
                                                 count_include_pad=False)
                if isinstance(messenger, _PacConvNd):
                    msg = messenger(blurred[blur], None, kernels[i])
                else:
                    msg = messenger(blurred[blur])
                if self.compat[i] is not None:
                    msg = self.compat[i](msg)
                if blur > 1:
                    msg = F.interpolate(msg, scale_factor=blur, mode="bilinear",
                                        align_corners=False)
                    msg = msg[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W]
                logQ = logQ - msg * self.pairwise_weights[i]
        return _final("PacCRF", self.final_output, logQ)


class PacCRFLoose(nn.Module):
    """:class:`PacCRF` with separate parameters for every mean-field step (``num_steps``
    one-step CRFs in a row); same arguments."""

    def __init__(self, channels, num_steps, final_output="log_Q", perturbed_init=True,
                 native_impl=False, fixed_weighting=False, unary_weight=1.0,
                 pairwise_kernels=None):
        super().__init__()
        if final_output not in _FINAL_OUTPUTS:
            raise ValueError(f"PacCRFLoose: final_output={final_output!r}; expected one of "
                             f"{list(_FINAL_OUTPUTS)}")
        self.channels = channels
        self.num_steps = num_steps
        self.final_output = final_output
        self.steps = nn.ModuleList(
            PacCRF(channels, 1, "log_Q", perturbed_init, native_impl, fixed_weighting,
                   unary_weight, pairwise_kernels) for _ in range(num_steps))

    def reset_parameters(self):
        for step in self.steps:
            step.reset_parameters()

    def extra_repr(self):
        return f"categories={self.channels}, num_steps={self.num_steps}, " \
               f"final_output={self.final_output}"

    def add_pairwise_kernel(self, kernel_size=3, dilation=1, blur=1, compat_type="4d",
                            spatial_filter=True, pairwise_weight=1.0):
        """:meth:`PacCRF.add_pairwise_kernel` on every step."""
        for step in self.steps:
            step.add_pairwise_kernel(kernel_size, dilation, blur, compat_type, spatial_filter,
                                     pairwise_weight)

    def num_pairwise_kernels(self):
        return self.steps[0].num_pairwise_kernels()

    def forward(self, unary, edge_feat, edge_kernel=None):
        # K depends only on the features and the (shared) geometry: computed once, with the
        # first step's layers, for all steps
        first = self.steps[0]
        kernels = _edge_kernels(first.messengers, first.blur, edge_feat, edge_kernel)
        logQ = unary
        for step in self.steps:
            logQ = step(unary, None, kernels, logQ)
        return _final("PacCRFLoose", self.final_output, logQ)
