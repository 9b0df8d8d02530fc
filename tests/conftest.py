"""Shared fixtures and helpers of tests/test_errors.py and tests/test_arrays.py.

The central helper is :class:`Case`: one complete, valid call of a public pacnp function
(forward or backward), with every argument named, so that a test can swap one array for a
copy in another layout, dtype or array library, call pacnp, and compare with the float64
NumPy reference in ``tests/reference.py`` (same function names and signatures).
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

import pacnp  # noqa: E402

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
POSITIONAL.update({f"{k}_backward": (("grad_kernel",) if k == "packernel2d" else ("grad_output",))
                   + v for k, v in list(POSITIONAL.items())})


# --------------------------------------------------------------------------- comparisons
def tolerances(dtype, expected):
    """(rtol, atol): tight for float64, float32-sized for float32; atol scales with the data."""
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    if np.dtype(dtype) == np.float32:
        return 1e-5, 1e-5 * scale
    return 1e-10, 1e-12 * scale


def assert_close(actual, expected, dtype=np.float64, what=""):
    """``actual`` (any library, or None) equals the reference ``expected`` within tolerance."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: {actual!r} vs {expected!r}"
        return
    a = to_numpy(actual)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    rtol, atol = tolerances(dtype, e)
    np.testing.assert_allclose(a.astype(np.float64), e, rtol=rtol, atol=atol, err_msg=what)


def assert_all_close(actual, expected, dtype=np.float64, what=""):
    actual, expected = as_tuple(actual), as_tuple(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} results, expected {len(expected)}"
    for n, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, dtype, f"{what} result {n}")


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
            f"{np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0)})")


def as_tuple(r):
    return tuple(r) if isinstance(r, (tuple, list)) else (r,)


