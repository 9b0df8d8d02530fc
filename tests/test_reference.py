"""Tests that make tests/reference.py trustworthy on its own.

* every analytic backward against central finite differences of the reference forward,
  over a deterministic sample of the parameter space;
* identities against torch (K ≡ 1 convolutions, depthwise, average pooling, output sizes)
  and against torch's unfold for a general K;
* independent scalar-loop implementations of the document's formulas on small shapes;
* hand-checkable facts (centre tap, invalid taps, normalisation, masks, smoothing).
"""

import itertools
import os
import sys

import numpy as np
import pytest
import scipy.ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

EPS = 1e-6
RTOL = 1e-6


# ============================================================================ FD machinery


def assert_grads_match_fd(
    forward, inputs, grads, grad_output, rng, *, n_dirs=2, n_coords=10, eps=EPS, rtol=RTOL
):
    """Check ``grads[name] == d/d inputs[name] Σ grad_output · forward(**inputs)`` by central FD.

    For every name in ``grads``: ``n_dirs`` random unit directions (covering every element),
    plus ``n_coords`` single coordinates (all of them for small inputs).  Tolerance:
    ``rtol`` relative to the gradient's norm, plus the rounding floor of the loss / eps."""

    def loss(values):
        return float(np.sum(grad_output * forward(**values)))

    magnitude = float(np.sum(np.abs(grad_output * forward(**inputs))))
    floor = 10 * np.finfo(np.float64).eps * max(magnitude, 1.0) / eps
    checked = 0
    for name, G in grads.items():
        a = np.asarray(inputs[name], dtype=np.float64)
        assert G is not None, name
        G = np.asarray(G)
        assert G.shape == a.shape, (name, G.shape, a.shape)

        def fd(v, name=name, a=a):
            plus, minus = dict(inputs), dict(inputs)
            plus[name] = a + eps * v
            minus[name] = a - eps * v
            return (loss(plus) - loss(minus)) / (2 * eps)

        norm2 = float(np.sqrt(np.sum(G**2)))
        for _ in range(n_dirs):
            v = rng.standard_normal(a.shape)
            v /= np.sqrt(np.sum(v**2))
            analytic, numeric = float(np.sum(G * v)), fd(v)
            assert abs(analytic - numeric) <= rtol * norm2 + floor, (
                f"{name}: directional derivative {analytic!r} vs finite difference {numeric!r}"
            )
            checked += 1
        maxabs = float(np.max(np.abs(G), initial=0.0))
        coords = (
            range(a.size) if a.size <= n_coords else rng.choice(a.size, n_coords, replace=False)
        )
        for flat in coords:
            v = np.zeros(a.size)
            v[flat] = 1.0
            v = v.reshape(a.shape)
            analytic, numeric = float(G.reshape(-1)[flat]), fd(v)
            assert abs(analytic - numeric) <= rtol * maxabs + floor, (
                f"{name}[{np.unravel_index(flat, a.shape)}]: {analytic!r} vs finite difference "
                f"{numeric!r}"
            )
            checked += 1
    assert checked > 0


