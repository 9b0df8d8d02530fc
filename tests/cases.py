"""The shared cases of the test suite: case builders and grids, the backends a test body runs
on, and the one :func:`assert_close`.

Test files import from here (``from cases import ...``) and from ``reference`` (the float64 NumPy
reference), never from each other or from ``conftest.py`` (which holds fixtures only).

* :class:`Backend` -- where a test body runs pacnp: ``"cpu"`` (NumPy arrays) or ``"cuda"``
  (numba device arrays, on a GPU or in numba's CUDA simulator). The ``backend`` fixture of
  ``conftest.py`` runs one body on both; :func:`cuda_missing` says why the CUDA one cannot run.
* :class:`Case` / :func:`make_case` -- one complete, valid call of a public function (forward
  or backward) with every argument named, so that a test can swap one array for a copy in
  another layout, dtype, library or device and compare with the reference.
* the parameter grids of the ops (:data:`KERNEL_GRID`, :func:`op_grid`), of the fused path
  (:func:`fused_grid`) and of its pair form (:data:`PAIR_GRID`), each with the builder of its
  random inputs and the small subset that numba's CUDA simulator runs (:func:`simulator_grid`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import reference as R

import pacnp

# --------------------------------------------------------------------------- backends
BACKENDS = ("cpu", "cuda")


def simulator_on() -> bool:
    """numba's CUDA simulator is on (it must be before ``numba.cuda`` is first imported, so a
    process has it from the start or never: ``make test-cuda-sim``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@functools.cache
def cuda_missing() -> str | None:
    """Why the CUDA backend cannot run in this process, or None when it can (a GPU, or the
    simulator)."""
    if simulator_on():
        return None
    try:
        from numba import cuda
    except ImportError:
        return "numba-cuda is not installed (pip install numba-cuda)"
    if not cuda.is_available():
        return (
            "no CUDA GPU here and NUMBA_ENABLE_CUDASIM is not set; `make test-cuda-sim` "
            "runs the CUDA backend in numba's simulator, in a process of its own"
        )
    return None


class Backend:
    """Where a test body runs pacnp. :meth:`call` hands every NumPy argument to the backend
    (a numba device array for ``"cuda"``), checks that every result came back there, and
    returns the results as host NumPy arrays for the comparison."""

    def __init__(self, name: str):
        assert name in BACKENDS, name
        self.name = name
        #: numba's simulator runs every GPU thread as a Python thread: bodies shrink their
        #: shapes with :meth:`pick`, and the conftest skips the cases marked ``full_grid``
        self.simulator = name == "cuda" and simulator_on()

    def __repr__(self):
        return f"Backend({self.name!r}{', simulator' if self.simulator else ''})"

    def pick(self, full, small):
        """``small`` in the simulator, ``full`` elsewhere (the CPU and real GPUs)."""
        return small if self.simulator else full

    def tol(self, dtype):
        """:func:`assert_close` keywords for this backend's results in ``dtype``: the CUDA twins'
        float32 within 1e-4 (their own float32 exp and summation order); otherwise nothing,
        i.e. :func:`tolerances`."""
        if self.name == "cuda" and np.dtype(dtype) == np.float32:
            return dict(rtol=1e-4, atol=1e-4)
        return {}

    def put(self, a):
        """A NumPy argument as the backend's array (anything else as it is)."""
        if self.name == "cuda" and isinstance(a, np.ndarray):
            from numba import cuda

            return cuda.to_device(np.array(a, order="C"))
        return a

    def get(self, r):
        """A result as a host NumPy array, after checking it is the backend's array."""
        if r is None:
            return None
        if self.name == "cpu":
            assert isinstance(r, np.ndarray), f"result came back as {type(r).__name__}"
            return r
        assert not isinstance(r, np.ndarray) and hasattr(r, "copy_to_host"), (
            f"result came back as {type(r).__name__}, not as a device array"
        )
        return r.copy_to_host()

    def call(self, f, *args, **kwargs):
        """``f`` with every NumPy argument on the backend; results back on the host."""
        out = f(*(self.put(a) for a in args), **{k: self.put(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):
            return tuple(self.get(o) for o in out)
        return self.get(out)

    def run(self, case: Case, **override):
        """``case`` (with ``override``) on the backend; results on the host."""
        args, kwargs = case.split(dict(case.params, **override))
        return self.call(case.fn, *args, **kwargs)


def simulator_grid(grid, small):
    """``grid`` as pytest parameters; the entries that are not in ``small`` carry the
    ``full_grid`` mark, which the ``backend`` fixture skips in the CUDA simulator. Tuples are
    matched by identity (a grid may repeat a configuration; the subset keeps the one it
    picked), anything else by equality."""

    def in_small(c):
        return any(c is x for x in small) if isinstance(c, tuple) else c in small

    return [
        c
        if in_small(c)
        else pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=pytest.mark.full_grid)
        for c in grid
    ]


# --------------------------------------------------------------------------- comparisons
def tolerances(dtype, expected):
    """(rtol, atol) for a result in ``dtype`` against the float64 reference: tight for
    float64, float32-sized for float32, float16-sized for float16; atol scales with the data."""
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return 2e-3, 2e-3 * scale
    if dtype == np.float32:
        return 1e-5, 1e-5 * scale
    return 1e-10, 1e-12 * scale


#: float64 results of the ops against the float64 reference, unscaled (the CUDA twins met it
#: in the simulator; before the shared bodies their copy had the scaled :func:`tolerances`)
F64 = dict(rtol=1e-10, atol=1e-12)
#: two computations of one thing with the same arithmetic (fused vs two-step, identities)
EXACT = dict(rtol=1e-12, atol=1e-12)


def assert_close(actual, expected, what="", *, dtype=np.float64, rtol=None, atol=None):
    """``actual`` equals ``expected``: None only where the other is None, the same shape, and
    values within ``atol + rtol·|expected|``. Tuples and lists are compared item by item.

    ``actual`` may be an array of any tested library (or a numba device array); ``expected`` is
    NumPy. Without ``rtol``/``atol`` the tolerance is :func:`tolerances` of ``dtype`` (scaled
    by the data); with either, both are used as given (a missing one is 0), unscaled."""
    if isinstance(expected, (tuple, list)) or isinstance(actual, (tuple, list)):
        actual, expected = as_tuple(actual), as_tuple(expected)
        assert len(actual) == len(expected), (
            f"{what}: {len(actual)} results, expected {len(expected)}"
        )
        for n, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{what} result {n}", dtype=dtype, rtol=rtol, atol=atol)
        return
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: {actual!r} vs {expected!r}"
        return
    a = to_numpy(actual)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    if rtol is None and atol is None:
        rtol, atol = tolerances(dtype, e)
    np.testing.assert_allclose(
        a.astype(np.float64), e, rtol=rtol or 0.0, atol=atol or 0.0, err_msg=what
    )


def assert_bit_identical(first, second, what=""):
    first, second = as_tuple(first), as_tuple(second)
    assert len(first) == len(second), what
    for n, (a, b) in enumerate(zip(first, second)):
        assert (a is None) == (b is None), f"{what} result {n}: None on one side only"
        if a is None:
            continue
        a, b = to_numpy(a), to_numpy(b)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what} result {n}"
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (
            f"{what} result {n} differs bitwise (max |diff| "
            f"{np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0)})"
        )


