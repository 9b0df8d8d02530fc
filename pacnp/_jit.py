"""Compile options of pacnp's kernels: the one place that builds ``numba.njit`` and
``numba.cuda.jit`` options, and the guard that keeps the compile-time tunables honest.

A value a kernel reads when it is compiled — a jit option (``config.CACHE``, ``FASTMATH``,
``PAIR_FASTMATH``) or a constant of its body (``config.INV_EPS``) — is baked into the machine
code and into numba's on-disk cache; ``config.FROZEN_AT_COMPILE`` names them. Their values are
taken once per process (:func:`frozen`), when the first kernel module is imported, i.e. on the
first call of a pacnp function that runs a kernel, and every kernel reads them from that
snapshot. After that:

* :func:`check_frozen` (called by every public call before it runs a kernel) raises a
  RuntimeError when ``config`` holds another value than the one the kernels were built with —
  editing such a value after the first call would otherwise silently do nothing;
* the on-disk cache is keyed on the snapshot as well, so a process that sets other values
  (before its first call, or by editing config.py) compiles kernels of its own instead of
  loading ones built with the old values (numba keys its cache on the kernel's bytecode and
  source file only, not on module constants, flags, or the config.py they came from).

Every other tunable of ``config`` is read by Python code at each call (the drivers in
``pacnp._ops`` or a backend's launchers) and may be changed at any time.

``import pacnp`` does not import this module's numba.cuda side: :func:`cuda_jit` imports it
when a CUDA kernel module asks for it.
"""
from __future__ import annotations

import copy
import hashlib

import numba

from . import config

_snapshot = None


def _normal(value):
    """A repr-stable form of a config value (a set's repr order varies between processes)."""
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(value)))
    return value


def frozen(name=None):
    """The compile-time tunables the kernels of this process are built with (``{name: value}``,
    or the value of ``name``), taken from ``config`` on first use."""
    global _snapshot
    if _snapshot is None:
        snap = {n: copy.deepcopy(getattr(config, n)) for n in config.FROZEN_AT_COMPILE}
        digest = hashlib.sha256(
            repr(sorted((n, _normal(v)) for n, v in snap.items())).encode()).hexdigest()
        _snapshot = (snap, digest)
    return _snapshot[0] if name is None else _snapshot[0][name]


def check_frozen():
    """RuntimeError if a compile-time tunable of ``config`` no longer has the value the kernels
    were built with (nothing to check before the first kernel module is imported)."""
    if _snapshot is None:
        return
    for name, built in _snapshot[0].items():
        now = getattr(config, name)
        if _normal(now) != _normal(built):
            raise RuntimeError(
                f"pacnp: config.{name} is {now!r} but pacnp's kernels were built with {built!r} "
                f"in this process; {name} is read when the kernels are compiled (see "
                f"config.FROZEN_AT_COMPILE), so set it before the first pacnp call (e.g. at the "
                f"top of the script) or in a new process, or set it back to {built!r}"
            )


_cache_class = None


def _keyed_cache(py_func):
    """numba's on-disk function cache, with the compile-time tunables in every entry's key
    (numba's own key: signature, target, bytecode and closure variables)."""
    global _cache_class
    if _cache_class is None:
        from numba.core.caching import FunctionCache

        class FrozenKeyedCache(FunctionCache):
            def _index_key(self, sig, codegen):
                return super()._index_key(sig, codegen) + (_snapshot[1],)

        _cache_class = FrozenKeyedCache
    return _cache_class(py_func)


def njit(*, parallel=False, inline=None, fastmath=None):
    """``numba.njit`` with pacnp's options: nogil, ``config.FASTMATH`` (or ``fastmath``, e.g.
    ``frozen("PAIR_FASTMATH")``), and with ``config.CACHE`` the on-disk cache keyed on the
    compile-time tunables."""
    snap = frozen()
    opts = dict(nogil=True, fastmath=snap["FASTMATH"] if fastmath is None else fastmath)
    if parallel:
        opts["parallel"] = True
    if inline is not None:
        opts["inline"] = inline

    def build(fn):
        disp = numba.njit(**opts)(fn)
        if snap["CACHE"]:
            # what numba's cache=True does (Dispatcher.enable_caching), with the keyed cache
            disp._cache = _keyed_cache(disp.py_func)
        return disp
    return build


def cuda_jit(*, device=False):
    """``numba.cuda.jit`` with pacnp's options. The CUDA kernels are compiled once per process
    (not cached on disk); a truthy ``config.FASTMATH`` turns on numba-cuda's fastmath (it has
    no per-flag form), the default False leaves numba's defaults."""
    from numba import cuda
    opts = dict(device=device)
    if frozen("FASTMATH"):
        opts["fastmath"] = True
    return cuda.jit(**opts)
