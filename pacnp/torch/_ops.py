"""The ``torch.library`` custom operators (``torch.ops.pacnp.*``) under the PyTorch adapter.

Each of packernel, the two-step PAC ops and the fused PAC ops is a ``torch.library.custom_op``
with a fake implementation (result shapes from ``pacnp._adapt``, i.e. from ``pacnp._core``'s own
formulas) and an autograd formula whose backward is again a custom op. That is what lets
``torch.compile(fullgraph=True)`` trace forward and backward without graph breaks. The op names
(``pacnp::packernel2d``, ``pacnp::pac_op``, ``pacnp::pac_fused`` and their ``*_backward``) are
part of the interface: compiled and exported graphs refer to them, so they never change.

One op serves 1, 2 and 3 spatial dimensions: the number of spatial axes is the length of the
geometry lists (``kernel_size`` etc., one int per axis), so it is static to the compiler as the
geometry itself is, and the schemas of the 2-D ops (saved graphs name them) stay as they were.
The op body calls pacnp's function for that many axes (``pacconv3d`` for three).

The op bodies hand the tensors themselves to pacnp's public functions, which read them through
DLPack (no copy for contiguous tensors) and return torch tensors wrapping pacnp's result buffers
(DLPack again). They take what pacnp takes (int-list geometry, tensor α/λ); turning user
arguments into that, and float16/bfloat16 into float32, is ``functional``'s job.

Layout of every op: tensors first (their positions index ``ctx.needs_input_grad``), then the
static options. Optional outputs cannot be None in an op schema: an absent output mask / unneeded
gradient is an empty tensor, which the autograd formulas here and the wrappers in
``functional`` turn back into None.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _adapt

# what ``functional`` calls; the backward ops are reached only through the autograd formulas
__all__ = ["packernel_op", "pac_op", "pac_fused_op"]


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


def _kernel_kw(
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    mask,
    kernel_type,
    smooth_kernel_type,
    channel_wise,
    normalize_kernel,
):
    return dict(
        kernel_type=kernel_type,
        smooth_kernel_type=smooth_kernel_type,
        smooth_kernel=smooth_kernel,
        inv_alpha=inv_alpha,
        inv_lambda=inv_lambda,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=mask,
    )


# --------------------------------------------------------------------------- packernel
# (the op keeps its first name, "pacnp::packernel2d", for graphs saved before it went N-D)
@torch.library.custom_op("pacnp::packernel2d", mutates_args=())
def packernel_op(
    guide: Tensor,
    mask: Optional[Tensor],
    smooth_kernel: Optional[Tensor],
    inv_alpha: Optional[Tensor],
    inv_lambda: Optional[Tensor],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    kernel_type: str,
    smooth_kernel_type: str,
    channel_wise: bool,
    normalize_kernel: bool,
    transposed: bool,
) -> tuple[Tensor, Tensor]:
    K, out_mask = _adapt.function("packernel{}d", kernel_size)(
        guide,
        kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        transposed=transposed,
        **_kernel_kw(
            smooth_kernel,
            inv_alpha,
            inv_lambda,
            mask,
            kernel_type,
            smooth_kernel_type,
            channel_wise,
            normalize_kernel,
        ),
    )
    return K, (_empty(guide) if out_mask is None else out_mask)


@packernel_op.register_fake
def _(
    guide,
    mask,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    kernel_type,
    smooth_kernel_type,
    channel_wise,
    normalize_kernel,
    transposed,
):
    shape = _adapt.kernel_shape(
        guide.shape, kernel_size, stride, padding, dilation, channel_wise, transposed
    )
    nd = len(kernel_size)
    out_mask = _empty(guide) if mask is None else guide.new_empty((shape[0], 1) + shape[-nd:])
    return guide.new_empty(shape), out_mask


@torch.library.custom_op("pacnp::packernel2d_backward", mutates_args=())
def _kernel_bwd_op(
    grad: Tensor,
    guide: Tensor,
    mask: Optional[Tensor],
    smooth_kernel: Optional[Tensor],
    inv_alpha: Optional[Tensor],
    inv_lambda: Optional[Tensor],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    kernel_type: str,
    smooth_kernel_type: str,
    channel_wise: bool,
    normalize_kernel: bool,
    transposed: bool,
    needs: list[bool],
) -> list[Tensor]:
    # pacnp's order: (d_guide, d_inv_alpha, d_inv_lambda, d_smooth_kernel)
    grads = _adapt.function("packernel{}d_backward", kernel_size)(
        grad,
        guide,
        kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        transposed=transposed,
        needs=tuple(needs),
        **_kernel_kw(
            smooth_kernel,
            inv_alpha,
            inv_lambda,
            mask,
            kernel_type,
            smooth_kernel_type,
            channel_wise,
            normalize_kernel,
        ),
    )
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
        grad_K, guide, mask, smooth_kernel, inv_alpha, inv_lambda, *ctx.static, needs
    )
    return (
        d_guide if needs[0] else None,
        None,
        d_smooth if needs[3] else None,
        d_alpha if needs[1] else None,
        d_lambda if needs[2] else None,
    ) + none


packernel_op.register_autograd(_kernel_backward, setup_context=_kernel_setup)


# --------------------------------------------------------------------------- two-step ops
def _op_forward(
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
    if op == "conv":
        return _adapt.function("pacconv{}d", stride)(
            input,
            kernel,
            weight,
            bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            shared_filters=shared_filters,
        )
    if op == "transpose":
        return _adapt.function("pacconv_transpose{}d", stride)(
            input,
            kernel,
            weight,
            bias,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            shared_filters=shared_filters,
        )
    return _adapt.function("pacpool{}d", stride)(
        input, kernel, kernel_size, stride=stride, padding=padding, dilation=dilation
    )


@torch.library.custom_op("pacnp::pac_op", mutates_args=())
def pac_op(
    input: Tensor,
    kernel: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    op: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    shared_filters: bool,
) -> Tensor:
    return _op_forward(
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
    )


@pac_op.register_fake
def _(
    input,
    kernel,
    weight,
    bias,
    op,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
):
    hw = _adapt.op_out_hw(
        op, input.shape[2:], kernel_size, stride, padding, output_padding, dilation
    )
    c = _adapt.op_out_channels(
        op, input.shape[1], None if weight is None else weight.shape, shared_filters
    )
    return input.new_empty((input.shape[0], c) + tuple(hw))


@torch.library.custom_op("pacnp::pac_op_backward", mutates_args=())
def _op_bwd_op(
    grad: Tensor,
    input: Tensor,
    kernel: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    op: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    shared_filters: bool,
    needs: list[bool],
) -> list[Tensor]:
    # always four results (input, kernel, weight, bias); pooling has no weight or bias
    likes = (input, kernel, weight, bias)
    if op == "conv":
        grads = _adapt.function("pacconv{}d_backward", stride)(
            grad,
            input,
            kernel,
            weight,
            bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            shared_filters=shared_filters,
            needs=tuple(needs),
        )
    elif op == "transpose":
        grads = _adapt.function("pacconv_transpose{}d_backward", stride)(
            grad,
            input,
            kernel,
            weight,
            bias,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            shared_filters=shared_filters,
            needs=tuple(needs),
        )
    else:
        grads = _adapt.function("pacpool{}d_backward", stride)(
            grad,
            input,
            kernel,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            needs=tuple(needs[:2]),
        ) + (None, None)
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


pac_op.register_autograd(_op_backward, setup_context=_op_setup)


# --------------------------------------------------------------------------- fused ops
def _fused_call(
    backward,
    op,
    input,
    guide,
    weight,
    bias,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    mask,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
    kernel_type,
    smooth_kernel_type,
    channel_wise,
    normalize_kernel,
    **extra,
):
    kw = dict(
        stride=stride,
        padding=padding,
        dilation=dilation,
        **extra,
        **_kernel_kw(
            smooth_kernel,
            inv_alpha,
            inv_lambda,
            mask,
            kernel_type,
            smooth_kernel_type,
            channel_wise,
            normalize_kernel,
        ),
    )
    suffix = "_backward" if backward else ""
    if op == "pool":
        fn = _adapt.function("pacpool{}d_fused" + suffix, stride)
        return fn(*backward, input, guide, kernel_size, **kw)
    kw["shared_filters"] = shared_filters
    if op == "transpose":
        kw["output_padding"] = output_padding
        fn = _adapt.function("pacconv_transpose{}d_fused" + suffix, stride)
    else:
        fn = _adapt.function("pacconv{}d_fused" + suffix, stride)
    return fn(*backward, input, guide, weight, bias, **kw)


@torch.library.custom_op("pacnp::pac_fused", mutates_args=())
def pac_fused_op(
    input: Tensor,
    guide: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    smooth_kernel: Optional[Tensor],
    inv_alpha: Optional[Tensor],
    inv_lambda: Optional[Tensor],
    mask: Optional[Tensor],
    op: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    shared_filters: bool,
    kernel_type: str,
    smooth_kernel_type: str,
    channel_wise: bool,
    normalize_kernel: bool,
) -> tuple[Tensor, Tensor]:
    out, out_mask = _fused_call(
        (),
        op,
        input,
        guide,
        weight,
        bias,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        mask,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        channel_wise,
        normalize_kernel,
    )
    return out, (_empty(input) if out_mask is None else out_mask)


@pac_fused_op.register_fake
def _(
    input,
    guide,
    weight,
    bias,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    mask,
    op,
    kernel_size,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
    *kernel_options,
):
    hw = tuple(
        _adapt.op_out_hw(
            op, input.shape[2:], kernel_size, stride, padding, output_padding, dilation
        )
    )
    c = _adapt.op_out_channels(
        op, input.shape[1], None if weight is None else weight.shape, shared_filters
    )
    out_mask = _empty(input) if mask is None else input.new_empty((input.shape[0], 1) + hw)
    return input.new_empty((input.shape[0], c) + hw), out_mask


@torch.library.custom_op("pacnp::pac_fused_backward", mutates_args=())
def _fused_bwd_op(
    grad: Tensor,
    input: Tensor,
    guide: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    smooth_kernel: Optional[Tensor],
    inv_alpha: Optional[Tensor],
    inv_lambda: Optional[Tensor],
    mask: Optional[Tensor],
    op: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    dilation: list[int],
    shared_filters: bool,
    kernel_type: str,
    smooth_kernel_type: str,
    channel_wise: bool,
    normalize_kernel: bool,
    needs: list[bool],
) -> list[Tensor]:
    # ``needs`` and the result follow this op's input order (input, guide, weight, bias,
    # smooth_kernel, inv_alpha, inv_lambda); pacnp's order puts α, λ before smooth_kernel and
    # has no weight/bias for pooling.
    n_x, n_g, n_w, n_b, n_s, n_a, n_l = needs
    pool = op == "pool"
    pac_needs = (n_x, n_g, n_a, n_l, n_s) if pool else (n_x, n_g, n_w, n_b, n_a, n_l, n_s)
    grads = _fused_call(
        (grad,),
        op,
        input,
        guide,
        weight,
        bias,
        smooth_kernel,
        inv_alpha,
        inv_lambda,
        mask,
        kernel_size,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        kernel_type,
        smooth_kernel_type,
        channel_wise,
        normalize_kernel,
        needs=pac_needs,
    )
    if pool:
        d_x, d_g, d_a, d_l, d_s = grads
        d_w = d_b = None
    else:
        d_x, d_g, d_w, d_b, d_a, d_l, d_s = grads
    return _grads_out(
        (d_x, d_g, d_w, d_b, d_s, d_a, d_l),
        (input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda),
        needs,
    )


@_fused_bwd_op.register_fake
def _(
    grad, input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, mask, *static_and_needs
):
    return _grads_fake(
        (input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda), static_and_needs[-1]
    )


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


pac_fused_op.register_autograd(_fused_backward, setup_context=_fused_setup)