def test_fd_checker_detects_a_wrong_gradient():
    """The checker itself must reject a gradient that is slightly off."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    K = rng.standard_normal((2, 1, 3, 3, 6, 6))
    g = rng.standard_normal((2, 3, 6, 6))
    dx, dK = ref.pacpool2d_backward(g, x, K, 3, padding=1)
    fwd = lambda x, K: ref.pacpool2d(x, K, 3, padding=1)  # noqa: E731
    assert_grads_match_fd(fwd, {"x": x, "K": K}, {"x": dx, "K": dK}, g, rng)
    bad = dx.copy()
    bad[1, 2, 3, 4] *= 1.0 + 1e-4
    with pytest.raises(AssertionError):
        assert_grads_match_fd(fwd, {"x": x, "K": K}, {"x": bad}, g, rng, n_dirs=0, n_coords=10**6)
    with pytest.raises(AssertionError):
        assert_grads_match_fd(fwd, {"x": x, "K": K}, {"x": dx * (1 + 1e-4)}, g, rng, n_coords=0)


# ============================================================================ packernel2d grid

KERNEL_SIZES = [1, 3, 5, (3, 5), (5, 1)]
STRIDES = [1, 2, 3, (2, 1)]
DILATIONS = [1, 2, (1, 2)]
KERNEL_TYPES = [
    "gaussian",
    "inv_0.5_-1",
    "inv_1_2_asym",
    "inv_0.25_1.5_fixed",
    "inv_0.5_-1_fixed_asym",
    "inv_-0.5_0.5_asym",  # negative alpha: only used without normalisation
]
SMOOTHINGS = ["none", "gaussian", "average_3", "average_5", "full_3", "full_5"]
PARAM_MODES = ["string", "alpha", "lambda", "both"]


def _radius(k, d):
    return d * (k - 1) // 2


def _make_packernel_cases(n_cases, seed):
    """A deterministic sample of the packernel2d parameter space (every value of every factor
    appears; see test_packernel_grid_covers_every_value)."""
    rng = np.random.default_rng(seed)
    cases = []
    for n in range(n_cases):
        # Cycle the small factors so every value shows up, randomise the rest.
        k = ref._pair(KERNEL_SIZES[n % len(KERNEL_SIZES)])
        s = ref._pair(STRIDES[(n // 2) % len(STRIDES)])
        d = ref._pair(DILATIONS[rng.integers(len(DILATIONS))])
        transposed = bool(n % 3 == 2)
        kt = KERNEL_TYPES[n % len(KERNEL_TYPES)]
        smoothing = SMOOTHINGS[(n // 3) % len(SMOOTHINGS)]
        channel_wise = bool(rng.integers(2))
        normalize = bool(n % 4 in (1, 2)) and not kt.startswith("inv_-")
        use_mask = bool((n // 4) % 2)
        r = tuple(_radius(k[a], d[a]) for a in range(2))
        p = tuple(int(rng.integers(0, r[a] + 1)) for a in range(2))
        Cg = int(rng.integers(1, 4))
        B = 2
        if transposed:
            op = tuple(int(rng.integers(0, max(s[a], d[a]))) for a in range(2))
            h_in = tuple(int(rng.integers(3, 6)) for _ in range(2))
            size = tuple((h_in[a] - 1) * s[a] - 2 * p[a] + 2 * r[a] + op[a] + 1 for a in range(2))
        else:
            op = (0, 0)
            size = tuple(max(int(rng.integers(7, 10)), 2 * r[a] - 2 * p[a] + 1) for a in range(2))
        guide = 0.8 * rng.standard_normal((B, Cg) + size)
        kwargs = dict(
            stride=s,
            padding=p,
            output_padding=op,
            dilation=d,
            kernel_type=kt,
            smooth_kernel_type=smoothing,
            channel_wise=channel_wise,
            normalize_kernel=normalize,
            transposed=transposed,
        )
        if smoothing.startswith("full_"):
            N = int(smoothing.split("_")[1])
            sk = rng.random((N, N)) / N
            kwargs["smooth_kernel"] = sk if n % 2 else sk.reshape(1, 1, N, N)
        if use_mask:
            mask = (rng.random((B, 1) + size) < 0.7).astype(np.float64)
            if n % 3 == 0:
                mask[:, :, : size[0] // 2 + 1, : size[1] // 2 + 1] = 0  # windows with n_in == 0
            kwargs["mask"] = mask
        if kt.startswith("inv"):
            parsed = ref._parse_kernel_type(kt)
            mode = PARAM_MODES[rng.integers(len(PARAM_MODES))]
            as_array = channel_wise and bool(rng.integers(2))
            if mode in ("alpha", "both"):
                a = parsed["alpha"] + rng.uniform(0.0, 0.3, Cg if as_array else None)
                kwargs["inv_alpha"] = a if as_array else float(a)
            if mode in ("lambda", "both"):
                lam = parsed["lambda"] + rng.uniform(-0.2, 0.2, Cg if as_array else None)
                kwargs["inv_lambda"] = lam if as_array else float(lam)
        cases.append(
            pytest.param(
                k,
                guide,
                kwargs,
                seed + n,
                id=f"pk{n}-k{k}-s{s}-d{d}-{kt}-{smoothing}"
                f"-cw{int(channel_wise)}-n{int(normalize)}-m{int(use_mask)}"
                f"-t{int(transposed)}",
            )
        )
    return cases


PACKERNEL_CASES = _make_packernel_cases(60, seed=1234)


def test_packernel_grid_covers_every_value():
    seen = {
        key: set()
        for key in (
            "k",
            "s",
            "d",
            "p>0",
            "kt",
            "sm",
            "cw",
            "norm",
            "mask",
            "tr",
            "alpha",
            "lambda",
            "op>0",
        )
    }
    for case in PACKERNEL_CASES:
        k, guide, kw, _ = case.values
        seen["k"].update(k)
        seen["s"].update(kw["stride"])
        seen["d"].update(kw["dilation"])
        seen["p>0"].add(max(kw["padding"]) > 0)
        seen["kt"].add(kw["kernel_type"])
        seen["sm"].add(kw["smooth_kernel_type"])
        seen["cw"].add(kw["channel_wise"])
        seen["norm"].add(kw["normalize_kernel"])
        seen["mask"].add("mask" in kw)
        seen["tr"].add(kw["transposed"])
        seen["alpha"].add("inv_alpha" in kw)
        seen["lambda"].add("inv_lambda" in kw)
        seen["op>0"].add(max(kw["output_padding"]) > 0)
    assert seen["k"] == {1, 3, 5}
    assert seen["s"] == {1, 2, 3}
    assert seen["d"] == {1, 2}
    assert set(seen["kt"]) == set(KERNEL_TYPES)
    assert set(seen["sm"]) == set(SMOOTHINGS)
    for key in ("p>0", "cw", "norm", "mask", "tr", "alpha", "lambda", "op>0"):
        assert seen[key] == {False, True}, key


@pytest.mark.parametrize("k, guide, kwargs, seed", PACKERNEL_CASES)
def test_packernel2d_backward_matches_fd(k, guide, kwargs, seed):
    rng = np.random.default_rng(seed)
    K, out_mask = ref.packernel2d(guide, k, **kwargs)
    assert np.all(np.isfinite(K))
    gK = rng.standard_normal(K.shape)
    d_guide, d_alpha, d_lambda, d_smooth = ref.packernel2d_backward(gK, guide, k, **kwargs)

    kt = ref._parse_kernel_type(kwargs["kernel_type"])
    differentiable = kt["kind"] == "inv" and not kt["fixed"]
    inputs = {"guide": guide}
    grads = {"guide": d_guide}
    if differentiable and "inv_alpha" in kwargs:
        assert d_alpha is not None and d_alpha.shape == np.shape(kwargs["inv_alpha"])
        inputs["inv_alpha"], grads["inv_alpha"] = np.asarray(kwargs["inv_alpha"], float), d_alpha
    else:
        assert d_alpha is None
    if differentiable and "inv_lambda" in kwargs:
        assert d_lambda is not None and d_lambda.shape == np.shape(kwargs["inv_lambda"])
        inputs["inv_lambda"], grads["inv_lambda"] = (
            np.asarray(kwargs["inv_lambda"], float),
            d_lambda,
        )
    else:
        assert d_lambda is None
    if kwargs["smooth_kernel_type"].startswith("full_"):
        assert d_smooth is not None and d_smooth.shape == np.shape(kwargs["smooth_kernel"])
        inputs["smooth_kernel"], grads["smooth_kernel"] = kwargs["smooth_kernel"], d_smooth
    else:
        assert d_smooth is None

    fixed = {key: val for key, val in kwargs.items() if key not in inputs}

    def forward(**values):
        values = dict(values)
        g = values.pop("guide")
        return ref.packernel2d(g, k, **fixed, **values)[0]

    assert_grads_match_fd(forward, inputs, grads, gK, rng)


# ============================================================================ conv / pool grids


def _make_conv_cases(n_cases, seed, transposed):
    rng = np.random.default_rng(seed)
    cases = []
    for n in range(n_cases):
        k = ref._pair(KERNEL_SIZES[n % len(KERNEL_SIZES)])
        s = ref._pair(STRIDES[(n // 2) % len(STRIDES)])
        d = ref._pair(DILATIONS[n % len(DILATIONS)])
        shared = bool(n % 4 == 3)
        kernel_channels = bool(n % 2)  # K with Cin channels or 1
        with_bias = bool((n // 3) % 2)
        B, Cin, Cout = 2, int(rng.integers(1, 4)), int(rng.integers(1, 4))
        p = tuple(int(rng.integers(0, _radius(k[a], d[a]) + 2)) for a in range(2))
        if transposed:
            op = tuple(int(rng.integers(0, max(s[a], d[a]))) for a in range(2))
            size = tuple(int(rng.integers(3, 6)) for _ in range(2))
            out = tuple(
                (size[a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 for a in range(2)
            )
            if min(out) < 1:
                p = (0, 0)
                out = tuple((size[a] - 1) * s[a] + d[a] * (k[a] - 1) + op[a] + 1 for a in range(2))
            kwargs = dict(stride=s, padding=p, output_padding=op, dilation=d, shared_filters=shared)
            w_shape = (1, 1) + k if shared else (Cin, Cout) + k
        else:
            size = tuple(int(rng.integers(max(6, d[a] * (k[a] - 1) + 1), 10)) for a in range(2))
            out = tuple((size[a] + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(2))
            kwargs = dict(stride=s, padding=p, dilation=d, shared_filters=shared)
            w_shape = (1, 1) + k if shared else (Cout, Cin) + k
        x = rng.standard_normal((B, Cin) + size)
        K = rng.standard_normal((B, Cin if kernel_channels else 1) + k + out)
        W = rng.standard_normal(w_shape)
        bias = rng.standard_normal(Cin if shared else Cout) if with_bias else None
        cases.append(
            pytest.param(x, K, W, bias, kwargs, id=f"c{n}-k{k}-s{s}-d{d}-p{p}-sh{int(shared)}")
        )
    return cases


@pytest.mark.parametrize("x, K, W, bias, kwargs", _make_conv_cases(16, seed=7, transposed=False))
def test_pacconv2d_backward_matches_fd(x, K, W, bias, kwargs):
    rng = np.random.default_rng(11)
    out = ref.pacconv2d(x, K, W, bias, **kwargs)
    g = rng.standard_normal(out.shape)
    dx, dK, dW, db = ref.pacconv2d_backward(g, x, K, W, bias, **kwargs)
    inputs = {"x": x, "K": K, "W": W}
    grads = {"x": dx, "K": dK, "W": dW}
    if bias is None:
        assert db is None
        inputs["b"] = None
    else:
        inputs["b"], grads["b"] = bias, db
    fwd = lambda x, K, W, b: ref.pacconv2d(x, K, W, b, **kwargs)  # noqa: E731
    assert_grads_match_fd(fwd, inputs, grads, g, rng)


@pytest.mark.parametrize("x, K, W, bias, kwargs", _make_conv_cases(16, seed=8, transposed=True))
def test_pacconv_transpose2d_backward_matches_fd(x, K, W, bias, kwargs):
    rng = np.random.default_rng(12)
    out = ref.pacconv_transpose2d(x, K, W, bias, **kwargs)
    g = rng.standard_normal(out.shape)
    dx, dK, dW, db = ref.pacconv_transpose2d_backward(g, x, K, W, bias, **kwargs)
    inputs = {"x": x, "K": K, "W": W}
    grads = {"x": dx, "K": dK, "W": dW}
    if bias is None:
        assert db is None
        inputs["b"] = None
    else:
        inputs["b"], grads["b"] = bias, db
    fwd = lambda x, K, W, b: ref.pacconv_transpose2d(x, K, W, b, **kwargs)  # noqa: E731
    assert_grads_match_fd(fwd, inputs, grads, g, rng)


@pytest.mark.parametrize("n", range(10))
def test_pacpool2d_backward_matches_fd(n):
    rng = np.random.default_rng(100 + n)
    k = ref._pair(KERNEL_SIZES[n % len(KERNEL_SIZES)])
    s = ref._pair(STRIDES[n % len(STRIDES)])
    d = ref._pair(DILATIONS[n % len(DILATIONS)])
    p = tuple(int(rng.integers(0, _radius(k[a], d[a]) + 1)) for a in range(2))
    C = 3
    size = tuple(int(rng.integers(max(6, d[a] * (k[a] - 1) + 1), 10)) for a in range(2))
    out = tuple((size[a] + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(2))
    x = rng.standard_normal((2, C) + size)
    K = rng.standard_normal((2, C if n % 2 else 1) + k + out)
    kwargs = dict(stride=s, padding=p, dilation=d)
    y = ref.pacpool2d(x, K, k, **kwargs)
    g = rng.standard_normal(y.shape)
    dx, dK = ref.pacpool2d_backward(g, x, K, k, **kwargs)
    fwd = lambda x, K: ref.pacpool2d(x, K, k, **kwargs)  # noqa: E731
    assert_grads_match_fd(fwd, {"x": x, "K": K}, {"x": dx, "K": dK}, g, rng)


def test_chained_layer_backward_matches_fd():
    """packernel2d -> pacconv2d, gradient to the guide through the composed backward functions."""
    rng = np.random.default_rng(5)
    guide = rng.standard_normal((2, 3, 8, 8))
    x = rng.standard_normal((2, 2, 8, 8))
    W = rng.standard_normal((4, 2, 3, 3))
    kw = dict(stride=2, padding=1, dilation=1)
    pk = dict(
        kernel_type="inv_0.5_-1_asym",
        smooth_kernel_type="gaussian",
        normalize_kernel=True,
        inv_alpha=0.7,
        **kw,
    )

    def fwd(guide):
        K, _ = ref.packernel2d(guide, 3, **pk)
        return ref.pacconv2d(x, K, W, **kw)

    out = fwd(guide)
    g = rng.standard_normal(out.shape)
    K, _ = ref.packernel2d(guide, 3, **pk)
    _, dK, _, _ = ref.pacconv2d_backward(g, x, K, W, **kw)
    d_guide = ref.packernel2d_backward(dK, guide, 3, **pk)[0]
    assert_grads_match_fd(fwd, {"guide": guide}, {"guide": d_guide}, g, rng, n_coords=20)


# ============================================================================ torch identities


def _torch():
    import torch  # the test extras install torch (pinned CPU build)

    return torch


TORCH_CONV_CASES = [
    # k, stride, padding, dilation, bias
    (3, 1, 0, 1, True),
    (3, 2, 1, 1, False),
    (5, 3, 2, 2, True),
    ((3, 5), (2, 1), (1, 0), (2, 1), True),
    (1, 2, 0, 1, True),
    (3, 1, 3, 2, False),  # padding larger than the radius is fine for the convolution itself
]


@pytest.mark.parametrize("k, s, p, d, with_bias", TORCH_CONV_CASES)
def test_pacconv2d_with_unit_kernel_is_conv2d(k, s, p, d, with_bias):
    torch = _torch()
    rng = np.random.default_rng(21)
    kh, kw = ref._pair(k)
    x = rng.standard_normal((2, 3, 9, 8))
    W = rng.standard_normal((4, 3, kh, kw))
    b = rng.standard_normal(4) if with_bias else None
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(W),
        None if b is None else torch.from_numpy(b),
        stride=s,
        padding=p,
        dilation=d,
    ).numpy()
    K = np.ones((2, 1, kh, kw) + expected.shape[2:])
    out = ref.pacconv2d(x, K, W, b, stride=s, padding=p, dilation=d)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # Same with a per-channel unit kernel.
    K3 = np.ones((2, 3, kh, kw) + expected.shape[2:])
    np.testing.assert_allclose(
        ref.pacconv2d(x, K3, W, b, stride=s, padding=p, dilation=d),
        expected,
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("k, s, p, d, with_bias", TORCH_CONV_CASES)
def test_pacconv2d_general_kernel_matches_torch_unfold(k, s, p, d, with_bias):
    """A general K against an independent formulation: torch unfold (im2col) · K, then the
    weights."""
    torch = _torch()
    rng = np.random.default_rng(22)
    kh, kw = ref._pair(k)
    B, Cin, Cout = 2, 3, 4
    x = rng.standard_normal((B, Cin, 9, 8))
    W = rng.standard_normal((Cout, Cin, kh, kw))
    b = rng.standard_normal(Cout) if with_bias else None
    cols = torch.nn.functional.unfold(
        torch.from_numpy(x), (kh, kw), dilation=d, padding=p, stride=s
    )
    Ho, Wo = (
        ref._conv_axis(9, kh, ref._pair(s)[0], ref._pair(p)[0], ref._pair(d)[0])[0],
        ref._conv_axis(8, kw, ref._pair(s)[1], ref._pair(p)[1], ref._pair(d)[1])[0],
    )
    cols = cols.numpy().reshape(B, Cin, kh, kw, Ho, Wo)
    for kc in (1, Cin):
        K = rng.standard_normal((B, kc, kh, kw, Ho, Wo))
        expected = np.einsum("bcijyx,ocij->boyx", cols * K, W) + (
            0 if b is None else b[None, :, None, None]
        )
        out = ref.pacconv2d(x, K, W, b, stride=s, padding=p, dilation=d)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        # shared filters: each channel with the single filter
        W1 = rng.standard_normal((1, 1, kh, kw))
        expected = np.einsum("bcijyx,ij->bcyx", cols * K, W1[0, 0])
        np.testing.assert_allclose(
            ref.pacconv2d(x, K, W1, stride=s, padding=p, dilation=d, shared_filters=True),
            expected,
            rtol=1e-12,
            atol=1e-12,
        )
        # pacpool2d is the same sum without weights
        expected = np.einsum("bcijyx->bcyx", cols * K)
        np.testing.assert_allclose(
            ref.pacpool2d(x, K, k, stride=s, padding=p, dilation=d),
            expected,
            rtol=1e-12,
            atol=1e-12,
        )


TORCH_CONVT_CASES = [
    # k, stride, padding, output_padding, dilation, bias
    (3, 1, 0, 0, 1, True),
    (3, 2, 1, 1, 1, False),
    (5, 2, 2, 1, 1, True),
    (3, 3, 1, 2, 1, True),
    (3, 2, 1, 1, 2, True),
    (3, 1, 1, 1, 2, False),  # output_padding < dilation
    ((3, 5), (2, 3), (1, 2), (1, 0), (1, 2), True),
    (1, 2, 0, 1, 1, True),
]


@pytest.mark.parametrize("k, s, p, op, d, with_bias", TORCH_CONVT_CASES)
def test_pacconv_transpose2d_with_unit_kernel_is_conv_transpose2d(k, s, p, op, d, with_bias):
    torch = _torch()
    rng = np.random.default_rng(23)
    kh, kw = ref._pair(k)
    x = rng.standard_normal((2, 3, 5, 4))
    W = rng.standard_normal((3, 2, kh, kw))
    b = rng.standard_normal(2) if with_bias else None
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x),
        torch.from_numpy(W),
        None if b is None else torch.from_numpy(b),
        stride=s,
        padding=p,
        output_padding=op,
        dilation=d,
    ).numpy()
    for kc in (1, 3):
        K = np.ones((2, kc, kh, kw) + expected.shape[2:])
        out = ref.pacconv_transpose2d(
            x, K, W, b, stride=s, padding=p, output_padding=op, dilation=d
        )
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # The transposed packernel2d of a guide at the output resolution has the output's size,
    # and its validity pattern is exactly where conv_transpose2d has a contribution.
    ph, pw = ref._pair(p)
    rh, rw = (ref._pair(d)[0] * (kh - 1)) // 2, (ref._pair(d)[1] * (kw - 1)) // 2
    if ph <= rh and pw <= rw:
        guide = rng.standard_normal((2, 1) + expected.shape[2:])
        Kg, _ = ref.packernel2d(
            guide,
            k,
            stride=s,
            padding=p,
            output_padding=op,
            dilation=d,
            kernel_type="inv_1_1",
            transposed=True,
        )
        assert Kg.shape[-2:] == expected.shape[2:]
        ones_in = torch.ones((1, 1, 5, 4))
        for i, j in itertools.product(range(kh), range(kw)):
            delta = torch.zeros((1, 1, kh, kw))
            delta[0, 0, kh - 1 - i, kw - 1 - j] = 1.0  # conv_transpose2d applies W flipped
            hit = torch.nn.functional.conv_transpose2d(
                ones_in, delta, stride=s, padding=p, output_padding=op, dilation=d
            ).numpy()[0, 0]
            np.testing.assert_array_equal(Kg[0, 0, i, j] != 0, hit != 0)


@pytest.mark.parametrize(
    "k, s, p, d", [(3, 1, 1, 1), (3, 2, 0, 1), (5, 2, 1, 2), ((3, 1), (1, 2), (1, 0), 1)]
)
def test_shared_filters_with_unit_kernel_is_depthwise_conv2d(k, s, p, d):
    torch = _torch()
    rng = np.random.default_rng(24)
    kh, kw = ref._pair(k)
    C = 3
    x = rng.standard_normal((2, C, 8, 9))
    W1 = rng.standard_normal((1, 1, kh, kw))
    b = rng.standard_normal(C)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(np.repeat(W1, C, axis=0)),
        torch.from_numpy(b),
        stride=s,
        padding=p,
        dilation=d,
        groups=C,
    ).numpy()
    K = np.ones((2, 1, kh, kw) + expected.shape[2:])
    out = ref.pacconv2d(x, K, W1, b, stride=s, padding=p, dilation=d, shared_filters=True)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "k, s, p", [(3, 1, 1), (3, 2, 1), (3, 2, 0), (5, 1, 2), (5, 3, 1), ((3, 5), (1, 2), (1, 2))]
)
@pytest.mark.parametrize("channel_wise", [False, True])
def test_normalised_constant_guide_pool_is_avg_pool2d(k, s, p, channel_wise):
    torch = _torch()
    rng = np.random.default_rng(25)
    x = rng.standard_normal((2, 3, 9, 8))
    guide = np.full((2, 3, 9, 8), 0.37)
    K, mask_out = ref.packernel2d(
        guide, k, stride=s, padding=p, normalize_kernel=True, channel_wise=channel_wise
    )
    assert mask_out is None
    expected = torch.nn.functional.avg_pool2d(
        torch.from_numpy(x), k, stride=s, padding=p, count_include_pad=False
    ).numpy()
    assert K.shape[-2:] == expected.shape[2:]
    out = ref.pacpool2d(x, K, k, stride=s, padding=p)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "H, W, k, s, p, d",
    [
        (9, 8, 3, 2, 1, 1),
        (7, 9, 5, 3, 2, 1),
        (9, 9, 5, 2, 4, 2),
        (8, 7, (3, 5), (3, 1), (0, 2), (2, 1)),
        (7, 7, 1, 3, 0, 1),
    ],
)
def test_packernel2d_output_size_is_conv2d_output_size(H, W, k, s, p, d):
    torch = _torch()
    kh, kw = ref._pair(k)
    expected = torch.nn.functional.conv2d(
        torch.zeros((1, 1, H, W)), torch.zeros((1, 1, kh, kw)), stride=s, padding=p, dilation=d
    ).shape[2:]
    K, _ = ref.packernel2d(np.zeros((1, 2, H, W)), k, stride=s, padding=p, dilation=d)
    assert K.shape == (1, 1, kh, kw) + tuple(expected)
    assert (
        ref.pacpool2d(np.zeros((1, 2, H, W)), K, k, stride=s, padding=p, dilation=d).shape[2:]
        == expected
    )


# ====================================================================== independent scalar loops


def _brute_packernel(
    guide, k, s, p, op, d, kernel_type, S, alpha, lam, channel_wise, normalize, mask, transposed
):
    """The document's packernel2d equations as scalar loops (one axis at a time, no vectorising).
    ``S`` is the smoothing kernel or None; ``alpha``/``lam`` are per channel arrays (length Cg)."""
    B, Cg, H, W = guide.shape
    (kh, kw), (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (ref._pair(v) for v in (k, s, p, op, d))
    asym = "asym" in kernel_type.split("_")
    if S is None:
        F = guide
    else:
        F = np.stack(
            [
                np.stack(
                    [
                        scipy.ndimage.correlate(guide[b, c], S, mode="constant", cval=0.0)
                        for c in range(Cg)
                    ]
                )
                for b in range(B)
            ]
        )

    def axis(n, kk, ss, pp, oo, dd):
        r = dd * (kk - 1) // 2
        if not transposed:
            n_out = (n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
            tap = lambda y, i: (y * ss - pp + i * dd, 0 <= y * ss - pp + i * dd < n)  # noqa: E731
            centre = lambda y: y * ss - pp + r  # noqa: E731
        else:
            n_in = (n - 1 + 2 * pp - 2 * r - oo) // ss + 1

            def tap(y, i):
                q = y + pp - 2 * r + i * dd
                return y - r + i * dd, q % ss == 0 and 0 <= q // ss < n_in

            n_out = n
            centre = lambda y: y  # noqa: E731
        return n_out, tap, centre

    Ho, tap_y, cen_y = axis(H, kh, sh, ph, oph, dh)
    Wo, tap_x, cen_x = axis(W, kw, sw, pw, opw, dw)
    Ck = Cg if channel_wise else 1
    K = np.zeros((B, Ck, kh, kw, Ho, Wo))
    out_mask = np.zeros((B, 1, Ho, Wo))
    for b, y, x in itertools.product(range(B), range(Ho), range(Wo)):
        cy, cx = cen_y(y), cen_x(x)
        raw = np.zeros((Ck, kh, kw))
        m = np.zeros((kh, kw))
        n_valid = 0
        for i, j in itertools.product(range(kh), range(kw)):
            Py, vy = tap_y(y, i)
            Px, vx = tap_x(x, j)
            if not (vy and vx):
                continue
            n_valid += 1
            m[i, j] = 1.0 if mask is None else mask[b, 0, Py, Px]
            delta = [guide[b, c, Py, Px] - F[b, c, cy, cx] for c in range(Cg)]
            if asym:
                delta = [max(v, 0.0) for v in delta]
            if kernel_type == "gaussian":
                vals = (
                    [np.exp(-0.5 * v * v) for v in delta]
                    if channel_wise
                    else [np.exp(-0.5 * sum(v * v for v in delta))]
                )
            else:
                vals = (
                    [alpha[c] + (delta[c] ** 2 + 1e-4) ** (lam[c] / 2) for c in range(Cg)]
                    if channel_wise
                    else [alpha[0] + (sum(v * v for v in delta) + 1e-4) ** (lam[0] / 2)]
                )
            raw[:, i, j] = vals
        Km = raw * m
        n_in = m.sum()
        out_mask[b, 0, y, x] = float(n_in > 0)
        for c in range(Ck):
            if normalize:
                total = Km[c].sum()
                K[b, c, :, :, y, x] = Km[c] / total if total != 0 else 0.0
            elif mask is not None:
                K[b, c, :, :, y, x] = Km[c] * n_valid / n_in if n_in > 0 else 0.0
            else:
                K[b, c, :, :, y, x] = raw[c]
    return K, (out_mask if mask is not None else None)


# every transposed case of the grid (n % 3 == 2) and every fifth of the others
@pytest.mark.parametrize(
    "n", sorted(set(range(0, len(PACKERNEL_CASES), 5)) | set(range(2, len(PACKERNEL_CASES), 3)))
)
def test_packernel2d_matches_scalar_loops(n):
    case = PACKERNEL_CASES[n]
    k, guide, kwargs, _ = case.values
    Cg = guide.shape[1]
    kt = ref._parse_kernel_type(kwargs["kernel_type"])
    alpha = np.broadcast_to(kwargs.get("inv_alpha", kt["alpha"]), (Cg,))
    lam = np.broadcast_to(kwargs.get("inv_lambda", kt["lambda"]), (Cg,))
    st = kwargs["smooth_kernel_type"]
    S = {
        "none": None,
        "gaussian": np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]),
        "average_3": np.full((3, 3), 1 / 9),
        "average_5": np.full((5, 5), 1 / 25),
    }.get(st)
    if st.startswith("full_"):
        S = np.asarray(kwargs["smooth_kernel"]).reshape(int(st[5:]), int(st[5:]))
    expected, exp_mask = _brute_packernel(
        guide,
        k,
        kwargs["stride"],
        kwargs["padding"],
        kwargs["output_padding"],
        kwargs["dilation"],
        kwargs["kernel_type"].replace("_fixed", ""),
        S,
        alpha,
        lam,
        kwargs["channel_wise"],
        kwargs["normalize_kernel"],
        kwargs.get("mask"),
        kwargs["transposed"],
    )
    K, out_mask = ref.packernel2d(guide, k, **kwargs)
    np.testing.assert_allclose(K, expected, rtol=1e-12, atol=1e-14)
    if exp_mask is None:
        assert out_mask is None
    else:
        np.testing.assert_array_equal(out_mask, exp_mask)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "k, s, p, op, d", [(3, 2, 1, 1, 1), (5, 3, 0, 2, 2), ((3, 1), (1, 2), (2, 0), (0, 1), 1)]
)
def test_pacconv_transpose2d_matches_scalar_loops(k, s, p, op, d, shared):
    """General K against the document's transposed formula, looped output pixel by output pixel."""
    rng = np.random.default_rng(26)
    (kh, kw), (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (ref._pair(v) for v in (k, s, p, op, d))
    B, Cin, Cout, Hi, Wi = 2, 2, 3, 4, 3
    Ho = (Hi - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    Wo = (Wi - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    x = rng.standard_normal((B, Cin, Hi, Wi))
    K = rng.standard_normal((B, Cin, kh, kw, Ho, Wo))
    W = rng.standard_normal((1, 1, kh, kw) if shared else (Cin, Cout, kh, kw))
    bias = rng.standard_normal(Cin if shared else Cout)
    n_out = Cin if shared else Cout
    expected = np.zeros((B, n_out, Ho, Wo))
    for b, o, Y, X in itertools.product(range(B), range(n_out), range(Ho), range(Wo)):
        acc = bias[o]
        for c, i, j in itertools.product(range(Cin), range(kh), range(kw)):
            if shared and c != o:
                continue
            qy = Y + ph - dh * (kh - 1) + i * dh
            qx = X + pw - dw * (kw - 1) + j * dw
            if qy % sh or qx % sw or not (0 <= qy // sh < Hi and 0 <= qx // sw < Wi):
                continue
            w = W[0, 0, kh - 1 - i, kw - 1 - j] if shared else W[c, o, kh - 1 - i, kw - 1 - j]
            acc += K[b, c, i, j, Y, X] * w * x[b, c, qy // sh, qx // sw]
        expected[b, o, Y, X] = acc
    out = ref.pacconv_transpose2d(
        x, K, W, bias, stride=s, padding=p, output_padding=op, dilation=d, shared_filters=shared
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


# ============================================================================ hand-checkable facts


def test_gaussian_centre_tap_is_one_without_smoothing():
    rng = np.random.default_rng(30)
    guide = rng.standard_normal((2, 3, 9, 8))
    for k, s, p, d in [(3, 1, 1, 1), (5, 2, 1, 2), ((3, 5), (2, 3), (1, 2), 1)]:
        kh, kw = ref._pair(k)
        for cw in (False, True):
            K, _ = ref.packernel2d(guide, k, stride=s, padding=p, dilation=d, channel_wise=cw)
            np.testing.assert_array_equal(K[:, :, kh // 2, kw // 2], 1.0)
            assert np.all(K <= 1.0) and np.all(K >= 0.0)
    # transposed: the centre tap is 1 wherever it is valid (stride 1 -> everywhere)
    K, _ = ref.packernel2d(rng.standard_normal((2, 3, 7, 7)), 3, padding=1, transposed=True)
    np.testing.assert_array_equal(K[:, :, 1, 1], 1.0)
    K, _ = ref.packernel2d(
        rng.standard_normal((2, 3, 9, 9)), 3, stride=2, padding=1, transposed=True
    )
    np.testing.assert_array_equal(K[:, :, 1, 1][..., ::2, ::2], 1.0)
    np.testing.assert_array_equal(K[:, :, 1, 1][..., 1::2, :], 0.0)


def test_invalid_taps_are_zero():
    rng = np.random.default_rng(31)
    H, W = 7, 8
    guide = rng.standard_normal((2, 2, H, W))
    for kt in ("gaussian", "inv_0.5_-1", "inv_1_2_asym"):
        for k, s, p, d in [(3, 1, 1, 1), (5, 2, 2, 1), (5, 1, 3, 2), ((3, 5), (1, 2), (1, 2), 1)]:
            kh, kw = ref._pair(k)
            (sh, sw), (ph, pw), (dh, dw) = ref._pair(s), ref._pair(p), ref._pair(d)
            K, _ = ref.packernel2d(guide, k, stride=s, padding=p, dilation=d, kernel_type=kt)
            Ho, Wo = K.shape[-2:]
            for i, j, y, x in itertools.product(range(kh), range(kw), range(Ho), range(Wo)):
                Py, Px = y * sh - ph + i * dh, x * sw - pw + j * dw
                inside = 0 <= Py < H and 0 <= Px < W
                if inside:
                    assert np.all(
                        K[:, :, i, j, y, x] > 0
                    )  # gaussian > 0; these inv kernels have α > 0
                else:
                    assert np.all(K[:, :, i, j, y, x] == 0)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("channel_wise", [False, True])
def test_normalised_kernel_sums_to_one_over_valid_taps(transposed, channel_wise):
    rng = np.random.default_rng(32)
    size = 9
    guide = rng.standard_normal((2, 3, size, size))
    mask = (rng.random((2, 1, size, size)) < 0.6).astype(float)
    mask[0, :, :4, :4] = 0.0  # some windows with no pixel in the mask
    for kt in ("gaussian", "inv_0.5_-1_asym"):
        for m in (None, mask):
            K, out_mask = ref.packernel2d(
                guide,
                3,
                stride=2,
                padding=1,
                output_padding=0,
                kernel_type=kt,
                normalize_kernel=True,
                mask=m,
                channel_wise=channel_wise,
                transposed=transposed,
            )
            sums = K.sum(axis=(2, 3))
            if m is None:
                np.testing.assert_allclose(sums, 1.0, rtol=1e-13)
            else:
                np.testing.assert_allclose(
                    sums, np.broadcast_to(out_mask, sums.shape), rtol=1e-13, atol=0
                )
                assert 0 < out_mask.sum() < out_mask.size  # both cases happen
                np.testing.assert_array_equal(K * (1 - out_mask[:, :, None, None]), 0.0)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_all_ones_mask_changes_nothing_and_all_zero_mask_gives_zero(normalize, transposed):
    rng = np.random.default_rng(33)
    guide = rng.standard_normal((2, 3, 9, 9))
    for kt, sm in (("gaussian", "none"), ("inv_0.5_-1", "gaussian"), ("inv_1_2_asym", "average_3")):
        kw = dict(
            stride=2,
            padding=1,
            dilation=1,
            kernel_type=kt,
            smooth_kernel_type=sm,
            normalize_kernel=normalize,
            transposed=transposed,
        )
        K0, m0 = ref.packernel2d(guide, 3, **kw)
        assert m0 is None
        K1, m1 = ref.packernel2d(guide, 3, mask=np.ones((2, 1, 9, 9)), **kw)
        np.testing.assert_allclose(K1, K0, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(m1, 1.0)
        assert m1.shape == (2, 1) + K0.shape[-2:]
        Kz, mz = ref.packernel2d(guide, 3, mask=np.zeros((2, 1, 9, 9)), **kw)
        np.testing.assert_array_equal(Kz, 0.0)
        np.testing.assert_array_equal(mz, 0.0)
        assert np.any(K0 != 0)
        # and the gradients through an all-zero mask vanish
        dg = ref.packernel2d_backward(
            np.ones_like(Kz), guide, 3, mask=np.zeros((2, 1, 9, 9)), **kw
        )[0]
        np.testing.assert_array_equal(dg, 0.0)


def test_partial_mask_rescales_by_valid_over_inside():
    """One window by hand: 3×3 taps, all valid, 6 of them inside the mask -> K = Kraw·m·9/6."""
    rng = np.random.default_rng(34)
    guide = rng.standard_normal((1, 2, 3, 3))
    mask = np.ones((1, 1, 3, 3))
    mask[0, 0, 0, :] = 0.0
    K0, _ = ref.packernel2d(guide, 3, kernel_type="inv_0.5_1")
    K, om = ref.packernel2d(guide, 3, kernel_type="inv_0.5_1", mask=mask)
    assert K.shape == (1, 1, 3, 3, 1, 1)
    np.testing.assert_allclose(
        K[0, 0, :, :, 0, 0], K0[0, 0, :, :, 0, 0] * mask[0, 0] * 9 / 6, rtol=1e-15
    )
    assert om[0, 0, 0, 0] == 1.0


@pytest.mark.parametrize("smoothing", ["gaussian", "average_3", "average_5", "full_3"])
@pytest.mark.parametrize("transposed", [False, True])
def test_smoothing_with_dilation_uses_smoothed_centre(smoothing, transposed):
    """Dilation 2: Δ = guide[tap] - F[centre] with F = correlate(guide, S, mode="constant")."""
    rng = np.random.default_rng(35)
    B, Cg, H, W = 2, 3, 9, 9
    guide = rng.standard_normal((B, Cg, H, W))
    S = {
        "gaussian": np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]),
        "average_3": np.full((3, 3), 1 / 9),
        "average_5": np.full((5, 5), 1 / 25),
        "full_3": rng.random((3, 3)),
    }[smoothing]
    F = np.empty_like(guide)
    for b, c in itertools.product(range(B), range(Cg)):
        F[b, c] = scipy.ndimage.correlate(guide[b, c], S, mode="constant", cval=0.0)
    d, k = 2, 3
    r = d * (k - 1) // 2
    stride = 1 if transposed else 2
    K, _ = ref.packernel2d(
        guide,
        k,
        stride=stride,
        padding=r,
        dilation=d,
        smooth_kernel_type=smoothing,
        smooth_kernel=S if smoothing.startswith("full") else None,
        transposed=transposed,
    )
    Ho, Wo = K.shape[-2:]
    for y, x, i, j in itertools.product(range(Ho), range(Wo), range(k), range(k)):
        cy, cx = (y, x) if transposed else (y * stride - r + r, x * stride - r + r)
        Py, Px = cy - r + i * d, cx - r + j * d
        if not (0 <= Py < H and 0 <= Px < W):
            assert np.all(K[:, 0, i, j, y, x] == 0)
            continue
        expected = np.exp(-0.5 * np.sum((guide[:, :, Py, Px] - F[:, :, cy, cx]) ** 2, axis=1))
        np.testing.assert_allclose(K[:, 0, i, j, y, x], expected, rtol=1e-13)
    # the centre tap is no longer 1 (the smoothed centre differs from the pixel itself)
    assert np.all(K[:, 0, 1, 1] < 1.0)


def test_channel_wise_gaussian_is_a_product_over_channels():
    rng = np.random.default_rng(36)
    guide = rng.standard_normal((2, 3, 8, 8))
    kw = dict(stride=2, padding=2, dilation=2, smooth_kernel_type="average_3")
    K, _ = ref.packernel2d(guide, 3, **kw)
    Kc, _ = ref.packernel2d(guide, 3, channel_wise=True, **kw)
    assert Kc.shape[1] == 3 and K.shape[1] == 1
    np.testing.assert_allclose(K[:, 0], np.prod(Kc, axis=1), rtol=1e-13)


def test_inv_kernel_values_and_parameter_sources():
    """inv_{α}_{λ} by hand on a 2-pixel guide, and α/λ from the arguments overriding the string."""
    guide = np.array([0.0, 2.0, -1.0]).reshape(1, 1, 1, 3)
    K, _ = ref.packernel2d(guide, (1, 3), padding=(0, 1), kernel_type="inv_0.5_-1")
    # output pixel 1 (centre value 2): taps read 0, 2, -1
    np.testing.assert_allclose(
        K[0, 0, 0, :, 0, 1], [0.5 + (4 + 1e-4) ** -0.5, 0.5 + 1e-4**-0.5, 0.5 + (9 + 1e-4) ** -0.5]
    )
    np.testing.assert_array_equal(K[0, 0, 0, 0, 0, 0], 0.0)  # left padding tap
    Ka, _ = ref.packernel2d(guide, (1, 3), padding=(0, 1), kernel_type="inv_0.5_-1_asym")
    # asym: Δ = max(tap - centre, 0) -> for centre 2 every Δ is 0
    np.testing.assert_allclose(Ka[0, 0, 0, :, 0, 1], 0.5 + 1e-4**-0.5)
    Kp, _ = ref.packernel2d(
        guide, (1, 3), padding=(0, 1), kernel_type="inv_9_9", inv_alpha=0.5, inv_lambda=-1.0
    )
    np.testing.assert_allclose(Kp, K, rtol=1e-15)
    Kf, _ = ref.packernel2d(guide, (1, 3), padding=(0, 1), kernel_type="inv_0.5_-1_fixed")
    np.testing.assert_allclose(Kf, K, rtol=1e-15)
    # _fixed: no gradient for α/λ even when passed; gaussian: never
    out = ref.packernel2d_backward(
        np.ones_like(K),
        guide,
        (1, 3),
        padding=(0, 1),
        kernel_type="inv_0.5_-1_fixed",
        inv_alpha=0.5,
        inv_lambda=-1.0,
    )
    assert out[1] is None and out[2] is None and out[3] is None
    out = ref.packernel2d_backward(
        np.ones_like(K), guide, (1, 3), padding=(0, 1), kernel_type="inv_0.5_-1", inv_alpha=0.5
    )
    # dK/dα = 1 at each valid tap: 2 + 3 + 2 valid taps
    assert out[1].shape == () and out[1] == 7.0 and out[2] is None


def test_reference_rejects_bad_shapes():
    guide = np.zeros((1, 2, 7, 7))
    with pytest.raises(AssertionError):
        ref.packernel2d(guide, 3, padding=2)  # padding > r
    with pytest.raises(AssertionError):
        ref.packernel2d(
            guide, 3, padding=1, stride=2, transposed=True, output_padding=1
        )  # H_in not integer
    with pytest.raises(AssertionError):
        ref.packernel2d(guide, 3, mask=np.ones((1, 2, 7, 7)))
    with pytest.raises(AssertionError):
        ref.pacconv2d(np.zeros((1, 2, 7, 7)), np.ones((1, 1, 3, 3, 5, 5)), np.zeros((4, 3, 3, 3)))
    with pytest.raises(AssertionError):
        ref.pacconv2d(np.zeros((1, 2, 7, 7)), np.ones((1, 1, 3, 3, 6, 5)), np.zeros((4, 2, 3, 3)))
    with pytest.raises(AssertionError):
        ref.pacpool2d(np.zeros((1, 2, 7, 7)), np.ones((1, 3, 3, 3, 5, 5)), 3)
