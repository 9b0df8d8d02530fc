"""The fused path (K computed stripe by stripe) equals the two-step path, forward and backward,
in float64 — with the whole image in one stripe and with many small stripes."""
import itertools

import numpy as np
import pytest

import pacnp
from pacnp import config

from test_ops import KERNEL_TYPES, SMOOTH_TYPES, kernel_case


@pytest.fixture(params=["one stripe", "many stripes"])
def stripe_budget(request, monkeypatch):
    if request.param == "many stripes":
        monkeypatch.setattr(config, "STRIPE_BYTES", 1)  # a few rows per thread per stripe
    return request.param


def fused_grid():
    rng = np.random.default_rng(2024)
    cases = []
    for op, k, s, d in itertools.product(["conv", "transpose", "pool"], [1, 3, 5], [1, 2],
                                         [1, 2]):
        cases.append((op, k, s, d, str(rng.choice(KERNEL_TYPES)), str(rng.choice(SMOOTH_TYPES)),
                      bool(rng.random() < 0.5), bool(rng.random() < 0.5),
                      bool(rng.random() < 0.4), bool(rng.random() < 0.5)))
    return cases


def two_step(op, x, guide, w, b, k, geo, kkw, g, lib=pacnp):
    """Forward and all gradients through packernel2d + op + their backwards, of pacnp or of a
    module with the same functions (tests/reference.py)."""
    kernel_kw = dict(kkw, **{n: geo[n] for n in ("stride", "padding", "dilation")},
                     output_padding=geo.get("output_padding", 0), transposed=op == "transpose")
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
    """Random inputs of one fused-path configuration (also used by tests/test_cuda.py):
    (x, guide, weight, bias, geometry keywords, kernel keywords, leading positional args)."""
    guide, kw = kernel_case(rng, k, s, d, kt, smooth, cw, norm, masked, op == "transpose",
                            B=B, C=C)
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


@pytest.mark.parametrize("op,k,s,d,kt,smooth,cw,norm,masked,shared", fused_grid())
def test_fused_equals_two_step(stripe_budget, op, k, s, d, kt, smooth, cw, norm, masked, shared):
    rng = np.random.default_rng(k * 1000 + s * 100 + d * 10 + len(kt) + len(op))
    x, guide, w, b, geo, kw, lead = fused_case(rng, op, k, s, d, kt, smooth, cw, norm, masked,
                                               shared, B=2, C=3, Cout=4)
    fused = {"conv": (pacnp.pacconv2d_fused, pacnp.pacconv2d_fused_backward),
             "transpose": (pacnp.pacconv_transpose2d_fused,
                           pacnp.pacconv_transpose2d_fused_backward),
             "pool": (pacnp.pacpool2d_fused, pacnp.pacpool2d_fused_backward)}[op]
    out, om = fused[0](*lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    ref_out, ref_om, ref_grads = two_step(op, x, guide, w, b, k, geo, kw, g)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    assert (om is None) == (ref_om is None)
    if om is not None:
        np.testing.assert_array_equal(om, ref_om)
    grads = fused[1](g, *lead, **geo, **kw)
    if op == "pool":
        ref_grads = tuple(ref_grads[i] for i in (0, 1, 4, 5, 6))
    assert len(grads) == len(ref_grads)
    for name, a, r in zip(("input", "guide", "weight", "bias", "alpha", "lambda", "smooth"),
                          grads, ref_grads):
        assert (a is None) == (r is None), name
        if a is not None:
            np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-11, err_msg=name)


def test_fused_needs_and_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 12, 10)).astype(np.float32)
    guide = rng.standard_normal((1, 2, 12, 10)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    out, om = pacnp.pacconv2d_fused(x, guide, w, padding=1)
    assert out.dtype == np.float32 and om is None
    K, _ = pacnp.packernel2d(guide, 3, padding=1)
    np.testing.assert_allclose(out, pacnp.pacconv2d(x, K, w, padding=1), rtol=1e-5, atol=1e-5)
    g = np.ones_like(out)
    full = pacnp.pacconv2d_fused_backward(g, x, guide, w, padding=1)
    part = pacnp.pacconv2d_fused_backward(g, x, guide, w, padding=1,
                                          needs=(False, True, False, False, False, False, False))
    assert part[0] is None and part[2] is None and part[3] is None
    np.testing.assert_array_equal(part[1], full[1])


def test_fused_rejects_a_guide_that_does_not_fit():
    x = np.zeros((1, 2, 8, 8))
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"pacconv2d_fused: guide has spatial size \(6, 8\)"):
        pacnp.pacconv2d_fused(x, np.zeros((1, 1, 6, 8)), w, padding=1)
    with pytest.raises(ValueError, match="pacconv2d_fused: guide has batch size 2"):
        pacnp.pacconv2d_fused(x, np.zeros((2, 1, 8, 8)), w, padding=1)
    with pytest.raises(ValueError, match="pacconv2d_fused: channel_wise=True"):
        pacnp.pacconv2d_fused(x, np.zeros((1, 3, 8, 8)), w, padding=1, channel_wise=True)
    with pytest.raises(ValueError, match=r"pacconv_transpose2d_fused: guide has spatial size"):
        pacnp.pacconv_transpose2d_fused(np.zeros((1, 2, 4, 4)), np.zeros((1, 1, 9, 9)),
                                        np.zeros((2, 3, 3, 3)), stride=2, padding=1)
    with pytest.raises(TypeError, match="pacpool2d_fused: guide has dtype float32"):
        pacnp.pacpool2d_fused(x, np.zeros((1, 1, 8, 8), np.float32), 3, padding=1)


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


