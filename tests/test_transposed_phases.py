"""Transposed PAC by stride phase (issue 15): with stride s a tap of a transposed window meets an
input sample at one output row / column in s, so the kernels visit, per row phase and column
phase, only the taps that exist. These cases take strides beyond the general grids (3, 4) and
windows wider than the stride, and hold every path — packernel2d, the dense and depthwise ops,
two-step and fused, forward and backward — to the float64 reference."""

import itertools

import numpy as np
import pytest
import reference as R
from cases import FUSED, assert_close, fused_case, two_step

import pacnp
from pacnp import config
from pacnp._core import conv_taps, conv_transpose_taps
from pacnp.cpu import schedule
from pacnp.cpu.common import strided_runs

GEOMETRIES = [  # (n_in, k, s, p, d, output_padding)
    (5, 9, 4, 4, 1, 3),
    (4, 9, 4, 3, 1, 0),
    (6, 5, 3, 0, 1, 2),
    (5, 5, 4, 4, 2, 1),
    (3, 3, 4, 1, 3, 0),
    (7, 4, 2, 1, 1, 1),
]


@pytest.mark.parametrize("n_in,k,s,p,d,op", GEOMETRIES)
def test_strided_runs_describe_a_transposed_tap_table(n_in, k, s, p, d, op):
    n_out = (n_in - 1) * s - 2 * p + d * (k - 1) + op + 1
    tab = conv_transpose_taps(n_in, n_out, k, s, p, d)
    runs = np.empty((k, 5), np.int64)
    strided_runs(tab, runs, 1)
    for i in range(k):
        x0, step, n, p0 = runs[i, 1:]
        assert step > 0, "every tap of a transposed window is a strided run"
        expect = np.full(n_out, -1)
        cols = x0 + step * np.arange(n)
        expect[cols] = p0 + np.arange(n)
        np.testing.assert_array_equal(tab[i], expect)


def test_strided_runs_reject_other_tables():
    tab = conv_taps(9, 4, 3, 2, 1, 1)  # a strided convolution: the input column jumps by 2
    runs = np.empty((3, 4), np.int64)
    strided_runs(tab, runs, 0)
    for i in range(3):
        if (tab[i] >= 0).sum() > 1:
            assert runs[i, 1] == -1


