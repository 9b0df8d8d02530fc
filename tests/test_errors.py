"""Every mistake gets a ValueError or TypeError that names the function, the argument, what was
seen and what was expected; NaN and inf in the data propagate instead of crashing."""

import importlib.util
import re

import numpy as np
import pytest
import reference as ref
from cases import PUBLIC, Case, make_case

import pacnp

#: a valid call of each public function, with every optional array argument present
BASE = {
    "packernel2d": "packernel2d/inv-full-channelwise",
    "packernel2d_backward": "packernel2d_backward/inv-full-channelwise",
    "pacconv2d": "pacconv2d/dense",
    "pacconv2d_backward": "pacconv2d_backward/dense",
    "pacconv_transpose2d": "pacconv_transpose2d/dense",
    "pacconv_transpose2d_backward": "pacconv_transpose2d_backward/dense",
    "pacpool2d": "pacpool2d/strided",
    "pacpool2d_backward": "pacpool2d_backward/strided",
}
KERNEL_FNS = ("packernel2d", "packernel2d_backward")
CONV_FNS = (
    "pacconv2d",
    "pacconv2d_backward",
    "pacconv_transpose2d",
    "pacconv_transpose2d_backward",
)
POOL_FNS = ("pacpool2d", "pacpool2d_backward")
OP_FNS = CONV_FNS + POOL_FNS
BACKWARD_FNS = tuple(f for f in PUBLIC if f.endswith("_backward"))

#: the float array arguments of each base call (α / λ only where they are arrays)
FLOAT_ARRAYS = {
    "packernel2d": ("guide", "smooth_kernel", "inv_alpha", "inv_lambda"),
    "packernel2d_backward": ("grad_kernel", "guide", "smooth_kernel", "inv_alpha", "inv_lambda"),
    "pacconv2d": ("input", "kernel", "weight", "bias"),
    "pacconv_transpose2d": ("input", "kernel", "weight", "bias"),
    "pacpool2d": ("input", "kernel"),
}
for _f in ("pacconv2d", "pacconv_transpose2d", "pacpool2d"):
    FLOAT_ARRAYS[f"{_f}_backward"] = ("grad_output",) + FLOAT_ARRAYS[_f]
#: every array argument (the mask may also be bool or integer)
ALL_ARRAYS = {
    f: names + (("mask",) if f in KERNEL_FNS else ()) for f, names in FLOAT_ARRAYS.items()
}


def base(fn_name) -> Case:
    return make_case(BASE[fn_name])


def expect_error(exc, case, arg, *seen, **override):
    """``case.call(**override)`` raises ``exc``; its message starts with the function name,
    names ``arg`` as a word, and contains every string in ``seen``. Returns the message."""
    fn = case.fn_name
    pattern = rf"^{re.escape(fn)}: .*(?<!\w){re.escape(arg)}(?!\w)"
    with pytest.raises(exc, match=pattern) as info:
        case.call(**override)
    msg = str(info.value)
    for s in seen:
        assert str(s) in msg, f"{fn}: {s!r} is not in the message {msg!r}"
    return msg


def params(fns, names):
    return [(f, n) for f in fns for n in names[f]]


# =========================================================================== shapes
NDIM_ARGS = {
    f: tuple(n for n in ALL_ARRAYS[f] if n not in ("inv_alpha", "inv_lambda")) for f in ALL_ARRAYS
}


@pytest.mark.parametrize("change", ["one more axis", "one axis less"])
@pytest.mark.parametrize("fn_name, arg", params(PUBLIC, NDIM_ARGS))
def test_wrong_ndim(fn_name, arg, change):
    case = base(fn_name)
    a = case.params[arg]
    bad = np.asarray(a[None] if change == "one more axis" else a[0])
    expect_error(ValueError, case, arg, tuple(bad.shape), **{arg: bad})


@pytest.mark.parametrize("fn_name", OP_FNS)
def test_kernel_with_neither_one_nor_c_channels(fn_name, rng):
    case = base(fn_name)
    K = case.params["kernel"]
    bad = rng.random((K.shape[0], 2) + K.shape[2:])
    msg = expect_error(ValueError, case, "kernel", bad.shape, kernel=bad)
    assert "1 or 3" in msg  # what was expected: 1 or C channels


