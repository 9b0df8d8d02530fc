"""The array contract (pacnp/_namespace.py): every public function of ``pacnp``,
``pacnp.filters`` and ``pacnp.crf`` takes arrays of one library and returns arrays of that
library, on that device, in the expected dtype; mixing libraries is one TypeError naming the
arguments.

One table (``CALLS``) holds a small call of every public function; ``test_calls_cover_the_api``
fails when a public function is added without an entry. The libraries are those installed:
NumPy, torch, JAX, array_api_strict and CuPy in the main run; numba device arrays under numba's
CUDA simulator (``make test-cuda-sim`` runs this file there too) or on a real GPU.
"""

from __future__ import annotations

import importlib
import inspect
import os

import numpy as np
import pytest

import pacnp
from pacnp import crf, filters

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


# --------------------------------------------------------------------------- libraries
def _have(name):
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure to import means "not installed here"
        return False
    return True


def _numba_device_ok():
    if not _have("numba_cuda"):
        return False
    from numba import cuda

    return SIM or cuda.is_available()


class Lib:
    """How to make arrays of one library from NumPy, and recognise them."""

    def __init__(self, name, put, is_mine, device_of, available, why):
        self.name, self.put, self.is_mine, self.device_of = name, put, is_mine, device_of
        self.available, self.why = available, why