@pytest.mark.parametrize("n_in,k,s,p,d,op", GEOMETRIES)
def test_row_and_column_phases_hold_every_valid_tap(n_in, k, s, p, d, op):
    n_out = (n_in - 1) * s - 2 * p + d * (k - 1) + op + 1
    tab = conv_transpose_taps(n_in, n_out, k, s, p, d)
    pcols, pncols, ptaps, pntaps = schedule.column_phases(tab, s)
    for ph in range(pcols.shape[0]):
        taps = set(ptaps[ph, : pntaps[ph]].tolist())
        for X in pcols[ph, : pncols[ph]]:
            assert set(np.nonzero(tab[:, X] >= 0)[0].tolist()) <= taps
        # ≈ k/s taps per phase, not k
        assert len(taps) <= -(-k // (s // np.gcd(s, d)))


CASES = list(
    itertools.product(
        [(9, 4, 1), (5, 3, 1), (5, 4, 2)],  # (k, s, d)
        [
            ("gaussian", "none", False, False, False, False),
            ("inv_0.5_2", "none", True, True, False, False),
            ("gaussian", "gaussian", False, True, True, False),
            ("gaussian", "none", False, False, True, True),
            ("inv_0.5_2", "none", False, False, False, True),
        ],
    )
)


@pytest.fixture(params=["one stripe", "many stripes"])
def stripe_budget(request, monkeypatch):
    if request.param == "many stripes":
        monkeypatch.setattr(config, "STRIPE_BYTES", 1)
    return request.param


@pytest.mark.parametrize("ksd,kernel", CASES)
def test_transposed_by_phase_vs_reference(stripe_budget, ksd, kernel):
    """Two-step and fused, forward and every gradient, against tests/reference.py (float64)."""
    _by_phase_vs_reference(ksd, kernel)


@pytest.mark.parametrize("ksd,kernel", [CASES[0], CASES[8], CASES[13], CASES[14]])
def test_transposed_by_phase_on_dirty_memory(dirty_memory, stripe_budget, ksd, kernel):
    """With NaN in every uninitialised buffer: packernel2d's K still reads 0 where no sample
    is, and the fused path (stripes from uninitialised memory) never reads those entries."""
    _by_phase_vs_reference(ksd, kernel)


@pytest.mark.parametrize("kernel", [c[1] for c in CASES[:3]])
def test_fused_transposed_computes_k_inside_the_op(monkeypatch, kernel):
    """The fused dense transposed forward computes K inside its by-phase GEMM units for the
    rows between the border rows (Conv.pac_dense_forward_from_guide; the border rows stripe by
    stripe) and matches the reference: output and output_mask, with channel-wise, normalised,
    smoothed and masked kernels."""
    from pacnp.cpu import conv

    spans = []
    real = conv.pac_dense_forward_from_guide

    def spy(*args):
        spans.append(real(*args))
        return spans[-1]

    monkeypatch.setattr(conv, "pac_dense_forward_from_guide", spy)
    kt, smooth, cw, norm, masked, shared = kernel
    rng = np.random.default_rng(11 + len(kt) + masked)
    x, guide, w, b, geo, kw, lead = fused_case(
        rng, "transpose", 9, 4, 1, kt, smooth, cw, norm, masked, shared, B=2, C=3, Cout=2
    )
    out, om = FUSED["transpose"][0](*lead, **geo, **kw)
    K, ref_om = R.packernel2d(
        guide,
        9,
        **kw,
        **{n: geo[n] for n in ("stride", "padding", "dilation")},
        output_padding=geo["output_padding"],
        transposed=True,
    )
    assert_close(out, R.pacconv_transpose2d(x, K, w, b, **geo), "fused output")
    assert_close(om, ref_om, "fused output_mask")
    (span,) = spans
    assert span is not None and 0 < span[0] < span[1] < out.shape[2]  # taken, border left over


def _by_phase_vs_reference(ksd, kernel):
    k, s, d = ksd
    kt, smooth, cw, norm, masked, shared = kernel
    rng = np.random.default_rng(k * 100 + s * 10 + d + len(kt) + 7 * masked + 3 * shared)
    x, guide, w, b, geo, kw, lead = fused_case(
        rng, "transpose", k, s, d, kt, smooth, cw, norm, masked, shared, B=2, C=3, Cout=2
    )
    g = None
    ref_out = ref_om = None
    for lib in (R, pacnp):
        if g is None:
            K0, _ = R.packernel2d(
                guide,
                k,
                **kw,
                **{n: geo[n] for n in ("stride", "padding", "dilation")},
                output_padding=geo["output_padding"],
                transposed=True,
            )
            g = rng.standard_normal(R.pacconv_transpose2d(x, K0, w, b, **geo).shape)
        out, om, grads = two_step("transpose", x, guide, w, b, k, geo, kw, g, lib=lib)
        if lib is R:
            ref_out, ref_om, ref_grads = out, om, grads
            continue
        K, _ = pacnp.packernel2d(
            guide,
            k,
            **kw,
            **{n: geo[n] for n in ("stride", "padding", "dilation")},
            output_padding=geo["output_padding"],
            transposed=True,
        )
        assert_close(K, K0, "packernel2d K (0 where no sample is)")
        assert_close(out, ref_out, "two-step output")
        assert_close(om, ref_om, "two-step output_mask")
        for name, a, r in zip(
            ("input", "guide", "weight", "bias", "alpha", "lambda", "smooth"), grads, ref_grads
        ):
            assert_close(a, r, f"two-step d_{name}", rtol=1e-9, atol=1e-11)
    out, om = FUSED["transpose"][0](*lead, **geo, **kw)
    assert_close(out, ref_out, "fused output")
    assert_close(om, ref_om, "fused output_mask")
    grads = FUSED["transpose"][1](g, *lead, **geo, **kw)
    for name, a, r in zip(
        ("input", "guide", "weight", "bias", "alpha", "lambda", "smooth"), grads, ref_grads
    ):
        assert_close(a, r, f"fused d_{name}", rtol=1e-9, atol=1e-11)


def test_transposed_kernel_is_zero_where_no_sample_is():
    """packernel2d(transposed=True) keeps its layout: K = 0 at every (tap, pixel) that meets no
    sample, and the reference's values elsewhere."""
    rng = np.random.default_rng(5)
    guide = rng.standard_normal((1, 2, 20, 20))  # 5² input samples → 20² at stride 4
    kw = dict(stride=4, padding=4, output_padding=3, transposed=True)
    K, _ = pacnp.packernel2d(guide, 9, **kw)
    ref, _ = R.packernel2d(guide, 9, **kw)
    assert_close(K, ref, "K")
    Ho = guide.shape[2]
    ty = conv_transpose_taps(5, Ho, 9, 4, 4, 1)
    dead = (ty[:, None, :, None] < 0) | (ty[None, :, None, :] < 0)  # [i, j, y, x]
    assert np.all(K[:, :, dead] == 0.0)
    assert dead.mean() > 0.8  # most of the 81 taps meet no sample at a given pixel


class _On:
    """pacnp's functions run on a test backend (cases.Backend): the shape two_step expects of
    its ``lib`` argument."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        f = getattr(pacnp, name)
        return lambda *a, **kw: self.backend.call(f, *a, **kw)


@pytest.mark.parametrize(
    "ksd,kernel",
    [
        ((9, 4, 1), ("gaussian", "none", False, True, True, False)),
        ((5, 3, 1), ("inv_0.5_2", "none", True, False, False, True)),
        ((5, 4, 2), ("gaussian", "none", False, False, True, False)),
    ],
)
def test_transposed_by_phase_on_backend(backend, ksd, kernel):
    """The same paths on each backend (the CUDA twins visit their output's phase taps only):
    two-step and fused, forward and every gradient, against the float64 reference."""
    k, s, d = ksd
    kt, smooth, cw, norm, masked, shared = kernel
    rng = np.random.default_rng(k * 10 + s + d)
    x, guide, w, b, geo, kw, lead = fused_case(
        rng, "transpose", k, s, d, kt, smooth, cw, norm, masked, shared, B=1, C=2, Cout=2
    )
    K0, _ = R.packernel2d(
        guide,
        k,
        **kw,
        **{n: geo[n] for n in ("stride", "padding", "dilation")},
        output_padding=geo["output_padding"],
        transposed=True,
    )
    g = rng.standard_normal(R.pacconv_transpose2d(x, K0, w, b, **geo).shape)
    ref_out, ref_om, ref_grads = two_step("transpose", x, guide, w, b, k, geo, kw, g, lib=R)
    names = ("input", "guide", "weight", "bias", "alpha", "lambda", "smooth")
    on = _On(backend)
    out, om, grads = two_step("transpose", x, guide, w, b, k, geo, kw, g, lib=on)
    assert_close(out, ref_out, "two-step output")
    assert_close(om, ref_om, "two-step output_mask")
    for name, a, r in zip(names, grads, ref_grads):
        assert_close(a, r, f"two-step d_{name}", rtol=1e-9, atol=1e-11)
    fwd, bwd = FUSED["transpose"]
    out, om = backend.call(fwd, *lead, **geo, **kw)
    assert_close(out, ref_out, "fused output")
    assert_close(om, ref_om, "fused output_mask")
    grads = backend.call(bwd, g, *lead, **geo, **kw)
    for name, a, r in zip(names, grads, ref_grads):
        assert_close(a, r, f"fused d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("k,s,p,op", [(9, 4, 4, 3), (5, 3, 1, 2)])
def test_transposed_1d_by_phase_vs_reference(k, s, p, op):
    """1-D: the phases of the last (column) axis alone, against the 2-D reference on one row
    (kernel 1 × k, stride (1, s)); forward and gradients, two-step and fused."""
    rng = np.random.default_rng(k + s)
    B, C, Cout, Cg, n_in = 2, 3, 2, 2, 5
    W = (n_in - 1) * s - 2 * p + (k - 1) + op + 1
    x = rng.standard_normal((B, C, n_in))
    guide = rng.standard_normal((B, Cg, W))
    w = rng.standard_normal((C, Cout, k))
    b = rng.standard_normal(Cout)
    g = rng.standard_normal((B, Cout, W))
    geo = dict(stride=s, padding=p, output_padding=op)
    geo2 = dict(stride=(1, s), padding=(0, p), output_padding=(0, op))
    K2, _ = R.packernel2d(guide[:, :, None], (1, k), transposed=True, **geo2)
    ref = R.pacconv_transpose2d(x[:, :, None], K2, w[:, :, None], b, **geo2)
    rg = R.pacconv_transpose2d_backward(g[:, :, None], x[:, :, None], K2, w[:, :, None], b, **geo2)
    rgg = R.packernel2d_backward(rg[1], guide[:, :, None], (1, k), transposed=True, **geo2)
    K, _ = pacnp.packernel1d(guide, k, transposed=True, **geo)
    assert_close(K, K2[:, :, 0, :, 0], "K")
    assert_close(pacnp.pacconv_transpose1d(x, K, w, b, **geo), ref[:, :, 0], "two-step output")
    gr = pacnp.pacconv_transpose1d_backward(g, x, K, w, b, **geo)
    assert_close(gr[0], rg[0][:, :, 0], "d_input")
    assert_close(gr[2], rg[2][:, :, 0], "d_weight")
    dgd = pacnp.packernel1d_backward(gr[1], guide, k, transposed=True, **geo)[0]
    assert_close(dgd, rgg[0][:, :, 0], "d_guide")
    out, _ = pacnp.pacconv_transpose1d_fused(x, guide, w, b, **geo)
    assert_close(out, ref[:, :, 0], "fused output")
    fg = pacnp.pacconv_transpose1d_fused_backward(g, x, guide, w, b, **geo)
    assert_close(fg[0], rg[0][:, :, 0], "fused d_input")
    assert_close(fg[1], rgg[0][:, :, 0], "fused d_guide")
    assert_close(fg[2], rg[2][:, :, 0], "fused d_weight")


@pytest.mark.parametrize("n_in,k,s,p,d,op", [g for g in GEOMETRIES if g[1] % 2])  # odd windows
@pytest.mark.parametrize("kc_many", [False, True])
@pytest.mark.parametrize("small_mnk", [1, 10**9])
def test_transposed_forward_by_phase_units(monkeypatch, n_in, k, s, p, d, op, kc_many, small_mnk):
    """The dense transposed forward by phase (conv._dense_forward_phased) against the
    reference on a random K, with one output row per GEMM (config.GEMM_SMALL_MNK = 1) and a
    whole row phase per GEMM, one K for all channels or one per channel, a non-square input
    (border rows on both sides, phases without taps where k < s), float64 and float32."""
    monkeypatch.setattr(config, "GEMM_SMALL_MNK", small_mnk)
    rng = np.random.default_rng(n_in * 1000 + k * 100 + s * 10 + d + 5 * kc_many)
    B, C, Cout = 2, 3, 5
    hw = (n_in, n_in + 2)
    Ho, Wo = ((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n in hw)
    x = rng.standard_normal((B, C) + hw)
    K = rng.standard_normal((B, C if kc_many else 1, k, k, Ho, Wo))
    w = rng.standard_normal((C, Cout, k, k))
    b = rng.standard_normal(Cout)
    geo = dict(stride=s, padding=p, output_padding=op, dilation=d)
    ref = R.pacconv_transpose2d(x, K, w, b, **geo)
    assert_close(pacnp.pacconv_transpose2d(x, K, w, b, **geo), ref, "float64 output")
    f32 = [a.astype(np.float32) for a in (x, K, w, b)]
    out32 = pacnp.pacconv_transpose2d(*f32, **geo)
    assert out32.dtype == np.float32
    assert_close(out32, ref, "float32 output", dtype=np.float32)