def as_tuple(r):
    return tuple(r) if isinstance(r, (tuple, list)) else (r,)


def to_numpy(a):
    """A NumPy array of an array of any of the tested libraries (host copies of device
    arrays)."""
    if a is None:
        return None
    if isinstance(a, (np.ndarray, np.generic, int, float)):
        return np.asarray(a)
    if hasattr(a, "copy_to_host"):  # a numba device array
        return a.copy_to_host()
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return a.detach().cpu().numpy().copy()
    return np.array(np.from_dlpack(a), copy=True)


# --------------------------------------------------------------------------- Case
FORWARD = ("packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d")
BACKWARD = tuple(f"{name}_backward" for name in FORWARD)
PUBLIC = FORWARD + BACKWARD

#: positional parameters of each public function, in order (the reference takes the same
#: ones positionally; its first op argument is spelt ``x`` instead of ``input``)
POSITIONAL = {
    "packernel2d": ("guide", "kernel_size"),
    "pacconv2d": ("input", "kernel", "weight", "bias"),
    "pacconv_transpose2d": ("input", "kernel", "weight", "bias"),
    "pacpool2d": ("input", "kernel", "kernel_size"),
}
POSITIONAL.update(
    {
        f"{k}_backward": (("grad_kernel",) if k == "packernel2d" else ("grad_output",)) + v
        for k, v in list(POSITIONAL.items())
    }
)


@dataclasses.dataclass
class Case:
    """One valid call of a public function: ``params`` holds every argument by name."""

    fn_name: str
    params: dict
    label: str = ""

    @property
    def fn(self):
        return getattr(pacnp, self.fn_name)

    @property
    def dtype(self):
        first = self.params[POSITIONAL[self.fn_name][0]]
        return np.dtype(first.dtype)

    def split(self, params=None):
        params = self.params if params is None else params
        pos_names = POSITIONAL[self.fn_name]
        args = [params[n] for n in pos_names]
        kwargs = {k: v for k, v in params.items() if k not in pos_names}
        return args, kwargs

    def call(self, **override):
        args, kwargs = self.split(dict(self.params, **override))
        return self.fn(*args, **kwargs)

    def reference(self):
        """The float64 reference result (the reference has no ``needs``)."""
        args, kwargs = self.split()
        args = [np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray) else a for a in args]
        kwargs = {
            k: (np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v)
            for k, v in kwargs.items()
            if k != "needs"
        }
        return getattr(R, self.fn_name)(*args, **kwargs)

    def array_names(self):
        return [k for k, v in self.params.items() if isinstance(v, np.ndarray)]

    def with_params(self, **params):
        return dataclasses.replace(self, params=dict(self.params, **params))

    def map_arrays(self, f):
        """A new case with ``f(name, array)`` in place of every NumPy array argument."""
        return self.with_params(**{n: f(n, self.params[n]) for n in self.array_names()})

    def snapshot(self):
        return {n: self.params[n].copy() for n in self.array_names()}

    def assert_unchanged(self, snapshot, params=None):
        params = self.params if params is None else params
        for n, saved in snapshot.items():
            a = params[n]
            a = to_numpy(a) if not isinstance(a, np.ndarray) else a
            assert a.dtype == saved.dtype and a.shape == saved.shape, n
            assert a.tobytes() == saved.tobytes(), f"{self.fn_name} modified its argument {n}"


