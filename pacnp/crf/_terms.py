"""The CRF's data types: :class:`PairwiseTerm` (one pairwise term's parameters),
:class:`CRFGrads` (what :func:`~pacnp.crf.paccrf_backward` returns) and the names of the
compatibility and output types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

COMPAT_TYPES = ("na", "2d", "4d", "potts")
FINAL_OUTPUTS = ("log_softmax", "softmax", "log_Q")


@dataclass
class PairwiseTerm:
    """One pairwise term of the mean-field update (see ``pacnp.crf``'s docstring).

    Parameters
    ----------
    compat_type : {'na', '2d', '4d', 'potts'}
    filter : array
        ``(C, C, kh, kw)`` for ``'na'`` and ``'4d'``; ``(1, 1, kh, kw)`` for ``'2d'`` and
        ``'potts'``. The window size is the filter's (odd).
    weight : float or 0-d array
        ``w_m``; for ``'potts'`` a positive weight rewards agreement.
    compat : array, optional
        ``(C, C)`` compatibility matrix, ``'2d'`` only.
    dilation : int
    blur : int
        Messages on a grid ``blur`` times coarser (1: none).

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import crf
    >>> term = crf.PairwiseTerm("2d", filter=np.ones((1, 1, 3, 3)), weight=2.0,
    ...                         compat=1 - np.eye(4), dilation=2)
    >>> term.compat_type, term.dilation, term.blur
    ('2d', 2, 1)
    """

    compat_type: str
    filter: Any
    weight: Any = 1.0
    compat: Any = None
    dilation: int = 1
    blur: int = 1


class CRFGrads(NamedTuple):
    """Gradients returned by :func:`paccrf_backward` (None where not needed or not defined).

    ``edge_feat``: an array (one shared feature array) or a list (one per term, None for terms
    without K); ``kernels``: a list (when K was given instead of features); ``filters``,
    ``compats``, ``weights``: lists, one entry per term (``compats`` None except for ``'2d'``).

    Examples
    --------
    >>> import numpy as np
    >>> from pacnp import crf
    >>> u = np.zeros((1, 2, 4, 4)); f = np.zeros((1, 2, 4, 4))
    >>> term = crf.PairwiseTerm("potts", np.ones((1, 1, 3, 3)))
    >>> g = crf.paccrf_backward(np.ones_like(u), u, f, [term], num_steps=1)
    >>> type(g).__name__, g.unary.shape, len(g.filters)
    ('CRFGrads', (1, 2, 4, 4), 1)
    """

    unary: Any
    edge_feat: Any
    kernels: Any
    logQ: Any
    unary_weight: Any
    filters: Any
    compats: Any
    weights: Any
