"""pacnp.filters on 1-D signals and 3-D volumes (``spatial_dims``, ``spacing``) against direct
NumPy sums written from the filters' definitions (float64, one window offset at a time), every
border mode; and the 2-D special cases (anisotropic spacing, per-axis radii) against the same
references.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacnp import filters as F

PAD = {"reflect": "reflect", "nearest": "edge", "constant": "constant"}
TOL = dict(rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- references
def ref_joint_bilateral(img, guide, sigma_s, sigma_c, radii, border, spacing=None):
    """``img`` [*S, C], ``guide`` [*S, Cg]: out_i = Σ_j w_s w_c v_j / Σ_j w_s w_c over the box
    |δ_a| ≤ radii_a, w_s = exp(−Σ_a (δ_a·spacing_a)²/2σ_s²), w_c = exp(−‖g_i − g_j‖²/2σ_c²);
    taps on the padded image (numpy.pad's mode), or left out for 'renormalize'."""
    S = img.shape[:-1]
    spacing = (1.0,) * len(S) if spacing is None else spacing
    pw = [(r, r) for r in radii] + [(0, 0)]
    if border == "renormalize":
        pi, pg = np.pad(img, pw), np.pad(guide, pw)
        pm = np.pad(np.ones(S), pw[:-1])
    else:
        pi, pg = np.pad(img, pw, mode=PAD[border]), np.pad(guide, pw, mode=PAD[border])
        pm = np.ones(pg.shape[:-1])
    num = np.zeros(img.shape)
    den = np.zeros(S)
    for delta in itertools.product(*[range(-r, r + 1) for r in radii]):
        sl = tuple(slice(r + d, r + d + n) for r, d, n in zip(radii, delta, S))
        ws = np.exp(-sum((d * h) ** 2 for d, h in zip(delta, spacing)) / (2 * sigma_s**2))
        wc = np.exp(-np.sum((pg[sl] - guide) ** 2, axis=-1) / (2 * sigma_c**2))
        w = ws * wc * pm[sl]
        num += w[..., None] * pi[sl]
        den += w
    return num / den[..., None]


def ref_upsample(low, guide, f, sigma_s, sigma_c, radii, conf, spacing=None):
    """``low`` [*s], ``guide`` [*(s·f), Cg]: high-res voxel Y averages the samples n (at
    voxel n·f + (f−1)//2) with |n_a·f + o − Y_a| ≤ radii_a, weights w_s·w_c·conf_n; NaN where
    no weight."""
    s = low.shape
    nd = len(s)
    spacing = (1.0,) * nd if spacing is None else spacing
    o = (f - 1) // 2
    S = tuple(n * f for n in s)
    out = np.full(S, np.nan)
    for Y in itertools.product(*[range(n) for n in S]):
        num = den = 0.0
        for n in itertools.product(*[range(m) for m in s]):
            P = tuple(k * f + o for k in n)
            d = [p - y for p, y in zip(P, Y)]
            if any(abs(v) > r for v, r in zip(d, radii)):
                continue
            w = (
                np.exp(-sum((v * h) ** 2 for v, h in zip(d, spacing)) / (2 * sigma_s**2))
                * np.exp(-np.sum((guide[Y] - guide[P]) ** 2) / (2 * sigma_c**2))
                * conf[n]
            )
            num += w * low[n]
            den += w
        if den > 0:
            out[Y] = num / den
    return out


def ref_detail_pool(img, ks, strides, alpha, lam, border):
    """``img`` [C, *S]: out_o = Σ_j D v_j / Σ_j D over the box window of side ks_a centred at
    voxel o·stride, D = α + ((v_j − ṽ_o)² + 10⁻⁴)^λ per channel, ṽ the [1 2 1]/4 binomial along
    every axis of the padded image (the border mode's padding of radius k_a // 2, zeros
    beyond it); 'renormalize': zero padding, taps outside the image left out."""
    C, *S = img.shape
    radii = [k // 2 for k in ks]
    pw = [(0, 0)] + [(r, r) for r in radii]
    if border == "renormalize":
        P, M = np.pad(img, pw), np.pad(np.ones(S), pw[1:])
    else:
        P, M = np.pad(img, pw, mode=PAD[border]), np.ones([n + 2 * r for n, r in zip(S, radii)])
    Z = np.pad(P, [(0, 0)] + [(1, 1)] * len(S))  # zeros beyond the padded image
    b = {-1: 0.25, 0: 0.5, 1: 0.25}
    S_out = [-(-n // s) for n, s in zip(S, strides)]
    out = np.zeros([C] + S_out)
    for o in itertools.product(*[range(n) for n in S_out]):
        c = [k * s + r for k, s, r in zip(o, strides, radii)]  # centre in the padded image
        smooth = sum(
            np.prod([b[u] for u in us])
            * Z[(slice(None),) + tuple(x + 1 + u for x, u in zip(c, us))]
            for us in itertools.product((-1, 0, 1), repeat=len(S))
        )
        num, den = np.zeros(C), np.zeros(C)
        for t in itertools.product(*[range(-r, r + 1) for r in radii]):
            q = tuple(x + u for x, u in zip(c, t))
            if M[q] == 0:
                continue
            v = P[(slice(None),) + q]
            D = alpha + ((v - smooth) ** 2 + 1e-4) ** lam
            num += D * v
            den += D
        out[(slice(None),) + o] = num / den
    return out


# --------------------------------------------------------------------------- bilateral
@pytest.mark.parametrize("border", F.BORDERS)
def test_bilateral_3d_anisotropic_spacing(border):
    """A grey volume, 2 × 1 × 0.7 mm voxels, σ_s = 1.5 mm; per-axis radii (1, 2, 3)."""
    rng = np.random.default_rng(0)
    vol = rng.random((5, 6, 7))
    kw = dict(sigma_spatial=1.5, sigma_color=0.3, border=border, spacing=(2.0, 1.0, 0.7))
    out = F.bilateral_filter(vol, radius=(1, 2, 3), spatial_dims=3, **kw)
    expect = ref_joint_bilateral(
        vol[..., None], vol[..., None], 1.5, 0.3, (1, 2, 3), border, (2.0, 1.0, 0.7)
    )[..., 0]
    np.testing.assert_allclose(out, expect, **TOL)


@pytest.mark.parametrize("border", F.BORDERS)
def test_bilateral_3d_default_radius_reaches_past_the_volume(border):
    """The default radii ⌈3σ_s/spacing_a⌉ = (3, 5, 7) on a 4 × 5 × 6 volume: wider than the
    volume on every axis (the folded form for the padding borders)."""
    rng = np.random.default_rng(1)
    vol = rng.random((2, 4, 5, 6))  # channels first
    spacing = (1.5, 0.9, 0.7)
    plan = F.plan_joint_bilateral_filter(
        vol, None, sigma_spatial=1.5, spatial_dims=3, channel_axis=0, spacing=spacing
    )
    assert plan.radii == (3, 5, 7)
    out = F.bilateral_filter(
        vol,
        sigma_spatial=1.5,
        sigma_color=0.5,
        border=border,
        channel_axis=0,
        spatial_dims=3,
        spacing=spacing,
    )
    img = np.moveaxis(vol, 0, -1)
    expect = ref_joint_bilateral(img, img, 1.5, 0.5, (3, 5, 7), border, spacing)
    np.testing.assert_allclose(out, np.moveaxis(expect, -1, 0), **TOL)


@pytest.mark.parametrize("border", F.BORDERS)
def test_joint_bilateral_1d(border):
    """Three 3-channel signals (a batch axis) guided by a 2-channel signal, radius 4."""
    rng = np.random.default_rng(2)
    sig = rng.random((3, 40, 3))
    guide = rng.random((3, 40, 2))
    out = F.joint_bilateral_filter(
        sig,
        guide,
        sigma_spatial=2.0,
        sigma_color=0.4,
        radius=4,
        border=border,
        channel_axis=-1,
        spatial_dims=1,
    )
    expect = np.stack(
        [ref_joint_bilateral(s, g, 2.0, 0.4, (4,), border) for s, g in zip(sig, guide)]
    )
    np.testing.assert_allclose(out, expect, **TOL)


@pytest.mark.parametrize("border", F.BORDERS)
def test_joint_bilateral_1d_short_signal_and_spacing(border):
    """A 5-sample signal, spacing 0.5, σ_s = 1: default radius 6 ≥ the signal (folded for the
    padding borders, repeated reflections)."""
    rng = np.random.default_rng(3)
    sig, guide = rng.random(5), rng.random(5)
    out = F.joint_bilateral_filter(
        sig, guide, sigma_spatial=1.0, sigma_color=0.3, border=border, spatial_dims=1, spacing=0.5
    )
    expect = ref_joint_bilateral(sig[:, None], guide[:, None], 1.0, 0.3, (6,), border, (0.5,))
    np.testing.assert_allclose(out, expect[:, 0], **TOL)


@pytest.mark.parametrize("border", F.BORDERS)
def test_bilateral_2d_anisotropic_spacing_and_radii(border):
    """2-D with per-axis spacing and radius: the same definition."""
    rng = np.random.default_rng(4)
    img = rng.random((9, 8, 2))
    out = F.bilateral_filter(
        img,
        sigma_spatial=1.2,
        sigma_color=0.4,
        radius=(1, 3),
        border=border,
        channel_axis=-1,
        spacing=(1.5, 0.8),
    )
    expect = ref_joint_bilateral(img, img, 1.2, 0.4, (1, 3), border, (1.5, 0.8))
    np.testing.assert_allclose(out, expect, **TOL)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_bilateral_3d_dtypes(dtype):
    rng = np.random.default_rng(5)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    vol = (rng.random((4, 5, 6)) * top).astype(dtype)
    out = F.bilateral_filter(
        vol, sigma_spatial=1.0, sigma_color=0.2 * top, radius=2, spatial_dims=3
    )
    assert out.dtype == vol.dtype and out.shape == vol.shape
    v = vol.astype(np.float64)[..., None]
    exact = ref_joint_bilateral(v, v, 1.0, 0.2 * top, (2, 2, 2), "reflect")[..., 0]
    if dtype in (np.uint8, np.uint16):
        assert np.abs(out.astype(np.int64) - np.rint(exact).astype(np.int64)).max() <= 1
    else:
        tol = 2e-3 if dtype == np.float16 else 1e-5
        np.testing.assert_allclose(out.astype(np.float64), exact, rtol=tol, atol=tol * top)


def test_bilateral_3d_batch_and_layouts_agree():
    """A batch of two RGB volumes, channels last, equals each volume channels-first."""
    rng = np.random.default_rng(6)
    vols = rng.random((2, 4, 5, 6, 3))
    kw = dict(sigma_spatial=1.0, sigma_color=0.3, radius=(1, 1, 2), spatial_dims=3)
    out = F.bilateral_filter(vols, channel_axis=-1, **kw)
    for b in range(2):
        one = F.bilateral_filter(np.moveaxis(vols[b], -1, 0), channel_axis=0, **kw)
        np.testing.assert_allclose(out[b], np.moveaxis(one, 0, -1), **TOL)
    expect = ref_joint_bilateral(vols[1], vols[1], 1.0, 0.3, (1, 1, 2), "reflect")
    np.testing.assert_allclose(out[1], expect, **TOL)


def test_3d_default_sigma_color_and_grey_guide():
    rng = np.random.default_rng(7)
    vol = rng.random((4, 5, 5, 2))
    guide = rng.random((4, 5, 5))
    out = F.joint_bilateral_filter(vol, guide, radius=1, channel_axis=-1, spatial_dims=3)
    expect = ref_joint_bilateral(vol, guide[..., None], 1.0, guide.std(), (1, 1, 1), "reflect")
    np.testing.assert_allclose(out, expect, **TOL)


# --------------------------------------------------------------------------- upsampling
@pytest.mark.parametrize("f", [2, 3])
def test_joint_upsample_3d(f):
    rng = np.random.default_rng(8)
    low = rng.random((2, 3, 2))
    guide = rng.random((2 * f, 3 * f, 2 * f, 2))
    conf = (rng.random(low.shape) > 0.2).astype(float)
    out = F.joint_bilateral_upsample(
        low, guide, f, sigma_color=0.5, guide_channel_axis=-1, confidence=conf, spatial_dims=3
    )
    r = 3 * f // 2
    expect = ref_upsample(low, guide, f, f / 2, 0.5, (r, r, r), conf)
    np.testing.assert_allclose(out, expect, equal_nan=True, **TOL)


def test_joint_upsample_3d_spacing_and_radii():
    rng = np.random.default_rng(9)
    low = rng.random((2, 3, 3))
    guide = rng.random((4, 6, 6))
    out = F.joint_bilateral_upsample(
        low,
        guide,
        2,
        sigma_spatial=1.3,
        sigma_color=0.4,
        radius=(1, 2, 3),
        spacing=(2.0, 1.0, 0.5),
        spatial_dims=3,
    )
    expect = ref_upsample(
        low, guide[..., None], 2, 1.3, 0.4, (1, 2, 3), np.ones(low.shape), (2.0, 1.0, 0.5)
    )
    np.testing.assert_allclose(out, expect, **TOL)


@pytest.mark.parametrize("f", [2, 4])
def test_joint_upsample_1d_channels_and_batch(f):
    rng = np.random.default_rng(10)
    low = rng.random((2, 6, 3))  # batch, samples, channels
    guide = rng.random((2, 6 * f))
    out = F.joint_bilateral_upsample(
        low, guide, f, sigma_color=0.3, channel_axis=-1, spatial_dims=1
    )
    assert out.shape == (2, 6 * f, 3)
    r = 3 * f // 2
    for b in range(2):
        for c in range(3):
            expect = ref_upsample(low[b, :, c], guide[b, :, None], f, f / 2, 0.3, (r,), np.ones(6))
            np.testing.assert_allclose(out[b, :, c], expect, **TOL)


def test_joint_upsample_2d_anisotropic_matches_the_definition():
    """2-D with different σ_s per axis (spacing): the direct kernel's per-axis row and column
    tables, the same definition."""
    rng = np.random.default_rng(11)
    low = rng.random((3, 4))
    guide = rng.random((9, 12))
    out = F.joint_bilateral_upsample(low, guide, 3, sigma_color=0.5, spacing=(1.0, 2.0))
    plan = F.plan_joint_bilateral_upsample(low, guide, 3, spacing=(1.0, 2.0))
    assert plan.sigma_spatial == 1.5 and plan.radii == (4, 4)
    expect = ref_upsample(low, guide[..., None], 3, 1.5, 0.5, (4, 4), np.ones((3, 4)), (1.0, 2.0))
    np.testing.assert_allclose(out, expect, **TOL)


def test_joint_upsample_3d_uint8_missing_samples_read_zero():
    low = np.full((2, 2, 2), 100, np.uint8)
    guide = np.zeros((4, 4, 4), np.uint8)
    conf = np.zeros((2, 2, 2))
    out = F.joint_bilateral_upsample(
        low, guide, 2, sigma_color=10.0, confidence=conf, spatial_dims=3
    )
    assert out.dtype == np.uint8 and (out == 0).all()
    conf[0, 0, 0] = 1
    out = F.joint_bilateral_upsample(
        low, guide, 2, sigma_color=10.0, confidence=conf, spatial_dims=3
    )
    assert out[0, 0, 0] == 100


# --------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("border", F.BORDERS)
def test_detail_preserving_pool_3d(border):
    rng = np.random.default_rng(12)
    vol = rng.random((2, 5, 6, 7))  # C D H W
    out = F.detail_preserving_pool(
        vol,
        (3, 3, 5),
        stride=(1, 2, 3),
        alpha=0.3,
        lam=0.7,
        border=border,
        channel_axis=0,
        spatial_dims=3,
    )
    expect = ref_detail_pool(vol, (3, 3, 5), (1, 2, 3), 0.3, 0.7, border)
    np.testing.assert_allclose(out, expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("border", F.BORDERS)
def test_detail_preserving_pool_3d_window_past_the_volume(border):
    """Kernel sizes (1, 7, 9) on a 3 × 3 × 4 volume: folded for the padding borders (kernel
    size 1 on the first axis: its smoothing sees zeros beyond the edge, as the padded form)."""
    rng = np.random.default_rng(13)
    vol = rng.random((1, 3, 3, 4))
    out = F.detail_preserving_pool(
        vol, (1, 7, 9), stride=2, alpha=0.5, lam=-0.5, border=border, channel_axis=0, spatial_dims=3
    )
    expect = ref_detail_pool(vol, (1, 7, 9), (2, 2, 2), 0.5, -0.5, border)
    np.testing.assert_allclose(out, expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("border", F.BORDERS)
def test_detail_preserving_pool_1d(border):
    rng = np.random.default_rng(14)
    sig = rng.random((3, 17))  # three signals
    out = F.detail_preserving_pool(
        sig, 5, stride=3, alpha=1.0, lam=1.0, border=border, spatial_dims=1
    )
    expect = np.stack([ref_detail_pool(s[None], (5,), (3,), 1.0, 1.0, border)[0] for s in sig])
    np.testing.assert_allclose(out, expect, rtol=1e-10, atol=1e-12)


def test_detail_preserving_pool_3d_float32_and_uint8():
    rng = np.random.default_rng(15)
    vol = rng.random((4, 6, 6))
    exact = ref_detail_pool(vol[None], (3, 3, 3), (2, 2, 2), 1.0, 1.0, "renormalize")[0]
    out32 = F.detail_preserving_pool(vol.astype(np.float32), 3, spatial_dims=3)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, exact, rtol=1e-5, atol=1e-6)
    v8 = (vol * 255).astype(np.uint8)
    out8 = F.detail_preserving_pool(v8, 3, spatial_dims=3)
    exact8 = ref_detail_pool(
        v8[None].astype(np.float64), (3,) * 3, (2,) * 3, 1.0, 1.0, "renormalize"
    )[0]
    assert out8.dtype == np.uint8
    assert np.abs(out8.astype(int) - np.rint(exact8).astype(int)).max() <= 1


# --------------------------------------------------------------------------- plans, errors
def test_plans_per_axis():
    vol = np.zeros((6, 30, 40), np.float32)
    plan = F.plan_joint_bilateral_filter(
        vol, vol, sigma_spatial=3.0, spatial_dims=3, spacing=(3.0, 1.0, 1.5)
    )
    assert plan.radii == (3, 9, 6) and plan.halos == plan.radii and plan.radius == 9
    assert plan.voxel_sigmas == (1.0, 3.0, 2.0) and plan.spatial_dims == 3
    kw = plan.resolve_sigma_color(np, vol).chunk_kwargs()
    assert kw["radius"] == (3, 9, 6) and kw["spatial_dims"] == 3
    assert kw["spacing"] == (3.0, 1.0, 1.5)
    assert F.default_radius(3.0, spacing=(3.0, 1.0, 1.5)) == (3, 9, 6)
    up = F.plan_joint_bilateral_upsample(
        np.zeros((3, 4, 5)), np.zeros((12, 16, 20)), 4, spatial_dims=3
    )
    assert up.out_shape == (12, 16, 20) and up.halos == (3, 3, 3)
    pool = F.plan_detail_preserving_pool(
        np.zeros((2, 9, 10, 11)), 3, stride=(1, 2, 3), channel_axis=0, spatial_dims=3
    )
    assert pool.out_shape == (2, 9, 5, 4) and pool.strides == (1, 2, 3)
    sig = F.plan_joint_bilateral_filter(np.zeros(100), None, spatial_dims=1, radius=5)
    assert sig.out_shape == (100,) and sig.layout.batch_shape == ()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.bilateral_filter(np.ones((4, 4, 4)), spatial_dims=4), "spatial_dims"),
        (lambda: F.bilateral_filter(np.ones((4, 4, 4)), spatial_dims=True), "spatial_dims"),
        (lambda: F.bilateral_filter(np.ones((4, 4)), spatial_dims=3), "at least 3 axes"),
        (
            lambda: F.bilateral_filter(np.ones((4, 4)), channel_axis=0, spatial_dims=2),
            "at least 3",
        ),
        (lambda: F.bilateral_filter(np.ones((4, 4, 4)), spatial_dims=3, spacing=(1, 2)), "spacing"),
        (
            lambda: F.bilateral_filter(np.ones((4, 4, 4)), spatial_dims=3, spacing=(1, 0, 1)),
            "spacing",
        ),
        (lambda: F.bilateral_filter(np.ones((4, 4, 4)), spatial_dims=3, radius=(1, 2)), "radius"),
        (
            lambda: F.bilateral_filter(np.ones((4, 4, 4)), spatial_dims=3, radius=(1, -2, 1)),
            "radius",
        ),
        (lambda: F.bilateral_filter(np.ones(8), spatial_dims=1, spacing="x"), "spacing"),
        (
            lambda: F.joint_bilateral_filter(
                np.ones((4, 4, 4)), np.ones((4, 4, 5)), spatial_dims=3
            ),
            "do not match",
        ),
        (
            lambda: F.joint_bilateral_upsample(
                np.ones((2, 2, 2)), np.ones((4, 4, 5)), 2, spatial_dims=3
            ),
            "guide has shape",
        ),
        (
            lambda: F.joint_bilateral_upsample(
                np.ones((2, 2, 2)), np.ones((4, 4, 4)), 2, radius=(1, 0, 1), spatial_dims=3
            ),
            "radius",
        ),
        (lambda: F.detail_preserving_pool(np.ones((5, 5, 5)), (3, 2, 3), spatial_dims=3), "odd"),
        (
            lambda: F.detail_preserving_pool(
                np.ones((5, 5, 5)), 3, stride=(1, 0, 1), spatial_dims=3
            ),
            "stride",
        ),
    ],
)
def test_errors_name_function_argument_and_value(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_fill_border_is_numpy_pad_in_1d_and_3d(mode):
    """The band filled in place, axis by axis, equals numpy.pad of the interior (per-axis
    widths, repeated reflections on axes thinner than their width)."""
    rng = np.random.default_rng(16)
    for shape, r in [((7,), (3,)), ((2,), (4,)), ((4, 5, 6), (1, 2, 3)), ((3, 1, 5), (2, 1, 0))]:
        inner = rng.random((2,) + shape)
        a = np.full((2,) + tuple(n + 2 * p for n, p in zip(shape, r)), np.nan)
        a[(slice(None),) + tuple(slice(p, p + n) for n, p in zip(shape, r))] = inner
        F._fill_border(np, a, r, mode)
        want = np.pad(inner, [(0, 0)] + [(p, p) for p in r], mode=mode)
        np.testing.assert_array_equal(a, want, err_msg=f"{shape} {r}")


@settings(max_examples=40, deadline=None)
@given(
    nd=st.integers(1, 3),
    data=st.data(),
    border=st.sampled_from(F.BORDERS),
    guided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_joint_bilateral_random_geometry(nd, data, border, guided, seed):
    """Random shapes, per-axis radii (some beyond the image) and spacings in 1-3 dimensions:
    the window form, its pair form on padded volumes and the folded form all equal the
    definition."""
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=nd, max_size=nd)))
    radii = tuple(data.draw(st.lists(st.integers(0, 4), min_size=nd, max_size=nd)))
    spacing = tuple(data.draw(st.lists(st.sampled_from([0.5, 1.0, 2.5]), min_size=nd, max_size=nd)))
    rng = np.random.default_rng(seed)
    img = rng.random(shape + (2,))
    guide = rng.random(shape + (3,)) if guided else img
    out = F.joint_bilateral_filter(
        img,
        guide,
        sigma_spatial=1.3,
        sigma_color=0.5,
        radius=radii,
        border=border,
        channel_axis=-1,
        spatial_dims=nd,
        spacing=spacing,
    )
    expect = ref_joint_bilateral(img, guide, 1.3, 0.5, radii, border, spacing)
    np.testing.assert_allclose(out, expect, **TOL)