def _rand_mask(rng, shape, as_bool):
    m = rng.random(shape) < 0.7
    m[0, 0, 0, :] = False  # a row of fully masked-out windows
    return m if as_bool else m.astype(np.float64)


def _forward_case(label, rng, dtype, large, B):
    """The forward call named ``label`` (``fn_name/variant``) with random float arguments."""
    fn_name, variant = label.split("/")
    H, W = (10, 9) if large else (6, 5)
    C = 3
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    pos = lambda *shape: (rng.random(shape) + 0.1).astype(dtype)  # noqa: E731
    if fn_name == "packernel2d":
        if variant == "gaussian-mask":
            p = dict(
                guide=f(B, C, H, W),
                kernel_size=(3, 5),
                padding=(1, 2),
                smooth_kernel_type="gaussian",
                mask=_rand_mask(rng, (B, 1, H, W), True),
            )
        elif variant == "inv-full-channelwise":
            p = dict(
                guide=f(B, C, H, W),
                kernel_size=3,
                padding=1,
                kernel_type="inv_0.5_-1",
                inv_alpha=pos(C) + 0.1,
                inv_lambda=-pos(C) - 0.1,
                channel_wise=True,
                smooth_kernel_type="full_3",
                smooth_kernel=f(3, 3) / 3,
                mask=_rand_mask(rng, (B, 1, H, W), False).astype(dtype),
                normalize_kernel=True,
            )
        elif variant == "transposed":
            H, W = (10, 8) if large else (6, 4)  # = 2 * H_in with stride 2, p 1, op 1, k 3
            p = dict(
                guide=f(B, 2, H, W),
                kernel_size=3,
                stride=2,
                padding=1,
                output_padding=1,
                transposed=True,
                kernel_type="inv_0.3_0.7_asym",
                inv_alpha=pos(1),
                inv_lambda=0.7,
                smooth_kernel_type="full_3",
                smooth_kernel=f(1, 1, 3, 3) / 3,
            )
        else:
            raise KeyError(label)
    elif fn_name == "pacconv2d":
        if variant == "dense":
            p = dict(
                input=f(B, C, H, W),
                kernel=pos(B, C, 3, 3, H, W),
                weight=f(4, C, 3, 3),
                bias=f(4),
                padding=1,
            )
        elif variant == "asymmetric-strided-dilated":
            Ho, Wo = (H + 4 - 4 - 1) // 2 + 1, W + 2 - 4
            p = dict(
                input=f(B, C, H, W),
                kernel=pos(B, 1, 3, 5, Ho, Wo),
                weight=f(4, C, 3, 5),
                bias=f(4),
                stride=(2, 1),
                padding=(2, 1),
                dilation=(2, 1),
            )
        elif variant == "shared":
            p = dict(
                input=f(B, C, H, W),
                kernel=pos(B, 1, 3, 3, H, W),
                weight=f(1, 1, 3, 3),
                bias=f(C),
                padding=2,
                dilation=2,
                shared_filters=True,
            )
        else:
            raise KeyError(label)
    elif fn_name == "pacconv_transpose2d":
        if variant == "dense":
            Hi, Wi = (5, 4) if large else (3, 2)
            p = dict(
                input=f(B, C, Hi, Wi),
                kernel=pos(B, 1, 3, 3, 2 * Hi, 2 * Wi),
                weight=f(C, 4, 3, 3),
                bias=f(4),
                stride=2,
                padding=1,
                output_padding=1,
            )
        elif variant == "shared":
            Hi, Wi = (6, 5) if large else (4, 3)
            p = dict(
                input=f(B, C, Hi, Wi),
                kernel=pos(B, C, 3, 3, Hi + 4, 2 * Wi),
                weight=f(1, 1, 3, 3),
                bias=None,
                stride=(1, 2),
                padding=(0, 1),
                output_padding=(0, 1),
                dilation=(2, 1),
                shared_filters=True,
            )
        else:
            raise KeyError(label)
    elif fn_name == "pacpool2d":
        if variant == "strided":
            Ho, Wo = (H - 1) // 2 + 1, (W - 1) // 2 + 1
            p = dict(
                input=f(B, C, H, W),
                kernel=pos(B, C, 3, 3, Ho, Wo),
                kernel_size=3,
                stride=2,
                padding=1,
            )
        elif variant == "dilated":
            p = dict(
                input=f(B, C, H, W),
                kernel=pos(B, 1, 3, 3, H - 2, W - 2),
                kernel_size=3,
                padding=1,
                dilation=2,
            )
        else:
            raise KeyError(label)
    else:
        raise KeyError(label)
    return Case(fn_name, p, label)


