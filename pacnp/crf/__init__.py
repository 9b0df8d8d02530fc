r"""Mean-field CRF inference with PAC messages (Su et al., CVPR 2019, Sec. 5), built only on
pacnp's public functions — so it runs wherever they run (NumPy on the CPU; CuPy / JAX /
array-API arrays through their own namespace, on the GPU for device arrays).

The model
---------
``unary`` U is ``[B, C, H, W]`` (C labels; logits or log-probabilities), ``Q = softmax(L)`` over
the label axis. One mean-field step, with M pairwise terms, is

.. math::

    L_t = w_u · U − Σ_m w_m · μ_m( Up_m( P_m( Down_m( softmax(L_{t−1}) ) ) ) ),
    \qquad L_0 = U \text{ (or the ``logQ`` given)},

repeated ``num_steps`` times; the output is ``log_softmax(L_T)``, ``softmax(L_T)`` or ``L_T``
(``final_output = 'log_softmax' | 'softmax' | 'log_Q'``). ``w_u`` is the unary weight and
``w_m`` the weight of term m. (μ_m and Up_m commute — one acts on labels, the other on pixels —
and μ_m is applied before Up_m, on the coarse grid.)

* ``P_m`` is the message, a PAC convolution (Eq. 3) over a ``kernel_size`` window with
  ``dilation`` d and "same" zero padding ``d·(k−1)/2``, with the kernel
  ``K_m[i, j] = exp(−½ ‖f_i − f_j‖²)`` of the (pre-scaled) edge features f, computed **once** by
  :func:`pacnp.packernel2d` and reused by every step:

  - ``'4d'``:  ``P(Q)_o = Σ_c Σ_t K_t · W[o, c, t] · Q_c(· + t)``, a dense C×C×k×k filter — the
    message and the label compatibility in one (``pacconv2d``);
  - ``'2d'``, ``'potts'``: one k×k spatial filter applied to every label
    (``pacconv2d(..., shared_filters=True)``), ``P(Q)_c = Σ_t K_t · W[t] · Q_c(· + t)``;
  - ``'na'``: no adaptive kernel (K ≡ 1): an ordinary C×C×k×k convolution (run as
    ``pacconv2d_fused`` on an all-zero guide, whose Gaussian K is exactly 1).

* ``μ_m`` is the label compatibility transform: ``'2d'``: a learnt C×C matrix,
  ``μ(x)_o = Σ_c M[o, c] · x_c``; ``'potts'``: ``μ(x) = −x`` (the Potts model up to a
  label-independent term, which softmax ignores: with M = 1 − I,
  ``Σ_{c≠o} x_c = Σ_c x_c − x_o``, and ``Σ_c P(Q)_c`` is the same for every label o because
  ``Σ_c Q_c = 1``); ``'na'``, ``'4d'``: the identity (the dense filter holds the compatibility).

  **Signs.** A positive ``w_m`` with ``'potts'`` rewards agreement with the neighbours:
  ``L += w_m · P(Q)``. For the other types a positive compatibility entry ``W[o, c]`` or
  ``M[o, c]`` is a *penalty* for label o next to label c (the initial value ``1 − I`` is Potts).
  The torch layer ``pacnp.torch.PacCRF`` (and the 2019 reference ``PacCRF``) store the Potts
  weight negated (``pairwise_weights[i] = −w_m``) and subtract every message; the updates are
  identical.

* ``Down_m`` / ``Up_m`` (``blur = b > 1``): messages are passed on a grid b times coarser.
  ``Down`` is b×b average pooling with stride b and padding ``pad = ⌈((−H) mod b) / 2⌉`` per
  axis, counting only pixels inside the image (``avg_pool2d(count_include_pad=False)``); it is
  run as :func:`pacnp.pacpool2d` with a constant K holding ``1 / count`` (a window of b taps, or
  b + 1 taps with a zero first tap for even b — pacnp's windows have odd sizes). The edge
  features are pooled the same way before K is computed. ``Up`` is bilinear upsampling by b
  (``interpolate(mode='bilinear', align_corners=False)``, borders clamped) followed by the crop
  ``[pad : pad + H]``; it is run as :func:`pacnp.pacconv_transpose2d_fused` (stride b, the
  (2b+1)×(2b+1) triangle filter ``max(0, 1 − |t − c|/b)`` shared by every label, K ≡ 1 from an
  all-zero guide) on the coarse message with its border replicated, then a crop. This is
  exactly the coarse-grid message passing of the 2019 ``PacCRF``.

Gradients
---------
:func:`paccrf_backward` backpropagates through the unrolled steps with pacnp's ``_backward``
functions: ``pacconv2d_backward`` (messages: input, K, filter), ``pacpool2d_backward`` /
``pacconv_transpose2d_fused_backward`` (blur), ``packernel2d_backward`` (K → features),
and the softmax / compatibility / weight adjoints in the array namespace. It returns the
gradients of the output with respect to the unary, the edge features (or the given kernels), the
initial ``logQ``, the unary weight, and every term's filter, compatibility matrix and weight.

Functional and object forms
---------------------------
:func:`paccrf` / :func:`paccrf_backward` take the parameters explicitly, as a list of
:class:`PairwiseTerm`. :class:`PacCRF` mirrors the 2019 ``PacCRF`` module (same constructor,
``add_pairwise_kernel`` arguments, initialisation and defaults) holding NumPy parameters.
:func:`crf_refine` is a one-call dense-CRF-style refinement of segmentation probabilities with
an RGB image. :func:`create_YXRGB` / :func:`create_position_feats` build the usual features.

Layout
------
``_terms`` (PairwiseTerm, CRFGrads), ``_checks`` (argument checks), ``_blur`` (coarse-grid
pooling / upsampling), ``_engine`` (the mean-field loop and its backward), ``_functional``
(paccrf, paccrf_backward), ``_features`` (create_position_feats, create_YXRGB), ``_model``
(PacCRF), ``_refine`` (crf_refine); ``_space`` is the only module that knows array libraries.
"""

from ._features import create_position_feats, create_YXRGB
from ._functional import paccrf, paccrf_backward
from ._model import PacCRF
from ._refine import crf_refine
from ._terms import COMPAT_TYPES, FINAL_OUTPUTS, CRFGrads, PairwiseTerm

__all__ = [
    "PairwiseTerm",
    "CRFGrads",
    "paccrf",
    "paccrf_backward",
    "PacCRF",
    "crf_refine",
    "create_YXRGB",
    "create_position_feats",
    "COMPAT_TYPES",
    "FINAL_OUTPUTS",
]
