"""What only the CUDA backend has: float16 device arrays, strided device views, host and device
arrays mixed, the errors and results of the device against the CPU backend.

The ops, the fused path and every public function run on the CUDA backend through the
``backend`` fixture (tests/conftest.py) in tests/test_ops.py, test_fused.py and test_arrays.py.
Like them, this file needs a GPU or numba's CUDA simulator, which must be on before
``numba.cuda`` is first imported: ``make test-cuda-sim`` runs it with them
(``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda ...``). In a process with neither (the main
``pytest tests`` run without a GPU) the module is skipped, with the reason.
"""

import itertools

import numpy as np
import pytest
from cases import cuda_missing

if cuda_missing():
    pytest.skip(f"CUDA backend: {cuda_missing()}", allow_module_level=True)

from cases import Backend, as_tuple, assert_close, make_case  # noqa: E402

import pacnp  # noqa: E402

pytestmark = pytest.mark.cuda

GPU = Backend("cuda")


# --------------------------------------------------------------------------- dtypes, layouts
@pytest.mark.parametrize(
    "label",
    [
        "pacconv2d/dense",
        "pacconv2d_backward/shared",
        "packernel2d/gaussian-mask",
        "pacpool2d_backward/strided",
    ],
)
def test_float16_inputs_give_float16_results_computed_in_float32(label):
    """float16 device arrays: converted to float32 on the device, results back in float16.
    The reference sees the same float16-rounded inputs; the tolerance is float16's."""
    case = make_case(label, batch=1)
    half = case.map_arrays(lambda n, a: a.astype(np.float16) if a.dtype.kind == "f" else a)
    exact = half.map_arrays(lambda n, a: a.astype(np.float64) if a.dtype.kind == "f" else a)
    ours = as_tuple(GPU.run(half))
    ref = as_tuple(exact.reference())
    assert len(ours) == len(ref)
    for n, (a, e) in enumerate(zip(ours, ref)):
        if a is not None:
            assert a.dtype == np.float16, f"result {n} has dtype {a.dtype}"
        assert_close(a, e, f"{label} result {n}", dtype=np.float16)


def test_float16_mixed_with_float32_is_a_type_error():
    case = make_case("pacconv2d/dense", batch=1)
    args, kwargs = case.split()
    args = [GPU.put(args[0].astype(np.float16))] + [GPU.put(a.astype(np.float32)) for a in args[1:]]
    with pytest.raises(
        TypeError,
        match=r"pacconv2d: floating arrays of one call must share a "
        r"dtype \(input: float16, kernel: float32",
    ):
        pacnp.pacconv2d(*args, **kwargs)


def test_strided_device_inputs_are_copied_not_misread():
    from numba import cuda

    case = make_case("pacconv2d_backward/dense", batch=1)
    args, kwargs = case.split()

    def strided(a):
        if not isinstance(a, np.ndarray):
            return a
        big = np.zeros(tuple(2 * n for n in a.shape))
        big[(slice(None, None, 2),) * a.ndim] = a
        return cuda.to_device(big)[(slice(None, None, 2),) * a.ndim]

    ours = pacnp.pacconv2d_backward(*(strided(a) for a in args), **kwargs)
    assert_close(tuple(GPU.get(a) for a in ours), case.reference(), "strided")


# --------------------------------------------------------------------------- against the CPU
def test_mixing_host_and_device_arrays_is_a_type_error_naming_them():
    case = make_case("pacconv2d/dense", batch=1)
    p = case.params
    with pytest.raises(
        TypeError,
        match=r"pacconv2d: arrays on a CUDA device and on the host "
        r"cannot be mixed \(on the device: input, weight; on the "
        r"host: kernel, bias\)",
    ):
        pacnp.pacconv2d(
            GPU.put(p["input"]), p["kernel"], GPU.put(p["weight"]), p["bias"], padding=1
        )


def test_device_errors_are_the_cpu_errors():
    """Validation is _core's on both backends: the same message for the same mistake."""
    x = np.zeros((1, 2, 6, 6))
    w = np.zeros((3, 2, 3, 3))
    K = np.zeros((1, 1, 3, 3, 5, 5))
    with pytest.raises(ValueError) as cpu_err:
        pacnp.pacconv2d(x, K, w, padding=1)
    with pytest.raises(ValueError) as gpu_err:
        GPU.call(pacnp.pacconv2d, x, K, w, padding=1)
    assert str(gpu_err.value) == str(cpu_err.value)
    assert "pacconv2d: kernel has shape (1, 1, 3, 3, 5, 5)" in str(gpu_err.value)


def test_results_on_the_device_equal_the_cpu_backend():
    """Same inputs, both backends: float64 results agree to rounding (different summation
    orders; the CPU scatters where the GPU gathers)."""
    for label in ("pacconv_transpose2d_backward/dense", "packernel2d_backward/transposed"):
        case = make_case(label, batch=1)
        cpu = as_tuple(case.call())
        gpu = as_tuple(GPU.run(case))
        for a, b in itertools.zip_longest(gpu, cpu):
            assert_close(a, b, label, rtol=1e-10, atol=1e-12)
