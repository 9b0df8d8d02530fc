"""Shared workloads, runners and base classes of the pacnp benchmark suite.

Workloads (float32), named as in the performance issue:

* W1 — the layer of the paper's code example: B=2, 16→32 channels, guide 8 channels, 5×5,
  64×64, padding 2.
* W2 — B=1, 64→64, guide 16, 3×3, 256×256, padding 1.
* W3 — pacpool2d with W1's sizes, 5×5, stride 2, padding 2 (normalised kernel, as pooling wants).
* W4 — pacconv_transpose2d 16→32, 5×5, stride 2, padding 2, output_padding 1, 32×32 → 64×64,
  guide 8 at 64×64.
* W4b — pacconv_transpose2d 16→16, 9×9, stride 4, padding 4, output_padding 3, 64×64 →
  256×256, guide 8 at 256×256: joint upsampling, where only ≈ (9/4)² of the 81 taps meet a sample.

Gaussian kernel, no smoothing, no mask; W1, W2 and W4 not normalised.

Every benchmark goes through a *runner* (``make_runner``): one implementation of one workload on
one backend, with ``forward()`` (from the guide: kernel and op), ``backward()`` (all gradients —
input, guide, weight, bias — given the state a forward left) and ``forward_backward()``.

Implementations (the ``impl`` parameter):

* ``pacnp`` — the two-step path: ``packernel2d`` then the op; backward ``<op>_backward`` then
  ``packernel2d_backward``.
* ``pacnp_fused`` — ``pacnp.<op>_fused`` / ``<op>_fused_backward`` (kernel computed on the fly,
  never stored); skipped until those functions exist.
* ``torch_unfold`` — the PyTorch unfold + einsum formulation of the 2019 reference code
  (``peers.py``), backward through autograd.
* ``torch_unfold_mm`` — the same with the einsum written as one batched matmul (torch's einsum
  permutes the columns into a copy first): the unfold formulation at its best.
* ``torch_dense`` — plain ``conv2d`` / ``conv_transpose2d`` / ``avg_pool2d`` of the same shape,
  no adaptive kernel: the practical floor.

Backends (the ``backend`` parameter): ``numpy`` (CPU), ``cupy`` (pacnp's CUDA backend on CuPy
arrays; skipped where cupy, numba-cuda or a CUDA GPU is missing). A runner that cannot run
raises NotImplementedError, which asv reports as skipped (``n/a``).

This module is also imported by the ratio table (``../ratio_table.py``, ``make bench``) and
``tests/test_bench.py``, so the ratio table and asv time exactly the same calls.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import re
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

BACKENDS = ("numpy", "cupy")
IMPLS = ("pacnp", "pacnp_fused", "torch_unfold", "torch_unfold_mm", "torch_dense")
PASSES = ("forward", "backward", "forward_backward")


# --------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    op: str  # conv | pool | transpose
    B: int
    cin: int
    cout: int
    cg: int
    k: int
    hw: int  # input H = W
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    dilation: int = 1
    normalize: bool = False

    @property
    def guide_hw(self):
        """Guide size: the input size, or the output size of a transposed convolution."""
        if self.op == "transpose":
            return (
                (self.hw - 1) * self.stride
                - 2 * self.padding
                + self.dilation * (self.k - 1)
                + self.output_padding
                + 1
            )
        return self.hw

    @property
    def out_hw(self):
        if self.op == "transpose":
            return self.guide_hw
        return (self.hw + 2 * self.padding - self.dilation * (self.k - 1) - 1) // self.stride + 1

    @property
    def out_shape(self):
        return (self.B, self.cout, self.out_hw, self.out_hw)

    @property
    def kernel_shape(self):
        """Shape of K (one kernel channel: not channel-wise)."""
        return (self.B, 1, self.k, self.k, self.out_hw, self.out_hw)

    @property
    def gemm_shape(self):
        """(M, K, N) of the GEMM that a dense convolution of this shape amounts to (im2col):
        output pixels × (C_in·k²) @ (C_in·k²) × C_out."""
        return (self.B * self.out_hw * self.out_hw, self.cin * self.k * self.k, self.cout)

    def scaled(self, hw):
        """The same layer on an (hw × hw) input (the size sweep)."""
        return Workload(
            self.op,
            self.B,
            self.cin,
            self.cout,
            self.cg,
            self.k,
            hw,
            self.stride,
            self.padding,
            self.output_padding,
            self.dilation,
            self.normalize,
        )

    def describe(self):
        what = {"conv": "pacconv2d", "pool": "pacpool2d", "transpose": "pacconv_transpose2d"}
        chans = f"{self.cin}" if self.op == "pool" else f"{self.cin}→{self.cout}"
        geo = f"s{self.stride} p{self.padding}" + (
            f" op{self.output_padding}" if self.op == "transpose" else ""
        )
        return (
            f"{what[self.op]} B={self.B} {chans} guide {self.cg}, {self.k}×{self.k} {geo}, "
            f"{self.hw}² → {self.out_hw}²"
        )


WORKLOADS = {
    "W1": Workload("conv", 2, 16, 32, 8, 5, 64, padding=2),
    "W2": Workload("conv", 1, 64, 64, 16, 3, 256, padding=1),
    "W3": Workload("pool", 2, 16, 16, 8, 5, 64, stride=2, padding=2, normalize=True),
    "W4": Workload("transpose", 2, 16, 32, 8, 5, 32, stride=2, padding=2, output_padding=1),
    "W4b": Workload("transpose", 2, 16, 16, 8, 9, 64, stride=4, padding=4, output_padding=3),
}
#: input sizes of the size sweep of the W1 layer
SWEEP_SIZES = [64, 128, 256, 512, 1024]


def make_inputs(w: Workload, dtype=np.float32, seed=0):
    """(x, guide, weight, bias, grad_output) as NumPy arrays; weight/bias None for pooling."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w.B, w.cin, w.hw, w.hw)).astype(dtype)
    guide = rng.standard_normal((w.B, w.cg, w.guide_hw, w.guide_hw)).astype(dtype)
    if w.op == "conv":
        weight = (rng.standard_normal((w.cout, w.cin, w.k, w.k)) * 0.1).astype(dtype)
    elif w.op == "transpose":
        weight = (rng.standard_normal((w.cin, w.cout, w.k, w.k)) * 0.1).astype(dtype)
    else:
        weight = None
    bias = (rng.standard_normal(w.cout) * 0.1).astype(dtype) if weight is not None else None
    grad = rng.standard_normal(w.out_shape).astype(dtype)
    return x, guide, weight, bias, grad


