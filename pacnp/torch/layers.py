"""PAC layers for torch: ``PacConv{1,2,3}d``, ``PacConvTranspose{1,2,3}d``, ``PacPool{1,2,3}d``.

Constructors, defaults, fillers and parameter/buffer names are the 2019 reference code's, so its
models build unchanged and its state dicts line up name for name (``checkpoints`` handles the one
orientation difference). ``from_conv`` turns a trained ``nn.Conv{1,2,3}d`` /
``nn.ConvTranspose{1,2,3}d`` into the equivalent PAC layer (the paper's Sec. 6 hot-swap).
``forward`` runs the fused op when no precomputed kernel is given, so K is never materialised
whole.

One class per kind of layer holds the construction and ``forward`` for any number of spatial
axes (``_nd``, a class attribute); the public classes only fix ``_nd`` and carry the docstring.
The 1-D and 3-D layers are the 2-D ones axis by axis (the reference code had only 2-D layers).
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch import nn
from torch.nn import Parameter

from .. import _core
from . import functional

__all__ = [
    "PacConv1d",
    "PacConv2d",
    "PacConv3d",
    "PacConvTranspose1d",
    "PacConvTranspose2d",
    "PacConvTranspose3d",
    "PacPool1d",
    "PacPool2d",
    "PacPool3d",
]

_FILLERS = ("uniform", "linear", "crf", "crf_perturbed", "pool", "crf_pool")


def _functional(name, nd):
    """``functional``'s function ``name`` for ``nd`` axes: ("pacconv{}d", 3) → pacconv3d."""
    return getattr(functional, name.format(nd))


def _outer(vectors):
    """The separable product of one vector per axis: (k1,), ..., (kn,) → (k1, ..., kn)."""
    return functools.reduce(np.multiply.outer, vectors)


def _gaussian_nd(width, nd):
    """Truncated Gaussian of σ = width/4 over ``nd`` axes, normalised to sum 1 (the CRF filler's
    spatial term)."""
    r = np.arange(width, dtype=np.float64) - width // 2
    g = _outer([np.exp(-0.5 * (r / (width / 4.0)) ** 2)] * nd)
    return g / g.sum()


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


