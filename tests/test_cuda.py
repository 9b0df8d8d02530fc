"""The CUDA backend (``pacnp.cuda``) against the NumPy reference: the CPU tests' cases and
bodies, with every array argument a numba device array.

Runs on a real GPU when one is present, else in numba's CUDA simulator — which must be switched
on before ``numba.cuda`` is first imported, so ``make test`` runs this file in its own process:
``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda.py``. In a process with neither (the
main ``pytest tests`` run without a GPU) the module is skipped. Shapes are small (the simulator
runs every GPU thread as a Python thread) but every op, forward and backward, two-step and
fused, is covered.
"""
import itertools
import os
import zlib

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    _cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    if not _cuda.is_available():
        pytest.skip("no CUDA GPU here and NUMBA_ENABLE_CUDASIM is not set; `make test` runs this "
                    "file in the simulator in a process of its own", allow_module_level=True)

from numba import cuda  # noqa: E402

import pacnp  # noqa: E402
import reference as R  # noqa: E402
from conftest import CASE_LABELS, FORWARD_LABELS, as_tuple, make_case, tolerances  # noqa: E402
from pacnp import config  # noqa: E402
from test_fused import (PAIR_GRID, fused_case, fused_grid, pair_case, pair_fused,  # noqa: E402
                        two_step)
from test_ops import KERNEL_GRID, OPS, kernel_case, op_case, op_grid  # noqa: E402


# --------------------------------------------------------------------------- the backend
def dev(a):
    """A numpy argument as a numba device array (anything else as it is)."""
    return cuda.to_device(np.array(a, order="C")) if isinstance(a, np.ndarray) else a


def host(a):
    """A result as a host NumPy array; a result must be a device array (or None)."""
    if a is None:
        return None
    assert not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host"), \
        f"result came back as {type(a).__name__}, not as a device array"
    return a.copy_to_host()


def on_device(f, *args, **kw):
    """Call a pacnp function with every NumPy argument moved to the device; results to host."""
    out = f(*(dev(a) for a in args), **{k: dev(v) for k, v in kw.items()})
    if isinstance(out, tuple):
        return tuple(host(o) for o in out)
    return host(out)


def assert_close(actual, expected, what, dtype=np.float64, rtol=None, atol=None):
    assert (actual is None) == (expected is None), f"{what}: one side is None"
    if actual is None:
        return
    e = np.asarray(expected, dtype=np.float64)
    assert actual.shape == e.shape, f"{what}: shape {actual.shape}, expected {e.shape}"
    r0, a0 = tolerances(dtype, e)
    np.testing.assert_allclose(actual.astype(np.float64), e, rtol=rtol or r0, atol=atol or a0,
                               err_msg=what)


# --------------------------------------------------------------------------- the CPU cases
@pytest.mark.parametrize("label", CASE_LABELS)
def test_every_function_forward_and_backward_vs_reference(label):
    """conftest's cases (every public function, forward and backward) on the device."""
    case = make_case(label)
    args, kwargs = case.split()
    ours = as_tuple(on_device(case.fn, *args, **kwargs))
    ref = as_tuple(case.reference())
    assert len(ours) == len(ref)
    for n, (a, e) in enumerate(zip(ours, ref)):
        assert_close(a, e, f"{label} result {n}")


@pytest.mark.parametrize("label", [lb for lb in CASE_LABELS if "_backward/" in lb])
def test_needs_selects_gradients(label):
    case = make_case(label, batch=1)
    args, kwargs = case.split()
    full = as_tuple(on_device(case.fn, *args, **kwargs))
    want = tuple(i % 2 == 0 for i in range(len(full)))
    part = on_device(case.fn, *args, **kwargs, needs=want)
    for w, a, f in zip(want, part, full):
        if w and f is not None:
            np.testing.assert_array_equal(a, f)
        else:
            assert a is None


# small configurations of test_ops' grids: k ≤ 3 keeps the simulated images tiny
SMALL_KERNEL_GRID = [c for c in KERNEL_GRID if c[0] <= 3][::2]
SMALL_OP_GRID = [c for c in op_grid() if c[1] <= 3][::3]


