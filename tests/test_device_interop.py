"""Device interop on a real GPU: CuPy arrays, torch CUDA tensors and JAX GPU arrays in → arrays of
the same library on the same device out, and the caller's stream order kept.

For ``pacnp.packernel2d``, ``pacnp.pacconv2d_fused`` (forward and backward) and
``pacnp.filters.joint_bilateral_filter``, against the float64 NumPy reference (``reference.py``,
and a bilateral filter written out below). The stream tests make the inputs on a non-blocking side
stream behind a long chain of matrix products, call pacnp while that stream is current, read the
result on the same stream, and compare with the reference: a kernel launched on any other stream
would read the NaN the inputs were poisoned with first. JAX has no streams: its inputs come from
an asynchronously dispatched jit whose result depends on the same long chain.

Needs a CUDA GPU and a real driver: without one (and under numba's simulator, which takes numba
arrays only) the module is skipped; each library's tests are skipped where that library or its
GPU support is missing. ``make gpu-check`` runs this file on the GPU machine (tools/gpu/README.md).
"""

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip(
        "device interop needs a real GPU: numba's simulator takes numba arrays only",
        allow_module_level=True,
    )
_cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
if not _cuda.is_available():
    pytest.skip(
        "no CUDA GPU here: this file runs on the GPU machine through `make gpu-check` "
        "(tools/gpu/README.md)",
        allow_module_level=True,
    )

import reference as R  # noqa: E402

import pacnp  # noqa: E402
from pacnp import filters  # noqa: E402

K_SIZE, PAD = 5, 2
BUSY_N, BUSY_STEPS = 4096, 12  # ≈ 1.6 TFLOP of matrix products: tens of ms on any GPU


# --------------------------------------------------------------------------- the libraries
class CupyLib:
    name = "cupy"

    def __init__(self):
        self.cp = cp = pytest.importorskip("cupy", reason="CuPy is not installed")
        try:
            n = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - CUDARuntimeError, or no libcuda
            pytest.skip(f"CuPy sees no usable GPU ({exc})")
        if n < 1:
            pytest.skip("CuPy sees no GPU")

    def put(self, a):
        return self.cp.asarray(a)

    def get(self, a):
        return self.cp.asnumpy(a)

    def check(self, a, like, what):
        assert isinstance(a, self.cp.ndarray), (
            f"{what}: {type(a).__module__}.{type(a).__name__}, not a CuPy array"
        )
        assert a.device.id == like.device.id, (
            f"{what}: on GPU {a.device.id}, input on {like.device.id}"
        )
        assert a.dtype == like.dtype, f"{what}: dtype {a.dtype}, input {like.dtype}"