def options(w: Workload):
    """Geometry keywords of the op."""
    kw = dict(stride=w.stride, padding=w.padding, dilation=w.dilation)
    if w.op == "transpose":
        kw["output_padding"] = w.output_padding
    return kw


def kernel_type_options(w: Workload):
    """The kernel keywords shared by packernel2d and the fused functions (all spelt out)."""
    return dict(
        kernel_type="gaussian",
        smooth_kernel_type="none",
        smooth_kernel=None,
        inv_alpha=None,
        inv_lambda=None,
        channel_wise=False,
        normalize_kernel=w.normalize,
        mask=None,
    )


def kernel_options(w: Workload):
    """Keywords of packernel2d for the kernel of this workload's op."""
    kw = options(w)
    kw.update(kernel_type_options(w))
    if w.op == "transpose":
        kw["transposed"] = True
    else:
        kw.pop("output_padding", None)
    return kw


def fused_options(w: Workload):
    """Keywords of pacnp.<op>_fused (the fixed design: geometry + kernel keywords)."""
    kw = options(w)
    if w.op != "pool":
        kw["shared_filters"] = False
    kw.update(kernel_type_options(w))
    return kw


# --------------------------------------------------------------------------- threads
def set_threads(n=None):
    """Run numba (and torch, when imported) on ``n`` threads (default: numba's maximum)."""
    import numba

    n = numba.config.NUMBA_NUM_THREADS if n is None else int(n)
    numba.set_num_threads(n)
    torch = sys.modules.get("torch")  # only if a runner imported it: torch's import is slow
    if torch is not None:
        torch.set_num_threads(n)
    return n


def _torch_or_none():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def require_torch():
    torch = _torch_or_none()
    if torch is None:
        raise NotImplementedError("torch is not installed")
    return torch


# --------------------------------------------------------------------------- backends
class Backend:
    """Where the arrays live: ``asarray`` from NumPy, ``sync`` before a clock is read."""

    name = "numpy"
    torch_device = "cpu"

    def asarray(self, a):
        return a

    def sync(self):
        pass