def pair_case(rng, op, k, d, p, kt, Cg, C, hw, B=2):
    """Random inputs of a PAIR_GRID case (also used by tests/test_cuda.py): (fused function
    arguments, keywords, reference output from tests/reference.py in float64)."""
    import reference as R
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


@pytest.fixture(params=["default blocks", "tiny blocks"])
def pair_blocks(request, monkeypatch):
    """Default blocking, or blocks of one row × a few columns: every block border and halo."""
    if request.param == "tiny blocks":
        monkeypatch.setattr(config, "PAIR_ROWS_PER_REACH", 0)
        monkeypatch.setattr(config, "ROW_BLOCKS", 10 ** 9)
        monkeypatch.setattr(config, "PAIR_BLOCK_COLS", 2)
    return request.param


@pytest.fixture
def pair_calls(monkeypatch):
    """Counts the calls of the pair-form kernel (to prove a case took it)."""
    from pacnp.cpu import depthwise
    calls = []
    real = depthwise.pac_depthwise_symmetric_forward

    def spy(*args):
        calls.append(args[-1].shape)
        return real(*args)
    monkeypatch.setattr(depthwise, "pac_depthwise_symmetric_forward", spy)
    return calls


@pytest.mark.parametrize("op,k,d,p,kt,Cg,C,hw", PAIR_GRID)
def test_pair_form_vs_reference(pair_blocks, pair_calls, op, k, d, p, kt, Cg, C, hw):
    rng = np.random.default_rng(sum(k) * 100 + d * 10 + Cg + C)
    args, kw, ref = pair_case(rng, op, k, d, p, kt, Cg, C, hw)
    before = [a.copy() for a in args if isinstance(a, np.ndarray)]
    out, om = pair_fused(op)(*args, **kw)
    assert pair_calls == [ref.shape], "the case did not take the pair form"
    assert om is None
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    for a, a0 in zip([a for a in args if isinstance(a, np.ndarray)], before):
        np.testing.assert_array_equal(a, a0)  # inputs untouched


def test_pair_form_float32_and_nonfinite_values(pair_calls):
    """float32 against the float64 reference; a NaN or inf in the guide or the input reaches
    exactly the outputs whose windows hold it, as in the window form."""
    rng = np.random.default_rng(7)
    args, kw, ref = pair_case(rng, "conv", (5, 5), 1, 2, "gaussian", 3, 4, (16, 15))
    out32, _ = pacnp.pacconv2d_fused(*(a.astype(np.float32) for a in args), **kw)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, rtol=2e-5, atol=2e-5)
    x, guide, w, b = args
    guide[0, 1, 7, 3] = np.nan
    x[1, 2, 4, 12] = np.inf
    out, _ = pacnp.pacconv2d_fused(x, guide, w, b, **kw)
    K, _ = pacnp.packernel2d(guide, 5, padding=2)
    two = pacnp.pacconv2d(x, K, w, b, padding=2, shared_filters=True)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(two))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(two))
    assert np.isnan(out[0, :, 5:10, 1:6]).all() and np.isinf(out[1, 2, 2:7, 10:15]).all()
    fin = np.isfinite(two)
    np.testing.assert_allclose(out[fin], two[fin], rtol=1e-12, atol=1e-12)
    assert len(pair_calls) == 2


def _plans(op="conv", w=None, stride=1, transposed=False, shared=True, **kernel_kw):
    from pacnp import _core
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 9, 8))
    guide = rng.standard_normal((1, 2, 9, 8))
    if w is None:
        w = np.ones((1, 1, 3, 3)) if shared else np.ones((2, 2, 3, 3))
    opts = dict(stride=stride, padding=1, dilation=1)
    if transposed:
        oplan = _core.plan_op("f", x, None, w, None, output_padding=0, transposed=True,
                              shared_filters=shared, **opts)
        gh = oplan.geo.out_hw
        guide = rng.standard_normal((1, 2) + tuple(gh))
    elif op == "pool":
        oplan = _core.plan_op("f", x, None, None, None, kernel_size=3, **opts)
    else:
        oplan = _core.plan_op("f", x, None, w, None, shared_filters=shared, **opts)
    kw = dict(kernel_type="gaussian", smooth_kernel_type="none", smooth_kernel=None,
              inv_alpha=None, inv_lambda=None, channel_wise=False, normalize_kernel=False,
              mask=None)
    kw.update(kernel_kw)
    kplan = _core.plan_packernel("f", guide, (3, 3), output_padding=0, transposed=transposed,
                                 **opts, **kw)
    return kplan, oplan


def test_pair_form_only_where_k_and_the_filter_are_symmetric():
    from pacnp._core import pair_geometry
    assert pair_geometry(*_plans()) is not None
    assert pair_geometry(*_plans("pool")) is not None
    assert pair_geometry(*_plans(kernel_type="inv_0.5_-1")) is not None
    w = np.arange(9.0).reshape(1, 1, 3, 3)
    assert pair_geometry(*_plans(w=w + w[..., ::-1, ::-1])) is not None
    not_symmetric = [
        _plans(w=w),                                  # w(δ) ≠ w(−δ)
        _plans(shared=False),                         # a dense filter
        _plans(stride=2),                             # centres skip pixels
        _plans(transposed=True),
        _plans(kernel_type="inv_0.5_-1_asym"),        # max(Δ, 0): direction matters
        _plans(channel_wise=True),
        _plans(normalize_kernel=True),                # per-centre normalisation
        _plans(smooth_kernel_type="gaussian"),        # centre features smoothed
        _plans(mask=np.ones((1, 1, 9, 8))),
    ]
    for plans in not_symmetric:
        assert pair_geometry(*plans) is None
