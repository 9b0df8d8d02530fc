"""Framework-free helpers shared by the adapters ``pacnp.torch`` and ``pacnp.jax``.

Both adapters must tell their framework the shape of a result *before* pacnp computes it (torch's
fake/meta implementations for ``torch.compile``, JAX's ``pure_callback`` result spec). The sizes
come from ``pacnp._core``'s own output-size formulas, so the adapters hold no geometry of their
own; everything else (validation included) is left to the public pacnp function they call.
Geometry travels as lists of one int per spatial axis; their length picks that function
(``function``: ``pacconv1d``, ``pacconv2d`` or ``pacconv3d``), so one op serves every ``nd``.
"""

from __future__ import annotations

import numpy as np

from . import _api, _core, _nd

#: the geometry keywords, in the order the adapters pass them around
GEOMETRY = ("kernel_size", "stride", "padding", "output_padding", "dilation")


def function(name, geometry):
    """pacnp's public function ``name`` for as many spatial axes as ``geometry`` (a geometry
    list, one int per axis) has entries: ``function("pacconv{}d", [3, 3, 3])`` is
    ``pacnp.pacconv3d``. The adapters' ops and callbacks take the number of axes from there."""
    nd = len(geometry)
    # the 2-D functions live in _api, their 1-D / 3-D twins (the same implementation) in _nd
    return getattr(_api if nd == 2 else _nd, name.format(nd))


def tuples(fn, nd, **values):
    """Each geometry value as a list of ``nd`` ints, checked by pacnp's own ``_core.ntuple``.

    Frameworks need plain int lists (a torch op schema, a hashable JAX static argument); an
    int or a per-axis tuple becomes ``[v_1, ..., v_nd]``. Range checks (odd, positive) stay with
    pacnp. The ops read the number of spatial axes back as the length of these lists.
    """
    return {name: list(_core.ntuple(v, name, fn, nd)) for name, v in values.items()}


def checkable(a, reduced):
    """``a`` as pacnp's checks should see it: an array whose dtype is in ``reduced`` (float16,
    bfloat16: computed in float32 by the adapters) as a float32 shape-only stand-in."""
    if a is not None and getattr(a, "dtype", None) in reduced:
        return _Spec(tuple(a.shape), np.float32)
    return a


class _Spec:
    """Shape and dtype, all ``pacnp._api.check_*`` read of an array."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, np.dtype(dtype)


def op_out_hw(op, hw, kernel_size, stride, padding, output_padding, dilation):
    """Output spatial sizes of ``op`` in {"conv", "transpose", "pool"} (torch's formulas), one
    per axis of ``hw`` (the input's spatial sizes, 1 to 3 of them)."""
    if op == "transpose":
        return tuple(
            _core.conv_transpose_out_size(
                hw[a], kernel_size[a], stride[a], padding[a], output_padding[a], dilation[a]
            )
            for a in range(len(hw))
        )
    return tuple(
        _core.conv_out_size(hw[a], kernel_size[a], stride[a], padding[a], dilation[a])
        for a in range(len(hw))
    )


def op_out_channels(op, in_channels, weight_shape, shared_filters):
    """C_out of a PAC op: the input's for pooling and shared filters, else the weight's."""
    if op == "pool" or shared_filters:
        return in_channels
    return weight_shape[1] if op == "transpose" else weight_shape[0]


def kernel_shape(guide_shape, kernel_size, stride, padding, dilation, channel_wise, transposed):
    """Shape of ``packernel{nd}d``'s K: ``(B, 1 or Cg, *kernel_size, *S_out)``."""
    B, Cg, *S = guide_shape
    if transposed:  # the guide already lives at the output resolution
        out = tuple(S)
    else:
        out = op_out_hw("conv", S, kernel_size, stride, padding, (0,) * len(S), dilation)
    return (B, Cg if channel_wise else 1) + tuple(kernel_size) + out


def smooth_for_pacnp(smooth_kernel_type, smooth_kernel):
    """Map the 2019 reference code's smoothing convention onto pacnp's.

    The reference code smooths with whatever ``smooth_kernel`` it is handed for every type but
    ``'none'`` (its layers keep the fixed ``gaussian`` / ``average_N`` kernels as buffers and pass
    them along); pacnp builds those fixed kernels itself and takes an array only for ``full_N``.
    A kernel handed in with a fixed type is therefore passed on as ``full_N`` — the same numbers,
    so the same result — and stays differentiable if the caller made it so.
    """
    if (
        smooth_kernel is not None
        and len(getattr(smooth_kernel, "shape", ())) >= 1
        and isinstance(smooth_kernel_type, str)
        and (smooth_kernel_type == "gaussian" or smooth_kernel_type.startswith("average_"))
    ):
        return f"full_{int(smooth_kernel.shape[-1])}", smooth_kernel
    return smooth_kernel_type, smooth_kernel
