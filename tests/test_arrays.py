"""Edge-case arrays and array libraries.

* memory layouts (strided, Fortran order, negative strides, byte-swapped, read-only,
  misaligned, and a mix of them): every
  public function, forward and backward, gives the reference result and never writes to its
  arguments;
* on every backend (the ``backend`` fixture: CPU, CUDA): every public function, forward and
  backward, against the reference; ``needs`` selects gradients; float32 stays float32; 1×1
  images; bit-identical results across calls;
* batch 1, float32 and float64;
* determinism across numba thread counts;
* torch, JAX and array_api_strict arrays in, the same library out, the same values as NumPy.
"""

import numpy as np
import pytest
import reference as ref
from cases import (
    BACKWARD_LABELS,
    CASE_LABELS,
    PUBLIC,
    SMALL_CASE_LABELS,
    Case,
    as_tuple,
    assert_bit_identical,
    assert_close,
    make_case,
    simulator_grid,
    to_numpy,
)

import pacnp


# =========================================================================== layouts
def strided(a):
    """A view with every stride doubled (every other element of a bigger buffer)."""
    big = np.full(tuple(2 * n for n in a.shape), 7.0).astype(a.dtype)
    view = big[(slice(None, None, 2),) * a.ndim]
    view[...] = a
    assert a.ndim == 0 or not view.flags.c_contiguous or a.size <= 1
    return view


def fortran(a):
    """Same values, Fortran order (reversed strides) through the transpose trick."""
    out = np.transpose(np.transpose(a).copy())
    assert a.ndim < 2 or out.flags.f_contiguous
    return out


def negative_strides(a):
    """Same values in a view that walks every axis backwards (negative strides)."""
    rev = (slice(None, None, -1),) * a.ndim
    out = a[rev].copy()[rev]
    assert all(s < 0 for s, n in zip(out.strides, out.shape) if n > 1)
    return out


def byteswapped(a):
    """Same values in non-native (big-endian) byte order; bool arrays are left as they are."""
    if a.dtype == np.bool_:
        return a.copy()
    out = a.astype(a.dtype.newbyteorder(">"))
    assert not out.dtype.isnative
    return out


def unaligned(a):
    """Same values at an odd address (misaligned for any dtype wider than one byte)."""
    if a.dtype.alignment == 1:
        return a.copy()
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def readonly(a):
    out = a.copy()
    out.flags.writeable = False
    return out


LAYOUTS = {
    "plain": lambda a: a.copy(),
    "strided": strided,
    "fortran": fortran,
    "negative-strides": negative_strides,
    "byteswapped": byteswapped,
    "readonly": readonly,
    "unaligned": unaligned,
}
LAYOUT_NAMES = list(LAYOUTS) + ["mixed"]


def with_layout(case: Case, layout: str) -> Case:
    if layout != "mixed":
        return case.map_arrays(lambda name, a: LAYOUTS[layout](a))
    kinds = list(LAYOUTS.values())[1:]
    names = case.array_names()
    return case.with_params(
        **{n: kinds[i % len(kinds)](case.params[n]) for i, n in enumerate(names)}
    )


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("label", CASE_LABELS)
def test_layout_gives_reference_result_and_leaves_inputs_untouched(label, layout):
    case = make_case(label)
    expected = case.reference()
    laid_out = with_layout(case, layout)
    saved = laid_out.snapshot()
    result = laid_out.call()
    assert_close(result, expected, f"{label} {layout}")
    for r in as_tuple(result):
        assert r is None or (isinstance(r, np.ndarray) and r.dtype == np.float64)
    laid_out.assert_unchanged(saved)
    # and the same call on the original, contiguous arrays gives bit-identical results
    assert_bit_identical(result, case.call(), f"{label} {layout} vs contiguous")