def _channels(fn, name, v):
    """A channel count: an int >= 1 (checked before torch allocates the weight)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {v!r}")
    if v < 1:
        raise ValueError(f"{fn}: {name} must be >= 1, got {v!r}")
    return _core.check_size(fn, name, int(v))


class _PacConvNd(nn.Module):
    """Shared construction of the PAC layers: parameters and buffers under the reference code's
    names (``weight``, ``bias``, ``inv_alpha``, ``inv_lambda``, ``smooth_kernel``), so state dicts
    map one to one; argument checks reuse pacnp's own parsers. ``_nd`` (a class attribute, so
    pickles of 2-D layers saved before it existed still load) is the number of spatial axes."""

    _nd = 2

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        transposed,
        output_padding,
        bias,
        pool_only,
        kernel_type,
        smooth_kernel_type,
        channel_wise,
        normalize_kernel,
        shared_filters,
        filler,
    ):
        super().__init__()
        fn = type(self).__name__
        nd = self._nd
        if not pool_only:
            in_channels = _channels(fn, "in_channels", in_channels)
            out_channels = _channels(fn, "out_channels", out_channels)
            bias = _core.check_bool(fn, "bias", bias)
            shared_filters = _core.check_bool(fn, "shared_filters", shared_filters)
        channel_wise = _core.check_bool(fn, "channel_wise", channel_wise)
        normalize_kernel = _core.check_bool(fn, "normalize_kernel", normalize_kernel)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _core.ntuple(kernel_size, "kernel_size", fn, nd, minimum=1, odd=True)
        _core.check_window(fn, "kernel_size", kernel_size, math.prod(self.kernel_size))
        self.stride = _core.ntuple(stride, "stride", fn, nd, minimum=1)
        self.padding = _core.ntuple(padding, "padding", fn, nd)
        self.dilation = _core.ntuple(dilation, "dilation", fn, nd, minimum=1)
        self.output_padding = _core.ntuple(output_padding, "output_padding", fn, nd)
        self.transposed = transposed
        self.pool_only = pool_only
        self.kernel_type = kernel_type
        self.smooth_kernel_type = smooth_kernel_type
        self.channel_wise = channel_wise
        self.normalize_kernel = normalize_kernel
        self.shared_filters = shared_filters
        self.filler = filler
        ks = self.kernel_size
        if not pool_only:
            if filler not in _FILLERS:
                raise ValueError(f"{fn}: filler={filler!r}; expected one of {list(_FILLERS)}")
            if shared_filters and in_channels != out_channels:
                raise ValueError(
                    f"{fn}: shared_filters=True applies one filter to every channel, "
                    f"so in_channels ({in_channels}) must equal out_channels "
                    f"({out_channels})"
                )
            if filler in ("pool", "crf_pool"):
                if not shared_filters:
                    raise ValueError(
                        f"{fn}: filler={filler!r} is a fixed pooling filter and "
                        f"needs shared_filters=True"
                    )
                # fixed, not learnt (a buffer, as in the reference code)
                self.register_buffer("weight", torch.ones(1, 1, *ks))
            elif shared_filters:
                self.weight = Parameter(torch.empty(1, 1, *ks))
            elif transposed:
                self.weight = Parameter(torch.empty(in_channels, out_channels, *ks))
            else:
                self.weight = Parameter(torch.empty(out_channels, in_channels, *ks))
            if bias:
                self.bias = Parameter(torch.empty(out_channels))
            else:
                self.register_parameter("bias", None)
        spec = _core.parse_kernel_type(kernel_type, fn)
        self._inv_init = None
        if spec.kind == 1:  # inv_{α}_{λ}: α, λ start from the numbers in the string
            if spec.alpha is None:
                raise ValueError(
                    f"{fn}: kernel_type={kernel_type!r} needs the initial α and λ "
                    f"in the string, e.g. 'inv_0.5_-1'"
                )
            self._inv_init = (spec.alpha, spec.lam)
            shape = ()
            if channel_wise and not spec.fixed:
                if out_channels is None or out_channels <= 0:
                    raise ValueError(
                        f"{fn}: channel_wise=True with a learnable {kernel_type!r} "
                        f"kernel needs out_channels (one α, λ per channel), got "
                        f"out_channels={out_channels}"
                    )
                shape = (out_channels,)
            alpha = torch.full(shape, spec.alpha)
            lam = torch.full(shape, spec.lam)
            if spec.fixed:
                self.register_buffer("inv_alpha", alpha)
                self.register_buffer("inv_lambda", lam)
            else:
                self.inv_alpha = Parameter(alpha)
                self.inv_lambda = Parameter(lam)
        kind, n = _core.parse_smooth_type(smooth_kernel_type, fn, nd)
        if kind == "full":
            self.smooth_kernel = Parameter(torch.empty((1, 1) + (n,) * nd))
        elif kind != "none":
            # pacnp's kernel comes folded like the guide (rows: every axis but the last)
            fixed = _core.smoothing_kernel(kind, n, np.float32, nd).reshape((1, 1) + (n,) * nd)
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
        ks = self.kernel_size
        taps = math.prod(ks)
        centre = tuple(k // 2 for k in ks)
        w = self.weight
        if self.filler == "pool":
            w.fill_(1.0)
        elif self.filler == "crf_pool":
            w.fill_(1.0)
            w[(0, 0) + centre] = 0.0  # no message from a pixel to itself (DenseCRF)
        elif self.filler == "uniform":
            # as nn.Conv2d's classic init: U(±1/√fan_in); a shared filter sees one channel
            bound = 1.0 / math.sqrt(self.in_channels * taps)
            if self.shared_filters:
                bound *= self.in_channels
            w.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)
        elif self.filler == "linear":
            if not self.transposed or self.in_channels != self.out_channels:
                raise ValueError(
                    f"{fn}: filler='linear' (bilinear upsampling) needs a transposed "
                    f"layer with in_channels == out_channels, got transposed="
                    f"{self.transposed}, {self.in_channels} → {self.out_channels}"
                )
            if any(k < 2 * s - 1 for k, s in zip(self.kernel_size, self.stride)):
                raise ValueError(
                    f"{fn}: filler='linear' needs kernel_size >= 2*stride-1, got "
                    f"kernel_size={self.kernel_size}, stride={self.stride}"
                )
            taps = [
                _linear_taps(k, s, self.normalize_kernel)
                for k, s in zip(self.kernel_size, self.stride)
            ]
            filt = torch.from_numpy(_outer(taps)).to(w)
            w.zero_()
            for c in range(1 if self.shared_filters else self.in_channels):
                w[c, c] = filt
            if self.bias is not None:
                self.bias.zero_()
        else:  # crf, crf_perturbed: Gaussian spatial filter, no self-message, Potts compat.
            if len(set(ks)) != 1 or self.in_channels != self.out_channels:
                raise ValueError(
                    f"{fn}: filler={self.filler!r} needs a square kernel and "
                    f"in_channels == out_channels, got kernel_size="
                    f"{self.kernel_size}, {self.in_channels} → {self.out_channels}"
                )
            g = _gaussian_nd(ks[0], len(ks)) * taps
            g[centre] = 0.0
            g = torch.from_numpy(g).to(w)
            if self.shared_filters:
                w[0, 0] = g
            else:
                compat = 1.0 - torch.eye(self.in_channels, dtype=w.dtype, device=w.device)
                w.copy_(compat.reshape(compat.shape + (1,) * len(ks)) * g)
            if self.filler == "crf_perturbed":
                w.add_((torch.rand_like(w) - 0.5) * 1e-3)
            if self.bias is not None:
                self.bias.zero_()

    def _kernel_kwargs(self):
        return dict(
            kernel_type=self.kernel_type,
            smooth_kernel_type=self.smooth_kernel_type,
            smooth_kernel=getattr(self, "smooth_kernel", None),
            inv_alpha=getattr(self, "inv_alpha", None),
            inv_lambda=getattr(self, "inv_lambda", None),
            channel_wise=self.channel_wise,
            normalize_kernel=self.normalize_kernel,
        )

    def compute_kernel(self, input_for_kernel, input_mask=None):
        """K (and the output mask, or None) of this layer for a guide, as :func:`packernel2d`
        (``packernel1d`` / ``packernel3d`` for the 1-D / 3-D layers)."""
        return _functional("packernel{}d", self._nd)(
            input_for_kernel,
            input_mask,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            transposed=self.transposed,
            **self._kernel_kwargs(),
        )

    def extra_repr(self):
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
            if not self.pool_only
            else f"kernel_size={self.kernel_size}"
        )
        s += f", kernel_type={self.kernel_type}"
        nd = self._nd
        for name, default in (
            ("stride", (1,) * nd),
            ("padding", (0,) * nd),
            ("dilation", (1,) * nd),
            ("output_padding", (0,) * nd),
        ):
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


_CONVS = {
    (1, False): nn.Conv1d,
    (2, False): nn.Conv2d,
    (3, False): nn.Conv3d,
    (1, True): nn.ConvTranspose1d,
    (2, True): nn.ConvTranspose2d,
    (3, True): nn.ConvTranspose3d,
}


def _from_conv_args(fn, conv, transposed, nd):
    """Constructor arguments of a PAC layer equivalent to ``conv`` (an nn.Conv{nd}d or
    nn.ConvTranspose{nd}d); the hot-swap of the paper's Sec. 6."""
    cls = _CONVS[nd, transposed]
    if not isinstance(conv, cls):  # (ConvTranspose2d is not a Conv2d subclass)
        raise TypeError(f"{fn}: conv must be a torch.nn.{cls.__name__}, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"{fn}: conv has groups={conv.groups}; only groups=1 has a PAC equivalent")
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"{fn}: conv has padding_mode={conv.padding_mode!r}; PAC pads with "
            f"zeros, so only padding_mode='zeros' keeps the output identical"
        )
    padding = conv.padding
    if isinstance(padding, str):  # 'valid' / 'same' (odd kernels: 'same' is symmetric)
        padding = (
            (0,) * nd
            if padding == "valid"
            else tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
        )
    kw = dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
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