class CupyBackend(Backend):
    name = "cupy"
    torch_device = "cuda"

    def __init__(self):
        if importlib.util.find_spec("cupy") is None:
            raise NotImplementedError("cupy is not installed")
        if importlib.util.find_spec("pacnp.cuda") is None:
            raise NotImplementedError("pacnp has no CUDA backend (pacnp.cuda) yet")
        if importlib.util.find_spec("numba_cuda") is None:
            raise NotImplementedError("numba-cuda (pacnp's CUDA backend) is not installed")
        import cupy

        try:  # a CuPy wheel installs fine on a machine without a GPU or driver
            n_gpus = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # cupy's CUDARuntimeError, or a missing libcuda
            raise NotImplementedError(f"no usable CUDA GPU ({exc})") from None
        if n_gpus < 1:
            raise NotImplementedError("no CUDA GPU")
        self.cp = cupy

    def asarray(self, a):
        return None if a is None else self.cp.asarray(a)

    def sync(self):
        self.cp.cuda.Device().synchronize()


def get_backend(name):
    if name == "numpy":
        return Backend()
    if name == "cupy":
        return CupyBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


# --------------------------------------------------------------------------- runners
class Runner:
    """One implementation of one workload on one backend.

    ``forward()`` returns the forward's results, ``backward()`` the gradients given what
    ``prepare_backward()`` saved, ``forward_backward()`` both. Results are returned (not kept),
    so a memory probe sees exactly the buffers one call allocates.
    """

    impl = None

    def __init__(self, w: Workload, backend="numpy", dtype=np.float32, seed=0):
        self.w = w
        self.dtype = np.dtype(dtype)
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        self.np_inputs = make_inputs(w, dtype, seed)
        self.saved = None

    def run(self, which):
        out = getattr(self, which)()
        self.backend.sync()
        return out

    def prepare_backward(self):
        self.saved = self.forward_for_backward()
        self.backend.sync()

    def forward_for_backward(self):
        return self.forward()

    def forward_backward(self):
        self.saved = self.forward_for_backward()
        try:
            return self.backward()
        finally:
            self.saved = None

    def warm_up(self, passes=PASSES):
        """Run every pass once: compiles (or loads from the cache) every kernel it needs."""
        for p in passes:
            if p == "backward":
                self.prepare_backward()
                self.run("backward")
                self.saved = None
            else:
                self.run(p)

    @property
    def output_bytes(self):
        """Bytes of the results of a pass that count as outputs (K and dK excluded)."""
        w, it = self.w, self.dtype.itemsize
        fwd = int(np.prod(w.out_shape)) * it
        bwd = sum(a.nbytes for a in self.np_inputs[:4] if a is not None)  # dx, dguide, dW, db
        return {"forward": fwd, "backward": bwd, "forward_backward": fwd + bwd}

    @property
    def kernel_bytes(self):
        return int(np.prod(self.w.kernel_shape)) * self.dtype.itemsize


class PacnpRunner(Runner):
    """The two-step path: K = packernel2d(guide), then the op with K."""

    impl = "pacnp"

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        super().__init__(w, backend, dtype, seed)
        import pacnp

        self.pacnp = pacnp
        be = self.backend
        self.x, self.guide, self.weight, self.bias, self.grad = (
            be.asarray(a) for a in self.np_inputs
        )
        self.kkw = kernel_options(w)
        self.okw = options(w)
        name = {"conv": "pacconv2d", "pool": "pacpool2d", "transpose": "pacconv_transpose2d"}[w.op]
        self.op = getattr(pacnp, name)
        self.op_backward = getattr(pacnp, name + "_backward")

    def _op_args(self, K):
        if self.w.op == "pool":
            return (self.x, K, self.w.k)
        return (self.x, K, self.weight, self.bias)

    def kernel(self):
        return self.pacnp.packernel2d(self.guide, self.w.k, **self.kkw)[0]

    def forward(self):
        K = self.kernel()
        return self.op(*self._op_args(K), **self.okw), K

    def backward(self):
        out, K = self.saved
        grads = self.op_backward(self.grad, *self._op_args(K), **self.okw)
        dK = grads[1]
        d_guide = self.pacnp.packernel2d_backward(
            dK, self.guide, self.w.k, **self.kkw, needs=(True, False, False, False)
        )[0]
        return (grads[0], d_guide) + tuple(grads[2:])


FUSED_NAMES = {
    "conv": "pacconv2d_fused",
    "pool": "pacpool2d_fused",
    "transpose": "pacconv_transpose2d_fused",
}


def fused_available(op="conv"):
    import pacnp

    name = FUSED_NAMES[op]
    return hasattr(pacnp, name) and hasattr(pacnp, name + "_backward")