@pytest.mark.parametrize("fn_name", CONV_FNS)
def test_weight_input_channels_mismatch(fn_name, rng):
    case = base(fn_name)
    w = case.params["weight"]
    bad = (
        rng.standard_normal((w.shape[0], 2) + w.shape[2:])
        if "transpose" not in fn_name
        else rng.standard_normal((2,) + w.shape[1:])
    )
    msg = expect_error(ValueError, case, "weight", bad.shape, weight=bad)
    assert "3 channels" in msg


@pytest.mark.parametrize("fn_name", CONV_FNS)
def test_shared_filters_need_a_single_filter(fn_name):
    case = base(fn_name)
    msg = expect_error(ValueError, case, "weight", case.params["weight"].shape, shared_filters=True)
    assert "(1, 1, kh, kw)" in msg


GEOMETRY_CHANGES = {
    "pacconv2d": [dict(stride=2), dict(padding=0), dict(dilation=2)],
    "pacconv_transpose2d": [dict(padding=0), dict(dilation=2), dict(output_padding=0)],
    "pacpool2d": [dict(stride=1), dict(padding=0), dict(dilation=2), dict(kernel_size=5)],
}


@pytest.mark.parametrize(
    "fn_name, change",
    [(f, ch) for f in OP_FNS for ch in GEOMETRY_CHANGES[f.replace("_backward", "")]],
    ids=lambda v: str(v),
)
def test_kernel_shape_does_not_match_the_output_size(fn_name, change):
    case = base(fn_name)
    ((name, value),) = change.items()
    told = f"kernel_size={value}" if name == "kernel_size" else f"{name}={(value, value)}"
    expect_error(ValueError, case, "kernel", case.params["kernel"].shape, told, **change)


@pytest.mark.parametrize("fn_name", OP_FNS)
def test_kernel_batch_mismatch(fn_name):
    case = base(fn_name)
    bad = case.params["kernel"][:1]
    expect_error(ValueError, case, "kernel", bad.shape, kernel=bad)


# =========================================================================== sizes
@pytest.mark.parametrize("value", [4, (3, 2), 0, -3, (3, 0)])
@pytest.mark.parametrize("fn_name", KERNEL_FNS + POOL_FNS)
def test_even_or_non_positive_kernel_size(fn_name, value):
    msg = expect_error(ValueError, base(fn_name), "kernel_size", repr(value), kernel_size=value)
    assert ("odd" in msg) if all(v > 0 for v in np.atleast_1d(value)) else ("positive" in msg)


@pytest.mark.parametrize("spatial", [(2, 2), (3, 4), (0, 3)])
@pytest.mark.parametrize("fn_name", CONV_FNS)
def test_even_or_empty_weight_kernel(fn_name, spatial, rng):
    case = base(fn_name)
    w = case.params["weight"]
    bad = rng.standard_normal(w.shape[:2] + spatial)
    msg = expect_error(ValueError, case, "weight", bad.shape, weight=bad)
    assert "odd" in msg


@pytest.mark.parametrize("value", [4.0, "3", (3, 3, 3), True, None])
@pytest.mark.parametrize("fn_name", KERNEL_FNS + POOL_FNS)
def test_kernel_size_of_the_wrong_type(fn_name, value):
    expect_error(TypeError, base(fn_name), "kernel_size", repr(value), kernel_size=value)


@pytest.mark.parametrize(
    "arg, value",
    [
        ("stride", 0),
        ("stride", (1, 0)),
        ("stride", -2),
        ("dilation", 0),
        ("dilation", (0, 1)),
        ("padding", -1),
        ("padding", (0, -1)),
    ],
)
@pytest.mark.parametrize("fn_name", PUBLIC)
def test_non_positive_stride_dilation_negative_padding(fn_name, arg, value):
    msg = expect_error(ValueError, base(fn_name), arg, repr(value), **{arg: value})
    assert ("positive" in msg) if arg != "padding" else (">= 0" in msg)


@pytest.mark.parametrize(
    "arg, value", [("stride", 1.5), ("padding", "1"), ("dilation", (1,)), ("stride", False)]
)
@pytest.mark.parametrize("fn_name", PUBLIC)
def test_geometry_argument_of_the_wrong_type(fn_name, arg, value):
    expect_error(TypeError, base(fn_name), arg, repr(value), **{arg: value})


