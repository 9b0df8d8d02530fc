"""The fused path (K computed stripe by stripe) equals the two-step path, forward and backward,
in float64 — with the whole image in one stripe and with many small stripes."""

import importlib

import numpy as np
import pytest
import reference as R
from cases import (
    EXACT,
    FUSED,
    FUSED_GRID,
    PAIR_GRID,
    SMALL_FUSED_GRID,
    SMALL_PAIR_GRID,
    assert_close,
    fused_case,
    pair_case,
    pair_fused,
    simulator_grid,
    two_step,
)

import pacnp
from pacnp import config


@pytest.fixture(params=["one stripe", "many stripes"])
def stripe_budget(request, monkeypatch):
    if request.param == "many stripes":
        monkeypatch.setattr(config, "STRIPE_BYTES", 1)  # a few rows per thread per stripe
    return request.param


@pytest.mark.parametrize(
    "op,k,s,d,kt,smooth,cw,norm,masked,shared", simulator_grid(FUSED_GRID, SMALL_FUSED_GRID)
)
def test_fused_equals_two_step(
    backend, stripe_budget, op, k, s, d, kt, smooth, cw, norm, masked, shared
):
    rng = np.random.default_rng(k * 1000 + s * 100 + d * 10 + len(kt) + len(op))
    x, guide, w, b, geo, kw, lead = fused_case(
        rng,
        op,
        k,
        s,
        d,
        kt,
        smooth,
        cw,
        norm,
        masked,
        shared,
        **backend.pick(dict(B=2, C=3, Cout=4), dict(B=1, C=2, Cout=3)),
    )
    out, om = backend.call(FUSED[op][0], *lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    grads = backend.call(FUSED[op][1], g, *lead, **geo, **kw)
    # against pacnp's two-step path on the CPU (whose ops test_ops holds to the reference):
    # the same arithmetic, so equal to rounding; and against the float64 reference itself
    for lib, tol, grad_tol in (
        (pacnp, EXACT, dict(rtol=1e-10, atol=1e-11)),
        (R, {}, dict(rtol=1e-9, atol=1e-11)),
    ):
        ref_out, ref_om, ref_grads = two_step(op, x, guide, w, b, k, geo, kw, g, lib=lib)
        what = f"vs the two-step path of {lib.__name__}"
        assert_close(out, ref_out, f"output {what}", **tol)
        if lib is pacnp:
            assert (om is None) == (ref_om is None)
            if om is not None:
                np.testing.assert_array_equal(om, ref_om)
        else:
            assert_close(om, ref_om, f"output_mask {what}")
        if op == "pool":
            ref_grads = tuple(ref_grads[i] for i in (0, 1, 4, 5, 6))
        assert len(grads) == len(ref_grads)
        for name, a, r in zip(
            ("input", "guide", "weight", "bias", "alpha", "lambda", "smooth"), grads, ref_grads
        ):
            assert_close(a, r, f"d_{name} {what}", **grad_tol)


def test_fused_needs_and_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 12, 10)).astype(np.float32)
    guide = rng.standard_normal((1, 2, 12, 10)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    out, om = pacnp.pacconv2d_fused(x, guide, w, padding=1)
    assert out.dtype == np.float32 and om is None
    K, _ = pacnp.packernel2d(guide, 3, padding=1)
    assert_close(out, pacnp.pacconv2d(x, K, w, padding=1), rtol=1e-5, atol=1e-5)
    g = np.ones_like(out)
    full = pacnp.pacconv2d_fused_backward(g, x, guide, w, padding=1)
    part = pacnp.pacconv2d_fused_backward(
        g, x, guide, w, padding=1, needs=(False, True, False, False, False, False, False)
    )
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
        pacnp.pacconv_transpose2d_fused(
            np.zeros((1, 2, 4, 4)),
            np.zeros((1, 1, 9, 9)),
            np.zeros((2, 3, 3, 3)),
            stride=2,
            padding=1,
        )
    with pytest.raises(TypeError, match="pacpool2d_fused: guide has dtype float32"):
        pacnp.pacpool2d_fused(x, np.zeros((1, 1, 8, 8), np.float32), 3, padding=1)


# --------------------------------------------------------------------------- pair form
@pytest.fixture(params=["default blocks", pytest.param("tiny blocks", marks=pytest.mark.full_grid)])
def pair_blocks(request, monkeypatch):
    """Default blocking, or blocks of one row × a few columns: every block border and halo
    (pacnp._ops computes the blocks for both backends)."""
    if request.param == "tiny blocks":
        monkeypatch.setattr(config, "PAIR_ROWS_PER_REACH", 0)
        monkeypatch.setattr(config, "ROW_BLOCKS", 10**9)
        monkeypatch.setattr(config, "PAIR_BLOCK_COLS", 2)
    return request.param


@pytest.fixture
def pair_calls(request, monkeypatch):
    """Counts the calls of the pair-form kernel of the test's backend (CPU without one), to
    prove a case took it."""
    name = request.getfixturevalue("backend").name if "backend" in request.fixturenames else "cpu"
    depthwise = importlib.import_module(f"pacnp.{name}.depthwise")
    calls = []
    real = depthwise.pac_depthwise_symmetric_forward

    def spy(*args):
        calls.append(tuple(args[-1].shape))
        return real(*args)

    monkeypatch.setattr(depthwise, "pac_depthwise_symmetric_forward", spy)
    return calls


@pytest.mark.parametrize("op,k,d,p,kt,Cg,C,hw", simulator_grid(PAIR_GRID, SMALL_PAIR_GRID))
def test_pair_form_vs_reference(backend, pair_blocks, pair_calls, op, k, d, p, kt, Cg, C, hw):
    rng = np.random.default_rng(sum(k) * 100 + d * 10 + Cg + C)
    args, kw, ref = pair_case(rng, op, k, d, p, kt, Cg, C, hw, B=backend.pick(2, 1))
    before = [a.copy() for a in args if isinstance(a, np.ndarray)]
    out, om = backend.call(pair_fused(op), *args, **kw)
    assert pair_calls == [ref.shape], "the case did not take the pair form"
    assert om is None
    assert_close(out, ref, "output", **EXACT)
    for a, a0 in zip([a for a in args if isinstance(a, np.ndarray)], before):
        np.testing.assert_array_equal(a, a0)  # inputs untouched


def test_pair_form_float32_and_nonfinite_values(pair_calls):
    """float32 against the float64 reference; a NaN or inf in the guide or the input reaches
    exactly the outputs whose windows hold it, as in the window form."""
    rng = np.random.default_rng(7)
    args, kw, ref = pair_case(rng, "conv", (5, 5), 1, 2, "gaussian", 3, 4, (16, 15))
    out32, _ = pacnp.pacconv2d_fused(*(a.astype(np.float32) for a in args), **kw)
    assert out32.dtype == np.float32
    assert_close(out32, ref, "float32", rtol=2e-5, atol=2e-5)
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
    assert_close(out[fin], two[fin], "finite values", **EXACT)
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
        oplan = _core.plan_op(
            "f", x, None, w, None, output_padding=0, transposed=True, shared_filters=shared, **opts
        )
        gh = oplan.geo.out_hw
        guide = rng.standard_normal((1, 2) + tuple(gh))
    elif op == "pool":
        oplan = _core.plan_op("f", x, None, None, None, kernel_size=3, **opts)
    else:
        oplan = _core.plan_op("f", x, None, w, None, shared_filters=shared, **opts)
    kw = dict(
        kernel_type="gaussian",
        smooth_kernel_type="none",
        smooth_kernel=None,
        inv_alpha=None,
        inv_lambda=None,
        channel_wise=False,
        normalize_kernel=False,
        mask=None,
    )
    kw.update(kernel_kw)
    kplan = _core.plan_packernel(
        "f", guide, (3, 3), output_padding=0, transposed=transposed, **opts, **kw
    )
    return kplan, oplan


def test_pair_form_only_where_k_and_the_filter_are_symmetric():
    from pacnp._core import pair_geometry

    assert pair_geometry(*_plans()) is not None
    assert pair_geometry(*_plans("pool")) is not None
    assert pair_geometry(*_plans(kernel_type="inv_0.5_-1")) is not None
    w = np.arange(9.0).reshape(1, 1, 3, 3)
    assert pair_geometry(*_plans(w=w + w[..., ::-1, ::-1])) is not None
    not_symmetric = [
        _plans(w=w),  # w(δ) ≠ w(−δ)
        _plans(shared=False),  # a dense filter
        _plans(stride=2),  # centres skip pixels
        _plans(transposed=True),
        _plans(kernel_type="inv_0.5_-1_asym"),  # max(Δ, 0): direction matters
        _plans(channel_wise=True),
        _plans(normalize_kernel=True),  # per-centre normalisation
        _plans(smooth_kernel_type="gaussian"),  # centre features smoothed
        _plans(mask=np.ones((1, 1, 9, 8))),
    ]
    for plans in not_symmetric:
        assert pair_geometry(*plans) is None