FORWARD_LABELS = (
    "packernel2d/gaussian-mask",
    "packernel2d/inv-full-channelwise",
    "packernel2d/transposed",
    "pacconv2d/dense",
    "pacconv2d/asymmetric-strided-dilated",
    "pacconv2d/shared",
    "pacconv_transpose2d/dense",
    "pacconv_transpose2d/shared",
    "pacpool2d/strided",
    "pacpool2d/dilated",
)
#: the backward call of each forward label ("<fn>_backward/<variant>")
BACKWARD_LABELS = tuple(label.replace("/", "_backward/") for label in FORWARD_LABELS)
#: every forward label, and the same call's backward
CASE_LABELS = FORWARD_LABELS + BACKWARD_LABELS
#: half of the labels, forward and backward alternating, for the CUDA simulator
SMALL_CASE_LABELS = FORWARD_LABELS[::2] + BACKWARD_LABELS[1::2]


def backward_of(fwd: Case, rng) -> Case:
    """The backward call of a forward case, with a random upstream gradient."""
    out = as_tuple(fwd.reference())[0]
    grad = rng.standard_normal(np.shape(out)).astype(fwd.dtype)
    gname = "grad_kernel" if fwd.fn_name == "packernel2d" else "grad_output"
    return Case(
        f"{fwd.fn_name}_backward",
        dict({gname: grad}, **fwd.params),
        fwd.label.replace("/", "_backward/"),
    )


def make_case(label, seed=0, dtype=np.float64, large=False, batch=2) -> Case:
    """A deterministic random case for ``label`` (one of :data:`CASE_LABELS`): batch 2,
    3 channels, 6×5 images (10×9 with ``large``; transposed ops: the input that gives such
    an output)."""
    rng = np.random.default_rng(seed)
    backward = "_backward/" in label
    fwd = _forward_case(label.replace("_backward/", "/"), rng, np.dtype(dtype), large, batch)
    return backward_of(fwd, rng) if backward else fwd


# --------------------------------------------------------------------------- packernel2d grid
KERNEL_TYPES = [
    "gaussian",
    "inv_0.5_-1",
    "inv_1_-0.5_asym",
    "inv_0.3_0.7_fixed",
    "inv_0.2_0.5_asym_fixed",
]
SMOOTH_TYPES = ["none", "gaussian", "average_3", "full_3", "full_5"]


def kernel_case(
    rng,
    k,
    s,
    d,
    kernel_type,
    smooth,
    channel_wise,
    normalize,
    masked,
    transposed,
    B=2,
    C=3,
    explicit_params=None,
    p=None,
):
    """Random guide and packernel2d keywords for one configuration."""
    r = d * (k - 1) // 2
    if p is None:
        p = int(rng.integers(0, r + 1))
    if transposed:
        op = int(rng.integers(0, max(s, d)))
        Hi, Wi = 4, 3
        H = (Hi - 1) * s - 2 * p + d * (k - 1) + op + 1
        W = (Wi - 1) * s - 2 * p + d * (k - 1) + op + 1
    else:
        op = 0
        H, W = 2 * r + 5, 2 * r + 4
    guide = rng.standard_normal((B, C, H, W))
    kw = dict(
        stride=s,
        padding=p,
        output_padding=op,
        dilation=d,
        kernel_type=kernel_type,
        smooth_kernel_type=smooth,
        channel_wise=channel_wise,
        normalize_kernel=normalize,
        transposed=transposed,
    )
    if smooth.startswith("full_"):
        n = int(smooth.split("_")[1])
        kw["smooth_kernel"] = rng.standard_normal((n, n)) / n
    if kernel_type.startswith("inv") and (
        explicit_params if explicit_params is not None else rng.random() < 0.7
    ):
        kw["inv_alpha"] = rng.random(C) + 0.1 if channel_wise else 0.4
        kw["inv_lambda"] = -rng.random(C) - 0.2 if channel_wise else np.array(-0.6)
    if masked:
        m = (rng.random((B, 1, H, W)) < 0.6).astype(np.float64)
        m[0, 0, 0, :] = 0  # some windows fully masked out
        kw["mask"] = m
    return guide, kw


def kernel_grid():
    """(k, stride, dilation, kernel type, smoothing, channel_wise, normalize, masked,
    transposed): every k, stride, dilation and direction twice, the rest at random."""
    rng = np.random.default_rng(123)
    cases = []
    for k, s, d, tr in itertools.product([1, 3, 5], [1, 2, 3], [1, 2], [False, True]):
        for _ in range(2):
            cases.append(
                (
                    k,
                    s,
                    d,
                    str(rng.choice(KERNEL_TYPES)),
                    str(rng.choice(SMOOTH_TYPES)),
                    bool(rng.random() < 0.5),
                    bool(rng.random() < 0.5),
                    bool(rng.random() < 0.4),
                    tr,
                )
            )
    return cases


KERNEL_GRID = kernel_grid()
#: k ≤ 3 keeps the simulated images tiny
SMALL_KERNEL_GRID = [c for c in KERNEL_GRID if c[0] <= 3][::2]


