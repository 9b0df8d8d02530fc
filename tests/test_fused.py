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


def two_step(op, x, guide, w, b, k, geo, kkw, g):
    """Forward and all gradients through packernel2d + op + their backwards."""
    kernel_kw = dict(kkw, **{n: geo[n] for n in ("stride", "padding", "dilation")},
                     output_padding=geo.get("output_padding", 0), transposed=op == "transpose")
    K, om = pacnp.packernel2d(guide, k, **kernel_kw)
    if op == "pool":
        out = pacnp.pacpool2d(x, K, k, **geo)
        dx, dK = pacnp.pacpool2d_backward(g, x, K, k, **geo)
        dW = db = None
    else:
        fwd = pacnp.pacconv2d if op == "conv" else pacnp.pacconv_transpose2d
        bwd = pacnp.pacconv2d_backward if op == "conv" else pacnp.pacconv_transpose2d_backward
        out = fwd(x, K, w, b, **geo)
        dx, dK, dW, db = bwd(g, x, K, w, b, **geo)
    dg, da, dl, dS = pacnp.packernel2d_backward(dK, guide, k, **kernel_kw)
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