def test_layout_helpers_give_the_intended_layouts():
    a = np.arange(24.0).reshape(2, 3, 4)
    for name, f in LAYOUTS.items():
        b = f(a)
        assert np.array_equal(b, a), name
    assert not strided(a).flags.c_contiguous and not strided(a).flags.f_contiguous
    assert fortran(a).flags.f_contiguous and not fortran(a).flags.c_contiguous
    assert min(negative_strides(a).strides) < 0
    assert byteswapped(a).dtype.byteorder == ">"
    assert not readonly(a).flags.writeable
    assert not unaligned(a).flags.aligned


def test_kernels_are_compiled_for_one_memory_layout_only():
    """Whatever the caller passes, the numba kernels only ever see writeable, aligned,
    C-contiguous arrays (pacnp._api._prepare: "the kernels are compiled for one memory
    layout"), so no layout or α/λ form costs another JIT compilation of a kernel."""
    import numba

    from pacnp.cpu import conv, depthwise, kernel, smooth

    for label in CASE_LABELS:
        for layout in ("mixed", "unaligned"):
            with_layout(make_case(label), layout).call()
    guide = np.random.default_rng(1).standard_normal((1, 2, 4, 4))
    for kw in (
        dict(kernel_type="inv_0.5_-1"),
        dict(kernel_type="inv_0.5_-1", inv_alpha=0.3),
        dict(kernel_type="inv_0.5_-1", inv_alpha=np.array([0.3])),
        dict(kernel_type="inv_0.5_-1", inv_alpha=np.array([0.3, 0.4]), channel_wise=True),
        dict(kernel_type="inv", inv_alpha=np.array(0.3), inv_lambda=np.array(-0.5)),
    ):
        K, _ = pacnp.packernel2d(guide, 3, padding=1, **kw)
        pacnp.packernel2d_backward(K, guide, 3, padding=1, **kw)
    odd = []
    for mod in (conv, depthwise, kernel, smooth):
        for name, disp in vars(mod).items():
            if not isinstance(disp, numba.core.registry.CPUDispatcher):
                continue
            for sig in disp.signatures:
                for n, t in enumerate(sig):
                    if isinstance(t, numba.types.Array) and (
                        t.layout != "C" or not t.mutable or not t.aligned
                    ):
                        odd.append(f"{mod.__name__}.{name} argument {n}: {t}")
    assert not odd, "kernels compiled for non-canonical arrays:\n" + "\n".join(sorted(set(odd)))


def test_outputs_are_fresh_writeable_c_arrays_not_views_of_inputs():
    case = make_case("pacconv2d_backward/dense")
    outs = [r for r in as_tuple(case.call()) if r is not None]
    outs += [r for r in as_tuple(make_case("packernel2d/gaussian-mask").call()) if r is not None]
    for r in outs:
        assert r.flags.writeable and r.flags.c_contiguous
        for a in case.params.values():
            if isinstance(a, np.ndarray):
                assert not np.shares_memory(r, a)


# =========================================================================== every backend
@pytest.mark.parametrize("label", CASE_LABELS)
def test_every_function_forward_and_backward_vs_reference(backend, label):
    case = make_case(label)
    assert_close(backend.run(case), case.reference(), label)


@pytest.mark.parametrize("label", BACKWARD_LABELS)
def test_needs_selects_gradients(backend, label):
    case = make_case(label, batch=1)
    full = as_tuple(backend.run(case))
    want = tuple(i % 2 == 0 for i in range(len(full)))
    part = backend.run(case, needs=want)
    for w, a, f in zip(want, part, full):
        if w and f is not None:
            np.testing.assert_array_equal(a, f)
        else:
            assert a is None


# =========================================================================== dtypes, tiny sizes
@pytest.mark.parametrize("label", simulator_grid(CASE_LABELS, SMALL_CASE_LABELS))
def test_float32_stays_float32_and_matches_reference(backend, label):
    case = make_case(label, dtype=np.float32, batch=backend.pick(2, 1))
    result = backend.run(case)
    for r in as_tuple(result):
        assert r is None or r.dtype == np.float32, label
    assert_close(result, case.reference(), label, dtype=np.float32, **backend.tol(np.float32))