# --------------------------------------------------------------------------- op grid
def op_case(rng, op, k, s, d, shared, kc_many, with_bias, p=None, B=2, C=3, Co=4, H=None, W=None):
    """Random (positional arguments, keywords) of one op configuration."""
    r = d * (k - 1) // 2
    H = 2 * r + 3 if H is None else H
    W = 2 * r + 4 if W is None else W
    if p is None:
        p = int(rng.integers(0, r + 2))
    x = rng.standard_normal((B, C, H, W))
    KC = C if kc_many else 1
    kw = dict(stride=s, padding=p, dilation=d)
    if op == "transpose":
        opd = int(rng.integers(0, max(s, d)))
        kw["output_padding"] = opd
        Ho = (H - 1) * s - 2 * p + d * (k - 1) + opd + 1
        Wo = (W - 1) * s - 2 * p + d * (k - 1) + opd + 1
        wshape = (1, 1, k, k) if shared else (C, Co, k, k)
    else:
        Ho = (H + 2 * p - d * (k - 1) - 1) // s + 1
        Wo = (W + 2 * p - d * (k - 1) - 1) // s + 1
        wshape = (1, 1, k, k) if shared else (Co, C, k, k)
    K = rng.standard_normal((B, KC, k, k, Ho, Wo))
    if op == "pool":
        return (x, K, k), kw
    kw["shared_filters"] = shared
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(C if shared else Co) if with_bias else None
    return (x, K, w, b), kw


#: op name: (pacnp forward, pacnp backward, reference forward, reference backward)
OPS = {
    "conv": (pacnp.pacconv2d, pacnp.pacconv2d_backward, R.pacconv2d, R.pacconv2d_backward),
    "transpose": (
        pacnp.pacconv_transpose2d,
        pacnp.pacconv_transpose2d_backward,
        R.pacconv_transpose2d,
        R.pacconv_transpose2d_backward,
    ),
    "pool": (pacnp.pacpool2d, pacnp.pacpool2d_backward, R.pacpool2d, R.pacpool2d_backward),
}


def op_grid():
    """(op, k, stride, dilation, shared_filters, one K per channel, bias)."""
    cases = []
    for op, k, s, d in itertools.product(OPS, [1, 3, 5], [1, 2, 3], [1, 2]):
        if op == "pool":
            cases += [(op, k, s, d, False, kc, False) for kc in (False, True)]
        else:
            cases += [
                (op, k, s, d, sh, kc, b)
                for sh, kc, b in [
                    (False, False, True),
                    (True, True, False),
                    (False, True, False),
                    (True, False, True),
                ]
            ]
    return cases


OP_GRID = op_grid()
SMALL_OP_GRID = [c for c in OP_GRID if c[1] <= 3][::3]


# --------------------------------------------------------------------------- fused path
#: op name: (fused forward, fused backward)
FUSED = {
    "conv": (pacnp.pacconv2d_fused, pacnp.pacconv2d_fused_backward),
    "transpose": (pacnp.pacconv_transpose2d_fused, pacnp.pacconv_transpose2d_fused_backward),
    "pool": (pacnp.pacpool2d_fused, pacnp.pacpool2d_fused_backward),
}


def fused_grid():
    """(op, k, stride, dilation, kernel type, smoothing, channel_wise, normalize, masked,
    shared_filters)."""
    rng = np.random.default_rng(2024)
    cases = []
    for op, k, s, d in itertools.product(["conv", "transpose", "pool"], [1, 3, 5], [1, 2], [1, 2]):
        cases.append(
            (
                op,
                k,
                s,
                d,
                str(rng.choice(KERNEL_TYPES)),
                str(rng.choice(SMOOTH_TYPES)),
                bool(rng.random() < 0.5),
                bool(rng.random() < 0.5),
                bool(rng.random() < 0.4),
                bool(rng.random() < 0.5),
            )
        )
    return cases


FUSED_GRID = fused_grid()
SMALL_FUSED_GRID = [c for c in FUSED_GRID if c[1] <= 3]


def two_step(op, x, guide, w, b, k, geo, kkw, g, lib=pacnp):
    """Forward and all gradients through packernel2d + op + their backwards, of pacnp or of a
    module with the same functions (tests/reference.py)."""
    kernel_kw = dict(
        kkw,
        **{n: geo[n] for n in ("stride", "padding", "dilation")},
        output_padding=geo.get("output_padding", 0),
        transposed=op == "transpose",
    )
    K, om = lib.packernel2d(guide, k, **kernel_kw)
    if op == "pool":
        out = lib.pacpool2d(x, K, k, **geo)
        dx, dK = lib.pacpool2d_backward(g, x, K, k, **geo)
        dW = db = None
    else:
        fwd = lib.pacconv2d if op == "conv" else lib.pacconv_transpose2d
        bwd = lib.pacconv2d_backward if op == "conv" else lib.pacconv_transpose2d_backward
        out = fwd(x, K, w, b, **geo)
        dx, dK, dW, db = bwd(g, x, K, w, b, **geo)
    dg, da, dl, dS = lib.packernel2d_backward(dK, guide, k, **kernel_kw)
    return out, om, (dx, dg, dW, db, da, dl, dS)