class PacnpFusedRunner(PacnpRunner):
    """The fused path: pacnp.<op>_fused computes K on the fly (never stored)."""

    impl = "pacnp_fused"

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        import pacnp

        name = FUSED_NAMES[w.op]
        if not fused_available(w.op):
            raise NotImplementedError(f"pacnp.{name} does not exist yet")
        super().__init__(w, backend, dtype, seed)
        self.fused = getattr(pacnp, name)
        self.fused_backward = getattr(pacnp, name + "_backward")
        self.fkw = fused_options(w)

    def _fused_args(self):
        if self.w.op == "pool":
            return (self.x, self.guide, self.w.k)
        return (self.x, self.guide, self.weight, self.bias)

    def forward(self):
        return self.fused(*self._fused_args(), **self.fkw)[0]

    def backward(self):
        grads = self.fused_backward(self.grad, *self._fused_args(), **self.fkw)
        n = 2 if self.w.op == "pool" else 4  # (d_input, d_guide[, d_weight, d_bias])
        return tuple(grads[:n])


class TorchRunner(Runner):
    """Peers in PyTorch (``peers.py``); forward under no_grad, backward through autograd."""

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        torch = require_torch()
        super().__init__(w, backend, dtype, seed)
        dev = self.backend.torch_device
        if dev == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("torch has no CUDA device here")
        self.torch = torch
        self.x, self.guide, self.weight, self.bias, self.grad = (
            None if a is None else torch.from_numpy(a).to(dev) for a in self.np_inputs
        )
        self.leaves = [t for t in (self.x, self.guide, self.weight, self.bias) if t is not None]

    def sync_torch(self):
        if self.backend.torch_device == "cuda":
            self.torch.cuda.synchronize()

    def run(self, which):
        out = getattr(self, which)()
        self.sync_torch()
        return out

    def compute(self):
        raise NotImplementedError

    def forward(self):
        with self.torch.no_grad():
            return self.compute()

    def forward_for_backward(self):
        leaves = [t.detach().requires_grad_(True) for t in self.leaves]
        return leaves, self.compute(*leaves)

    def backward(self):
        leaves, out = self.saved
        return self.torch.autograd.grad(out, leaves, self.grad, retain_graph=True)

    def forward_backward(self):
        leaves, out = self.forward_for_backward()
        return self.torch.autograd.grad(out, leaves, self.grad)


class TorchUnfoldRunner(TorchRunner):
    impl = "torch_unfold"
    contract = "einsum"

    def compute(self, x=None, guide=None, weight=None, bias=None):
        from . import peers

        w = self.w
        x = self.x if x is None else x
        guide = self.guide if guide is None else guide
        if w.op == "pool":
            return peers.pacpool2d_from_guide(x, guide, w.k, **options(w), normalize=w.normalize)
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        fn = peers.pacconv2d_from_guide if w.op == "conv" else peers.pacconv_transpose2d_from_guide
        return fn(
            x, guide, weight, bias, **options(w), normalize=w.normalize, contract=self.contract
        )


class TorchUnfoldMatmulRunner(TorchUnfoldRunner):
    impl = "torch_unfold_mm"
    contract = "matmul"

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        if w.op == "pool":
            raise NotImplementedError("pooling has no weight contraction: see torch_unfold")
        super().__init__(w, backend, dtype, seed)


class TorchDenseRunner(TorchRunner):
    """Dense conv2d / conv_transpose2d / avg_pool2d of the same shape (no guide)."""

    impl = "torch_dense"

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        super().__init__(w, backend, dtype, seed)
        self.leaves = [t for t in (self.x, self.weight, self.bias) if t is not None]

    def compute(self, x=None, weight=None, bias=None):
        from . import peers

        w = self.w
        x = self.x if x is None else x
        if w.op == "pool":
            return peers.dense_pool2d(x, w.k, **options(w))
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        fn = peers.dense_conv2d if w.op == "conv" else peers.dense_conv_transpose2d
        return fn(x, weight, bias, **options(w))

    @property
    def output_bytes(self):
        out = super().output_bytes
        gb = self.np_inputs[1].nbytes  # no guide gradient
        return {k: (v - gb if k != "forward" else v) for k, v in out.items()}


RUNNERS = {
    "pacnp": PacnpRunner,
    "pacnp_fused": PacnpFusedRunner,
    "torch_unfold": TorchUnfoldRunner,
    "torch_unfold_mm": TorchUnfoldMatmulRunner,
    "torch_dense": TorchDenseRunner,
}