class _PacConv(_PacConvNd):
    """Pixel-adaptive convolution over ``_nd`` spatial axes (``PacConv1d/2d/3d``)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        kernel_type="gaussian",
        smooth_kernel_type="none",
        normalize_kernel=False,
        shared_filters=False,
        filler="uniform",
        native_impl=False,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            False,
            0,
            bias,
            False,
            kernel_type,
            smooth_kernel_type,
            False,
            normalize_kernel,
            shared_filters,
            filler,
        )
        self.native_impl = native_impl

    def forward(self, input, guide, kernel=None, mask=None):
        if kernel is not None:
            return _functional("pacconv{}d", self._nd)(
                input,
                kernel,
                self.weight,
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                self.shared_filters,
            )
        out, out_mask = _functional("pacconv{}d_fused", self._nd)(
            input,
            guide,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            shared_filters=self.shared_filters,
            mask=mask,
            **self._kernel_kwargs(),
        )
        return out if out_mask is None else (out, out_mask)

    @classmethod
    def from_conv(
        cls, conv, *, kernel_type="gaussian", smooth_kernel_type="none", normalize_kernel=False
    ):
        """A PAC layer initialised from ``conv`` (``nn.Conv1d`` / ``Conv2d`` / ``Conv3d`` for
        ``PacConv1d`` / ``2d`` / ``3d``; groups=1, zero padding).

        Its weight and bias are copies of ``conv``'s; with a constant guide (K ≡ 1 at every
        valid tap, ``normalize_kernel=False``) the output equals ``conv``'s to float rounding,
        so a trained network can be made pixel-adaptive layer by layer (paper, Sec. 6).
        """
        kw = _from_conv_args(f"{cls.__name__}.from_conv", conv, False, cls._nd)
        layer = cls(
            **kw,
            kernel_type=kernel_type,
            smooth_kernel_type=smooth_kernel_type,
            normalize_kernel=normalize_kernel,
        )
        return _copy_from_conv(layer, conv)


class _PacConvTranspose(_PacConvNd):
    """Pixel-adaptive transposed convolution over ``_nd`` spatial axes."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        dilation=1,
        bias=True,
        kernel_type="gaussian",
        smooth_kernel_type="none",
        normalize_kernel=False,
        shared_filters=False,
        filler="uniform",
        native_impl=False,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            True,
            output_padding,
            bias,
            False,
            kernel_type,
            smooth_kernel_type,
            False,
            normalize_kernel,
            shared_filters,
            filler,
        )
        self.native_impl = native_impl

    def forward(self, input, guide, kernel=None, mask=None):
        if kernel is not None:
            return _functional("pacconv_transpose{}d", self._nd)(
                input,
                kernel,
                self.weight,
                self.bias,
                self.stride,
                self.padding,
                self.output_padding,
                self.dilation,
                self.shared_filters,
            )
        out, out_mask = _functional("pacconv_transpose{}d_fused", self._nd)(
            input,
            guide,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            shared_filters=self.shared_filters,
            mask=mask,
            **self._kernel_kwargs(),
        )
        return out if out_mask is None else (out, out_mask)

    @classmethod
    def from_conv(
        cls, conv, *, kernel_type="gaussian", smooth_kernel_type="none", normalize_kernel=False
    ):
        """A PAC layer initialised from ``conv`` (``nn.ConvTranspose1d`` / ``2d`` / ``3d``,
        groups=1); with a constant guide its output equals ``conv``'s to float rounding."""
        kw = _from_conv_args(f"{cls.__name__}.from_conv", conv, True, cls._nd)
        layer = cls(
            **kw,
            kernel_type=kernel_type,
            smooth_kernel_type=smooth_kernel_type,
            normalize_kernel=normalize_kernel,
        )
        return _copy_from_conv(layer, conv)


