"""PAC-CRF for torch (Su et al., Sec. 5): ``PacCRF``, ``PacCRFLoose`` and their feature helpers.

Mean-field inference whose pairwise messages are ``PacConv2d`` layers (or plain convolutions for
the ``'na'`` compatibility), with the reference code's constructor, ``add_pairwise_kernel`` and
initialisation. ``create_YXRGB`` / ``create_position_feats`` build DenseCRF's bilateral features.
``pacnp.crf`` computes the same model on any array library; this is its ``nn.Module`` form,
trained through torch's autograd.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from .. import _core
from ..crf import _features
from .layers import PacConv2d, _PacConvNd

__all__ = ["PacCRF", "PacCRFLoose", "create_YXRGB", "create_position_feats"]


def create_position_feats(shape, scales=None, bs=1, device=None):
    """Pixel coordinates as features: ``[bs, len(shape), *shape]`` float32, coordinate ``a`` of
    every pixel divided by ``scales[a]`` (no scaling when None).

    Examples
    --------
    >>> import pacnp.torch as pac
    >>> pac.create_position_feats((2, 3), scales=(1.0, 0.5))[0, 1]
    tensor([[0., 2., 4.],
            [0., 2., 4.]])
    """
    # pacnp.crf's own checks and arithmetic (float64, then float32): the same values and the
    # same errors as pacnp.crf.create_position_feats, named for this function
    feats = _features._position_feats(
        "pacnp.torch.create_position_feats", "scales", shape, scales, bs, None, np.float32, None
    )
    return torch.from_numpy(np.require(feats, requirements="W")).to(device)


def create_YXRGB(img, yx_scale=None, rgb_scale=None, scales=None):
    """The bilateral features of DenseCRF: ``[y/σ_y, x/σ_x, r/σ_r, g/σ_g, b/σ_b]`` per pixel.

    ``img`` is (B, C, H, W) (or (C, H, W)); ``scales`` = ``yx_scale + rgb_scale`` in one
    sequence (give either it or the two parts). Returns (B, 2 + C, H, W).

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> tuple(pac.create_YXRGB(torch.rand(2, 3, 4, 5), yx_scale=2.0, rgb_scale=0.1).shape)
    (2, 5, 4, 5)
    """
    fn = "pacnp.torch.create_YXRGB"
    if not isinstance(img, torch.Tensor) or img.dim() not in (3, 4):
        raise TypeError(
            f"{fn}: img must be a (B, C, H, W) or (C, H, W) tensor, got "
            f"{type(img).__name__} of shape {tuple(getattr(img, 'shape', ()))}"
        )
    img = img.reshape(-1, *img.shape[-3:])
    if scales is not None:
        if yx_scale is not None or rgb_scale is not None:
            raise ValueError(f"{fn}: give scales or yx_scale/rgb_scale, not both")
        scales = list(_features._scales(fn, "scales", scales, np.size(scales)))
        if len(scales) < 3:
            raise ValueError(
                f"{fn}: scales has {len(scales)} values; expected yx_scale's 2 "
                f"then rgb_scale's (1, or one per channel)"
            )
        yx_scale, rgb_scale = scales[:2], scales[2:]
    B, C, H, W = img.shape
    mesh = _features._position_feats(fn, "yx_scale", (H, W), yx_scale, B, None, np.float64, None)
    if rgb_scale is not None:
        s = _features._scales(fn, "rgb_scale" if scales is None else "scales", rgb_scale, C)
        img = img / torch.tensor(np.array(s), dtype=img.dtype, device=img.device).reshape(-1, 1, 1)
    mesh = torch.from_numpy(np.require(mesh, requirements="W")).to(
        device=img.device, dtype=img.dtype
    )
    return torch.cat([mesh, img], dim=1)


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
            feat = F.avg_pool2d(
                feat,
                kernel_size=blur,
                padding=_blur_pad(feat.shape[2:], blur),
                count_include_pad=False,
            )
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

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> crf = pac.PacCRF(3, num_steps=2, final_output="log_softmax")
    >>> crf.add_pairwise_kernel(kernel_size=5, compat_type="potts")
    >>> feats = pac.create_YXRGB(torch.rand(1, 3, 12, 12), yx_scale=3.0, rgb_scale=0.2)
    >>> logp = crf(torch.randn(1, 3, 12, 12), feats)
    >>> tuple(logp.shape)
    (1, 3, 12, 12)
    """

    def __init__(
        self,
        channels,
        num_steps,
        final_output="log_Q",
        perturbed_init=True,
        native_impl=False,
        fixed_weighting=False,
        unary_weight=1.0,
        pairwise_kernels=None,
    ):
        super().__init__()
        if final_output not in _FINAL_OUTPUTS:
            raise ValueError(
                f"PacCRF: final_output={final_output!r}; expected one of {list(_FINAL_OUTPUTS)}"
            )
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
        self.unary_weight = (
            unary_weight if fixed_weighting else Parameter(torch.tensor(float(unary_weight)))
        )
        self.blur = []
        self.pairwise_repr = []
        if pairwise_kernels is not None:
            for spec in (
                [pairwise_kernels] if isinstance(pairwise_kernels, dict) else pairwise_kernels
            ):
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
        s = (
            f"categories={self.channels}, num_steps={self.num_steps}, "
            f"final_output={self.final_output}"
        )
        if self.perturbed_init:
            s += ", perturbed_init=True"
        if self.fixed_weighting:
            s += ", fixed_weighting=True"
        if self.pairwise_repr:
            s += f", pairwise_kernels=({', '.join(self.pairwise_repr)})"
        return s

    def add_pairwise_kernel(
        self,
        kernel_size=3,
        dilation=1,
        blur=1,
        compat_type="4d",
        spatial_filter=True,
        pairwise_weight=1.0,
    ):
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
            raise ValueError(
                f"{fn}: compat_type={compat_type!r}; expected one of {list(_COMPAT_TYPES)}"
            )
        ks = _core.pair(kernel_size, "kernel_size", fn, minimum=1, odd=True)
        dil = _core.pair(dilation, "dilation", fn, minimum=1)
        if not isinstance(blur, numbers.Integral) or blur < 1:
            raise ValueError(f"{fn}: blur must be a positive int, got {blur!r}")
        self.pairwise_repr.append(
            f"{'0d' if compat_type == 'potts' else compat_type}{'s' if spatial_filter else ''}"
            f"_{kernel_size}_{dilation}_{blur}"
        )
        if compat_type == "potts":
            # Potts energy: the message is the agreement with the same label, so it enters
            # with the opposite sign of a compatibility-weighted message
            pairwise_weight = -pairwise_weight
        weight = Parameter(
            torch.tensor(float(pairwise_weight)), requires_grad=not self.fixed_weighting
        )
        self.pairwise_weights.append(weight)
        self.init_pairwise_weights.append(float(pairwise_weight))
        self.blur.append(int(blur))
        self.compat.append(
            nn.Conv2d(self.channels, self.channels, 1, bias=False) if compat_type == "2d" else None
        )
        pad = tuple(d * (k // 2) for k, d in zip(ks, dil))
        C = self.channels
        if compat_type == "na":
            messenger = nn.Conv2d(C, C, ks, padding=pad, dilation=dil, bias=False)
        else:
            if compat_type == "4d" or spatial_filter:
                filler = "crf_perturbed" if self.perturbed_init else "crf"
            else:
                filler = "crf_pool"
            messenger = PacConv2d(
                C,
                C,
                ks,
                padding=pad,
                dilation=dil,
                bias=False,
                shared_filters=compat_type != "4d",
                filler=filler,
            )
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
                    blurred[blur] = F.avg_pool2d(
                        Q, kernel_size=blur, padding=pad, count_include_pad=False
                    )
                if isinstance(messenger, _PacConvNd):
                    msg = messenger(blurred[blur], None, kernels[i])
                else:
                    msg = messenger(blurred[blur])
                if self.compat[i] is not None:
                    msg = self.compat[i](msg)
                if blur > 1:
                    msg = F.interpolate(
                        msg, scale_factor=blur, mode="bilinear", align_corners=False
                    )
                    msg = msg[:, :, pad[0] : pad[0] + H, pad[1] : pad[1] + W]
                logQ = logQ - msg * self.pairwise_weights[i]
        return _final("PacCRF", self.final_output, logQ)


class PacCRFLoose(nn.Module):
    """:class:`PacCRF` with separate parameters for every mean-field step (``num_steps``
    one-step CRFs in a row); same arguments.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> crf = pac.PacCRFLoose(3, num_steps=2, final_output="softmax")
    >>> crf.add_pairwise_kernel(kernel_size=3, compat_type="potts")
    >>> feats = pac.create_YXRGB(torch.rand(1, 3, 8, 8), yx_scale=3.0, rgb_scale=0.2)
    >>> q = crf(torch.randn(1, 3, 8, 8), feats)
    >>> tuple(q.shape), bool(torch.allclose(q.sum(1), torch.ones(1, 8, 8)))
    ((1, 3, 8, 8), True)
    """

    def __init__(
        self,
        channels,
        num_steps,
        final_output="log_Q",
        perturbed_init=True,
        native_impl=False,
        fixed_weighting=False,
        unary_weight=1.0,
        pairwise_kernels=None,
    ):
        super().__init__()
        if final_output not in _FINAL_OUTPUTS:
            raise ValueError(
                f"PacCRFLoose: final_output={final_output!r}; expected one of "
                f"{list(_FINAL_OUTPUTS)}"
            )
        self.channels = channels
        self.num_steps = num_steps
        self.final_output = final_output
        self.steps = nn.ModuleList(
            PacCRF(
                channels,
                1,
                "log_Q",
                perturbed_init,
                native_impl,
                fixed_weighting,
                unary_weight,
                pairwise_kernels,
            )
            for _ in range(num_steps)
        )

    def reset_parameters(self):
        for step in self.steps:
            step.reset_parameters()

    def extra_repr(self):
        return (
            f"categories={self.channels}, num_steps={self.num_steps}, "
            f"final_output={self.final_output}"
        )

    def add_pairwise_kernel(
        self,
        kernel_size=3,
        dilation=1,
        blur=1,
        compat_type="4d",
        spatial_filter=True,
        pairwise_weight=1.0,
    ):
        """:meth:`PacCRF.add_pairwise_kernel` on every step."""
        for step in self.steps:
            step.add_pairwise_kernel(
                kernel_size, dilation, blur, compat_type, spatial_filter, pairwise_weight
            )

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