def make_runner(impl, w, backend="numpy", dtype=np.float32, seed=0) -> Runner:
    """The runner of ``impl`` on workload ``w`` (a Workload or a name of WORKLOADS)."""
    if isinstance(w, str):
        w = WORKLOADS[w]
    try:
        cls = RUNNERS[impl]
    except KeyError:
        raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}") from None
    return cls(w, backend, dtype, seed)


class KernelRunner(Runner):
    """packernel2d alone: ``forward`` computes K from the guide, ``backward`` d_guide from a
    given dK (random, fixed). impl ``pacnp`` or ``torch_unfold``."""

    def __init__(self, impl, w, backend="numpy", dtype=np.float32, seed=0):
        super().__init__(w, backend, dtype, seed)
        self.impl = impl
        rng = np.random.default_rng(seed + 1)
        gk = rng.standard_normal(w.kernel_shape).astype(dtype)
        guide = self.np_inputs[1]
        if impl == "pacnp":
            import pacnp

            self.pacnp = pacnp
            self.guide = self.backend.asarray(guide)
            self.gk = self.backend.asarray(gk)
            self.kkw = kernel_options(w)
        elif impl == "torch_unfold":
            torch = require_torch()
            from . import peers

            dev = self.backend.torch_device
            if dev == "cuda" and not torch.cuda.is_available():
                raise NotImplementedError("torch has no CUDA device here")
            self.torch, self.peers = torch, peers
            self.guide = torch.from_numpy(guide).to(dev)
            L = w.out_hw * w.out_hw
            self.gk = torch.from_numpy(gk).to(dev).reshape(w.B, 1, w.k * w.k, L)
            kw = options(w)
            self.tkw = dict(
                stride=kw["stride"],
                padding=kw["padding"],
                dilation=kw["dilation"],
                normalize=w.normalize,
            )
            if w.op == "transpose":
                self.tkw.update(
                    transposed=True, output_padding=w.output_padding, in_hw=(w.hw, w.hw)
                )
        else:
            raise NotImplementedError(f"no kernel-only benchmark for impl {impl!r}")

    def _torch_kernel(self, guide):
        return self.peers.gaussian_kernel_unfold(guide, self.w.k, **self.tkw)

    def forward(self):
        if self.impl == "pacnp":
            return self.pacnp.packernel2d(self.guide, self.w.k, **self.kkw)[0]
        with self.torch.no_grad():
            return self._torch_kernel(self.guide)

    def forward_for_backward(self):
        if self.impl == "pacnp":
            return None
        g = self.guide.detach().requires_grad_(True)
        return g, self._torch_kernel(g)

    def backward(self):
        if self.impl == "pacnp":
            return self.pacnp.packernel2d_backward(
                self.gk, self.guide, self.w.k, **self.kkw, needs=(True, False, False, False)
            )[0]
        g, K = self.saved
        return self.torch.autograd.grad(K, [g], self.gk, retain_graph=True)


# --------------------------------------------------------------------------- GEMM baseline
class Gemm:
    """One NumPy (or CuPy) matmul of the GEMM equivalent of a workload: (M × K) @ (K × N)."""

    def __init__(self, w: Workload, backend="numpy", dtype=np.float32, seed=0):
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        M, K, N = w.gemm_shape
        rng = np.random.default_rng(seed)
        self.a = self.backend.asarray(rng.standard_normal((M, K)).astype(dtype))
        self.b = self.backend.asarray(rng.standard_normal((K, N)).astype(dtype))

    def run(self):
        out = self.a @ self.b
        self.backend.sync()
        return out


# --------------------------------------------------------------------------- peak memory
_M_MMAP_THRESHOLD = -3
#: allocations from this size on are served by mmap while memory is measured
MMAP_THRESHOLD = 64 * 1024