class _PacPool(_PacConvNd):
    """Pixel-adaptive pooling over ``_nd`` spatial axes."""

    def __init__(
        self,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        kernel_type="gaussian",
        smooth_kernel_type="none",
        channel_wise=False,
        normalize_kernel=False,
        out_channels=-1,
        native_impl=False,
    ):
        super().__init__(
            -1,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            False,
            0,
            False,
            True,
            kernel_type,
            smooth_kernel_type,
            channel_wise,
            normalize_kernel,
            False,
            None,
        )
        self.native_impl = native_impl

    def forward(self, input, guide, kernel=None, mask=None):
        if kernel is not None:
            return _functional("pacpool{}d", self._nd)(
                input, kernel, self.kernel_size, self.stride, self.padding, self.dilation
            )
        out, out_mask = _functional("pacpool{}d_fused", self._nd)(
            input,
            guide,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
            **self._kernel_kwargs(),
        )
        return out if out_mask is None else (out, out_mask)


class PacConv2d(_PacConv):
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
    ``from_conv(conv)`` copies a trained ``nn.Conv2d``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> layer = pac.PacConv2d(2, 4, 5, padding=2)
    >>> x, guide = torch.rand(1, 2, 16, 16), torch.rand(1, 3, 16, 16)
    >>> tuple(layer(x, guide).shape)
    (1, 4, 16, 16)

    Hot-swapping a trained convolution: with a constant guide the PAC layer computes what the
    convolution did.

    >>> conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    >>> swapped = pac.PacConv2d.from_conv(conv)
    >>> out = swapped(x, torch.zeros(1, 1, 16, 16))
    >>> bool(torch.allclose(out, conv(x), atol=1e-5))
    True
    """

    _nd = 2

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacConv1d(_PacConv):
    """:class:`PacConv2d` for signals: input and guide (B, C, L), weight (C_out, C_in, k).

    The constructor arguments are :class:`PacConv2d`'s (geometry: ints or 1-tuples; a
    ``full_N`` smoothing kernel is (1, 1, N)); ``from_conv(conv)`` copies an ``nn.Conv1d``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> layer = pac.PacConv1d(2, 4, 5, padding=2, kernel_type="inv_0.5_-1")
    >>> x, guide = torch.rand(1, 2, 32), torch.rand(1, 3, 32)
    >>> tuple(layer(x, guide).shape)
    (1, 4, 32)
    >>> conv = torch.nn.Conv1d(2, 4, 3, padding=1)
    >>> out = pac.PacConv1d.from_conv(conv)(x, torch.zeros(1, 1, 32))
    >>> bool(torch.allclose(out, conv(x), atol=1e-5))
    True
    """

    _nd = 1

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacConv3d(_PacConv):
    """:class:`PacConv2d` for volumes: input and guide (B, C, D, H, W), weight
    (C_out, C_in, kd, kh, kw).

    The constructor arguments are :class:`PacConv2d`'s (geometry: ints or (d, h, w) triples; a
    ``full_N`` smoothing kernel is (1, 1, N, N, N)); ``from_conv(conv)`` copies an
    ``nn.Conv3d``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> layer = pac.PacConv3d(2, 4, 3, stride=(1, 2, 2), padding=1)
    >>> x, guide = torch.rand(1, 2, 4, 8, 8), torch.rand(1, 1, 4, 8, 8)
    >>> tuple(layer(x, guide).shape)
    (1, 4, 4, 4, 4)
    """

    _nd = 3

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacConvTranspose2d(_PacConvTranspose):
    """Pixel-adaptive transposed convolution layer (reference-code constructor and defaults;
    ``filler`` also ``'linear'``: bilinear upsampling).

    The weight is (in_channels, out_channels, kh, kw) in ``nn.ConvTranspose2d``'s orientation;
    checkpoints of the reference code, which applied it flipped, load through
    :func:`load_reference_state_dict`. ``forward(input, guide, kernel=None, mask=None)``: the
    guide is at the *output* resolution.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> up = pac.PacConvTranspose2d(2, 2, 5, stride=2, padding=2, output_padding=1,
    ...                             normalize_kernel=True, filler="linear")
    >>> out = up(torch.rand(1, 2, 8, 8), torch.rand(1, 3, 16, 16))    # guide at 16 × 16
    >>> tuple(out.shape)
    (1, 2, 16, 16)
    """

    _nd = 2

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacConvTranspose1d(_PacConvTranspose):
    """:class:`PacConvTranspose2d` for signals: weight (C_in, C_out, k) in
    ``nn.ConvTranspose1d``'s orientation, the guide (B, Cg, Lo) at the *output* resolution;
    ``filler='linear'`` is linear interpolation.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> up = pac.PacConvTranspose1d(1, 1, 3, stride=2, padding=1, output_padding=1,
    ...                             normalize_kernel=True, filler="linear")
    >>> up(torch.tensor([[[0.0, 2.0, 4.0]]]), torch.zeros(1, 1, 6)).detach()
    tensor([[[0., 1., 2., 3., 4., 4.]]])
    """

    _nd = 1

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacConvTranspose3d(_PacConvTranspose):
    """:class:`PacConvTranspose2d` for volumes: weight (C_in, C_out, kd, kh, kw) in
    ``nn.ConvTranspose3d``'s orientation, the guide (B, Cg, Do, Ho, Wo) at the *output*
    resolution; ``filler='linear'`` is trilinear upsampling.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> up = pac.PacConvTranspose3d(2, 2, 3, stride=2, padding=1, output_padding=1,
    ...                             normalize_kernel=True, filler="linear")
    >>> out = up(torch.rand(1, 2, 3, 4, 4), torch.rand(1, 1, 6, 8, 8))
    >>> tuple(out.shape)
    (1, 2, 6, 8, 8)
    """

    _nd = 3

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacPool2d(_PacPool):
    """Pixel-adaptive pooling layer (reference-code constructor and defaults).

    ``out_channels`` is needed only for ``channel_wise`` learnable ``inv_*`` kernels (one α, λ
    per channel). ``forward(input, guide, kernel=None, mask=None)``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> pool = pac.PacPool2d(3, stride=2, padding=1, normalize_kernel=True)
    >>> tuple(pool(torch.rand(1, 4, 8, 8), torch.rand(1, 3, 8, 8)).shape)
    (1, 4, 4, 4)
    """

    _nd = 2

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacPool1d(_PacPool):
    """:class:`PacPool2d` for signals (B, C, L); the constructor arguments are
    :class:`PacPool2d`'s.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> pool = pac.PacPool1d(3, stride=2, padding=1, normalize_kernel=True)
    >>> tuple(pool(torch.rand(1, 4, 16), torch.rand(1, 3, 16)).shape)
    (1, 4, 8)
    """

    _nd = 1

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)


class PacPool3d(_PacPool):
    """:class:`PacPool2d` for volumes (B, C, D, H, W); the constructor arguments are
    :class:`PacPool2d`'s.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> pool = pac.PacPool3d(3, stride=2, padding=1, normalize_kernel=True)
    >>> tuple(pool(torch.rand(1, 4, 6, 6, 6), torch.rand(1, 3, 6, 6, 6)).shape)
    (1, 4, 3, 3, 3)
    """

    _nd = 3

    # its own forward, so that Python's errors for a bad call name this class
    def forward(self, input, guide, kernel=None, mask=None):
        return super().forward(input, guide, kernel, mask)
