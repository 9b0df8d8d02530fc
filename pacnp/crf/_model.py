"""The object form: :class:`PacCRF`, mirroring the 2019 ``PacCRF`` module, with NumPy
parameters."""

from __future__ import annotations

import numpy as np

from .. import _api as pac
from .. import _core
from ._blur import _Blur
from ._checks import (
    _NEED_NAMES,
    _check_needs,
    _check_positive_int,
    _check_reach,
    _check_real,
    _check_steps,
)
from ._functional import paccrf, paccrf_backward
from ._space import _parameter_converter, _Space
from ._terms import COMPAT_TYPES, FINAL_OUTPUTS, PairwiseTerm


def _gaussian_filter(k):
    """The 2019 ``crf`` filler's spatial filter: a k×k Gaussian of σ = k/4, scaled to mean 1,
    without the centre tap (a pixel sends no message to itself)."""
    r = np.arange(k, dtype=np.float64) - k // 2
    g = np.exp(-0.5 * (r / (k / 4.0)) ** 2)
    g2 = np.outer(g, g)
    g2 *= k * k / g2.sum()
    g2[k // 2, k // 2] = 0.0
    return g2


class PacCRF:
    """Object form of :func:`paccrf`, mirroring the 2019 ``PacCRF`` module (Su et al., Sec. 5)
    with NumPy parameters.

    Parameters
    ----------
    channels : int
        Number of labels C.
    num_steps : int
        Mean-field steps.
    final_output : {'log_Q', 'softmax', 'log_softmax'}
    perturbed_init : bool
        Add uniform noise of width 1e-3 to the Potts-like initial compatibilities (the 2019
        default; it breaks the symmetry between labels for training). Uses ``seed``.
    native_impl : bool
        Accepted for compatibility and ignored.
    fixed_weighting : bool
        The unary and pairwise weights are constants: :meth:`backward` returns no gradient for
        them.
    unary_weight : float
    pairwise_kernels : dict or list of dict, optional
        Arguments of :meth:`add_pairwise_kernel`.
    dtype : float32 or float64
        Dtype of the parameters (the inputs must match).
    seed : int, optional
        Seed of the perturbation.

    Attributes
    ----------
    terms : list of PairwiseTerm
        The parameters (NumPy arrays), editable.
    unary_weight : float

    Notes
    -----
    Initial values, as in the 2019 code: ``'4d'`` filters ``(1 − I) ⊗ G`` and ``'2d'`` / ``'potts'``
    spatial filters G (G: a k×k Gaussian of σ = k/4 scaled to mean 1, centre tap 0), or with
    ``spatial_filter=False`` a box of ones without the centre; ``'2d'`` compatibility
    ``1 − I``. ``'na'`` filters start as
    ``(1 − I) ⊗ G`` too (the 2019 code left ``nn.Conv2d``'s random initialisation, useless
    without training). Every weight takes part in the update (as in ``pacnp.torch.PacCRF``).

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import crf
    >>> rng = np.random.default_rng(0)
    >>> model = crf.PacCRF(4, num_steps=3, final_output="log_softmax", seed=0)
    >>> model.add_pairwise_kernel(5, compat_type="4d", pairwise_weight=1.0)
    >>> feats = crf.create_YXRGB(rng.random((1, 3, 10, 10), dtype=np.float32), 3.0, 0.2)
    >>> unary = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    >>> logp = model(unary, feats)
    >>> logp.shape, len(model.terms), model.terms[0].filter.shape
    ((1, 4, 10, 10), 1, (4, 4, 5, 5))
    >>> Ks = model.compute_kernels(feats)                 # K once, for several calls
    >>> bool(np.allclose(model(unary, edge_kernel=Ks), logp))
    True
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
        *,
        dtype=np.float32,
        seed=None,
    ):
        fn = "PacCRF"
        self.channels = _check_positive_int(fn, "channels", channels)
        self.num_steps = _check_steps(fn, num_steps)
        if final_output not in FINAL_OUTPUTS:
            raise ValueError(
                f"{fn}: final_output={final_output!r}; expected one of {list(FINAL_OUTPUTS)}"
            )
        self.final_output = final_output
        self.perturbed_init = bool(perturbed_init)
        self.native_impl = native_impl
        self.fixed_weighting = bool(fixed_weighting)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"{fn}: dtype={dtype!r}; expected float32 or float64")
        self.init_unary_weight = _check_real(fn, "unary_weight", unary_weight)
        self.unary_weight = float(unary_weight)
        self.rng = np.random.default_rng(seed)
        self.terms = []
        self._specs = []
        if pairwise_kernels is not None:
            for spec in (
                [pairwise_kernels] if isinstance(pairwise_kernels, dict) else pairwise_kernels
            ):
                self.add_pairwise_kernel(**spec)

    def add_pairwise_kernel(
        self,
        kernel_size=3,
        dilation=1,
        blur=1,
        compat_type="4d",
        spatial_filter=True,
        pairwise_weight=1.0,
    ):
        """Add a pairwise term (the 2019 ``add_pairwise_kernel`` arguments and defaults).

        Parameters
        ----------
        kernel_size : int
            Odd window size.
        dilation : int
        blur : int
            Messages on a grid ``blur`` times coarser.
        compat_type : {'4d', '2d', 'potts', 'na'}
        spatial_filter : bool
            ``'2d'`` / ``'potts'``: a Gaussian spatial filter (True) or a fixed box without the
            centre (False).
        pairwise_weight : float
            ``w_m`` (for ``'potts'``: positive rewards agreement).
        """
        fn = "PacCRF.add_pairwise_kernel"
        if compat_type not in COMPAT_TYPES:
            raise ValueError(
                f"{fn}: compat_type={compat_type!r}; expected one of {list(COMPAT_TYPES)}"
            )
        k = _check_positive_int(fn, "kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(
                f"{fn}: kernel_size must be odd (the window needs a centre), got {kernel_size!r}"
            )
        spec = dict(
            kernel_size=k,
            dilation=_check_positive_int(fn, "dilation", dilation),
            blur=_check_positive_int(fn, "blur", blur),
            compat_type=compat_type,
            spatial_filter=bool(spatial_filter),
            pairwise_weight=_check_real(fn, "pairwise_weight", pairwise_weight),
        )
        _check_reach(fn, "", (k,), spec["dilation"], spec["blur"])
        _core.check_window(fn, "kernel_size", kernel_size, k * k)
        self._specs.append(spec)
        self.terms.append(None)
        self.reset_parameters(len(self.terms) - 1)

    def reset_parameters(self, pairwise_idx=None):
        """Re-initialise every term (and the unary weight), or only term ``pairwise_idx``."""
        if pairwise_idx is None:
            self.unary_weight = self.init_unary_weight
            idxs = range(len(self.terms))
        else:
            idxs = [pairwise_idx]
        C, dt = self.channels, self.dtype
        for i in idxs:
            s = self._specs[i]
            k, kind = s["kernel_size"], s["compat_type"]
            g = _gaussian_filter(k)
            compat = None
            if kind in ("na", "4d"):
                filt = (1.0 - np.eye(C))[:, :, None, None] * g
            elif s["spatial_filter"]:
                filt = g[None, None].copy()
            else:
                filt = np.ones((1, 1, k, k))
                filt[0, 0, k // 2, k // 2] = 0.0
            learnt_filter = kind in ("na", "4d") or s["spatial_filter"]
            if self.perturbed_init and learnt_filter:
                filt = filt + (self.rng.random(filt.shape) - 0.5) * 1e-3
            if kind == "2d":
                compat = 1.0 - np.eye(C)
                if self.perturbed_init:
                    compat = compat + (self.rng.random(compat.shape) - 0.5) * 1e-3
                compat = compat.astype(dt)
            self.terms[i] = PairwiseTerm(
                kind, filt.astype(dt), s["pairwise_weight"], compat, s["dilation"], s["blur"]
            )

    def num_pairwise_kernels(self):
        return len(self.terms)

    def _kw(self):
        return dict(
            num_steps=self.num_steps, unary_weight=self.unary_weight, final_output=self.final_output
        )

    def _terms_for(self, unary):
        """The parameters in the caller's array library (NumPy: as they are)."""
        conv = _parameter_converter("PacCRF", unary)
        if conv is None:
            return self.terms
        return [
            PairwiseTerm(
                t.compat_type,
                conv(t.filter),
                t.weight,
                None if t.compat is None else conv(t.compat),
                t.dilation,
                t.blur,
            )
            for t in self.terms
        ]

    def compute_kernels(self, edge_feat):
        """K of every term (None for ``'na'``), to pass as ``edge_kernel`` to later calls.

        ``edge_feat``: one array (B, F, H, W) shared by all terms, or a list (one per term);
        features of blurred terms are pooled first.
        """
        shared = not isinstance(edge_feat, (list, tuple))
        feats = [edge_feat] * len(self.terms) if shared else list(edge_feat)
        if len(feats) != len(self.terms):
            raise ValueError(
                f"PacCRF.compute_kernels: edge_feat is a list of {len(feats)} "
                f"arrays but there are {len(self.terms)} pairwise terms"
            )
        fn = "PacCRF.compute_kernels"
        out = []
        for i, (t, f) in enumerate(zip(self.terms, feats)):
            if t.compat_type == "na":
                out.append(None)
                continue
            name = "edge_feat" if shared else f"edge_feat[{i}]"
            sp = _Space(fn, {name: f})
            g = sp.inp(f, name)
            if g is None or not hasattr(g, "shape") or len(g.shape) != 4:
                raise ValueError(
                    f"{fn}: {name} must be a (B, F, H, W) array for terms[{i}] "
                    f"(compat_type={t.compat_type!r}), got "
                    f"{tuple(g.shape) if hasattr(g, 'shape') else g!r}"
                )
            if t.blur > 1:
                g = _Blur(sp, tuple(g.shape[2:]), t.blur, int(g.shape[0]), g.dtype).down(g)
            k = int(t.filter.shape[-1])
            K, _ = pac.packernel2d(g, k, padding=t.dilation * (k - 1) // 2, dilation=t.dilation)
            out.append(sp.out(K))
        return out

    def __call__(self, unary, edge_feat=None, edge_kernel=None, logQ=None):
        """Run the CRF: :func:`paccrf` with this object's parameters.

        ``edge_kernel``: K per term (from :meth:`compute_kernels`; one array is used for
        every term) instead of ``edge_feat``.
        """
        kernels = edge_kernel
        if kernels is not None and not isinstance(kernels, (list, tuple)):
            kernels = [None if t.compat_type == "na" else kernels for t in self.terms]
        return paccrf(
            unary, edge_feat, self._terms_for(unary), kernels=kernels, logQ=logQ, **self._kw()
        )

    forward = __call__

    def backward(self, grad_output, unary, edge_feat=None, edge_kernel=None, logQ=None, needs=None):
        """:func:`paccrf_backward` with this object's parameters (a :class:`CRFGrads`); with
        ``fixed_weighting`` the weight gradients are None."""
        needs = list(_check_needs("PacCRF.backward", needs))
        if self.fixed_weighting:
            needs[_NEED_NAMES.index("unary_weight")] = False
            needs[_NEED_NAMES.index("weights")] = False
        kernels = edge_kernel
        if kernels is not None and not isinstance(kernels, (list, tuple)):
            kernels = [None if t.compat_type == "na" else kernels for t in self.terms]
        return paccrf_backward(
            grad_output,
            unary,
            edge_feat,
            self._terms_for(unary),
            kernels=kernels,
            logQ=logQ,
            needs=tuple(needs),
            **self._kw(),
        )

    def __repr__(self):
        parts = [
            f"{s['compat_type'] if s['compat_type'] != 'potts' else '0d'}"
            f"{'s' if s['spatial_filter'] else ''}_{s['kernel_size']}_{s['dilation']}_"
            f"{s['blur']}"
            for s in self._specs
        ]
        return (
            f"PacCRF(categories={self.channels}, num_steps={self.num_steps}, "
            f"final_output={self.final_output}, pairwise_kernels=({', '.join(parts)}))"
        )