@pytest.mark.parametrize(
    "arg, value",
    [
        ("stride", 2**63),
        ("stride", (1, 2**31)),
        ("dilation", 2**62),
        ("padding", 2**31),
        ("padding", (0, 2**63)),
    ],
)
@pytest.mark.parametrize("fn_name", PUBLIC)
def test_geometry_beyond_int32_is_refused_by_name(fn_name, arg, value):
    """Sizes past 2**31 − 1 are a ValueError naming the argument (not an OverflowError of the
    int64 index maths, nor a MemoryError of a 32 GiB tap table)."""
    msg = expect_error(ValueError, base(fn_name), arg, "2147483647", **{arg: value})
    assert "largest size" in msg


@pytest.mark.parametrize(
    "fn_name, arg, value",
    [
        ("packernel2d", "smooth_kernel_type", "average_99999"),
        ("packernel2d", "kernel_size", 8193),
        ("pacpool2d", "kernel_size", (2**27 + 1, 1)),
    ],
)
def test_window_beyond_the_limit_is_refused_before_allocation(fn_name, arg, value):
    msg = expect_error(ValueError, base(fn_name), arg, "taps", **{arg: value})
    assert "67108864" in msg


@pytest.mark.parametrize("fn_name", OP_FNS)
def test_a_missing_array_is_named(fn_name):
    """None for the kernel (or the weight) is a TypeError naming it, not the fused path or
    pooling taken by surprise."""
    for arg in ("kernel", "weight") if fn_name in CONV_FNS else ("kernel",):
        expect_error(TypeError, base(fn_name), arg, "required", **{arg: None})


@pytest.mark.parametrize("padding, dilation", [(2, 1), ((1, 3), 2), (3, (2, 1))])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_packernel_padding_larger_than_window_radius(fn_name, padding, dilation):
    msg = expect_error(ValueError, base(fn_name), "padding", dilation=dilation, padding=padding)
    assert "dilation*(kernel_size-1)/2" in msg


@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_packernel_output_padding_without_transposed(fn_name):
    expect_error(
        ValueError, base(fn_name), "output_padding", "(1, 1)", "transposed=True", output_padding=1
    )


def transposed_kernel_case(fn_name):
    return make_case(f"{fn_name}/transposed")


@pytest.mark.parametrize("value", [2, (0, 3), -1])
@pytest.mark.parametrize("fn_name", KERNEL_FNS + CONV_FNS[2:])
def test_output_padding_too_large_or_negative(fn_name, value):
    case = transposed_kernel_case(fn_name) if fn_name in KERNEL_FNS else base(fn_name)
    assert case.params["stride"] == 2
    msg = expect_error(ValueError, case, "output_padding", output_padding=value)
    assert ("smaller than stride" in msg) if value != -1 else (">= 0" in msg)


@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_transposed_guide_size_inconsistent(fn_name, rng):
    case = transposed_kernel_case(fn_name)
    g = case.params["guide"]
    bad = rng.standard_normal(g.shape[:2] + (g.shape[2] + 1, g.shape[3]))
    expect_error(
        ValueError, case, "guide", (bad.shape[2], bad.shape[3]), "transposed=True", guide=bad
    )


@pytest.mark.parametrize("fn_name", PUBLIC)
def test_empty_output(fn_name, rng):
    case = base(fn_name)
    first = "guide" if fn_name in KERNEL_FNS else "input"
    small = rng.standard_normal(case.params[first].shape[:2] + (1, 1))
    override = {first: small, "padding": 3 if "transpose" in fn_name else 0}
    if fn_name in KERNEL_FNS:
        override["mask"] = None
    msg = expect_error(ValueError, case, first, "(1, 1)", **override)
    assert "empty" in msg


# =========================================================================== kernel options
@pytest.mark.parametrize(
    "value",
    ["gauss", "inv_1", "inv_1_2_foo", "gaussian_asym", "", "inv_0.5_-1_asym_asym", "INV_0.5_-1"],
)
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_unknown_kernel_type_lists_the_valid_ones(fn_name, value):
    msg = expect_error(ValueError, base(fn_name), "kernel_type", repr(value), kernel_type=value)
    assert "'gaussian'" in msg and "inv_{alpha}_{lambda}[_asym][_fixed]" in msg


