"""The interface between the drivers (``pacnp._ops``) and a backend, written down once.

``pacnp.cpu`` (numba CPU kernels) and ``pacnp.cuda`` (their numba.cuda twins) both satisfy
:class:`Backend`: the same modules, the same function names, the same parameter names
(``tests/test_backend_interface.py`` checks both against the protocols below). The drivers call
nothing else, so they run unchanged on either.

Conventions of every kernel function:

* Arrays: the big ones (input ``x``, ``guide``, ``K``, gradients, outputs) are the backend's
  own (NumPy on the CPU, numba device arrays on a GPU), C-contiguous, of one float dtype;
  small tables (tap tables, α, λ, weight matrices, filters, smoothing kernels) are NumPy on
  both (the CUDA launchers upload them). Outputs are written in place; "added" means the
  function accumulates into what is there.
* Geometry: the drivers hand over a ``pacnp._core`` geometry — ``geo: OpGeometry`` (tap tables
  ``ty [kh, Ho]``, ``tx [kw, Wo]`` of input rows / columns per tap and output position, -1 off
  the input; ``in_hw``, ``out_hw``, ``stride``, ``transposed``), ``geo: KernelGeometry``
  (``gy``, ``gx``, ``cy``, ``cx``: guide rows / columns of the taps and of the window centres)
  or ``pairs: PairGeometry``. Each backend derives its own schedule from it: the CPU its
  scatter rounds, column phases, row blocks and GEMM tiles (``pacnp.cpu.schedule``), the GPU
  its inverse tap tables (gathers instead of scatters) and launch shapes.
* Stripes: ``K`` / ``dK`` hold the output rows ``y0 ≤ y < y0 + K.shape[4]`` only (the fused
  path walks the image stripe by stripe); the functions handle exactly those rows.
* Reductions over pixels go to ``n_chunks`` partial buffers (``*_parts``, fixed chunks of rows,
  each summed in row order) that the driver adds up in chunk order with ``arrays.sum0``:
  deterministic on both backends, no atomics.
* ``kind``: 0 gaussian, 1 inv (``pacnp._core.parse_kernel_type``); ``need_*`` flags skip the
  gradients nobody asked for.

Compile options and the tunables frozen at compile time: ``pacnp._jit``, ``pacnp.config``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

Array = Any  # the backend's array (numpy.ndarray, or a numba device array)
Table = Any  # a small NumPy table (α, λ, weights, filters)
Geometry = Any  # pacnp._core.OpGeometry / KernelGeometry / PairGeometry


@runtime_checkable
class Conv(Protocol):
    """Dense PAC convolution (pacconv2d, pacconv_transpose2d):
    out[b, o, y, x] = Σ_{c,i,j} Wm[o, (c,i,j)] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]
    """

    def pac_dense_forward(
        self, x: Array, K: Array, Wm: Table, bias: Table, geo: Geometry, out: Array, y0: int
    ) -> None:
        """Write out rows y0 ≤ y < y0 + K.shape[4]. Wm: [Cout, C·kh·kw] (a transposed conv's
        weight rearranged); bias: [Cout], or empty for none; out: [B, Cout, Ho, Wo]."""

    def pac_dense_forward_from_guide(
        self,
        x: Array,
        guide: Array,
        src: Array,
        kgeo: Geometry,
        mask: Array,
        alpha: Table,
        lam: Table,
        kind: int,
        asym: bool,
        normalize: bool,
        has_mask: bool,
        Wm: Table,
        bias: Table,
        geo: Geometry,
        out: Array,
        out_mask: Array,
    ) -> tuple | None:
        """The fused transposed op without K in memory: write the output rows a ≤ y < e that
        the backend computes with K evaluated inside the op (and those rows of out_mask, with
        has_mask), and return (a, e); None where it does not (the caller computes K stripe by
        stripe, packernel_forward then pac_dense_forward). The kernel arguments are
        packernel_forward's (kgeo: the kernel's geometry), the op's pac_dense_forward's."""

    def pac_dense_backward_params(
        self,
        g: Array,
        x: Array,
        K: Array,
        geo: Geometry,
        dW_parts: Array,
        db_parts: Array,
        n_chunks: int,
        y0: int,
        need_w: bool,
        need_b: bool,
    ) -> None:
        """Add the stripe's weight / bias gradients into dW_parts [n_chunks, Cout, C·kh·kw] and
        db_parts [n_chunks, Cout]. g: the output gradient [B, Cout, Ho, Wo]."""

    def pac_dense_backward_data(
        self,
        g: Array,
        x: Array,
        K: Array,
        WmT: Table,
        geo: Geometry,
        dx: Array,
        dK: Array,
        y0: int,
        need_x: bool,
        need_k: bool,
    ) -> None:
        """Write dK (the stripe's shape) and add the stripe's share of dx [B, C, H, W].
        WmT: Wm transposed, C-contiguous."""


@runtime_checkable
class Depthwise(Protocol):
    """Depthwise PAC (pacpool2d, shared_filters):
    out[b, c, y, x] = Σ_{i,j} w[i, j] · K[b, c|0, i, j, y, x] · x[b, c, ty[i,y], tx[j,x]]."""

    def pac_depthwise_forward(
        self, x: Array, K: Array, w: Table, geo: Geometry, out: Array, y0: int
    ) -> None:
        """Write out rows y0 ≤ y < y0 + K.shape[4]. w: [kh, kw] (ones for pooling)."""

    def pac_depthwise_backward_params(
        self,
        g: Array,
        x: Array,
        K: Array,
        w: Table,
        geo: Geometry,
        dK: Array,
        dw_parts: Array,
        n_chunks: int,
        y0: int,
        need_k: bool,
        need_w: bool,
    ) -> None:
        """Write dK of the stripe; add the stripe's filter gradient into dw_parts
        [n_chunks, kh, kw]."""

    def pac_depthwise_backward_input(
        self, g: Array, K: Array, w: Table, geo: Geometry, dx: Array, y0: int
    ) -> None:
        """Add the stripe's share of dx (into the input rows the stripe reaches)."""

    def pac_depthwise_symmetric_forward(
        self,
        x: Array,
        guide: Array,
        w: Table,
        pairs: Geometry,
        kind: int,
        alpha: float,
        lam: float,
        out: Array,
    ) -> None:
        """The fused op for a symmetric K and filter (``pacnp._core.pair_geometry``): write
        all of out [B, C, Ho, Wo] straight from the guide, K never materialised."""


@runtime_checkable
class Kernel(Protocol):
    """packernel2d: the adapting kernel K (Su et al. 2019, Eq. 3) and its backward."""

    def packernel_forward(
        self,
        guide: Array,
        src: Array,
        geo: Geometry,
        mask: Array,
        alpha: Table,
        lam: Table,
        kind: int,
        asym: bool,
        normalize: bool,
        has_mask: bool,
        K: Array,
        out_mask: Array,
        y0: int,
    ) -> None:
        """Write K [B, KC, kh, kw, n, Wo] of output rows y0 ≤ y < y0 + n, and with has_mask
        those rows of out_mask [B, 1, Ho, Wo]. src: the centre features' source (the guide,
        or the smoothed guide); mask: [B, H, W] (a dummy without has_mask); alpha, lam: [KC].
        For a transposed window the entries of the taps that meet no guide sample (K = 0
        there) may be left unwritten: a caller that publishes K passes it zeroed, and the ops
        never read those entries (a tap that meets no sample has no input to multiply)."""

    def packernel_backward(
        self,
        dK: Array,
        guide: Array,
        src: Array,
        geo: Geometry,
        mask: Array,
        alpha: Table,
        lam: Table,
        kind: int,
        asym: bool,
        normalize: bool,
        has_mask: bool,
        dsrc: Array,
        dguide: Array,
        dpar_rows: Array,
        y0: int,
        need_f: bool,
        need_g: bool,
        need_par: bool,
    ) -> None:
        """From the stripe's dK: add into dsrc (gradient of src; may be dguide itself) and
        dguide, write the rows b·Ho + y of dpar_rows [B·Ho, 2, KC] (dα, dλ partials)."""


@runtime_checkable
class Smooth(Protocol):
    """Centre-feature smoothing: each guide channel correlated with an odd N^nd kernel S
    (folded to [N^(nd-1), N] like the guide), through the smoothing's tap tables."""

    def smooth_forward(self, g: Array, S: Table, geo: Geometry, out: Array) -> None:
        """Write out [B, C, H, W] = g correlated with S over ``geo``'s tap tables
        (``pacnp._core.smooth_geometry``: zero padded, same size)."""

    def smooth_backward_kernel(self, d: Array, g: Array, geo: Geometry, dS_parts: Array) -> None:
        """Add dS[u, v] = Σ d[Y, X] g[ty[u, Y], tx[v, X]] over fixed chunks of rows into
        dS_parts [n_chunks, *S.shape]."""


@runtime_checkable
class Upsample(Protocol):
    """Joint bilateral upsampling as a direct sum over (high-res voxel, low-res sample) pairs
    (``pacnp.filters.joint_bilateral_upsample``), on arrays folded to rows (the leading
    spatial axes as one)."""

    def joint_upsample(
        self,
        xx: Array,
        g: Array,
        gs: Array,
        f: int,
        rtab: Table,
        rw: Table,
        taps: Table,
        weights: Table,
        counts: Table,
        out: Array,
    ) -> None:
        """Write out [B, C, R, w·f] = Σ w·x / Σ w·conf (NaN where no weight; C + 1 channels:
        the weight sum too). xx: [B, C + 1, r, w] values × confidence, then the confidence;
        g: [B, Cg, R, w·f] the guide / σ_c; gs: [B, Cg, r, w] g at the samples' voxels;
        rtab, rw [R, J]: the folded low-res rows in reach of each high-res row (−1: none) and
        their w_s; taps, weights [f, J'], counts [f]: the last axis's samples n = q − m in
        reach of phase p and their w_s (``pacnp.filters._phase_taps``)."""


@runtime_checkable
class Arrays(Protocol):
    """The drivers' array operations on the backend's arrays (``pacnp.cpu.arrays``: NumPy;
    ``pacnp.cuda.arrays``: device kernels on the call's stream, nothing copied to the host).
    ``pacnp.cuda.arrays`` also has the conversions the public layer needs for device arrays
    (``contiguous``, ``cast``, ``to_host``, ``is_float``)."""

    def empty(self, shape: tuple, dtype) -> Array: ...

    def zeros(self, shape: tuple, dtype) -> Array: ...

    def empty_like(self, a: Array) -> Array: ...

    def zeros_like(self, a: Array) -> Array: ...

    def sum0(self, parts: Array) -> Array:
        """parts.sum(axis=0), the partials added in index order."""

    def iadd(self, a: Array, b: Array) -> Array:
        """a += b; returns a."""

    def add_bias(self, out: Array, bias: Table, y0: int, n: int) -> None:
        """out[:, :, y0:y0+n] += bias[None, :, None, None]."""

    def channel_sum(self, g: Array, n_chunks: int) -> Array:
        """g.sum(axis=(0, 2, 3)) in a fixed order."""

    def weight_grad(self, plan, dW: Array) -> Array:
        """A gradient of Wm / w in the layout of the caller's weight (``OpPlan.weight_grad``)."""

    def fold_param(self, rows: Array, shape: tuple) -> Array:
        """Per-row α/λ partials [rows, KC], summed in row order, in the shape α/λ was given."""


@runtime_checkable
class Backend(Protocol):
    """A backend package: ``pacnp.cpu`` or ``pacnp.cuda``."""

    conv: Conv
    depthwise: Depthwise
    kernel: Kernel
    smooth: Smooth
    upsample: Upsample
    arrays: Arrays
    #: the same module as ``arrays`` (the name the public layer uses)
    xp: Arrays

    def blas_guard(self) -> AbstractContextManager:
        """Context for the duration of a call's kernels (the CPU limits BLAS to one thread per
        numba thread; nothing on the GPU)."""

    def launch(self, stream, device=None) -> AbstractContextManager:
        """Context running the enclosed launches on ``stream`` and device ``device`` (CUDA;
        nothing on the CPU)."""


#: the module families of a backend and the protocol each satisfies
MODULES = {
    "conv": Conv,
    "depthwise": Depthwise,
    "kernel": Kernel,
    "smooth": Smooth,
    "upsample": Upsample,
    "arrays": Arrays,
}


def _params(f):
    import inspect

    return list(inspect.signature(getattr(f, "py_func", f)).parameters)


def mismatches(backend) -> list:
    """What ``backend`` (a module such as ``pacnp.cpu``) lacks or names differently against
    the protocols above: one line per problem, empty when it conforms. Parameter names must
    match exactly, in order (the drivers pass most arguments by position)."""
    problems = []

    def check(obj, proto, where):
        for name, member in vars(proto).items():
            if name.startswith("_") or not callable(member):
                continue
            got = getattr(obj, name, None)
            if got is None:
                problems.append(f"{where}.{name}: missing")
                continue
            want, have = _params(member)[1:], _params(got)
            if have != want:
                problems.append(f"{where}.{name}{tuple(have)}: the interface has {tuple(want)}")

    name = getattr(backend, "__name__", repr(backend))
    for family, proto in MODULES.items():
        mod = getattr(backend, family, None)
        if mod is None:
            problems.append(f"{name}.{family}: missing")
        else:
            check(mod, proto, f"{name}.{family}")
    check(backend, Backend, name)
    if getattr(backend, "xp", None) is not getattr(backend, "arrays", None):
        problems.append(f"{name}.xp is not {name}.arrays")
    return problems