def _tiny_case(fn_name, k, dtype, rng):
    """Batch 1, 2 channels, 1×1 images, kernel size k with 'same' padding."""
    p = (k - 1) // 2
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    pos = lambda *shape: (rng.random(shape) + 0.1).astype(dtype)  # noqa: E731
    base = fn_name.replace("_backward", "")
    if base == "packernel2d":
        params = dict(
            guide=f(1, 2, 1, 1),
            kernel_size=k,
            padding=p,
            kernel_type="inv_0.5_-1",
            inv_alpha=pos(2),
            inv_lambda=-pos(2),
            channel_wise=True,
            smooth_kernel_type="full_3",
            smooth_kernel=f(3, 3),
            mask=np.ones((1, 1, 1, 1), dtype=dtype),
            normalize_kernel=True,
        )
        out_shape = (1, 2, k, k, 1, 1)
    elif base in ("pacconv2d", "pacconv_transpose2d"):
        wshape = (3, 2, k, k) if base == "pacconv2d" else (2, 3, k, k)
        params = dict(
            input=f(1, 2, 1, 1),
            kernel=pos(1, 2, k, k, 1, 1),
            weight=f(*wshape),
            bias=f(3),
            padding=p,
        )
        out_shape = (1, 3, 1, 1)
    else:
        params = dict(input=f(1, 2, 1, 1), kernel=pos(1, 1, k, k, 1, 1), kernel_size=k, padding=p)
        out_shape = (1, 2, 1, 1)
    if fn_name.endswith("_backward"):
        gname = "grad_kernel" if base == "packernel2d" else "grad_output"
        params = dict({gname: f(*out_shape)}, **params)
    return Case(fn_name, params)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("fn_name", PUBLIC)
def test_batch1_1x1_images(backend, fn_name, k, dtype, rng):
    case = _tiny_case(fn_name, k, dtype, rng)
    saved = case.snapshot()
    result = backend.run(case)
    results = as_tuple(result)
    assert any(r is not None for r in results)
    for r in results:
        assert r is None or (r.dtype == dtype and np.all(np.isfinite(r))), fn_name
    assert_close(result, case.reference(), f"{fn_name} k={k}", dtype=dtype, **backend.tol(dtype))
    case.assert_unchanged(saved)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("label", CASE_LABELS)
def test_batch1(label, dtype):
    case = make_case(label, dtype=dtype, batch=1)
    assert case.params[next(iter(case.params))].shape[0] == 1
    result = case.call()
    for r in as_tuple(result):
        assert r is None or r.dtype == dtype, label
    assert_close(result, case.reference(), label, dtype=dtype)  # shapes included


def test_1x1_image_with_3x3_window_only_centre_tap_is_valid(rng):
    guide = rng.standard_normal((1, 2, 1, 1))
    K, _ = pacnp.packernel2d(guide, 3, padding=1)
    expected = np.zeros((1, 1, 3, 3, 1, 1))
    expected[0, 0, 1, 1] = 1.0
    np.testing.assert_array_equal(K, expected)


# =========================================================================== determinism
def _every_gradient_present(label, result):
    if label.endswith(("_backward/inv-full-channelwise", "_backward/dense")):
        assert all(r is not None for r in as_tuple(result)), label


@pytest.mark.parametrize(
    "label", simulator_grid(CASE_LABELS, ["pacconv2d_backward/asymmetric-strided-dilated"])
)
def test_bit_identical_across_calls(backend, label):
    """Deterministic gradients: no atomics, per-thread partial sums added in a fixed order."""
    case = make_case(label, seed=3, large=not backend.simulator)
    first = backend.run(case)
    _every_gradient_present(label, first)
    for n in range(2):
        assert_bit_identical(first, backend.run(case), f"{label}: call {n + 2}")


