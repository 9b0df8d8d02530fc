"""The caller's array library, for :mod:`pacnp.crf`: the ONE place in the package that looks
at an array's library, namespace, device and dtype objects.

Every other module of ``pacnp.crf`` reaches the caller's library only through the names below
(``_Space``, ``_NP``, ``_np_dtype``, ``_is_float``, ``_dev``, ``_is_numpy``,
``_parameter_converter``), so that this module can be replaced by the project-wide array
contract without touching the CRF itself.
"""
from __future__ import annotations

import numbers

import numpy as np


def _library(a):
    if isinstance(a, (np.ndarray, np.generic)):
        return "numpy"
    if type(a).__module__.split(".")[0] == "torch":
        return "torch"  # torch tensors have no __array_namespace__: computed through NumPy
    if hasattr(a, "__array_namespace__"):
        return "xp"
    return None


class _NumPyNamespace:
    """NumPy with the array-API names NumPy < 2 lacks (``concat``, ``permute_dims``,
    ``astype``): pacnp supports NumPy >= 1.24."""

    concat = staticmethod(np.concatenate)
    permute_dims = staticmethod(np.transpose)

    @staticmethod
    def astype(a, dtype):
        return a.astype(dtype)

    def __getattr__(self, name):
        return getattr(np, name)


_NP = _NumPyNamespace()


class _Space:
    """The caller's array library: its namespace ``xp`` and device, conversions in and out.

    NumPy arrays and namespaces with ``__array_namespace__`` (CuPy, JAX, array-API libraries)
    are computed in their own namespace; torch CPU tensors through NumPy (zero-copy DLPack).
    """

    def __init__(self, fn, named):
        self.fn = fn
        libs = {}
        for name, a in named.items():
            if a is None or isinstance(a, numbers.Real) and not isinstance(a, (bool, np.bool_)):
                continue
            lib = _library(a)
            if lib is None:
                raise TypeError(f"{fn}: {name} must be an array (NumPy, or a library with "
                                f"__array_namespace__), got {type(a).__name__}")
            key = "numpy" if lib == "numpy" else (
                "torch" if lib == "torch" else a.__array_namespace__().__name__)
            libs[name] = (key, a)
        kinds = {k for k, _ in libs.values()}
        if len(kinds) > 1:
            seen = ", ".join(f"{n}: {k}" for n, (k, _) in libs.items())
            raise TypeError(f"{fn}: arrays from different libraries cannot be mixed ({seen}); "
                            f"convert them to one library first")
        self.kind = kinds.pop() if kinds else "numpy"
        sample = next(iter(libs.values()))[1] if libs else None
        self.device = None
        if self.kind in ("numpy", "torch"):
            self.xp = _NP
        else:
            self.xp = sample.__array_namespace__()
            self.device = getattr(sample, "device", None)

    def inp(self, a, name):
        """An input array in the computing namespace (torch → NumPy view)."""
        if a is None or self.kind != "torch":
            return a
        if isinstance(a, numbers.Real):
            return a
        if a.device.type != "cpu":
            raise TypeError(f"{self.fn}: {name} is a torch tensor on {a.device}; pacnp.crf "
                            f"takes torch tensors on the CPU only (use pacnp.torch.PacCRF, or "
                            f"CuPy arrays for the GPU)")
        return np.from_dlpack(a.detach())

    def out(self, a):
        if a is None or self.kind != "torch" or (isinstance(a, numbers.Real)
                                                 and not isinstance(a, np.generic)):
            return a
        import torch
        return torch.from_dlpack(np.asarray(a))

    def asarray(self, a, dtype):
        """A host NumPy constant as an array of the caller's namespace, dtype and device."""
        a = np.asarray(a, dtype=_np_dtype(dtype) if self.xp is _NP else np.float64)
        if self.xp is _NP:
            return a
        out = self.xp.asarray(a, device=self.device) if self.device is not None \
            else self.xp.asarray(a)
        return self.xp.astype(out, dtype)


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
    dev = getattr(a, "device", None)
    return {} if isinstance(a, np.ndarray) or dev is None else {"device": dev}


def _is_numpy(xp):
    """True when ``xp`` is the ``numpy`` module itself (the mean-field engine's in-place NumPy
    paths). ``_Space.xp`` is ``_NP`` for NumPy and torch inputs, never ``numpy``, so no call
    through ``_Space`` takes those paths today."""
    return xp is np


def _parameter_converter(fn, like):
    """How :class:`~pacnp.crf.PacCRF`'s NumPy parameters reach the library of ``like`` (the
    unary): None when they are used as they are (NumPy), else a function of one parameter
    array (torch: a zero-copy tensor view, None kept as None; other libraries: the array in
    ``like``'s namespace, dtype and device)."""
    if isinstance(like, np.ndarray):
        return None
    if _library(like) == "torch":  # zero-copy tensor views of the NumPy parameters
        import torch
        return lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    sp = _Space(fn, dict(unary=like))
    return lambda a: sp.asarray(a, like.dtype)  # noqa: E731