def fused_case(rng, op, k, s, d, kt, smooth, cw, norm, masked, shared, B, C, Cout):
    """Random inputs of one fused-path configuration: (x, guide, weight, bias, geometry
    keywords, kernel keywords, leading positional args)."""
    guide, kw = kernel_case(rng, k, s, d, kt, smooth, cw, norm, masked, op == "transpose", B=B, C=C)
    geo = {n: kw.pop(n) for n in ("stride", "padding", "dilation")}
    op_pad = kw.pop("output_padding")
    kw.pop("transposed")
    H, W = guide.shape[2:]
    if op == "transpose":
        geo["output_padding"] = op_pad
        r = d * (k - 1) // 2
        p = geo["padding"]
        H = (H - 1 + 2 * p - 2 * r - op_pad) // s + 1
        W = (W - 1 + 2 * p - 2 * r - op_pad) // s + 1
    x = rng.standard_normal((B, C, H, W))
    w = b = None
    if op != "pool":
        geo["shared_filters"] = shared
        if shared:
            w = rng.standard_normal((1, 1, k, k))
        else:
            w = rng.standard_normal((C, Cout, k, k) if op == "transpose" else (Cout, C, k, k))
        b = rng.standard_normal(C if shared else Cout)
    lead = (x, guide, k) if op == "pool" else (x, guide, w, b)
    return x, guide, w, b, geo, kw, lead


# --------------------------------------------------------------------------- pair form
# (op, kernel size, dilation, padding, kernel type, guide channels, channels, image size):
# fused depthwise ops with a symmetric K and filter, which take the pair form
# (pacnp._core.pair_geometry) — one K evaluation per pair of pixels, used at both ends.
PAIR_GRID = [
    ("conv", (3, 3), 1, 1, "gaussian", 3, 4, (11, 9)),
    ("conv", (5, 5), 1, 2, "gaussian", 1, 2, (12, 13)),
    ("conv", (5, 3), 2, (4, 1), "gaussian", 2, 3, (14, 8)),
    ("conv", (3, 5), 1, 0, "inv_0.5_-1", 3, 1, (9, 10)),
    ("conv", (7, 7), 1, (3, 2), "inv_0.3_0.7_fixed", 4, 2, (13, 12)),
    ("conv", (1, 1), 1, 0, "gaussian", 3, 2, (5, 6)),
    ("conv", (7, 5), 3, (9, 6), "gaussian", 5, 2, (4, 3)),  # window wider than the image
    ("conv", (3, 3), 1, 1, "gaussian", 1, 1, (1, 1)),
    ("pool", (3, 3), 1, 1, "gaussian", 3, 2, (10, 11)),
    ("pool", (5, 5), 2, (4, 3), "inv_1_0.7", 1, 3, (12, 10)),
]
SMALL_PAIR_GRID = PAIR_GRID[::2] + PAIR_GRID[-3:-2]


def pair_case(rng, op, k, d, p, kt, Cg, C, hw, B=2):
    """Random inputs of a PAIR_GRID case: (fused function arguments, keywords, reference
    output from tests/reference.py in float64)."""
    x = rng.standard_normal((B, C) + hw)
    guide = rng.standard_normal((B, Cg) + hw)
    kw = dict(padding=p, dilation=d, kernel_type=kt)
    K, _ = R.packernel2d(guide, k, **kw)
    if op == "pool":
        return (x, guide, k), kw, R.pacpool2d(x, K, k, padding=p, dilation=d)
    w = rng.standard_normal((1, 1) + k)
    w = w + w[:, :, ::-1, ::-1]  # w[i, j] = w[kh-1-i, kw-1-j]
    b = rng.standard_normal(C)
    kw["shared_filters"] = True
    ref = R.pacconv2d(x, K, w, b, padding=p, dilation=d, shared_filters=True)
    return (x, guide, w, b), kw, ref


def pair_fused(op):
    return pacnp.pacpool2d_fused if op == "pool" else pacnp.pacconv2d_fused


# --------------------------------------------------------------------------- the asv suite
#: the ratio table is a script of the source tree, beside the asv suite: loaded by its path
RATIO_TABLE = Path(__file__).resolve().parents[1] / "asv_benchmarks" / "ratio_table.py"


def load_ratio_table():
    """``asv_benchmarks/ratio_table.py`` as a module (it loads the asv suite with
    ``load_suite()``): the benchmark tests and the peers' correctness tests share it."""
    name = "_pacnp_ratio_table"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RATIO_TABLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- N-D (1-D, 3-D)
# The N-D functions (pacnp.packernel1d/3d, ...) over grids of their own: every geometry option
# differs per axis, and the sizes stay tiny (3-D volumes of a few voxels a side) so that the
# float64 reference, which loops over taps, stays fast.

#: spatial dimensions of the N-D tests (2 as the cross-check against the 2-D functions)
ND_DIMS = (1, 2, 3)
#: per axis, the size a non-transposed case adds to the window 2r + 1 (so ≥ 1 output)
ND_EXTRA = {1: (6,), 2: (4, 3), 3: (2, 3, 4)}
#: per axis, the input size of a transposed case (its output / guide is larger)
ND_SIZE_IN = {1: (5,), 2: (3, 4), 3: (2, 3, 2)}
ND_CHANNELS = {1: 3, 2: 2, 3: 2}


def nd_name(name, nd):
    """The ``nd``-D twin of a 2-D public name (``pacconv2d_fused`` -> ``pacconv3d_fused``)."""
    return name.replace("2d", f"{nd}d", 1)


def nd_fn(lib, name, nd):
    """``lib``'s ``nd``-D twin of the 2-D function ``name`` (pacnp or tests/reference.py)."""
    return getattr(lib, nd_name(name, nd))