@pytest.mark.parametrize("value", ["box", "average", "full", "full_x", "Gaussian", "average_3x3"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_unknown_smooth_kernel_type_lists_the_valid_ones(fn_name, value):
    msg = expect_error(
        ValueError,
        base(fn_name),
        "smooth_kernel_type",
        repr(value),
        smooth_kernel_type=value,
        smooth_kernel=None,
    )
    for valid in ("'none'", "'gaussian'", "'average_N'", "'full_N'"):
        assert valid in msg


@pytest.mark.parametrize("value", ["average_2", "full_4", "average_0"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_even_smoothing_size(fn_name, value):
    msg = expect_error(
        ValueError,
        base(fn_name),
        "smooth_kernel_type",
        repr(value),
        smooth_kernel_type=value,
        smooth_kernel=None,
    )
    assert "odd" in msg


@pytest.mark.parametrize(
    "arg, value",
    [
        ("kernel_type", None),
        ("kernel_type", 1),
        ("smooth_kernel_type", None),
        ("smooth_kernel_type", 3),
    ],
)
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_option_strings_of_the_wrong_type(fn_name, arg, value):
    expect_error(TypeError, base(fn_name), arg, repr(value), "string", **{arg: value})


@pytest.mark.parametrize("kernel_type", ["inv", "inv_asym", "inv_fixed", "inv_asym_fixed"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_inv_without_numbers_needs_alpha_and_lambda(fn_name, kernel_type):
    case = base(fn_name)
    expect_error(
        ValueError, case, "inv_alpha", "inv_0.5_-1", kernel_type=kernel_type, inv_alpha=None
    )
    expect_error(
        ValueError, case, "inv_lambda", "inv_0.5_-1", kernel_type=kernel_type, inv_lambda=None
    )
    # both given: fine
    assert case.call(kernel_type=kernel_type) is not None


@pytest.mark.parametrize("arg", ["inv_alpha", "inv_lambda"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_alpha_lambda_given_for_gaussian(fn_name, arg):
    case = base(fn_name)
    other = "inv_lambda" if arg == "inv_alpha" else "inv_alpha"
    expect_error(ValueError, case, arg, "gaussian", kernel_type="gaussian", **{other: None})
    expect_error(
        ValueError, case, arg, "gaussian", kernel_type="gaussian", **{other: None, arg: 0.5}
    )


@pytest.mark.parametrize(
    "shape, channel_wise",
    [((3,), False), ((2,), True), ((3, 1), True), ((1, 3), True), ((2, 2), False), ((4,), True)],
)
@pytest.mark.parametrize("arg", ["inv_alpha", "inv_lambda"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_alpha_lambda_of_the_wrong_shape(fn_name, arg, shape, channel_wise):
    case = base(fn_name)
    if not channel_wise:
        case = case.with_params(channel_wise=False, inv_alpha=0.5, inv_lambda=-1.0)
        if fn_name.endswith("_backward"):
            case = case.with_params(grad_kernel=case.params["grad_kernel"][:, :1])
    msg = expect_error(ValueError, case, arg, shape, **{arg: np.full(shape, 0.5)})
    assert "(3,)" in msg if channel_wise else "scalar" in msg


@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_full_smoothing_without_smooth_kernel(fn_name):
    expect_error(ValueError, base(fn_name), "smooth_kernel", "full_3", "(3, 3)", smooth_kernel=None)


@pytest.mark.parametrize("shape", [(5, 5), (3, 3, 1, 1), (1, 3, 3), (2, 1, 3, 3), (3, 5)])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_full_smoothing_with_smooth_kernel_of_the_wrong_shape(fn_name, shape):
    expect_error(
        ValueError,
        base(fn_name),
        "smooth_kernel",
        shape,
        "(3, 3)",
        "(1, 1, 3, 3)",
        smooth_kernel=np.ones(shape) / 9,
    )


@pytest.mark.parametrize("smooth", ["none", "gaussian", "average_3"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_smooth_kernel_given_for_other_smoothing(fn_name, smooth):
    expect_error(
        ValueError,
        base(fn_name),
        "smooth_kernel",
        repr(smooth),
        "full_N",
        smooth_kernel_type=smooth,
    )


# =========================================================================== mask
@pytest.mark.parametrize("change", ["width", "channels", "batch", "ndim"])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_mask_shape_mismatch(fn_name, change):
    case = base(fn_name)
    m = case.params["mask"]
    B, _, H, W = m.shape
    bad = {
        "width": m[..., :-1],
        "channels": np.concatenate([m, m], axis=1),
        "batch": m[:1],
        "ndim": m[:, 0],
    }[change]
    expect_error(ValueError, case, "mask", bad.shape, (B, 1, H, W), mask=bad)


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, np.nan, np.inf])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_mask_values_other_than_0_1(fn_name, value):
    case = base(fn_name)
    m = case.params["mask"].copy()
    m[1, 0, 2, 3] = value
    msg = expect_error(ValueError, case, "mask", "0 and 1", mask=m)
    assert str(value) in msg


@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_integer_mask_with_other_values(fn_name):
    case = base(fn_name)
    m = case.params["mask"].astype(np.int64)
    m[0, 0, 1, 1] = 3
    expect_error(ValueError, case, "mask", "3", mask=m)


@pytest.mark.parametrize("dtype", [np.complex128, np.dtype("U1"), object])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_mask_of_a_non_numeric_dtype(fn_name, dtype):
    case = base(fn_name)
    m = case.params["mask"].astype(dtype)
    expect_error(TypeError, case, "mask", str(m.dtype), mask=m)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("fn_name", KERNEL_FNS)
def test_mask_of_any_real_dtype_is_accepted(fn_name, dtype):
    case = base(fn_name)
    expected = case.call()
    got = case.call(mask=case.params["mask"].astype(dtype))
    for a, b in zip(expected, got):
        if a is not None:
            np.testing.assert_array_equal(a, b)


# =========================================================================== dtypes
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.complex128, np.bool_])
@pytest.mark.parametrize("fn_name, arg", params(PUBLIC, FLOAT_ARRAYS))
def test_non_float_dtype(fn_name, arg, dtype):
    case = base(fn_name)
    bad = case.params[arg].astype(dtype)
    msg = expect_error(TypeError, case, arg, bad.dtype.name, **{arg: bad})
    assert "float32 or float64" in msg


@pytest.mark.parametrize("fn_name, arg", params(PUBLIC, FLOAT_ARRAYS))
def test_mixed_float32_float64(fn_name, arg):
    case = base(fn_name)
    primary = "guide" if fn_name in KERNEL_FNS else "input"
    if arg == primary:  # it sets the compute dtype: the other arrays disagree with it
        with pytest.raises(
            TypeError,
            match=rf"^{fn_name}: \w+ has dtype float64 but the "
            rf"computation runs in float32",
        ):
            case.call(**{arg: case.params[arg].astype(np.float32)})
    else:
        expect_error(
            TypeError, case, arg, "float32", "float64", **{arg: case.params[arg].astype(np.float32)}
        )


def test_dtype_error_hint_names_an_existing_module():
    """The dtype error suggests 'pacnp.filters' for integer images: that module must exist."""
    with pytest.raises(TypeError, match="^pacpool2d: input has dtype uint8") as info:
        pacnp.pacpool2d(np.zeros((1, 1, 3, 3), dtype=np.uint8), np.ones((1, 1, 1, 1, 3, 3)), 1)
    for module in re.findall(r"pacnp\.\w+", str(info.value)):
        assert importlib.util.find_spec(module) is not None, (
            f"the message {str(info.value)!r} points to {module}, which does not exist"
        )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int16", "complex64"])
def test_torch_non_float_dtypes_say_what_was_seen_and_expected(dtype):
    import torch

    case = base("pacconv2d")
    bad = torch.zeros(case.params["input"].shape, dtype=getattr(torch, dtype))
    tcase = case.map_arrays(lambda n, a: torch.from_numpy(a)).with_params(input=bad)
    expect_error(TypeError, tcase, "input", dtype, "float32 or float64")


# =========================================================================== bias, grads, needs
@pytest.mark.parametrize("n", [3, 5, 1])
@pytest.mark.parametrize("fn_name", CONV_FNS)
def test_bias_of_the_wrong_length(fn_name, n, rng):
    bad = rng.standard_normal(n)
    expect_error(ValueError, base(fn_name), "bias", (n,), "(4,)", bias=bad)


@pytest.mark.parametrize("fn_name", CONV_FNS)
def test_zero_d_bias_is_rejected_even_with_one_output_channel(fn_name, rng):
    """bias must be 1-D: a 0-d bias is not (C_out,) even when C_out == 1."""
    case = base(fn_name)
    w = case.params["weight"]
    one_out = w[:1] if "transpose" not in fn_name else w[:, :1]
    case = case.with_params(weight=one_out, bias=None)
    if fn_name.endswith("_backward"):
        case = case.with_params(grad_output=case.params["grad_output"][:, :1])
    assert case.call() is not None  # valid without the bias
    expect_error(ValueError, case, "bias", "1-D", "()", bias=np.array(0.5))


@pytest.mark.parametrize("change", ["last axis", "channels", "batch"])
@pytest.mark.parametrize("fn_name", BACKWARD_FNS)
def test_grad_of_the_wrong_shape(fn_name, change):
    case = base(fn_name)
    gname = next(iter(case.params))
    g = case.params[gname]
    bad = {
        "last axis": g[..., :-1],
        "channels": g[:, :1] if g.shape[1] > 1 else np.concatenate([g, g], axis=1),
        "batch": g[:1],
    }[change]
    expect_error(ValueError, case, gname, bad.shape, g.shape, **{gname: bad})


@pytest.mark.parametrize("needs", [(True,), (True,) * 3, (True,) * 5, ()])
@pytest.mark.parametrize("fn_name", BACKWARD_FNS)
def test_needs_of_the_wrong_length(fn_name, needs):
    n = 2 if fn_name.startswith("pacpool") else 4
    expect_error(ValueError, base(fn_name), "needs", repr(needs), f"{n} bools", needs=needs)


@pytest.mark.parametrize("entry", [1, 0, "yes", None])
@pytest.mark.parametrize("fn_name", BACKWARD_FNS)
def test_needs_with_non_bool_entries(fn_name, entry):
    n = 2 if fn_name.startswith("pacpool") else 4
    needs = (True,) * (n - 1) + (entry,)
    expect_error((TypeError, ValueError), base(fn_name), "needs", repr(needs), "bools", needs=needs)


@pytest.mark.parametrize("needs", [True, 1, "all"])
@pytest.mark.parametrize("fn_name", BACKWARD_FNS)
def test_needs_that_is_not_a_tuple(fn_name, needs):
    expect_error((TypeError, ValueError), base(fn_name), "needs", repr(needs), needs=needs)


@pytest.mark.parametrize("fn_name", BACKWARD_FNS)
def test_needs_selects_the_gradients(fn_name):
    case = base(fn_name)
    full = case.call()
    for k in range(len(full)):
        needs = tuple(i == k for i in range(len(full)))
        part = case.call(needs=needs)
        assert all(p is None for i, p in enumerate(part) if i != k)
        np.testing.assert_array_equal(part[k], full[k])


# =========================================================================== flags
FLAGS = {f: ("channel_wise", "normalize_kernel", "transposed") for f in KERNEL_FNS}
FLAGS.update({f: ("shared_filters",) for f in CONV_FNS})


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
@pytest.mark.parametrize("fn_name, flag", params(KERNEL_FNS + CONV_FNS, FLAGS))
def test_non_bool_flags(fn_name, flag, value):
    expect_error(TypeError, base(fn_name), flag, repr(value), "True or False", **{flag: value})


@pytest.mark.parametrize("fn_name, flag", params(KERNEL_FNS + CONV_FNS, FLAGS))
def test_numpy_bools_are_accepted_as_flags(fn_name, flag):
    case = base(fn_name)
    value = case.params.get(flag, False)
    a, b = case.call(**{flag: np.bool_(value)}), case.call(**{flag: value})
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert (x is None and y is None) or np.array_equal(x, y)


# =========================================================================== not arrays, mixing
@pytest.mark.parametrize("fn_name, arg", params(PUBLIC, ALL_ARRAYS))
def test_python_list_instead_of_an_array(fn_name, arg):
    case = base(fn_name)
    expect_error(TypeError, case, arg, "list", **{arg: case.params[arg].tolist()})


@pytest.mark.parametrize("fn_name, arg", params(PUBLIC, ALL_ARRAYS))
def test_mixing_numpy_and_torch(fn_name, arg):
    import torch

    case = base(fn_name)
    one_torch = case.with_params(**{arg: torch.from_numpy(case.params[arg])})
    expect_error(TypeError, one_torch, arg, f"{arg}: torch", "numpy", "different libraries")
    # and the other way round: everything torch but this one
    rest_torch = case.map_arrays(lambda n, a: a if n == arg else torch.from_numpy(a))
    expect_error(TypeError, rest_torch, arg, f"{arg}: numpy", "torch", "different libraries")


# =========================================================================== NaN and inf
def _reads(case, arg, index):
    """Boolean array over the forward output: which outputs read ``case.params[arg][index]``
    (reference run on non-negative data with an indicator at ``index``)."""
    fwd = case.fn_name.replace("_backward", "")
    p = {k: v for k, v in case.params.items() if k not in ("grad_output", "needs")}
    p = {
        k: (np.ones_like(v, dtype=np.float64) if isinstance(v, np.ndarray) else v)
        for k, v in p.items()
    }
    if p.get("bias") is not None:
        p["bias"] = np.zeros_like(p["bias"])
    ind = np.zeros_like(p[arg])
    ind[index] = 1.0
    p[arg] = ind
    out = Case(fwd, p).reference()
    return np.asarray(out) != 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn_name", ["pacconv2d", "pacconv_transpose2d", "pacpool2d"])
def test_nan_inf_in_input_reach_exactly_the_outputs_that_read_it(fn_name, value):
    case = base(fn_name)
    x = case.params["input"].copy()
    index = (1, 2, 1, 1)
    x[index] = value
    out = case.call(input=x)
    reads = _reads(case, "input", index)
    assert reads.any() and (~reads).any()
    if np.isnan(value):
        assert np.isnan(out[reads]).all()
    else:
        assert np.isinf(out[reads]).all()
    assert np.isfinite(out[~reads]).all()
    clean = case.call()
    np.testing.assert_array_equal(out[~reads], clean[~reads])


@pytest.mark.parametrize("fn_name", ["pacconv2d", "pacconv_transpose2d", "pacpool2d"])
def test_nan_in_kernel_reaches_its_output_pixel(fn_name):
    case = base(fn_name)
    K = case.params["kernel"].copy()
    K[1, 0, 1, 1, 2, 2] = np.nan  # the centre tap, valid at output pixel (2, 2) in all three
    out = case.call(kernel=K)
    expected = np.zeros(out.shape, dtype=bool)
    if fn_name == "pacpool2d":
        expected[1, 0, 2, 2] = True  # per-channel K: channel 0 only
    else:
        expected[1, :, 2, 2] = True
    np.testing.assert_array_equal(np.isnan(out), expected)


@pytest.mark.parametrize("arg", ["weight", "bias"])
@pytest.mark.parametrize("fn_name", ["pacconv2d", "pacconv_transpose2d"])
def test_nan_in_weight_or_bias_reaches_its_output_channel(fn_name, arg):
    case = base(fn_name)
    a = case.params[arg].copy()
    o = 2
    if arg == "bias":
        a[o] = np.nan
    elif fn_name == "pacconv2d":
        a[o, 1, 1, 1] = np.nan
    else:
        a[1, o, 1, 1] = np.nan
    out = case.call(**{arg: a})
    if fn_name == "pacconv_transpose2d" and arg == "weight":
        # a transposed tap reaches only the output phase it belongs to (as in torch)
        assert np.isnan(out[:, o]).any()
    else:
        assert np.isnan(out[:, o]).all()
    assert np.isfinite(np.delete(out, o, axis=1)).all()


@pytest.mark.parametrize(
    "fn_name", ["pacconv2d_backward", "pacconv_transpose2d_backward", "pacpool2d_backward"]
)
def test_nan_in_grad_output_propagates_to_every_gradient(fn_name):
    case = base(fn_name)
    g = case.params["grad_output"].copy()
    b, o, y, x = 1, 2, 1, 1
    g[b, o, y, x] = np.nan
    grads = case.call(grad_output=g)
    dx, dK = grads[0], grads[1]
    assert np.isnan(dx[b]).any() and np.isfinite(dx[1 - b]).all()
    assert np.isnan(dK[b, ..., y, x]).any()
    others = np.ones(dK.shape, dtype=bool)
    others[b, ..., y, x] = False
    assert np.isfinite(dK[others]).all()
    if fn_name != "pacpool2d_backward":
        dW, db = grads[2], grads[3]
        assert np.isnan(db[o]) and np.isfinite(np.delete(db, o)).all()
        o_axis = 0 if fn_name == "pacconv2d_backward" else 1
        assert np.isnan(np.take(dW, o, axis=o_axis)).any()
        assert np.isfinite(np.delete(dW, o, axis=o_axis)).all()


def _kernel_taps_touching(H, W, k, p, P):
    """[k, k, H, W] (stride 1, padding p = radius): valid taps that read guide pixel P, and
    all valid taps of the window centred on P."""
    out = np.zeros((k, k, H, W), dtype=bool)
    for i in range(k):
        for j in range(k):
            for y in range(H):
                for x in range(W):
                    r, c = y - p + i, x - p + j
                    if 0 <= r < H and 0 <= c < W:
                        out[i, j, y, x] = (r, c) == P or (y, x) == P
    return out


def test_nan_in_guide_reaches_exactly_the_taps_that_use_it(rng):
    guide = rng.standard_normal((2, 2, 5, 6))
    P = (2, 3)
    guide[1, 0][P] = np.nan
    K, _ = pacnp.packernel2d(guide, 3, padding=1)
    expected = np.zeros(K.shape, dtype=bool)
    expected[1, 0] = _kernel_taps_touching(5, 6, 3, 1, P)
    np.testing.assert_array_equal(np.isnan(K), expected)


def test_inf_in_guide_does_not_crash_and_stays_local(rng):
    guide = rng.standard_normal((2, 2, 5, 6))
    clean, _ = pacnp.packernel2d(guide, 3, padding=1)
    P = (2, 3)
    guide[1, 1][P] = np.inf
    K, _ = pacnp.packernel2d(guide, 3, padding=1)
    touched = np.zeros(K.shape, dtype=bool)
    touched[1, 0] = _kernel_taps_touching(5, 6, 3, 1, P)
    # the centre tap of the window centred on P sees inf - inf
    assert np.isnan(K[1, 0, 1, 1][P])
    np.testing.assert_array_equal(K[~touched], clean[~touched])


@pytest.mark.parametrize("normalize", [False, True])
def test_nan_in_guide_through_the_full_pipeline(rng, normalize):
    """NaN in the guide of an inv kernel with smoothing, mask and normalisation: forward and
    backward run, NaN shows up near it, and windows far from it stay finite."""
    case = base("packernel2d_backward").with_params(normalize_kernel=normalize)
    guide = case.params["guide"].copy()
    guide[0, 1, 0, 0] = np.nan
    fwd = Case("packernel2d", {k: v for k, v in case.params.items() if k != "grad_kernel"})
    K, _ = fwd.call(guide=guide)
    assert np.isnan(K[0, 1, ..., :2, :2]).any()
    assert np.isfinite(K[1]).all() and np.isfinite(K[0, ..., 3:, 3:]).all()
    d_guide, d_alpha, d_lambda, d_smooth = case.call(guide=guide)
    assert np.isnan(d_guide[0]).any() and np.isfinite(d_guide[1]).all()
    assert np.isnan(d_lambda[1]) and np.isnan(d_smooth).any()
    # dK/dα does not depend on the features unless K is normalised
    assert np.isnan(d_alpha[1]) if normalize else np.isfinite(d_alpha).all()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_in_transposed_weight_reach_only_outputs_where_that_tap_is_valid(value, rng):
    """pacconv_transpose2d sums over the *valid* taps only (docs/semantics.md), and with K ≡ 1
    it is torch's conv_transpose2d: a non-finite weight tap leaves the outputs it never touches
    finite, exactly as torch does."""
    import torch

    x = rng.standard_normal((1, 2, 3, 2))
    w = rng.standard_normal((2, 3, 3, 3))
    w[1, 2, 1, 1] = value
    kw = dict(stride=2, padding=1, output_padding=1)
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), **kw
    ).numpy()
    got = pacnp.pacconv_transpose2d(x, np.ones((1, 1, 3, 3) + want.shape[2:]), w, **kw)
    assert (~np.isfinite(want)).any() and np.isfinite(want).any()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-12)


def test_nan_in_transposed_kernel_at_an_invalid_tap_is_ignored():
    case = base("pacconv_transpose2d")
    K = case.params["kernel"].copy()
    K[0, 0, 1, 1, 2, 1] = np.nan  # q = 2 + 1 - 2 + 1 = 1 on the width axis: odd, not a sample
    np.testing.assert_array_equal(case.call(kernel=K), case.call())


def test_nan_in_kernel_reference_agrees_away_from_borders(rng):
    """Interior NaN in K: pacnp and the reference put NaN in the same output pixels."""
    case = base("pacpool2d")
    K = case.params["kernel"].copy()
    K[0, 1, 0, 2, 1, 1] = np.nan
    got = case.call(kernel=K)
    want = ref.pacpool2d(case.params["input"], K, 3, stride=2, padding=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() == 1