@pytest.mark.parametrize("k,s,d,kt,smooth,cw,norm,masked,tr", SMALL_KERNEL_GRID)
def test_packernel2d_grid_vs_reference(k, s, d, kt, smooth, cw, norm, masked, tr):
    """test_ops.test_packernel2d_forward_backward_vs_reference, on the device."""
    rng = np.random.default_rng(zlib.crc32(repr((k, s, d, kt, smooth, cw, norm, masked,
                                                 tr)).encode()))
    guide, kw = kernel_case(rng, k, s, d, kt, smooth, cw, norm, masked, tr, B=1, C=2)
    K, om = on_device(pacnp.packernel2d, guide, k, **kw)
    K_ref, om_ref = R.packernel2d(guide, k, **kw)
    assert_close(K, K_ref, "K")
    assert_close(om, om_ref, "output_mask")
    gK = rng.standard_normal(K.shape)
    ours = on_device(pacnp.packernel2d_backward, gK, guide, k, **kw)
    ref = R.packernel2d_backward(gK, guide, k, **kw)
    for name, a, b in zip(("guide", "inv_alpha", "inv_lambda", "smooth_kernel"), ours, ref):
        assert_close(a, b, f"d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("op,k,s,d,shared,kc_many,with_bias", SMALL_OP_GRID)
def test_op_grid_vs_reference(op, k, s, d, shared, kc_many, with_bias):
    """test_ops.test_op_forward_backward_vs_reference, on the device."""
    rng = np.random.default_rng(zlib.crc32(repr((op, k, s, d, shared, kc_many,
                                                 with_bias)).encode()))
    args, kw = op_case(rng, op, k, s, d, shared, kc_many, with_bias, B=1, C=2, Co=3)
    fwd, bwd, rfwd, rbwd = OPS[op]
    out = on_device(fwd, *args, **kw)
    assert_close(out, rfwd(*args, **kw), "forward")
    g = rng.standard_normal(out.shape)
    ours = on_device(bwd, g, *args, **kw)
    ref = rbwd(g, *args, **kw)
    assert len(ours) == len(ref)
    for name, a, b in zip(("input", "kernel", "weight", "bias"), ours, ref):
        assert_close(a, b, f"d_{name}")


# --------------------------------------------------------------------------- fused path
FUSED = {"conv": (pacnp.pacconv2d_fused, pacnp.pacconv2d_fused_backward),
         "transpose": (pacnp.pacconv_transpose2d_fused, pacnp.pacconv_transpose2d_fused_backward),
         "pool": (pacnp.pacpool2d_fused, pacnp.pacpool2d_fused_backward)}
SMALL_FUSED_GRID = [c for c in fused_grid() if c[1] <= 3]


@pytest.mark.parametrize("stripes", ["one stripe", "many stripes"])
@pytest.mark.parametrize("op,k,s,d,kt,smooth,cw,norm,masked,shared", SMALL_FUSED_GRID)
def test_fused_vs_reference(monkeypatch, stripes, op, k, s, d, kt, smooth, cw, norm, masked,
                            shared):
    """test_fused.test_fused_equals_two_step, on the device, against the reference."""
    if stripes == "many stripes":
        monkeypatch.setattr(config, "STRIPE_BYTES", 1)
    rng = np.random.default_rng(k * 1000 + s * 100 + d * 10 + len(kt) + len(op))
    x, guide, w, b, geo, kw, lead = fused_case(rng, op, k, s, d, kt, smooth, cw, norm, masked,
                                               shared, B=1, C=2, Cout=3)
    out, om = on_device(FUSED[op][0], *lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    ref_out, ref_om, ref_grads = two_step(op, x, guide, w, b, k, geo, kw, g, lib=R)
    assert_close(out, ref_out, "output")
    assert_close(om, ref_om, "output_mask")
    grads = on_device(FUSED[op][1], g, *lead, **geo, **kw)
    if op == "pool":
        ref_grads = tuple(ref_grads[i] for i in (0, 1, 4, 5, 6))
    assert len(grads) == len(ref_grads)
    for name, a, r in zip(("input", "guide", "weight", "bias", "alpha", "lambda", "smooth"),
                          grads, ref_grads):
        assert_close(a, r, name, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("op,k,d,p,kt,Cg,C,hw", PAIR_GRID[::2] + PAIR_GRID[-3:-2])
def test_pair_form_vs_reference(monkeypatch, op, k, d, p, kt, Cg, C, hw):
    """The GPU twin of the pair form (symmetric K and filter) against the reference."""
    from pacnp.cuda import depthwise
    calls = []
    real = depthwise.pac_depthwise_symmetric_forward
    monkeypatch.setattr(depthwise, "pac_depthwise_symmetric_forward",
                        lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(sum(k) * 100 + d * 10 + Cg + C)
    args, kw, ref = pair_case(rng, op, k, d, p, kt, Cg, C, hw, B=1)
    out, om = on_device(pair_fused(op), *args, **kw)
    assert calls == [1] and om is None
    assert_close(out, ref, "output", rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- dtypes, layouts
@pytest.mark.parametrize("label", FORWARD_LABELS[::2] + tuple(
    lb.replace("/", "_backward/") for lb in FORWARD_LABELS[1::2]))
def test_float32_computes_in_float32(label):
    case = make_case(label, dtype=np.float32, batch=1)
    args, kwargs = case.split()
    ours = as_tuple(on_device(case.fn, *args, **kwargs))
    ref = as_tuple(case.reference())
    for n, (a, e) in enumerate(zip(ours, ref)):
        if a is not None:
            assert a.dtype == np.float32, f"result {n} has dtype {a.dtype}"
        assert_close(a, e, f"{label} result {n}", dtype=np.float32, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("label", ["pacconv2d/dense", "pacconv2d_backward/shared",
                                   "packernel2d/gaussian-mask", "pacpool2d_backward/strided"])
def test_float16_inputs_give_float16_results_computed_in_float32(label):
    """float16 device arrays: converted to float32 on the device, results back in float16.
    The reference sees the same float16-rounded inputs; the tolerance is float16's."""
    case = make_case(label, batch=1)
    half = case.map_arrays(lambda n, a: a.astype(np.float16) if a.dtype.kind == "f" else a)
    exact = half.map_arrays(lambda n, a: a.astype(np.float64) if a.dtype.kind == "f" else a)
    args, kwargs = half.split()
    ours = as_tuple(on_device(half.fn, *args, **kwargs))
    ref = as_tuple(exact.reference())
    for n, (a, e) in enumerate(zip(ours, ref)):
        if a is None:
            assert e is None
            continue
        assert a.dtype == np.float16, f"result {n} has dtype {a.dtype}"
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(a.astype(np.float64), e, rtol=2e-3, atol=2e-3 * scale,
                                   err_msg=f"{label} result {n}")


def test_float16_mixed_with_float32_is_a_type_error():
    case = make_case("pacconv2d/dense", batch=1)
    args, kwargs = case.split()
    args = [dev(args[0].astype(np.float16))] + [dev(a.astype(np.float32)) for a in args[1:]]
    with pytest.raises(TypeError, match=r"pacconv2d: floating arrays of one call must share a "
                                        r"dtype \(input: float16, kernel: float32"):
        pacnp.pacconv2d(*args, **kwargs)


def test_strided_device_inputs_are_copied_not_misread():
    case = make_case("pacconv2d_backward/dense", batch=1)
    args, kwargs = case.split()

    def strided(a):
        if not isinstance(a, np.ndarray):
            return a
        big = np.zeros(tuple(2 * n for n in a.shape))
        big[(slice(None, None, 2),) * a.ndim] = a
        return cuda.to_device(big)[(slice(None, None, 2),) * a.ndim]

    ours = pacnp.pacconv2d_backward(*(strided(a) for a in args), **kwargs)
    for n, (a, e) in enumerate(zip(ours, case.reference())):
        assert_close(host(a), e, f"result {n}")


def test_deterministic_bit_identical_gradients():
    case = make_case("pacconv2d_backward/asymmetric-strided-dilated", batch=2)
    args, kwargs = case.split()
    first = on_device(case.fn, *args, **kwargs)
    second = on_device(case.fn, *args, **kwargs)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


def test_mixing_host_and_device_arrays_is_a_type_error_naming_them():
    case = make_case("pacconv2d/dense", batch=1)
    p = case.params
    with pytest.raises(TypeError, match=r"pacconv2d: arrays on a CUDA device and on the host "
                                        r"cannot be mixed \(on the device: input, weight; on the "
                                        r"host: kernel, bias\)"):
        pacnp.pacconv2d(dev(p["input"]), p["kernel"], dev(p["weight"]), p["bias"], padding=1)


def test_device_errors_are_the_cpu_errors():
    """Validation is _core's on both backends: the same message for the same mistake."""
    x = np.zeros((1, 2, 6, 6))
    w = np.zeros((3, 2, 3, 3))
    K = np.zeros((1, 1, 3, 3, 5, 5))
    with pytest.raises(ValueError) as cpu_err:
        pacnp.pacconv2d(x, K, w, padding=1)
    with pytest.raises(ValueError) as gpu_err:
        pacnp.pacconv2d(dev(x), dev(K), dev(w), padding=1)
    assert str(gpu_err.value) == str(cpu_err.value)
    assert "pacconv2d: kernel has shape (1, 1, 3, 3, 5, 5)" in str(gpu_err.value)


def test_results_on_the_device_equal_the_cpu_backend():
    """Same inputs, both backends: float64 results agree to rounding (different summation
    orders; the CPU scatters where the GPU gathers)."""
    for label in ("pacconv_transpose2d_backward/dense", "packernel2d_backward/transposed"):
        case = make_case(label, batch=1)
        args, kwargs = case.split()
        cpu = as_tuple(case.fn(*args, **kwargs))
        gpu = as_tuple(on_device(case.fn, *args, **kwargs))
        for a, b in itertools.zip_longest(gpu, cpu):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=label)