def _torch_put(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def _jax_put(a):
    import jax.numpy as jnp

    return jnp.asarray(a)


def _strict_put(a):
    import array_api_strict as xp

    return xp.asarray(a)


def _cupy_put(a):
    import cupy

    return cupy.asarray(a)


def _numba_put(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def _module_is(prefix):
    return lambda a: type(a).__module__.startswith(prefix)


def _numba_is(a):
    mod = type(a).__module__
    return mod.startswith("numba.cuda") and hasattr(a, "copy_to_host")


LIBS = [
    Lib("numpy", np.asarray, lambda a: isinstance(a, np.ndarray), lambda a: "cpu", True, ""),
    Lib(
        "torch",
        _torch_put,
        _module_is("torch"),
        lambda a: str(a.device),
        _have("torch"),
        "torch is not installed",
    ),
    Lib(
        "jax",
        _jax_put,
        lambda a: type(a).__module__.startswith(("jax", "jaxlib")),
        lambda a: str(a.devices()),
        _have("jax"),
        "jax is not installed",
    ),
    Lib(
        "array_api_strict",
        _strict_put,
        _module_is("array_api_strict"),
        lambda a: str(a.device),
        _have("array_api_strict"),
        "array_api_strict is not installed",
    ),
    Lib(
        "cupy",
        _cupy_put,
        _module_is("cupy"),
        lambda a: str(a.device),
        _have("cupy"),
        "CuPy is not installed (no GPU here)",
    ),
    Lib(
        "numba",
        _numba_put,
        _numba_is,
        lambda a: "cuda",
        _numba_device_ok(),
        "numba device arrays need numba-cuda and a GPU or NUMBA_ENABLE_CUDASIM=1",
    ),
]


@pytest.fixture(
    params=[
        pytest.param(
            lib, id=lib.name, marks=[pytest.mark.cuda] if lib.name in ("cupy", "numba") else []
        )
        for lib in LIBS
    ]
)
def lib(request):
    lib = request.param
    if not lib.available:
        pytest.skip(lib.why)
    if SIM and lib.name != "numba":
        pytest.skip("the simulator run checks numba device arrays; the main run the others")
    return lib


# --------------------------------------------------------------------------- inputs
def _inputs():
    rng = np.random.default_rng(7)
    f32 = np.float32
    d = dict(
        x=rng.standard_normal((1, 2, 6, 5)).astype(f32),
        g=rng.standard_normal((1, 3, 6, 5)).astype(f32),
        w=rng.standard_normal((4, 2, 3, 3)).astype(f32),
        wt=rng.standard_normal((2, 4, 3, 3)).astype(f32),
        b=rng.standard_normal(4).astype(f32),
        gt=rng.standard_normal((1, 3, 11, 9)).astype(f32),  # the transposed op's output size
        img=rng.random((6, 5, 3)).astype(f32),
        low=rng.random((3, 3, 3)).astype(f32),
        hi=rng.random((6, 6, 3)).astype(f32),
        unary=rng.standard_normal((1, 3, 6, 5)).astype(f32),
        feat=rng.standard_normal((1, 2, 6, 5)).astype(f32),
        probs=np.ascontiguousarray(
            rng.dirichlet(np.ones(3), size=(6, 5)).astype(f32).transpose(2, 0, 1)
        ),
    )
    d["K"] = pacnp.packernel2d(d["g"], 3, padding=1)[0]
    d["Kt"] = pacnp.packernel2d(d["gt"], 3, stride=2, padding=1, transposed=True)[0]
    d["gy"] = rng.standard_normal((1, 4, 6, 5)).astype(f32)
    d["gyt"] = rng.standard_normal((1, 4, 11, 9)).astype(f32)
    d["gyp"] = rng.standard_normal((1, 2, 6, 5)).astype(f32)
    d["filt"] = rng.standard_normal((3, 3, 3, 3)).astype(f32)
    return d


IN = _inputs()
KW = dict(padding=1)
TKW = dict(stride=2, padding=1)


def _term(put):
    return crf.PairwiseTerm("4d", put(IN["filt"]), weight=1.0)


def _paccrf_model(put):
    model = crf.PacCRF(3, num_steps=2)
    model.add_pairwise_kernel(kernel_size=3, compat_type="4d")
    return model


def _pac_inputs(nd):
    """IN's PAC arrays with ``nd`` spatial axes (the 2-D ones are IN's own)."""
    if nd == 2:
        return IN
    rng = np.random.default_rng(8 + nd)
    S = (6,) if nd == 1 else (3, 4, 5)
    St = tuple(2 * n - 1 for n in S)  # kernel 3, stride 2, padding 1, transposed
    k = (3,) * nd

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    d = dict(
        x=arr(1, 2, *S),
        g=arr(1, 3, *S),
        w=arr(4, 2, *k),
        wt=arr(2, 4, *k),
        b=IN["b"],
        gt=arr(1, 3, *St),
        gy=arr(1, 4, *S),
        gyt=arr(1, 4, *St),
        gyp=arr(1, 2, *S),
    )
    packernel = getattr(pacnp, f"packernel{nd}d")
    d["K"] = packernel(d["g"], 3, **KW)[0]
    d["Kt"] = packernel(d["gt"], 3, stride=2, padding=1, transposed=True)[0]
    return d


def _pac_calls(nd):
    """A small call of every PAC function with ``nd`` spatial axes."""
    I = _pac_inputs(nd)  # noqa: E741 - reads like the IN table it mirrors
    f = {name: getattr(pacnp, name.replace("2d", f"{nd}d")) for name in pacnp._api.__all__}
    calls = {
        "packernel2d": lambda p: f["packernel2d"](p(I["g"]), 3, **KW),
        "packernel2d_backward": lambda p: f["packernel2d_backward"](p(I["K"]), p(I["g"]), 3, **KW),
        "pacconv2d": lambda p: f["pacconv2d"](p(I["x"]), p(I["K"]), p(I["w"]), p(I["b"]), **KW),
        "pacconv2d_backward": lambda p: f["pacconv2d_backward"](
            p(I["gy"]), p(I["x"]), p(I["K"]), p(I["w"]), p(I["b"]), **KW
        ),
        "pacconv_transpose2d": lambda p: f["pacconv_transpose2d"](
            p(I["x"]), p(I["Kt"]), p(I["wt"]), p(I["b"]), **TKW
        ),
        "pacconv_transpose2d_backward": lambda p: f["pacconv_transpose2d_backward"](
            p(I["gyt"]), p(I["x"]), p(I["Kt"]), p(I["wt"]), p(I["b"]), **TKW
        ),
        "pacpool2d": lambda p: f["pacpool2d"](p(I["x"]), p(I["K"]), 3, **KW),
        "pacpool2d_backward": lambda p: f["pacpool2d_backward"](
            p(I["gyp"]), p(I["x"]), p(I["K"]), 3, **KW
        ),
        "pacconv2d_fused": lambda p: f["pacconv2d_fused"](
            p(I["x"]), p(I["g"]), p(I["w"]), p(I["b"]), **KW
        ),
        "pacconv2d_fused_backward": lambda p: f["pacconv2d_fused_backward"](
            p(I["gy"]), p(I["x"]), p(I["g"]), p(I["w"]), p(I["b"]), **KW
        ),
        "pacconv_transpose2d_fused": lambda p: f["pacconv_transpose2d_fused"](
            p(I["x"]), p(I["gt"]), p(I["wt"]), p(I["b"]), **TKW
        ),
        "pacconv_transpose2d_fused_backward": lambda p: f["pacconv_transpose2d_fused_backward"](
            p(I["gyt"]), p(I["x"]), p(I["gt"]), p(I["wt"]), p(I["b"]), **TKW
        ),
        "pacpool2d_fused": lambda p: f["pacpool2d_fused"](p(I["x"]), p(I["g"]), 3, **KW),
        "pacpool2d_fused_backward": lambda p: f["pacpool2d_fused_backward"](
            p(I["gyp"]), p(I["x"]), p(I["g"]), 3, **KW
        ),
    }
    return {"pacnp." + n.replace("2d", f"{nd}d"): call for n, call in calls.items()}


#: name → call(put): a small call of every public function, with every array made by ``put``
CALLS = {
    **_pac_calls(1),
    **_pac_calls(2),
    **_pac_calls(3),
    "filters.bilateral_filter": lambda p: filters.bilateral_filter(
        p(IN["img"]), sigma_spatial=1.0, channel_axis=-1
    ),
    "filters.joint_bilateral_filter": lambda p: filters.joint_bilateral_filter(
        p(IN["img"]), p(IN["img"][..., :1]), sigma_spatial=1.0, channel_axis=-1
    ),
    "filters.joint_bilateral_upsample": lambda p: filters.joint_bilateral_upsample(
        p(IN["low"]), p(IN["hi"]), 2, channel_axis=-1, confidence=p(IN["low"][..., 0])
    ),
    "filters.detail_preserving_pool": lambda p: filters.detail_preserving_pool(
        p(IN["img"]), 3, channel_axis=-1
    ),
    "crf.paccrf": lambda p: crf.paccrf(p(IN["unary"]), p(IN["feat"]), [_term(p)], num_steps=2),
    "crf.paccrf_backward": lambda p: crf.paccrf_backward(
        p(IN["unary"]), p(IN["unary"]), p(IN["feat"]), [_term(p)], num_steps=2
    ),
    "crf.PacCRF": lambda p: _paccrf_model(p)(p(IN["unary"]), p(IN["feat"])),
    "crf.crf_refine": lambda p: crf.crf_refine(p(IN["probs"]), p(IN["img"]), num_steps=2),
    "crf.create_YXRGB": lambda p: crf.create_YXRGB(p(IN["x"]), yx_scale=2.0, rgb_scale=0.5),
}

#: public names that take no arrays or return none, with the reason
NOT_ARRAY_FUNCTIONS = {
    "filters.default_radius": "a number from a number",
    "filters.default_sigma_color": "a number; takes the array module explicitly (plans, Dask)",
    "filters.compute_dtype": "a dtype from a dtype",
    "filters.plan_joint_bilateral_filter": "returns a FilterPlan (reads shapes and dtypes)",
    "filters.plan_joint_bilateral_upsample": "returns a FilterPlan (reads shapes and dtypes)",
    "filters.plan_detail_preserving_pool": "returns a FilterPlan (reads shapes and dtypes)",
    "crf.create_position_feats": "makes features from a shape; its library is its xp argument",
}


def _public_functions():
    names = []
    for prefix, mod in (("pacnp", pacnp), ("filters", filters), ("crf", crf)):
        for n in mod.__all__:
            obj = getattr(mod, n)
            if inspect.isfunction(obj) or n == "PacCRF":
                names.append(f"{prefix}.{n}")
    return names


def test_calls_cover_the_api():
    missing = set(_public_functions()) - set(CALLS) - set(NOT_ARRAY_FUNCTIONS)
    assert not missing, f"public functions without a contract case: {sorted(missing)}"


def _arrays_of(out):
    """Every array in a result (tuples, named tuples and lists walked; None skipped)."""
    if out is None or isinstance(out, (int, float, str)):
        return []
    if isinstance(out, (tuple, list)):
        return [a for v in out for a in _arrays_of(v)]
    return [out]


def _dtype_name(a):
    return str(a.dtype).rsplit(".", 1)[-1]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_same_library_device_and_dtype_out(lib, name):
    sample = lib.put(IN["x"])
    out = CALLS[name](lib.put)
    arrays = _arrays_of(out)
    assert arrays, f"{name} returned no array"
    for a in arrays:
        assert lib.is_mine(a), f"{name}: {lib.name} in, {type(a).__module__}.{type(a).__name__} out"
        assert lib.device_of(a) == lib.device_of(sample), f"{name}: result on another device"
        assert _dtype_name(a) == "float32", f"{name}: float32 in, {a.dtype} out"


#: one call per family with two array arguments: (name, call(put_first, put_second), names)
MIXED = [
    (
        "pacnp.pacconv2d",
        lambda p, q: pacnp.pacconv2d(p(IN["x"]), q(IN["K"]), p(IN["w"]), **KW),
        ("input", "kernel"),
    ),
    (
        "filters.joint_bilateral_filter",
        lambda p, q: filters.joint_bilateral_filter(p(IN["img"]), q(IN["img"]), channel_axis=-1),
        ("image", "guide"),
    ),
    (
        "crf.crf_refine",
        lambda p, q: crf.crf_refine(p(IN["probs"]), q(IN["img"]), num_steps=1),
        ("probabilities", "image"),
    ),
]


@pytest.mark.parametrize("name, call, names", MIXED, ids=[m[0] for m in MIXED])
def test_mixed_libraries_are_one_type_error(lib, name, call, names):
    if lib.name == "numpy":
        pytest.skip("the pairs are NumPy and another library")
    with pytest.raises(TypeError) as err:
        call(np.asarray, lib.put)
    msg = str(err.value)
    assert name.split(".")[1] in msg and all(n in msg for n in names), msg


def _host(a):
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if hasattr(a, "get"):  # CuPy
        return a.get()
    return np.from_dlpack(a)


def test_results_equal_across_libraries(lib):
    """The library changes nothing but the type: the same numbers come back."""
    for name in (
        "pacnp.pacconv2d_fused",
        "pacnp.pacconv3d_fused_backward",
        "filters.bilateral_filter",
        "crf.crf_refine",
    ):
        ref = _arrays_of(CALLS[name](np.asarray))
        got = _arrays_of(CALLS[name](lib.put))
        for r, g in zip(ref, got):
            np.testing.assert_allclose(_host(g), r, rtol=1e-6, atol=1e-6, err_msg=name)


def test_delegate_reports_the_function_for_bad_arguments():
    with pytest.raises(TypeError, match="bilateral_filter"):
        filters.bilateral_filter(IN["img"], 1.0)  # sigma_spatial is keyword-only
    with pytest.raises(TypeError, match="joint_bilateral_filter: guide"):
        filters.joint_bilateral_filter(IN["img"], object())


#: the filters on volumes and signals (spatial_dims 3 and 1): the same contract as on images
ND_FILTER_CALLS = {
    "bilateral_filter 3-D": lambda p: filters.bilateral_filter(
        p(IN["x"][0]), sigma_spatial=1.0, spatial_dims=3, spacing=(2.0, 1.0, 1.0)
    ),
    "joint_bilateral_upsample 3-D": lambda p: filters.joint_bilateral_upsample(
        p(IN["low"]), p(np.concatenate([IN["hi"], IN["hi"]], axis=2)), 2, spatial_dims=3
    ),
    "detail_preserving_pool 3-D": lambda p: filters.detail_preserving_pool(
        p(IN["x"][0]), 3, spatial_dims=3
    ),
    "joint_bilateral_filter 1-D": lambda p: filters.joint_bilateral_filter(
        p(IN["x"][0, 0, 0]),
        p(IN["g"][0, :, 0].T),
        sigma_spatial=1.0,
        spatial_dims=1,
        guide_channel_axis=-1,
    ),
}


@pytest.mark.parametrize("name", sorted(ND_FILTER_CALLS))
def test_filters_on_volumes_and_signals_keep_the_library(lib, name):
    if lib.name == "numba":
        pytest.skip("the filters take CuPy on a GPU, not numba device arrays")
    ref = ND_FILTER_CALLS[name](np.asarray)
    out = ND_FILTER_CALLS[name](lib.put)
    assert lib.is_mine(out), f"{name}: {lib.name} in, {type(out).__module__} out"
    assert _dtype_name(out) == "float32"
    np.testing.assert_allclose(_host(out), ref, rtol=1e-6, atol=1e-6, err_msg=name)
