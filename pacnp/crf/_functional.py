"""The functional form: :func:`paccrf` and :func:`paccrf_backward`, with the parameters
passed explicitly."""

from __future__ import annotations

from ._checks import _check_needs
from ._engine import _final, _Run


def paccrf(
    unary,
    edge_feat,
    terms,
    *,
    num_steps,
    unary_weight=1.0,
    final_output="log_Q",
    logQ=None,
    kernels=None,
    on_step=None,
):
    """Mean-field inference of a CRF with PAC pairwise terms (``pacnp.crf``'s docstring has the
    update ``L ← w_u·U − Σ_m w_m·μ_m(Up_m(P_m(Down_m(softmax(L)))))`` and its conventions).

    Parameters
    ----------
    unary : array (B, C, H, W), float32 or float64
        Unary logits ``U`` (e.g. a network's scores, or log-probabilities).
    edge_feat : array (B, F, H, W), or list of arrays
        Features the pairwise kernels ``K = exp(−½‖f_i − f_j‖²)`` are computed from, already
        divided by their bandwidths (:func:`create_YXRGB`): one array shared by every term, or
        one per term (None for ``'na'`` terms). Ignored when ``kernels`` is given.
    terms : sequence of PairwiseTerm (or dicts of its fields)
        The pairwise terms.
    num_steps : int
        Mean-field steps (0: the output is computed from ``logQ`` / ``unary`` directly).
    unary_weight : float or 0-d array
        ``w_u``.
    final_output : {'log_Q', 'softmax', 'log_softmax'}
        ``L_T`` itself, ``softmax(L_T)`` or ``log_softmax(L_T)`` over the label axis.
    logQ : array (B, C, H, W), optional
        Initial ``L_0`` (default: ``unary``); lets steps with different parameters be chained
        (the 2019 ``PacCRFLoose``) with ``kernels`` computed once.
    kernels : list of arrays, optional
        Precomputed K per term (``packernel2d`` output at the term's coarse resolution; None for
        ``'na'``) instead of ``edge_feat``.
    on_step : callable, optional
        Called as ``on_step(done, num_steps)`` after every mean-field step (progress bars).

    Returns
    -------
    array (B, C, H, W)
        In the caller's array library.

    Raises
    ------
    TypeError
        Arrays of different libraries, or dtypes other than float32 / float64.
    ValueError
        Shapes that do not fit (labels, features, filters), an unknown ``compat_type`` or
        ``final_output``, a negative ``num_steps``.

    See Also
    --------
    paccrf_backward : its gradients.
    PacCRF : the object form, with the 2019 constructor.
    crf_refine : a ready-made CRF for refining a segmentation.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import crf
    >>> rng = np.random.default_rng(0)
    >>> unary = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)      # 3 labels
    >>> image = rng.random((1, 3, 12, 12)).astype(np.float32)
    >>> feats = crf.create_YXRGB(image, yx_scale=3.0, rgb_scale=0.1)        # (1, 5, 12, 12)
    >>> potts = crf.PairwiseTerm("potts", filter=np.ones((1, 1, 5, 5), np.float32), weight=1.0)
    >>> q = crf.paccrf(unary, feats, [potts], num_steps=3, final_output="softmax")
    >>> q.shape, q.dtype, bool(np.allclose(q.sum(axis=1), 1))
    ((1, 3, 12, 12), dtype('float32'), True)
    """
    if on_step is not None and not callable(on_step):
        raise TypeError(f"paccrf: on_step must be callable or None, got {on_step!r}")
    run = _Run(
        "paccrf", unary, edge_feat, terms, num_steps, unary_weight, final_output, logQ, kernels
    )
    L, _ = run.forward(on_step=on_step)
    return run.space.out(_final(run.xp, final_output, L))


def paccrf_backward(
    grad_output,
    unary,
    edge_feat,
    terms,
    *,
    num_steps,
    unary_weight=1.0,
    final_output="log_Q",
    logQ=None,
    kernels=None,
    needs=None,
):
    """Gradients of :func:`paccrf`'s output (given ``grad_output``, its gradient) with respect
    to every input, by backpropagation through the unrolled steps.

    Takes the output gradient first, then exactly :func:`paccrf`'s arguments. The forward is
    recomputed (saving each step's Q and messages); K is computed once.

    Parameters
    ----------
    grad_output : array (B, C, H, W)
    needs : None, tuple of 8 bools, or collection of names
        Which gradients to compute, in the order of :class:`CRFGrads`: ``unary, edge_feat,
        kernels, logQ, unary_weight, filters, compats, weights`` (None: all). A gradient not
        needed comes back as None.

    Returns
    -------
    CRFGrads
        ``edge_feat`` is None when ``kernels`` were given (then ``kernels`` holds the gradients
        with respect to them), and vice versa; ``logQ`` is None unless ``logQ`` was given
        (otherwise its gradient is part of ``unary``'s); ``compats`` entries are None except
        for ``'2d'`` terms.

    Raises
    ------
    TypeError, ValueError
        As :func:`paccrf`, and for a ``grad_output`` whose shape is not the output's.

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import crf
    >>> rng = np.random.default_rng(0)
    >>> unary = rng.standard_normal((1, 2, 8, 8))
    >>> feats = crf.create_YXRGB(rng.random((1, 3, 8, 8)), yx_scale=2.0, rgb_scale=0.2)
    >>> term = crf.PairwiseTerm("potts", filter=np.ones((1, 1, 3, 3)), weight=0.5)
    >>> out = crf.paccrf(unary, feats, [term], num_steps=2)
    >>> grads = crf.paccrf_backward(np.ones_like(out), unary, feats, [term], num_steps=2)
    >>> grads.unary.shape, grads.edge_feat.shape, grads.filters[0].shape, grads.logQ
    ((1, 2, 8, 8), (1, 5, 8, 8), (1, 1, 3, 3), None)
    """
    fn = "paccrf_backward"
    needs = _check_needs(fn, needs)
    run = _Run(fn, unary, edge_feat, terms, num_steps, unary_weight, final_output, logQ, kernels)
    g = run.space.inp(grad_output, "grad_output")
    if g is None or not hasattr(g, "shape") or tuple(g.shape) != tuple(run.U.shape):
        seen = tuple(g.shape) if hasattr(g, "shape") else type(grad_output).__name__
        raise ValueError(
            f"{fn}: grad_output has shape {seen}; expected the output's {tuple(run.U.shape)}"
        )
    run.check_dtype(g, "grad_output")
    return run.backward(g, needs)