@pytest.mark.parametrize("label", CASE_LABELS)
def test_bit_identical_across_thread_counts(label, numba_threads):
    import numba

    many = min(2, numba.config.NUMBA_NUM_THREADS)
    if many < 2:
        pytest.skip("numba is limited to one thread here (NUMBA_NUM_THREADS=1)")
    case = make_case(label, seed=4, large=True)
    default = case.call()
    numba_threads(1)
    one = case.call()
    numba_threads(many)
    two = case.call()
    _every_gradient_present(label, default)
    assert_bit_identical(one, two, f"{label}: 1 vs {many} threads")
    assert_bit_identical(
        default, one, f"{label}: default ({numba.config.NUMBA_NUM_THREADS}) vs 1 thread"
    )


# =========================================================================== array libraries
def _torch_case(case, requires_grad=False):
    import torch

    def conv(name, a):
        t = torch.from_numpy(np.ascontiguousarray(a))
        if requires_grad and t.is_floating_point():
            t.requires_grad_(True)
        return t

    return case.map_arrays(conv)


def _jax_case(case):
    import jax.numpy as jnp

    return case.map_arrays(lambda name, a: jnp.asarray(a))


def _strict_case(case):
    import array_api_strict as xps

    return case.map_arrays(lambda name, a: xps.asarray(a))


def _check_library_result(lib_result, np_result, is_lib_array, expected_dtype):
    lib_result, np_result = as_tuple(lib_result), as_tuple(np_result)
    assert len(lib_result) == len(np_result)
    for r, e in zip(lib_result, np_result):
        assert (r is None) == (e is None)
        if r is None:
            continue
        assert is_lib_array(r), f"result of type {type(r)} is not of the caller's library"
        assert expected_dtype(r), f"result dtype {r.dtype}"
        assert tuple(r.shape) == e.shape
        np.testing.assert_array_equal(to_numpy(r), e)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("label", CASE_LABELS)
def test_torch_tensors(label, requires_grad):
    import torch

    case = make_case(label)
    np_result = case.call()
    tcase = _torch_case(case, requires_grad)
    saved = case.snapshot()
    result = tcase.call()
    _check_library_result(
        result, np_result, lambda r: isinstance(r, torch.Tensor), lambda r: r.dtype == torch.float64
    )
    for r in as_tuple(result):
        assert r is None or not r.requires_grad
    tcase.assert_unchanged(saved)
    assert_close(result, case.reference(), label)


@pytest.mark.parametrize(
    "label",
    ["packernel2d_backward/inv-full-channelwise", "pacconv2d_backward/dense", "pacpool2d/strided"],
)
def test_torch_float32(label):
    import torch

    case = make_case(label, dtype=np.float32)
    result = _torch_case(case).call()
    _check_library_result(
        result,
        case.call(),
        lambda r: isinstance(r, torch.Tensor),
        lambda r: r.dtype == torch.float32,
    )


def test_torch_non_contiguous_tensors():
    import torch

    case = make_case("pacconv2d_backward/dense")

    def transposed_tensor(name, a):
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, -1))).transpose(0, -1)

    tcase = case.map_arrays(transposed_tensor)
    assert not any(
        t.is_contiguous()
        for t in tcase.params.values()
        if isinstance(t, torch.Tensor) and t.dim() > 1
    )
    _check_library_result(
        tcase.call(),
        case.call(),
        lambda r: isinstance(r, torch.Tensor),
        lambda r: r.dtype == torch.float64,
    )


@pytest.mark.parametrize("label", CASE_LABELS)
def test_jax_arrays(label, jax_x64):
    import jax

    case = make_case(label)
    jcase = _jax_case(case)
    assert jcase.params[next(iter(jcase.params))].dtype == np.float64
    result = jcase.call()
    _check_library_result(
        result, case.call(), lambda r: isinstance(r, jax.Array), lambda r: r.dtype == np.float64
    )


@pytest.mark.parametrize("label", CASE_LABELS)
def test_array_api_strict_arrays(label):
    import array_api_strict as xps

    case = make_case(label)
    scase = _strict_case(case)
    result = scase.call()
    _check_library_result(
        result,
        case.call(),
        lambda r: isinstance(r, type(xps.asarray(0.0))),
        lambda r: r.dtype == xps.float64,
    )