class TorchLib:
    name = "torch"

    def __init__(self):
        self.torch = torch = pytest.importorskip("torch", reason="torch is not installed")
        if not torch.cuda.is_available():
            pytest.skip(f"torch {torch.__version__} sees no CUDA GPU")

    def put(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to("cuda")

    def get(self, a):
        return a.detach().cpu().numpy()

    def check(self, a, like, what):
        assert isinstance(a, self.torch.Tensor), (
            f"{what}: {type(a).__module__}.{type(a).__name__}, not a torch tensor"
        )
        assert a.device == like.device, f"{what}: on {a.device}, input on {like.device}"
        assert a.dtype == like.dtype, f"{what}: dtype {a.dtype}, input {like.dtype}"


class JaxLib:
    name = "jax"

    def __init__(self):
        self.jax = jax = pytest.importorskip("jax", reason="JAX is not installed")
        try:
            self.dev = jax.devices("gpu")[0]
        except RuntimeError as exc:
            pytest.skip(f"JAX {jax.__version__} has no GPU backend ({exc})")

    def put(self, a):
        return self.jax.device_put(a, self.dev)

    def get(self, a):
        return np.asarray(a)

    def check(self, a, like, what):
        assert isinstance(a, self.jax.Array), (
            f"{what}: {type(a).__module__}.{type(a).__name__}, not a JAX array"
        )
        assert a.devices() == like.devices(), f"{what}: on {a.devices()}, input on {like.devices()}"
        assert a.dtype == like.dtype, f"{what}: dtype {a.dtype}, input {like.dtype}"


LIBS = {"cupy": CupyLib, "torch": TorchLib, "jax": JaxLib}


@pytest.fixture(params=list(LIBS))
def lib(request):
    return LIBS[request.param]()


# --------------------------------------------------------------------------- data, references
def conv_data(seed=0):
    """(x, guide, weight, bias, grad_output) float32: B 2, 3→4 channels, guide 4, 12×13."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 12, 13)).astype(np.float32)
    guide = rng.standard_normal((2, 4, 12, 13)).astype(np.float32)
    w = (rng.standard_normal((4, 3, K_SIZE, K_SIZE)) * 0.2).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    g = rng.standard_normal((2, 4, 12, 13)).astype(np.float32)
    return x, guide, w, b, g


def conv_reference(x, guide, w, b):
    K = R.packernel2d(guide, K_SIZE, padding=PAD)[0]
    return R.pacconv2d(x, K, w, b, padding=PAD)


def bilateral_reference(img, sigma_s, sigma_c, r):
    """Joint bilateral filter of (H, W, C) guided by itself, border 'reflect' (numpy's: the edge
    pixel not repeated), Euclidean colour distance, float64."""
    x = img.astype(np.float64)
    H, W, _ = x.shape
    p = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    num = np.zeros_like(x)
    den = np.zeros((H, W, 1))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            nb = p[r + dy : r + dy + H, r + dx : r + dx + W]
            wgt = np.exp(
                -(dy * dy + dx * dx) / (2 * sigma_s**2)
                - 0.5 * ((nb - x) ** 2).sum(-1, keepdims=True) / sigma_c**2
            )
            num += wgt * nb
            den += wgt
    return num / den


def assert_close(actual, expected, what):
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=2e-4, atol=2e-5, err_msg=what
    )


# --------------------------------------------------------------------------- same library out
def test_packernel2d_gives_the_callers_library_and_device(lib):
    guide = conv_data()[1]
    g = lib.put(guide)
    K, om = pacnp.packernel2d(g, K_SIZE, padding=PAD)
    lib.check(K, g, "K")
    if om is not None:
        lib.check(om, g, "output_mask")
    assert_close(lib.get(K), R.packernel2d(guide, K_SIZE, padding=PAD)[0], "K")


def test_pacconv2d_fused_forward_and_backward_give_the_callers_library_and_device(lib):
    x, guide, w, b, gout = conv_data(1)
    args = [lib.put(a) for a in (x, guide, w, b)]
    out, om = pacnp.pacconv2d_fused(*args, padding=PAD)
    lib.check(out, args[0], "output")
    assert om is None
    assert_close(lib.get(out), conv_reference(x, guide, w, b), "output")

    grads = pacnp.pacconv2d_fused_backward(lib.put(gout), *args, padding=PAD)
    K = R.packernel2d(guide, K_SIZE, padding=PAD)[0]
    dx, _, dw, db = R.pacconv2d_backward(gout, x, K, w, b, padding=PAD)
    for name, a, like in zip(("d_input", "d_guide", "d_weight", "d_bias"), grads, args):
        lib.check(a, like, name)
    assert_close(lib.get(grads[0]), dx, "d_input")
    assert_close(lib.get(grads[2]), dw, "d_weight")
    assert_close(lib.get(grads[3]), db, "d_bias")
    assert all(a is None for a in grads[4:]), "no α, λ or smoothing kernel was given"


def test_joint_bilateral_filter_gives_the_callers_library_and_device(lib):
    """The README's promise for the filters too. Until issue 12's one array contract lands,
    pacnp.filters takes NumPy and CuPy only: the torch and JAX cases fail there (TypeError, or a
    NumPy result) — the point of running them on the GPU."""
    rng = np.random.default_rng(2)
    img = (rng.random((20, 23, 3)) * 255).astype(np.float32)
    a = lib.put(img)
    out = filters.joint_bilateral_filter(
        a, a, sigma_spatial=2.0, sigma_color=25.0, radius=3, border="reflect", channel_axis=-1
    )
    lib.check(out, a, "filtered image")
    assert_close(lib.get(out), bilateral_reference(img, 2.0, 25.0, 3), "filtered image")


# --------------------------------------------------------------------------- streams
def test_cupy_side_stream_orders_pacnp_after_its_producer_and_before_its_consumer():
    cp = CupyLib().cp
    x, guide, w, b, _ = conv_data(3)
    expected = 2 * conv_reference(x, guide, w, b)
    s = cp.cuda.Stream(non_blocking=True)  # no implicit sync with the legacy default stream
    with s:
        dx = cp.full(x.shape, cp.nan, dtype=cp.float32)
        dg = cp.full(guide.shape, cp.nan, dtype=cp.float32)
        src_x, src_g = cp.asarray(x), cp.asarray(guide)
        a = cp.full((BUSY_N, BUSY_N), 1.0 / BUSY_N, dtype=cp.float32)
        for _ in range(BUSY_STEPS):  # the producer is slow: the real values land late
            a = a @ a
        dx[...] = src_x + 0 * a[0, 0]
        dg[...] = src_g + 0 * a[0, 0]
        out, _ = pacnp.pacconv2d_fused(dx, dg, cp.asarray(w), cp.asarray(b), padding=PAD)
        consumed = out * 2  # the consumer, on the same stream
    s.synchronize()
    assert isinstance(out, cp.ndarray)
    assert_close(cp.asnumpy(consumed), expected, "2 × output, made and read on a side stream")


def test_torch_side_stream_orders_pacnp_after_its_producer_and_before_its_consumer():
    torch = TorchLib().torch
    x, guide, w, b, _ = conv_data(4)
    expected = 2 * conv_reference(x, guide, w, b)
    s = torch.cuda.Stream()  # torch's streams are non-blocking
    with torch.cuda.stream(s):
        dx = torch.full(x.shape, float("nan"), device="cuda")
        dg = torch.full(guide.shape, float("nan"), device="cuda")
        src_x, src_g = torch.from_numpy(x).cuda(), torch.from_numpy(guide).cuda()
        a = torch.full((BUSY_N, BUSY_N), 1.0 / BUSY_N, device="cuda")
        for _ in range(BUSY_STEPS):
            a = a @ a
        dx.copy_(src_x + 0 * a[0, 0])
        dg.copy_(src_g + 0 * a[0, 0])
        out, _ = pacnp.pacconv2d_fused(
            dx, dg, torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda(), padding=PAD
        )
        consumed = out * 2
    s.synchronize()
    assert isinstance(out, torch.Tensor) and out.is_cuda
    assert_close(consumed.cpu().numpy(), expected, "2 × output, made and read on a side stream")


def test_jax_inputs_still_being_computed_are_waited_for():
    L = JaxLib()
    jax, jnp = L.jax, L.jax.numpy
    x, guide, w, b, _ = conv_data(5)
    expected = 2 * conv_reference(x, guide, w, b)

    @jax.jit
    def produce(v, big):
        for _ in range(BUSY_STEPS):
            big = big @ big
        return v + 0 * big[0, 0]

    big = L.put(np.full((BUSY_N, BUSY_N), 1.0 / BUSY_N, np.float32))
    dx = produce(L.put(x), big)  # dispatched asynchronously: not ready yet
    dg = produce(L.put(guide), big)
    out, _ = pacnp.pacconv2d_fused(dx, dg, L.put(w), L.put(b), padding=PAD)
    L.check(out, dx, "output")
    assert_close(np.asarray(jnp.multiply(out, 2)), expected, "2 × output of pending inputs")