#: op name: the 2-D names of (forward, backward); nd_fn gives the twins
ND_OPS = {
    "conv": ("pacconv2d", "pacconv2d_backward"),
    "transpose": ("pacconv_transpose2d", "pacconv_transpose2d_backward"),
    "pool": ("pacpool2d", "pacpool2d_backward"),
}
ND_FUSED = {
    "conv": ("pacconv2d_fused", "pacconv2d_fused_backward"),
    "transpose": ("pacconv_transpose2d_fused", "pacconv_transpose2d_fused_backward"),
    "pool": ("pacpool2d_fused", "pacpool2d_fused_backward"),
}


def _nd_axes(rng, nd, ks, transposed, pad_over_r=0):
    """Per-axis (k, stride, padding, dilation, output_padding): a random geometry, each axis
    drawn on its own. Padding in [0, r + pad_over_r]; output_padding < max(stride, dilation)
    (torch's rule) in a transposed geometry, else 0."""
    k = tuple(int(rng.choice(ks)) for _ in range(nd))
    s = tuple(int(rng.integers(1, 4)) for _ in range(nd))
    d = tuple(int(rng.integers(1, 3)) for _ in range(nd))
    p = tuple(int(rng.integers(0, di * (ki - 1) // 2 + pad_over_r + 1)) for ki, di in zip(k, d))
    op = (
        tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
        if transposed
        else (0,) * nd
    )
    return k, s, p, d, op


def _nd_sizes(nd, k, s, p, d, op, transposed, size_in=None):
    """(guide / input size, input size of the op): the guide lives at the op's output
    resolution in a transposed geometry. ``size_in``: the op's input size (default: a few
    pixels more than the window per axis, or ND_SIZE_IN for a transposed op)."""
    if size_in is not None and not transposed:
        return tuple(size_in), tuple(size_in)
    if transposed:
        size_in = ND_SIZE_IN[nd] if size_in is None else tuple(size_in)
        size = tuple(
            (n - 1) * si - 2 * pi + di * (ki - 1) + opi + 1
            for n, ki, si, pi, di, opi in zip(size_in, k, s, p, d, op)
        )
        return size, size_in
    size = tuple(di * (ki - 1) + 1 + e for ki, di, e in zip(k, d, ND_EXTRA[nd]))
    return size, size


def nd_kernel_grid(nd, count=12, seed=None):
    """(nd, k, stride, padding, dilation, output_padding, kernel type, smoothing,
    channel_wise, normalize, masked, transposed): every kernel type in both directions and
    every smoothing, a mask in both directions, the per-axis geometry and the other flags at
    random."""
    rng = np.random.default_rng(1600 + nd if seed is None else seed)
    ks = [1, 3, 5] if nd < 3 else [1, 3, 3, 5]
    cases = []
    for n in range(count):
        tr = n % 2 == 1
        k, s, p, d, op = _nd_axes(rng, nd, ks, tr)
        cases.append(
            (
                nd,
                k,
                s,
                p,
                d,
                op,
                KERNEL_TYPES[n % len(KERNEL_TYPES)],
                SMOOTH_TYPES[(3 * n) % len(SMOOTH_TYPES)],
                bool(rng.random() < 0.5),
                bool(rng.random() < 0.5),
                n % 3 == 0,  # masked: both directions, every third case
                tr,
            )
        )
    return cases


def nd_kernel_case(
    rng, nd, k, s, p, d, op, kt, smooth, cw, norm, masked, tr, B=2, C=None, size_in=None
):
    """Random guide and packernel{nd}d keywords of one nd_kernel_grid entry; α and λ as arrays
    (per channel with channel_wise) so that their gradients are tested. ``size_in``: the
    op's input size (see _nd_sizes)."""
    C = ND_CHANNELS[nd] if C is None else C
    size, _ = _nd_sizes(nd, k, s, p, d, op, tr, size_in)
    guide = rng.standard_normal((B, C) + size)
    kw = dict(
        stride=s,
        padding=p,
        output_padding=op,
        dilation=d,
        kernel_type=kt,
        smooth_kernel_type=smooth,
        channel_wise=cw,
        normalize_kernel=norm,
        transposed=tr,
    )
    if smooth.startswith("full_"):
        n = int(smooth.split("_")[1])
        shape = (n,) * nd if rng.random() < 0.5 else (1, 1) + (n,) * nd
        kw["smooth_kernel"] = rng.standard_normal(shape) / n**nd
    if kt.startswith("inv"):
        kw["inv_alpha"] = rng.random(C) + 0.1 if cw else np.array(0.4)
        kw["inv_lambda"] = -rng.random(C) - 0.2 if cw else np.array([-0.6])
    if masked:
        m = (rng.random((B, 1) + size) < 0.6).astype(np.float64)
        m[(0, 0) + (0,) * (nd - 1)] = 0  # a line of zeros: some windows fully masked out
        kw["mask"] = m
    return guide, kw


def nd_op_grid(nd, seed=None):
    """(op, nd, k, stride, padding, dilation, output_padding, shared_filters, one K per
    channel, bias): each op in four variants, the per-axis geometry at random (padding up
    to r + 1: the ops take any padding that leaves an output)."""
    rng = np.random.default_rng(2600 + nd if seed is None else seed)
    ks = [1, 3, 5] if nd < 3 else [1, 3, 3, 5]
    cases = []
    for op in ("conv", "transpose", "pool"):
        variants = (
            [(False, False, False), (False, True, False)] * 2
            if op == "pool"
            else [
                (False, False, True),
                (True, True, False),
                (False, True, False),
                (True, False, True),
            ]
        )
        for shared, kc_many, with_bias in variants:
            k, s, p, d, opd = _nd_axes(rng, nd, ks, op == "transpose", pad_over_r=1)
            cases.append((op, nd, k, s, p, d, opd, shared, kc_many, with_bias))
    return cases


def nd_op_case(rng, op, nd, k, s, p, d, opd, shared, kc_many, with_bias, B=2, C=None, Co=3):
    """Random (positional arguments, keywords) of one nd_op_grid entry."""
    C = ND_CHANNELS[nd] if C is None else C
    if op == "transpose":
        size_in = ND_SIZE_IN[nd]
        size_out = tuple(
            (n - 1) * si - 2 * pi + di * (ki - 1) + oi + 1
            for n, ki, si, pi, di, oi in zip(size_in, k, s, p, d, opd)
        )
    else:
        size_in = tuple(di * (ki - 1) + 1 + e for ki, di, e in zip(k, d, ND_EXTRA[nd]))
        size_out = tuple(
            (n + 2 * pi - di * (ki - 1) - 1) // si + 1
            for n, ki, si, pi, di in zip(size_in, k, s, p, d)
        )
    x = rng.standard_normal((B, C) + size_in)
    K = rng.standard_normal((B, C if kc_many else 1) + k + size_out)
    kw = dict(stride=s, padding=p, dilation=d)
    if op == "pool":
        return (x, K, k), kw
    if op == "transpose":
        kw["output_padding"] = opd
    kw["shared_filters"] = shared
    if shared:
        wshape = (1, 1) + k
    else:
        wshape = (C, Co) + k if op == "transpose" else (Co, C) + k
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(C if shared else Co) if with_bias else None
    return (x, K, w, b), kw


def nd_fused_grid(nd, seed=None):
    """(op, kernel grid entry, shared_filters): each op over kernel configurations."""
    rng = np.random.default_rng(3600 + nd if seed is None else seed)
    cases = []
    for op in ("conv", "transpose", "pool"):
        for kcase in nd_kernel_grid(nd, count=4, seed=int(rng.integers(2**31))):
            kcase = kcase[:-1] + (op == "transpose",)
            if op != "transpose":
                kcase = kcase[:5] + ((0,) * nd,) + kcase[6:]  # no output_padding
            cases.append((op, kcase, bool(rng.random() < 0.5)))
    return cases


def nd_fused_case(rng, op, kcase, shared, B=2, C=None, Cout=3, size_in=None):
    """Random inputs of one nd_fused_grid entry: (leading positional args, geometry keywords,
    kernel keywords, kernel size); ``lead`` is (x, guide, w, b) or (x, guide, k) for pool."""
    nd, k, s, p, d, opd = kcase[:6]
    C = ND_CHANNELS[nd] if C is None else C
    guide, kw = nd_kernel_case(rng, *kcase, B=B, C=C, size_in=size_in)
    geo = {n: kw.pop(n) for n in ("stride", "padding", "dilation")}
    kw.pop("output_padding")
    kw.pop("transposed")
    _, size_in = _nd_sizes(nd, k, s, p, d, opd, op == "transpose", size_in)
    if op == "transpose":
        geo["output_padding"] = opd
    x = rng.standard_normal((B, C) + size_in)
    if op == "pool":
        return (x, guide, k), geo, kw, k
    geo["shared_filters"] = shared
    if shared:
        w = rng.standard_normal((1, 1) + k)
    else:
        w = rng.standard_normal((C, Cout) + k if op == "transpose" else (Cout, C) + k)
    b = rng.standard_normal(C if shared else Cout)
    return (x, guide, w, b), geo, kw, k


def two_step_nd(nd, op, lead, k, geo, kkw, g, lib=pacnp):
    """Forward and all gradients of a fused call through packernel{nd}d + the op + their
    backwards, of pacnp or of tests/reference.py: ``(out, output_mask, grads)`` with the
    grads in the fused backward's order."""
    x, guide = lead[:2]
    kernel_kw = dict(
        kkw,
        **{n: geo[n] for n in ("stride", "padding", "dilation")},
        output_padding=geo.get("output_padding", 0),
        transposed=op == "transpose",
    )
    K, om = nd_fn(lib, "packernel2d", nd)(guide, k, **kernel_kw)
    fwd, bwd = (nd_fn(lib, name, nd) for name in ND_OPS[op])
    if op == "pool":
        out = fwd(x, K, k, **geo)
        dx, dK = bwd(g, x, K, k, **geo)
    else:
        w, b = lead[2:]
        out = fwd(x, K, w, b, **geo)
        dx, dK, dW, db = bwd(g, x, K, w, b, **geo)
    dg, da, dl, dS = nd_fn(lib, "packernel2d_backward", nd)(dK, guide, k, **kernel_kw)
    grads = (dx, dg, da, dl, dS) if op == "pool" else (dx, dg, dW, db, da, dl, dS)
    return out, om, grads