def test_torch_channels_last_and_offset_views():
    import torch

    case = make_case("pacconv2d_backward/dense")
    t = case.map_arrays(lambda n, a: torch.from_numpy(a))
    cl = t.with_params(
        input=t.params["input"].contiguous(memory_format=torch.channels_last),
        grad_output=torch.cat([t.params["grad_output"]] * 2, dim=1)[:, 4:],
    )
    assert not cl.params["input"].is_contiguous()
    assert cl.params["grad_output"].storage_offset() > 0
    _check_library_result(
        cl.call(),
        case.call(),
        lambda r: isinstance(r, torch.Tensor),
        lambda r: r.dtype == torch.float64,
    )


@pytest.mark.parametrize(
    "label", ["packernel2d_backward/inv-full-channelwise", "pacconv_transpose2d_backward/dense"]
)
def test_jax_float32(label):
    import jax
    import jax.numpy as jnp

    case = make_case(label, dtype=np.float32)
    jcase = case.map_arrays(lambda n, a: jnp.asarray(a))
    assert jcase.params[next(iter(jcase.params))].dtype == np.float32
    _check_library_result(
        jcase.call(),
        case.call(),
        lambda r: isinstance(r, jax.Array),
        lambda r: r.dtype == np.float32,
    )


@pytest.mark.parametrize("label", ["packernel2d_backward/gaussian-mask", "pacconv2d/dense"])
def test_array_api_strict_results_stay_on_the_callers_device(label):
    """array_api_strict simulates devices; results must come back on the device of the
    inputs, or the caller cannot combine them with its own arrays."""
    import array_api_strict as xps

    device = xps.Device("device1")
    case = make_case(label)
    scase = case.map_arrays(lambda n, a: xps.asarray(a, device=device))
    result = scase.call()
    np_result = case.call()
    for r, e in zip(as_tuple(result), as_tuple(np_result)):
        if e is None:
            assert r is None
            continue
        np.testing.assert_array_equal(to_numpy(r), e)
        assert r.device == device, f"result on {r.device}, inputs on {device}"


def test_aliased_arguments():
    """The same array passed as two arguments (input and upstream gradient of a pool)."""
    case = make_case("pacpool2d_backward/strided").with_params(stride=1)
    x = case.params["input"]
    K = np.random.default_rng(5).random((2, 3, 3, 3) + x.shape[2:])
    aliased = case.with_params(grad_output=x, kernel=K)
    saved = x.copy()
    got = aliased.call()
    assert_close(got, ref.pacpool2d_backward(saved, saved, K, 3, padding=1))
    assert x.tobytes() == saved.tobytes()


def test_torch_zero_copy_in_and_out(monkeypatch):
    """The kernels read a contiguous float64 torch input in place and the returned tensor is
    the very buffer the kernels wrote (observed by wrapping the internal driver)."""
    import torch

    from pacnp import _ops

    seen = {}
    real = _ops.op_forward

    def spy(be, plan):
        out = real(be, plan)
        seen.update(x_ptr=plan.x.ctypes.data, k_ptr=plan.K.ctypes.data, out=out)
        return out

    monkeypatch.setattr(_ops, "op_forward", spy)
    case = _torch_case(make_case("pacconv2d/dense"))
    x, K = case.params["input"], case.params["kernel"]
    assert np.from_dlpack(x).ctypes.data == x.data_ptr()
    out = case.call()
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert seen["x_ptr"] == x.data_ptr() and seen["k_ptr"] == K.data_ptr()
    assert out.data_ptr() == seen["out"].ctypes.data
    out[0, 0, 0, 0] = 123.0  # writes through to the same buffer
    assert seen["out"][0, 0, 0, 0] == 123.0


def test_torch_zero_copy_packernel_outputs(monkeypatch):
    import torch

    from pacnp import _ops

    seen = {}
    real = _ops.packernel_forward

    def spy(be, plan):
        K, m = real(be, plan)
        seen.update(K=K, m=m)
        return K, m

    monkeypatch.setattr(_ops, "packernel_forward", spy)
    case = _torch_case(make_case("packernel2d/gaussian-mask"))
    K, m = case.call()
    assert isinstance(K, torch.Tensor) and isinstance(m, torch.Tensor)
    assert K.data_ptr() == seen["K"].ctypes.data and m.data_ptr() == seen["m"].ctypes.data


