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

Where numba finds no writable cache directory (NUMBA_CACHE_DIR, the ``__pycache__`` beside the
kernel modules, the user-wide ``~/.cache/numba``: a read-only install run by a user without a
writable home), the kernels are compiled in memory instead, after one
:class:`KernelCacheWarning` per process that names NUMBA_CACHE_DIR; a cache that fails to read
or write later (a full disk) also costs a recompile, never the call.

``import pacnp`` does not import this module's numba.cuda side: :func:`cuda_jit` imports it
when a CUDA kernel module asks for it.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import pickle
import sys
import warnings

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
            repr(sorted((n, _normal(v)) for n, v in snap.items())).encode()
        ).hexdigest()
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


class KernelCacheWarning(RuntimeWarning):
    """numba's on-disk cache of pacnp's kernels does not work as configured: no writable
    directory (the kernels are compiled in memory, in every process; the message says where a
    cache could go), or a NUMBA_CACHE_DIR that numba passed over. Emitted at most once per
    process; set ``NUMBA_CACHE_DIR`` to a directory only you can write to avoid it.

    Examples
    --------
    >>> import warnings
    >>> import pacnp
    >>> issubclass(pacnp.KernelCacheWarning, RuntimeWarning)
    True
    >>> with warnings.catch_warnings():  # silence it, if you must
    ...     warnings.simplefilter("ignore", pacnp.KernelCacheWarning)
    """


#: Where numba looks for a writable cache directory, in its order (``numba.core.caching``):
#: NUMBA_CACHE_DIR, the package's ``__pycache__``, the user-wide cache (``~/.cache/numba``).
_REMEDY = (
    "to compile once and reuse the kernels in every later process, set the environment "
    "variable NUMBA_CACHE_DIR to a directory that you can write and other users cannot "
    "(numba's cache files are pickles, loaded as code) before starting Python, e.g. "
    "`mkdir -m 700 /var/tmp/numba-$USER && export NUMBA_CACHE_DIR=/var/tmp/numba-$USER`"
)

_cache_class = None
_warned = False
_env_read = False


def _warn_once(message):
    """One KernelCacheWarning per process, whatever the warnings filters say (an 'always'
    filter would otherwise repeat it for each of the ~100 kernels)."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(message, KernelCacheWarning, stacklevel=_caller_level())


def _caller_level():
    """The ``stacklevel`` of the first frame outside pacnp and numba, so that the warning names
    the user's line whose call compiled the first kernel (counted as ``warnings.warn`` counts:
    importlib's bootstrap frames do not count)."""
    ours = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(numba.__file__))

    def internal(frame):
        name = frame.f_code.co_filename
        return "importlib" in name and "_bootstrap" in name

    frame, level = sys._getframe(1), 1  # level 1: _warn_once, the caller of warn
    while frame is not None and frame.f_code.co_filename.startswith(ours):
        frame = frame.f_back
        while frame is not None and internal(frame):
            frame = frame.f_back
        level += 1
    return level if frame is not None else 1


def _cache_type():
    global _cache_class
    if _cache_class is None:
        from numba.core.caching import FunctionCache

        class FrozenKeyedCache(FunctionCache):
            """numba's function cache with the compile-time tunables in every entry's key, and
            whose failures cost a recompile, never a result: a cache directory that stops being
            writable or readable while the process runs (another user's files, a full disk, a
            quota) leaves the kernel compiled in memory."""

            def _index_key(self, sig, codegen):
                return super()._index_key(sig, codegen) + (_snapshot[1],)

            def load_overload(self, sig, target_context):
                try:
                    return super().load_overload(sig, target_context)
                except OSError as exc:
                    # e.g. files of another user that this one may not read
                    _warn_once(
                        f"pacnp: cannot read numba's cache in {self.cache_path} "
                        f"({exc}); compiling the kernels in memory instead; {_REMEDY}"
                    )
                except (EOFError, pickle.UnpicklingError):
                    # a truncated or corrupt entry (a writer killed mid-file): compile again;
                    # the save that follows replaces it
                    pass
                return None

            def save_overload(self, sig, data):
                try:
                    super().save_overload(sig, data)
                except OSError as exc:
                    # a full disk, a quota, a directory made read-only: this kernel stays in
                    # memory, and stops using the cache (no failed write at every signature)
                    self.disable()
                    _warn_once(
                        f"pacnp: cannot write numba's cache in {self.cache_path} "
                        f"({exc}); the kernels compiled in this process stay in memory; "
                        f"{_REMEDY}"
                    )

        _cache_class = FrozenKeyedCache
    return _cache_class


def _no_locator_message(py_func):
    """Why numba found no cache directory for ``py_func``, naming every place it tried."""
    from numba.core import config as nconfig
    from numba.core.caching import UserWideCacheLocator

    source = inspect.getfile(py_func)
    tried = [
        f"NUMBA_CACHE_DIR={nconfig.CACHE_DIR}" if nconfig.CACHE_DIR else "NUMBA_CACHE_DIR (not set)"
    ]
    tried.append(os.path.join(os.path.dirname(source), "__pycache__"))
    # the user-wide directory numba tried (~/.cache/numba, as appdirs sees it)
    tried.append(os.path.dirname(UserWideCacheLocator(py_func, source).get_cache_path()))
    return (
        f"pacnp: numba cannot cache pacnp's compiled kernels: no writable directory "
        f"among {', '.join(tried)}; compiling them in memory instead, which every "
        f"new process pays again on its first calls (seconds per function: ~10 s of CPU "
        f"for `pacnp filter`, against < 1 s from a warm cache); {_REMEDY}"
    )


def _keyed_cache(py_func):
    """numba's on-disk function cache for ``py_func``, with the compile-time tunables in every
    entry's key (numba's own key: signature, target, bytecode and closure variables); None
    (compile in memory, after one KernelCacheWarning per process) where numba finds no writable
    cache directory: a read-only install run by a user without a writable home."""
    global _env_read
    if not _env_read:
        # numba reads NUMBA_* when it is imported and again at each compile, but the cache
        # directory is chosen here, when a kernel is decorated: read the environment once more
        # so that a NUMBA_CACHE_DIR set after ``import numba`` (and before the first pacnp call)
        # is honoured too
        from numba.core import config as nconfig

        nconfig.reload_config()
        _env_read = True
    try:
        cache = _cache_type()(py_func)
    except RuntimeError as exc:
        # numba's CacheImpl raises RuntimeError("cannot cache function ...: no locator
        # available ...") when no locator finds a writable directory; anything else is not ours
        # to swallow
        if "no locator available" not in str(exc):
            raise
        _warn_once(_no_locator_message(py_func))
        return None
    from numba.core import config as nconfig
    from numba.core.caching import UserProvidedCacheLocator

    if nconfig.CACHE_DIR and not isinstance(cache._impl.locator, UserProvidedCacheLocator):
        # numba passes over a NUMBA_CACHE_DIR it cannot write without a word: say where the
        # kernels went instead of the directory the user asked for
        _warn_once(
            f"pacnp: NUMBA_CACHE_DIR={nconfig.CACHE_DIR} is not a writable directory; "
            f"numba caches pacnp's kernels in {cache.cache_path} instead"
        )
    return cache


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
            # what numba's cache=True does (Dispatcher.enable_caching), with the keyed cache;
            # without a writable cache directory the dispatcher keeps its NullCache (in memory)
            cache = _keyed_cache(disp.py_func)
            if cache is not None:
                disp._cache = cache
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
