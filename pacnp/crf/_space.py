"""The caller's array library, for :mod:`pacnp.crf`, through pacnp's one array contract
(``pacnp._namespace``).

Every other module of ``pacnp.crf`` reaches the caller's library only through the names below
(``_Space``, ``_NP``, ``_np_dtype``, ``_is_float``, ``_dev``, ``_is_numpy``,
``_parameter_converter``).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._namespace import Namespace


class _Shim:
    """An array module (NumPy or CuPy) with the array-API names the CRF uses that NumPy < 2
    and CuPy lack (``concat``, ``permute_dims``, ``astype``): pacnp supports NumPy >= 1.24."""

    def __init__(self, module):
        self.module = module

    def concat(self, arrays, axis=0):
        return self.module.concatenate(arrays, axis=axis)

    def permute_dims(self, a, axes):
        return self.module.transpose(a, axes)

    @staticmethod
    def astype(a, dtype):
        return a.astype(dtype)

    def __getattr__(self, name):
        return getattr(self.module, name)


_NP = _Shim(np)


def _is_real(a):
    return isinstance(a, numbers.Real) and not isinstance(a, (bool, np.bool_))


class _Space:
    """The caller's arrays through pacnp's array contract (``pacnp._namespace``): the CRF
    computes on work arrays — NumPy on the host, CuPy on a GPU — and hands results back in the
    caller's library and device. Python numbers pass through as they are."""

    def __init__(self, fn, named):
        self.fn = fn
        self.ns = Namespace(fn, {n: a for n, a in named.items() if not _is_real(a)})
        self.kind = self.ns.lib
        work = self.ns.xp
        self.xp = _NP if work is np else _Shim(work)

    def inp(self, a, name):
        """An input array as a work array (None and Python numbers pass through)."""
        if a is None or _is_real(a):
            return a
        return self.ns.to_work(a, name)

    def out(self, a):
        """A result in the caller's library and on its device."""
        if a is None or _is_real(a) and not isinstance(a, np.generic):
            return a
        return self.ns.from_work(a)

    def asarray(self, a, dtype):
        """A host NumPy constant as a work array of ``dtype``."""
        return self.xp.asarray(np.asarray(a, dtype=_np_dtype(dtype)))


def _np_dtype(dtype):
    """The NumPy dtype of any library's dtype object (None if it has none)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        try:  # e.g. array_api_strict.float32
            return np.dtype(str(dtype).rsplit(".", 1)[-1])
        except TypeError:
            return None


def _is_float(dtype):
    return _np_dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64))


def _dev(a):
    """Keywords that put a new work array on ``a``'s device: none — CuPy allocates on the
    current device, which the array contract has made the caller's."""
    return {}


def _is_numpy(xp):
    """True when ``xp`` computes with NumPy (the mean-field engine's in-place paths, which
    need NumPy's ``out=`` and in-place operators on arrays the engine made itself)."""
    return xp is np or xp is _NP


def _parameter_converter(fn, like):
    """How :class:`~pacnp.crf.PacCRF`'s NumPy parameters reach the library of ``like`` (the
    unary): None when they are used as they are (NumPy), else a function of one parameter
    array (None kept as None) that returns it in ``like``'s library, dtype and device."""
    sp = _Space(fn, dict(unary=like))
    if sp.kind == "numpy":
        return None
    dtype = _np_dtype(like.dtype)
    return lambda a: None if a is None else sp.out(sp.asarray(a, dtype))  # noqa: E731
