"""Argument checks shared by the mean-field engine, the functional and object forms and
:func:`~pacnp.crf.crf_refine`."""

from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from ._terms import CRFGrads


def _check_positive_int(fn, name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {v!r}")
    return _core.check_size(fn, name, int(v))


def _check_real(fn, name, v):
    """A finite real number (bools and strings refused: float("2") and float(True) pass)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not np.isfinite(v):
        raise ValueError(f"{fn}: {name} must be a finite number, got {v!r}")
    return float(v)


def _check_steps(fn, v):
    """``num_steps``: an int >= 0 (at most pacnp's MAX_SIZE)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"{fn}: num_steps must be an int >= 0, got {v!r}")
    return _core.check_size(fn, "num_steps", int(v))


def _check_reach(fn, where, k, dilation, blur):
    """A term's window (``k`` taps of ``dilation``) and coarse grid (``blur``: a b- or
    (b+1)-tap pooling window down, a (2b+1)-tap filter up) are windows pacnp takes."""
    pre = f"{where}." if where else ""
    for kk in k:
        _core.check_size(fn, f"{pre}dilation", dilation * (kk - 1) // 2, dilation)
    _core.check_window(fn, f"{pre}blur", blur, (2 * blur + 1) ** 2)


def _odd_pair(fn, name, shape):
    for k in shape:
        if k % 2 == 0:
            raise ValueError(
                f"{fn}: {name} has shape {tuple(shape)}; its window "
                f"{tuple(shape[-2:])} must have odd sizes (the window needs a centre)"
            )


_NEED_NAMES = CRFGrads._fields


def _check_needs(fn, needs):
    if needs is None:
        return (True,) * len(_NEED_NAMES)
    if isinstance(needs, str):
        needs = (needs,)
    try:
        items = tuple(needs)
    except TypeError:
        items = (needs,)  # not a collection: the message below names it
    if items and all(isinstance(v, str) for v in items) and not isinstance(needs, dict):
        bad = [v for v in items if v not in _NEED_NAMES]
        if bad:
            raise ValueError(
                f"{fn}: needs names {bad} that are not gradients; expected names "
                f"from {list(_NEED_NAMES)}"
            )
        return tuple(name in items for name in _NEED_NAMES)
    if len(items) != len(_NEED_NAMES) or not all(isinstance(v, (bool, np.bool_)) for v in items):
        raise ValueError(
            f"{fn}: needs must be None, a tuple of {len(_NEED_NAMES)} bools (one per "
            f"gradient: {', '.join(_NEED_NAMES)}) or a collection of those names; "
            f"got {needs!r}"
        )
    return tuple(bool(v) for v in items)