@pytest.mark.parametrize(
    "libs", [("torch", "jax"), ("jax", "numpy"), ("strict", "torch"), ("numpy", "strict")]
)
def test_mixing_libraries_is_a_type_error(libs, jax_x64):
    import array_api_strict as xps
    import jax.numpy as jnp
    import torch

    conv = {
        "torch": torch.from_numpy,
        "jax": jnp.asarray,
        "strict": xps.asarray,
        "numpy": np.asarray,
    }
    case = make_case("pacconv2d/dense")
    mixed = case.with_params(
        input=conv[libs[0]](case.params["input"]),
        kernel=conv[libs[0]](case.params["kernel"]),
        weight=conv[libs[1]](case.params["weight"]),
        bias=conv[libs[0]](case.params["bias"]),
    )
    with pytest.raises(TypeError, match=r"^pacconv2d: .*different libraries.*weight") as info:
        mixed.call()
    for lib in libs:
        assert (lib if lib != "strict" else "array_api_strict") in str(info.value)


# =========================================================================== scalars and 0-d
@pytest.mark.parametrize("channel_wise", [False, True])
def test_zero_d_alpha_lambda_gradients_keep_shape(channel_wise, rng):
    """α/λ passed as 0-d arrays: their gradients have shape () — "the shape of the array as
    passed" (reference: tests/reference.py); the reference agrees on the values."""
    guide = rng.standard_normal((2, 3, 5, 4))
    kw = dict(
        padding=1,
        kernel_type="inv_0.5_-1",
        inv_alpha=np.array(0.4),
        inv_lambda=np.array(-0.6),
        channel_wise=channel_wise,
    )
    K, _ = pacnp.packernel2d(guide, 3, **kw)
    grad = rng.standard_normal(K.shape)
    got = pacnp.packernel2d_backward(grad, guide, 3, **kw)
    want = ref.packernel2d_backward(grad, guide, 3, **kw)
    # values first (whatever the shape), then the shape the gradients come back in
    assert_close([np.reshape(g, np.shape(w)) for g, w in zip(got[:3], want[:3])], want[:3])
    assert got[3] is None and want[3] is None
    assert np.shape(got[1]) == (), f"d_inv_alpha has shape {np.shape(got[1])}, inv_alpha ()"
    assert np.shape(got[2]) == (), f"d_inv_lambda has shape {np.shape(got[2])}, inv_lambda ()"


def test_zero_d_alpha_from_torch_gives_zero_d_gradient(rng):
    import torch

    guide = torch.from_numpy(rng.standard_normal((1, 2, 4, 4)))
    kw = dict(padding=1, kernel_type="inv_0.5_-1", inv_alpha=torch.tensor(0.4, dtype=torch.float64))
    K, _ = pacnp.packernel2d(guide, 3, **kw)
    d = pacnp.packernel2d_backward(torch.ones_like(K), guide, 3, **kw)
    assert isinstance(d[1], torch.Tensor) and tuple(d[1].shape) == ()


def test_python_float_alpha_gives_zero_d_gradient_in_callers_library(rng):
    import torch

    guide = torch.from_numpy(rng.standard_normal((1, 2, 4, 4)))
    kw = dict(padding=1, kernel_type="inv_0.5_-1", inv_alpha=0.4, inv_lambda=-0.6)
    K, _ = pacnp.packernel2d(guide, 3, **kw)
    d = pacnp.packernel2d_backward(torch.ones_like(K), guide, 3, **kw)
    assert all(isinstance(g, torch.Tensor) for g in d[:3]) and d[3] is None
    assert tuple(d[1].shape) == () and tuple(d[2].shape) == ()
    want = ref.packernel2d_backward(np.ones(tuple(K.shape)), guide.numpy(), 3, **kw)
    assert_close(d, want)