def fix_malloc_threshold(nbytes=MMAP_THRESHOLD):
    """glibc: serve every allocation ≥ ``nbytes`` by mmap and give it back on free, so that RSS
    follows the live buffers (glibc's dynamic threshold would otherwise keep freed buffers in the
    heap after a warm-up call, and a second call would reuse them unseen). No-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, int(nbytes))
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _status_kib(field):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) if m else None


def peak_rss_supported():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def measure_extra_peak(fn):
    """Peak resident memory that ``fn()`` adds, in bytes, and its result.

    Linux: RSS just before the call, then the high-water mark (VmHWM) reset through
    ``/proc/self/clear_refs`` and read after the call: the peak counts every page the call
    touched, including its results (which are returned, alive at the peak).
    """
    gc.collect()
    fix_malloc_threshold()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    return (peak - before) * 1024, result


def measure_extra_sampled(fn, interval=5e-4):
    """Peak resident memory that ``fn()`` adds, in bytes, and its result, where Linux's
    high-water mark cannot be reset: RSS sampled every ``interval`` s while ``fn`` runs (the
    kernels release the GIL); a lower bound of the peak."""
    import resource

    gc.collect()
    fix_malloc_threshold()

    def rss():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        except OSError:
            return 0

    before = rss()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        result = fn()
    finally:
        stop.set()
        th.join()
    peak[0] = max(peak[0], rss())
    return peak[0] - before, result


def measure_extra(fn):
    """(bytes, result, method) of the best memory probe available: ``measure_extra_peak``
    (method "VmHWM") or ``measure_extra_sampled`` ("sampled")."""
    if peak_rss_supported():
        return (*measure_extra_peak(fn), "VmHWM")
    return (*measure_extra_sampled(fn), "sampled")


# --------------------------------------------------------------------------- asv base classes
class _Suite:
    """Base of the time/peakmem suites: params backend × workload × impl.

    ``setup`` builds the runner (NotImplementedError → asv skips) and warms up the passes in
    ``warm`` so that JIT compilation (or loading from numba's cache) is never timed.
    """

    workloads = ("W1",)
    impls = IMPLS
    warm = PASSES
    timeout = 600

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.params = [list(BACKENDS), list(cls.workloads), list(cls.impls)]
        cls.param_names = ["backend", "workload", "impl"]

    def setup(self, backend, workload, impl):
        self.runner = make_runner(impl, workload, backend)
        set_threads()
        self.runner.warm_up(self.warm)
        if "backward" in self.warm:
            self.runner.prepare_backward()


class _TimeSuite(_Suite):
    """time_forward (from the guide), time_backward (all gradients, from a saved forward),
    time_forward_backward."""

    def time_forward(self, backend, workload, impl):
        self.runner.run("forward")

    def time_backward(self, backend, workload, impl):
        self.runner.run("backward")

    def time_forward_backward(self, backend, workload, impl):
        self.runner.run("forward_backward")


class _MemSuite(_Suite):
    """Memory of one pass. ``peakmem_<pass>`` is asv's whole-process peak RSS (interpreter,
    libraries, inputs, and setup, which warms up this pass only — and, for the backward, runs the
    forward whose state it needs); ``track_extra_mib_<pass>`` is the peak RSS the call itself adds
    (Linux, ``measure_extra_peak``), results included."""

    pass_ = "forward"

    def setup(self, backend, workload, impl):
        fix_malloc_threshold()
        self.warm = (self.pass_,)
        super().setup(backend, workload, impl)

    def _extra_mib(self):
        if not peak_rss_supported():
            raise NotImplementedError("needs Linux /proc/self/clear_refs")
        extra, _ = measure_extra_peak(lambda: self.runner.run(self.pass_))
        return extra / 2**20


class _MemForward(_MemSuite):
    pass_ = "forward"

    def peakmem_forward(self, backend, workload, impl):
        self.runner.run("forward")

    def track_extra_mib_forward(self, backend, workload, impl):
        return self._extra_mib()

    track_extra_mib_forward.unit = "MiB"


class _MemBackward(_MemSuite):
    pass_ = "backward"

    def peakmem_backward(self, backend, workload, impl):
        self.runner.run("backward")

    def track_extra_mib_backward(self, backend, workload, impl):
        return self._extra_mib()

    track_extra_mib_backward.unit = "MiB"


class _SweepSuite:
    """The W1 layer on inputs of 64² … 1024²: params backend × size × impl (the unfold peer is
    left out: at 1024² its column buffers alone are 3.3 GB)."""

    base = "W1"
    impls = ("pacnp", "pacnp_fused", "torch_dense")
    timeout = 900
    processes = 1
    number = 1
    repeat = (1, 3, 30.0)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.params = [list(BACKENDS), list(SWEEP_SIZES), list(cls.impls)]
        cls.param_names = ["backend", "size", "impl"]

    def setup(self, backend, size, impl):
        self.runner = make_runner(impl, WORKLOADS[self.base].scaled(size), backend)
        set_threads()
        self.runner.warm_up(("forward", "forward_backward"))

    def time_forward(self, backend, size, impl):
        self.runner.run("forward")

    def time_forward_backward(self, backend, size, impl):
        self.runner.run("forward_backward")
