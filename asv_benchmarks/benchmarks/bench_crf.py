"""W6 — mean-field CRF inference with PAC messages (``pacnp.crf``; the paper's Sec. 5).

W6: B=1, 21 labels, 256×256, 5 mean-field steps, one 5×5 ``'4d'`` pairwise term (a dense
21×21×5×5 PAC filter) on YXRGB features, float32, output ``log_softmax``. A forward is the whole
inference from the unary and the features: K computed once, then 5 steps.

Implementations (``impl``):

* ``pacnp`` — :func:`pacnp.crf.paccrf` (``packernel2d`` once, ``pacconv2d`` per step).
* ``torch_unfold`` — the same inference in PyTorch in the unfold + einsum formulation of the
  2019 reference code, written here from the equations: K from the unfolded features, then per
  step softmax, unfold of Q (C·k² columns per pixel), multiplication by K and ``einsum`` with
  the filter; no autograd (``no_grad``). An optional peer: NotImplementedError (asv: skipped)
  without torch.

Backends as in ``common.py``: ``numpy`` (CPU) and ``cupy`` (pacnp's CUDA backend on CuPy
arrays, torch on ``cuda``; skipped without a GPU). ``tests/test_crf.py`` checks that both
implementations compute the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import (
    fix_malloc_threshold,
    get_backend,
    measure_extra_peak,
    peak_rss_supported,
    require_torch,
    set_threads,
)

IMPLS = ("pacnp", "torch_unfold")
BACKENDS = ("numpy", "cupy")


@dataclass(frozen=True)
class CRFWorkload:
    B: int = 1
    C: int = 21
    hw: int = 256
    steps: int = 5
    k: int = 5
    dilation: int = 1
    yx_scale: float = 5.0  # bandwidths of the YXRGB features (pixels, 0–255 colour)
    rgb_scale: float = 13.0

    def describe(self):
        return (
            f"PacCRF B={self.B}, {self.C} labels, {self.hw}², {self.steps} steps, one "
            f"{self.k}×{self.k} 4d term on YXRGB"
        )


CRF_WORKLOADS = {"W6": CRFWorkload()}


def make_crf_inputs(w: CRFWorkload, dtype=np.float32, seed=0):
    """(unary, features, filter) as NumPy arrays: random unary logits; the YXRGB features of a
    blocky random colour image with noise (so that K varies at edges and inside regions); the
    2019 ``crf`` initial filter ``(1 − I) ⊗ Gaussian`` with small noise."""
    from pacnp import crf

    rng = np.random.default_rng(seed)
    unary = rng.standard_normal((w.B, w.C, w.hw, w.hw))
    blocks = rng.integers(0, 256, (w.B, 3, w.hw // 16 + 1, w.hw // 16 + 1)).astype(np.float64)
    img = blocks.repeat(16, axis=2).repeat(16, axis=3)[:, :, : w.hw, : w.hw]
    img = img + rng.normal(0.0, 8.0, img.shape)
    feats = crf.create_YXRGB(img, yx_scale=w.yx_scale, rgb_scale=w.rgb_scale)
    model = crf.PacCRF(
        w.C,
        w.steps,
        dtype=np.float64,
        seed=seed,
        pairwise_kernels=dict(kernel_size=w.k, dilation=w.dilation),
    )
    filt = model.terms[0].filter
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in (unary, feats, filt))


class CRFRunner:
    impl = None

    def __init__(self, w: CRFWorkload, backend="numpy", dtype=np.float32, seed=0):
        self.w = w
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.np_inputs = make_crf_inputs(w, dtype, seed)

    def run(self):
        out = self.forward()
        self.backend.sync()
        return out


class PacnpCRFRunner(CRFRunner):
    impl = "pacnp"

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        super().__init__(w, backend, dtype, seed)
        from pacnp import crf

        self.crf = crf
        self.unary, self.feats, filt = (self.backend.asarray(a) for a in self.np_inputs)
        self.terms = [crf.PairwiseTerm("4d", filt, 1.0, None, w.dilation, 1)]

    def forward(self):
        return self.crf.paccrf(
            self.unary, self.feats, self.terms, num_steps=self.w.steps, final_output="log_softmax"
        )


def torch_mean_field(unary, feats, filt, *, steps, dilation=1, weight=1.0, unary_weight=1.0):
    """The W6 inference in the unfold + einsum formulation (no pacnp).

    ``K[b, t, l] = exp(−½ Σ_f (feat_f(tap t of l) − feat_f(l))²)``; taps on the zero padding
    need no mask because the unfolded Q is 0 there. Per step: ``Q = softmax(L)``,
    ``msg[b, o, l] = Σ_{c,t} W[o, c, t] · K[b, t, l] · Q[b, c, tap t of l]``,
    ``L = w_u·U − w·msg``; the output is ``log_softmax(L)``.
    """
    import torch
    import torch.nn.functional as F

    B, C, H, W = unary.shape
    k = filt.shape[-1]
    pad = dilation * (k - 1) // 2
    Fc = feats.shape[1]
    cols = F.unfold(feats, k, dilation=dilation, padding=pad).view(B, Fc, k * k, H * W)
    K = torch.exp(-0.5 * ((cols - feats.reshape(B, Fc, 1, H * W)) ** 2).sum(dim=1))
    del cols
    Wt = filt.reshape(C, C, k * k)
    L = unary
    for _ in range(steps):
        Q = torch.softmax(L, dim=1)
        q = F.unfold(Q, k, dilation=dilation, padding=pad).view(B, C, k * k, H * W)
        msg = torch.einsum("bctl,oct->bol", q * K.unsqueeze(1), Wt).view(B, C, H, W)
        L = unary_weight * unary - weight * msg
    return torch.log_softmax(L, dim=1)


class TorchCRFRunner(CRFRunner):
    impl = "torch_unfold"

    def __init__(self, w, backend="numpy", dtype=np.float32, seed=0):
        torch = require_torch()
        super().__init__(w, backend, dtype, seed)
        dev = self.backend.torch_device
        if dev == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("torch has no CUDA device here")
        self.torch = torch
        self.unary, self.feats, self.filt = (torch.from_numpy(a).to(dev) for a in self.np_inputs)

    def forward(self):
        with self.torch.no_grad():
            return torch_mean_field(
                self.unary, self.feats, self.filt, steps=self.w.steps, dilation=self.w.dilation
            )

    def run(self):
        out = self.forward()
        if self.backend.torch_device == "cuda":
            self.torch.cuda.synchronize()
        return out


RUNNERS = {"pacnp": PacnpCRFRunner, "torch_unfold": TorchCRFRunner}


def make_crf_runner(impl, workload="W6", backend="numpy", dtype=np.float32, seed=0):
    w = CRF_WORKLOADS[workload] if isinstance(workload, str) else workload
    return RUNNERS[impl](w, backend, dtype, seed)


class _CRFSuite:
    params = [list(BACKENDS), list(CRF_WORKLOADS), list(IMPLS)]
    param_names = ["backend", "workload", "impl"]
    timeout = 600

    def setup(self, backend, workload, impl):
        self.runner = make_crf_runner(impl, workload, backend)
        set_threads()
        self.runner.run()  # warm-up: JIT compilation / numba's cache load is never timed


class PacCRF(_CRFSuite):
    """Time of one inference (K + 5 steps)."""

    def time_forward(self, backend, workload, impl):
        self.runner.run()


class PacCRFMemForward(_CRFSuite):
    """``peakmem_forward``: asv's whole-process peak RSS; ``track_extra_mib_forward``: the peak
    the inference itself adds (results included), as ``common._MemSuite``."""

    def setup(self, backend, workload, impl):
        fix_malloc_threshold()
        super().setup(backend, workload, impl)

    def peakmem_forward(self, backend, workload, impl):
        self.runner.run()

    def track_extra_mib_forward(self, backend, workload, impl):
        if not peak_rss_supported():
            raise NotImplementedError("needs Linux /proc/self/clear_refs")
        extra, _ = measure_extra_peak(self.runner.run)
        return extra / 2**20

    track_extra_mib_forward.unit = "MiB"
