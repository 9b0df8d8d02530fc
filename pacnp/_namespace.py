"""The array contract of pacnp, in one place: which array library and device the caller's
arrays come from, how they reach the code that computes, and how results go back.

**The contract.** Every public function of ``pacnp``, ``pacnp.filters`` and ``pacnp.crf`` takes
arrays of one library (NumPy, torch, JAX, CuPy, numba device arrays, any array-API library
such as ``array_api_strict``) on one device, and returns arrays of that library on that device.
Arrays of two libraries, or of the host and a GPU, or of two GPUs, in one call are one
``TypeError`` that names the arguments. Nothing else in pacnp looks at ``type(a).__module__``,
``__array_namespace__``, ``__dlpack_device__`` or ``__cuda_array_interface__``.

**Two ways in.** Code that computes reaches the caller's arrays through a :class:`Namespace`:

* the PAC operations (``pacnp._api``) ask for the *backend's* arrays: NumPy arrays on the host,
  numba device arrays on a GPU (``to_backend`` / ``from_backend``), because the numba kernels
  take exactly those;
* the applications (``pacnp.filters``, ``pacnp.crf``) are written with NumPy-style array
  functions, so they ask for *work* arrays (``to_work`` / ``from_work``): NumPy on the host,
  CuPy on a GPU (CuPy reads torch, JAX and numba device memory zero-copy). They declare their
  array parameters once with :func:`delegate` — the model is SciPy's ``delegate_xp``, where a
  small per-function declaration names the array arguments — and the decorator converts them in
  and the results back out.

Conversions are zero-copy wherever the memory layout allows (DLPack on the host,
``__cuda_array_interface__`` / DLPack on a GPU). No array library is imported to *detect* it:
libraries are recognised by their types' modules and protocols, so ``import pacnp`` imports
neither CuPy nor torch nor JAX, and ``numba.cuda`` only when a device array arrives.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import numbers

import numpy as np

__all__ = ["Namespace", "library", "device_of", "delegate", "array_module", "like", "is_array"]

_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged
_DLPACK_HOST = (1, 3)  # kDLCPU, kDLCUDAHost (pinned host memory)


# --------------------------------------------------------------------------- detection
def _top_module(a):
    return type(a).__module__.split(".")[0]


def library(a):
    """Name of the array library of ``a`` ("numpy", "torch", "jax", "cupy", "numba", an
    array-API namespace's name …), or None when ``a`` is not an array — without importing
    any library."""
    if isinstance(a, (np.ndarray, np.generic)):
        return "numpy"
    mod = _top_module(a)
    if mod in ("torch", "jax", "jaxlib", "numba"):
        # before the generic checks: numba's simulated device arrays forward every attribute
        # (``__array_namespace__`` and ``__dlpack__`` included) to a host NumPy array
        return "jax" if mod == "jaxlib" else mod
    if hasattr(a, "__array_namespace__"):
        return a.__array_namespace__().__name__
    if hasattr(a, "__dlpack__"):
        return mod
    return None


def is_array(a):
    """Whether ``a`` is an array of some library (not a Python number, list or None)."""
    return a is not None and library(a) is not None


def _simulated(a):
    return type(a).__module__.startswith("numba.cuda.simulator")


def device_of(a, fn, name):
    """CUDA device index of ``a`` (-1: numba's current device), or None for host memory —
    without importing any library."""
    if _simulated(a):
        return 0  # numba's CUDA simulator: "device" arrays that live in host memory
    if hasattr(a, "__dlpack_device__"):
        kind, index = (int(v) for v in a.__dlpack_device__())
        if kind in _DLPACK_CUDA:
            return index
        if kind in _DLPACK_HOST:
            return None
        raise TypeError(
            f"{fn}: {name} lives on DLPack device type {kind} (index {index}); "
            f"pacnp runs on the CPU and on NVIDIA GPUs (CUDA) only"
        )
    try:
        cai = a.__cuda_array_interface__  # numba device arrays (no DLPack device query)
    except Exception:  # torch raises for CPU tensors; anything else is host memory
        return None
    return -1 if cai is not None else None


def array_module(a):
    """The NumPy-compatible module that computes on ``a``: CuPy for a CuPy array, else NumPy
    (for the applications' own NumPy/CuPy arrays, e.g. ``pacnp.dask``'s chunks)."""
    if _top_module(a) == "cupy":
        import cupy

        return cupy
    return np


def like(block, value):
    """``value`` (None, a number or a host array) in ``block``'s array module: pacnp refuses
    host and device arrays in one call, so CuPy blocks get CuPy parameters."""
    if value is None or np.isscalar(value):
        return value
    xp = array_module(block)
    return value if xp is np else xp.asarray(value)


def _cuda_backend(fn, name):
    """``pacnp.cuda``, or an ImportError that says what to install."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise ImportError(
            f"{fn}: {name} lives on a CUDA device; pacnp's CUDA backend needs the numba-cuda "
            f"package: pip install numba-cuda (or pip install 'pacnp[cuda]'), or move the "
            f"arrays to the host"
        )
    from . import cuda

    return cuda


def _cupy_or_none():
    if importlib.util.find_spec("cupy") is None:
        return None
    import cupy

    return cupy


# --------------------------------------------------------------------------- the namespace
class Namespace:
    """The caller's array library and device, and the conversions to and from the arrays that
    pacnp computes on (module docstring).

    ``arrays`` maps argument names to values; None entries are ignored. ``coerce``: argument
    names whose non-array values (nested lists, Python numbers) are taken as NumPy arrays.
    """

    def __init__(self, fn, arrays, coerce=()):
        self.fn = fn
        libs = {}
        devices = {}
        for name, a in arrays.items():
            if a is None:
                continue
            lib = library(a)
            if lib is None and name in coerce:
                lib = "numpy"
            if lib is None:
                raise TypeError(
                    f"{fn}: {name} must be an array (NumPy, or any library supporting DLPack or "
                    f"the array API), got {type(a).__name__}"
                )
            libs[name] = (lib, a)
            devices[name] = device_of(a, fn, name) if lib != "numpy" else None
        on_dev = [n for n, d in devices.items() if d is not None]
        on_host = [n for n, d in devices.items() if d is None]
        if on_dev and on_host:
            raise TypeError(
                f"{fn}: arrays on a CUDA device and on the host cannot be mixed (on the device: "
                f"{', '.join(on_dev)}; on the host: {', '.join(on_host)}); move them to one place "
                f"first"
            )
        kinds = {lib for lib, _ in libs.values()}
        if len(kinds) > 1:
            seen = ", ".join(f"{n}: {lib}" for n, (lib, _) in libs.items())
            raise TypeError(
                f"{fn}: arrays from different libraries cannot be mixed ({seen}); "
                f"convert them to one library first"
            )
        self._inputs = []  # the work arrays handed out (results must not alias them)
        self.lib = kinds.pop() if kinds else "numpy"
        self.sample = next(iter(libs.values()))[1] if libs else None
        self.device = None  # CUDA device index (-1: numba's current one); None: the CPU
        self.half = None  # float16 / bfloat16 inputs: computed in float32, returned in this
        if on_dev:
            indices = {devices[n] for n in on_dev} - {-1}
            if len(indices) > 1:
                seen = ", ".join(f"{n}: cuda:{devices[n]}" for n in on_dev)
                raise TypeError(f"{fn}: arrays on different CUDA devices cannot be mixed ({seen})")
            self.device = indices.pop() if indices else -1
            self.be = _cuda_backend(fn, on_dev[0])
            self.stream = self._caller_stream()
            self._io_dtypes = {}
        else:
            self.be = None

    # ---------------------------------------------------------------- CUDA
    def _caller_stream(self):
        """The caller's current stream, so that pacnp's kernels are ordered after the work
        that produced the inputs and before the work that consumes the results."""
        with self.be.launch(None, self.device):
            if self.lib == "cupy":
                import cupy

                return self.be.stream_from_pointer(cupy.cuda.get_current_stream().ptr)
            if self.lib == "torch":
                import torch

                dev = self.device if self.device >= 0 else None
                return self.be.stream_from_pointer(torch.cuda.current_stream(dev).cuda_stream)
            stream = getattr(self.sample, "stream", 0) if self.lib == "numba" else 0
            # numba arrays: the stream they are bound to; JAX exposes no stream, so its inputs
            # are waited for (``to_backend``) and results synchronised (``from_backend``)
            return stream or self.be.stream_from_pointer(0)

    def on_device(self):
        """Context: the caller's device and stream for the CUDA work of this call."""
        if self.be is None:
            return contextlib.nullcontext()
        return self.be.launch(self.stream, self.device)

    def _device_input(self, a):
        """``a`` with what CUDA array interchange cannot carry taken off: torch's autograd
        tape, bfloat16 (as float32; returned as the caller's dtype), JAX's pending work.
        Returns (array, 'bfloat16' or None)."""
        half = None
        if self.lib == "torch":
            if a.requires_grad:
                a = a.detach()
            if str(a.dtype) == "torch.bfloat16":  # no bfloat16 in __cuda_array_interface__
                half, a = "bfloat16", a.float()
        elif self.lib == "jax":
            a.block_until_ready()  # JAX has no stream to order on: wait for the producer
            if str(a.dtype) == "bfloat16":
                half, a = "bfloat16", a.astype("float32")
        return a, half

    def _to_device(self, a, name, small):
        xp = self.be.xp
        a, half = self._device_input(a)
        if type(a).__module__.startswith("numba"):
            arr = a
        else:
            from numba import cuda

            # sync=False: the kernels run on the caller's current stream, which orders them
            # after the work that produced ``a``
            arr = cuda.as_cuda_array(a, sync=False)
        if str(arr.dtype) == "float16":
            half = "float16"
            arr = xp.contiguous(arr, np.float32)  # float32 accumulation; float16 results
        if name != "mask" and np.dtype(arr.dtype).kind == "f":
            self._io_dtypes[name] = half or str(arr.dtype)
            seen = set(self._io_dtypes.values())
            if half or self.half:
                if len(seen) > 1:
                    got = ", ".join(f"{n}: {d}" for n, d in self._io_dtypes.items())
                    raise TypeError(
                        f"{self.fn}: floating arrays of one call must share a dtype "
                        f"({got}); pass all of them in one dtype"
                    )
                self.half = half or self.half
        if small:  # weights, α, λ, S and the mask: _core checks them on the host
            return xp.to_host(arr)
        return xp.contiguous(arr)

    # ---------------------------------------------------------------- backend arrays
    def to_backend(self, a, name, small=False):
        """``a`` as the backend's array: a NumPy array, or (device) a contiguous numba device
        array — a host NumPy copy for the ``small`` parameter arrays _core validates."""
        if a is None:
            return None
        if self.be is not None:
            with self.on_device():
                return self._to_device(a, name, small)
        return self.to_numpy(a, name)

    def to_numpy(self, a, name):
        """A host array of the caller's library as a NumPy array (zero-copy via DLPack)."""
        if a is None:
            return None
        if self.lib == "numpy" or library(a) is None:  # NumPy, or a coerced list / number
            return np.asarray(a)
        if self.lib == "torch" and getattr(a, "requires_grad", False):
            a = a.detach()
        try:
            return np.from_dlpack(a)
        except (BufferError, TypeError, RuntimeError) as exc:
            raise TypeError(
                f"{self.fn}: cannot read {name} (dtype {getattr(a, 'dtype', '?')}) through "
                f"DLPack ({exc}); expected float32 or float64"
            ) from None

    def from_backend(self, a):
        """A result in the caller's library, on the caller's device (zero-copy)."""
        if a is None or self.be is None:
            return self.from_numpy(a)
        with self.on_device():
            if self.half == "float16" and a.dtype.kind == "f":
                a = self.be.xp.cast(a, np.float16)
            if self.lib == "numba":
                return a
            if self.lib == "cupy":
                import cupy

                return cupy.asarray(a)
            if self.lib == "torch":
                import torch

                out = torch.as_tensor(a, device=self._torch_device())
                return out.to(torch.bfloat16) if self.half == "bfloat16" else out
            if self.lib == "jax":
                return self._to_jax(a)
        raise TypeError(
            f"{self.fn}: cannot hand a CUDA result back to {self.lib} arrays; "
            f"pass CuPy, torch, JAX or numba device arrays"
        )

    def _torch_device(self):
        return f"cuda:{self.device}" if self.device >= 0 else "cuda"

    def _to_jax(self, a):
        """JAX reads DLPack only; CuPy bridges a numba device array to DLPack (zero-copy)."""
        cupy = _cupy_or_none()
        if cupy is None:
            raise ImportError(
                f"{self.fn}: results on a CUDA device go back to JAX through "
                f"CuPy's DLPack export: pip install cupy-cuda12x (or "
                f"pip install 'pacnp[cupy]')"
            )
        import jax.numpy as jnp

        self.stream.synchronize()  # JAX cannot order its work after a foreign stream
        out = jnp.from_dlpack(cupy.asarray(a))
        return out.astype(jnp.bfloat16) if self.half == "bfloat16" else out

    def from_numpy(self, a):
        """A host NumPy result as an array of the caller's library (zero-copy via DLPack)."""
        if a is None:
            return None
        a = np.asarray(a)  # NumPy scalars (0-d results of reductions) as 0-d arrays
        if self.lib == "numpy":
            return a
        if self.lib == "torch":
            import torch

            return torch.from_dlpack(a)
        if self.lib == "jax":
            import jax.numpy as jnp

            return jnp.from_dlpack(a)
        ns = self.sample.__array_namespace__()
        device = getattr(self.sample, "device", None)
        try:
            out = ns.from_dlpack(a)
        except Exception:  # a library whose from_dlpack rejects NumPy producers
            out = ns.asarray(a)
        if device is not None and getattr(out, "device", device) != device:
            out = ns.asarray(out, device=device)  # results stay on the caller's device
        return out

    # ---------------------------------------------------------------- work arrays
    @property
    def xp(self):
        """The module the applications compute with: NumPy on the host, CuPy on a GPU (NumPy
        under numba's CUDA simulator when CuPy is absent: its "device" memory is host memory)."""
        if self.be is None:
            return np
        cupy = _cupy_or_none()
        if cupy is not None:
            return cupy
        if self.be.SIMULATOR:
            return np
        raise ImportError(
            f"{self.fn}: arrays on a CUDA device are filtered with CuPy's array "
            f"functions: pip install cupy-cuda12x (or pip install 'pacnp[cupy]'), "
            f"or move the arrays to the host"
        )

    def to_work(self, a, name):
        """``a`` as a work array (``xp``'s), zero-copy where the layout allows."""
        if a is None:
            return None
        if self.be is None:
            w = self.to_numpy(a, name)
            if not w.dtype.isnative:  # byte-swapped: the compute wants native numbers
                w = w.astype(w.dtype.newbyteorder("="))
            self._inputs.append(w)
            return w
        w = self._device_work(a, name)
        self._inputs.append(w)
        return w

    def _device_work(self, a, name):
        xp = self.xp
        if library(a) == "cupy":
            return a
        with self.on_device():
            a, _ = self._device_input(a)
            if xp is np:  # the simulator without CuPy
                return np.array(a.copy_to_host() if hasattr(a, "copy_to_host") else a)
            if self.lib == "jax":
                return xp.from_dlpack(a)
            return xp.asarray(a)  # __cuda_array_interface__: torch, numba

    def _unaliased(self, a):
        """``a``, or a copy of it where it shares memory with an input: a result never aliases
        the caller's arrays (a later write to one must not change the other)."""
        xp = np if isinstance(a, (np.ndarray, np.generic)) else self.xp
        for w in self._inputs:
            if xp.may_share_memory(a, w):
                return a.copy()
        return a

    def from_work(self, a):
        """A work array as an array of the caller's library and device. Anything that is not
        a work array (None, Python numbers, strings) passes through unchanged."""
        if (
            a is None
            or isinstance(a, (numbers.Number, str, bool))
            and not isinstance(a, np.generic)
        ):
            return a
        if hasattr(a, "shape"):
            a = self._unaliased(a)
        if self.be is None:
            return self.from_numpy(a) if isinstance(a, (np.ndarray, np.generic)) else a
        if not hasattr(a, "shape"):
            return a
        with self.on_device():
            if self.lib == "cupy":
                return a
            if self.xp is np:  # the simulator without CuPy: back into simulated device memory
                from numba import cuda

                dev = cuda.to_device(np.ascontiguousarray(a))
                return dev if self.lib == "numba" else self.from_backend(dev)
            if self.lib == "numba":
                from numba import cuda

                return cuda.as_cuda_array(a)
            if self.lib == "torch":
                import torch

                return torch.as_tensor(a, device=self._torch_device())
            if self.lib == "jax":
                import jax.numpy as jnp

                self.xp.cuda.get_current_stream().synchronize()  # JAX cannot wait on a stream
                return jnp.from_dlpack(a)
        raise TypeError(
            f"{self.fn}: cannot hand a CUDA result back to {self.lib} arrays; "
            f"pass CuPy, torch, JAX or numba device arrays"
        )

    def from_work_tree(self, out):
        """:meth:`from_work` over a result: an array, or tuples / named tuples / lists / dicts
        of them."""
        if isinstance(out, tuple) and hasattr(out, "_fields"):
            return type(out)(*(self.from_work_tree(v) for v in out))
        if isinstance(out, (tuple, list)):
            return type(out)(self.from_work_tree(v) for v in out)
        if isinstance(out, dict):
            return {k: self.from_work_tree(v) for k, v in out.items()}
        return self.from_work(out)


# --------------------------------------------------------------------------- declarations
def delegate(*array_params, name=None, coerce=False, nested=None):
    """Declare the array parameters of a public function that computes on work arrays.

    The wrapped function receives NumPy arrays (host) or CuPy arrays (GPU) in those parameters
    and returns work arrays (or tuples / named tuples / lists of them); the caller gets the
    arrays of its own library and device back. ``coerce``: non-array values of the declared
    parameters (nested lists, numbers) are taken as NumPy arrays. ``nested``: a function
    ``(bound arguments, convert) -> None`` that converts arrays held inside other arguments
    (e.g. the CRF's terms); it receives ``convert(value, name)``, which returns the work array.
    ``nested`` arrays take part in the library check through ``nested_arrays``: a function
    ``bound arguments -> {name: array}``.

    The wrapper's namespace is passed to the function as ``_ns`` when it has such a
    keyword-only parameter (to convert host constants or results it builds itself).
    """
    nested_convert, nested_arrays = nested if nested is not None else (None, None)

    def wrap(func):
        sig = inspect.signature(func)
        fn = name or func.__name__
        wants_ns = "_ns" in sig.parameters
        public_sig = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "_ns"])

        @functools.wraps(func)
        def call(*args, **kwargs):
            try:
                bound = public_sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{fn}: {exc}") from None
            given = bound.arguments
            arrays = {p: given[p] for p in array_params if given.get(p) is not None}
            if nested_arrays is not None:
                arrays.update(nested_arrays(given))
            ns = Namespace(fn, arrays, coerce=array_params if coerce else ())
            for p in array_params:
                if given.get(p) is not None:
                    given[p] = ns.to_work(given[p], p)
            if nested_convert is not None:
                nested_convert(given, ns.to_work)
            extra = {"_ns": ns} if wants_ns else {}
            with ns.on_device():
                out = func(*bound.args, **bound.kwargs, **extra)
            return ns.from_work_tree(out)

        call.__signature__ = public_sig
        call.array_params = array_params
        return call

    return wrap