def to_numpy(a):
    """A NumPy copy of an array of any of the tested libraries."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return a.detach().cpu().numpy().copy()
    return np.array(np.from_dlpack(a), copy=True)


# --------------------------------------------------------------------------- cases
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
        kwargs = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v)
                  for k, v in kwargs.items() if k != "needs"}
        return getattr(ref, self.fn_name)(*args, **kwargs)

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
            p = dict(guide=f(B, C, H, W), kernel_size=(3, 5), padding=(1, 2),
                     smooth_kernel_type="gaussian", mask=_rand_mask(rng, (B, 1, H, W), True))
        elif variant == "inv-full-channelwise":
            p = dict(guide=f(B, C, H, W), kernel_size=3, padding=1, kernel_type="inv_0.5_-1",
                     inv_alpha=pos(C) + 0.1, inv_lambda=-pos(C) - 0.1, channel_wise=True,
                     smooth_kernel_type="full_3", smooth_kernel=f(3, 3) / 3,
                     mask=_rand_mask(rng, (B, 1, H, W), False).astype(dtype),
                     normalize_kernel=True)
        elif variant == "transposed":
            H, W = (10, 8) if large else (6, 4)   # = 2 * H_in with stride 2, p 1, op 1, k 3
            p = dict(guide=f(B, 2, H, W), kernel_size=3, stride=2, padding=1, output_padding=1,
                     transposed=True, kernel_type="inv_0.3_0.7_asym",
                     inv_alpha=pos(1), inv_lambda=0.7, smooth_kernel_type="full_3",
                     smooth_kernel=f(1, 1, 3, 3) / 3)
        else:
            raise KeyError(label)
    elif fn_name == "pacconv2d":
        if variant == "dense":
            p = dict(input=f(B, C, H, W), kernel=pos(B, C, 3, 3, H, W), weight=f(4, C, 3, 3),
                     bias=f(4), padding=1)
        elif variant == "asymmetric-strided-dilated":
            Ho, Wo = (H + 4 - 4 - 1) // 2 + 1, W + 2 - 4
            p = dict(input=f(B, C, H, W), kernel=pos(B, 1, 3, 5, Ho, Wo), weight=f(4, C, 3, 5),
                     bias=f(4), stride=(2, 1), padding=(2, 1), dilation=(2, 1))
        elif variant == "shared":
            p = dict(input=f(B, C, H, W), kernel=pos(B, 1, 3, 3, H, W), weight=f(1, 1, 3, 3),
                     bias=f(C), padding=2, dilation=2, shared_filters=True)
        else:
            raise KeyError(label)
    elif fn_name == "pacconv_transpose2d":
        if variant == "dense":
            Hi, Wi = (5, 4) if large else (3, 2)
            p = dict(input=f(B, C, Hi, Wi), kernel=pos(B, 1, 3, 3, 2 * Hi, 2 * Wi),
                     weight=f(C, 4, 3, 3), bias=f(4), stride=2, padding=1, output_padding=1)
        elif variant == "shared":
            Hi, Wi = (6, 5) if large else (4, 3)
            p = dict(input=f(B, C, Hi, Wi), kernel=pos(B, C, 3, 3, Hi + 4, 2 * Wi),
                     weight=f(1, 1, 3, 3), bias=None, stride=(1, 2), padding=(0, 1),
                     output_padding=(0, 1), dilation=(2, 1), shared_filters=True)
        else:
            raise KeyError(label)
    elif fn_name == "pacpool2d":
        if variant == "strided":
            Ho, Wo = (H - 1) // 2 + 1, (W - 1) // 2 + 1
            p = dict(input=f(B, C, H, W), kernel=pos(B, C, 3, 3, Ho, Wo), kernel_size=3,
                     stride=2, padding=1)
        elif variant == "dilated":
            p = dict(input=f(B, C, H, W), kernel=pos(B, 1, 3, 3, H - 2, W - 2), kernel_size=3,
                     padding=1, dilation=2)
        else:
            raise KeyError(label)
    else:
        raise KeyError(label)
    return Case(fn_name, p, label)


FORWARD_LABELS = (
    "packernel2d/gaussian-mask", "packernel2d/inv-full-channelwise", "packernel2d/transposed",
    "pacconv2d/dense", "pacconv2d/asymmetric-strided-dilated", "pacconv2d/shared",
    "pacconv_transpose2d/dense", "pacconv_transpose2d/shared",
    "pacpool2d/strided", "pacpool2d/dilated",
)
#: every forward label, and the same call's backward ("<fn>_backward/<variant>")
CASE_LABELS = FORWARD_LABELS + tuple(
    label.replace("/", "_backward/") for label in FORWARD_LABELS)


def backward_of(fwd: Case, rng) -> Case:
    """The backward call of a forward case, with a random upstream gradient."""
    out = as_tuple(fwd.reference())[0]
    grad = rng.standard_normal(np.shape(out)).astype(fwd.dtype)
    gname = "grad_kernel" if fwd.fn_name == "packernel2d" else "grad_output"
    return Case(f"{fwd.fn_name}_backward", dict({gname: grad}, **fwd.params),
                fwd.label.replace("/", "_backward/"))


def make_case(label, seed=0, dtype=np.float64, large=False, batch=2) -> Case:
    """A deterministic random case for ``label`` (one of :data:`CASE_LABELS`): batch 2,
    3 channels, 6×5 images (10×9 with ``large``; transposed ops: the input that gives such
    an output)."""
    rng = np.random.default_rng(seed)
    backward = "_backward/" in label
    fwd = _forward_case(label.replace("_backward/", "/"), rng, np.dtype(dtype), large, batch)
    return backward_of(fwd, rng) if backward else fwd


@pytest.fixture
def rng():
    return np.random.default_rng(20190616)


@pytest.fixture
def numba_threads():
    """Yields numba.set_num_threads; restores the thread count afterwards."""
    import numba
    old = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(old)


@pytest.fixture
def jax_x64():
    """JAX with float64 enabled for the test; the previous setting is restored afterwards."""
    import jax
    old = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)
