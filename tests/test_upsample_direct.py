"""joint_bilateral_upsample's direct kernel over (high-res voxel, low-res sample) pairs
(``pacnp.cpu.upsample``, its CUDA twin ``pacnp.cuda.upsample``) on signals, images and
volumes: the definition, the transposed-PAC form it replaces, the phase and row tables, dtypes,
layouts, and the cost that no longer grows with the factor."""

import importlib.util
import itertools

import numpy as np
import pytest
from test_filters import brute_upsample
from test_filters_nd import ref_upsample

import pacnp
from pacnp import _api
from pacnp import filters as F


def old_fused(low, guide, f, sigma_spatial, sigma_color, r, conf):
    """The transposed PAC form of pacnp ≤ issue 15 (k = 2r + 1 on the output grid, stride f):
    low [B, C, h, w], guide [B, Cg, H, W] (not yet divided by σ_c), conf [B, 1, h, w]."""
    ct = low.dtype
    o = (f - 1) // 2
    xx = np.ascontiguousarray(np.concatenate([low * conf, conf], axis=1))
    g = np.ascontiguousarray(guide / ct.type(sigma_color))
    k = 2 * r + 1
    ws = F._gaussian_1d(r, sigma_spatial, ct)
    weight = np.outer(ws, ws).reshape(1, 1, k, k)
    out, _ = _api.pacconv_transpose2d_fused(
        xx,
        g,
        weight,
        stride=f,
        padding=r - o,
        output_padding=(f - 1) % 2,
        shared_filters=True,
        kernel_type="gaussian",
    )
    C = low.shape[1]
    num, den = out[:, :C], out[:, C:]
    tiny = np.finfo(ct).tiny
    return np.where(den >= tiny, num / np.where(den >= tiny, den, 1), np.nan)


def old_fused_nd(low, guide, f, sigmas, sigma_color, radii, conf):
    """The transposed PAC form that computed 1-D, 3-D and anisotropic upsampling before the
    direct kernel took them (window 2r_a + 1 per axis on the output grid, stride f, the
    separable Gaussian of σ_s in voxels ``sigmas``): low [B, C, *s], guide [B, Cg, *(s·f)],
    conf [B, 1, *s]."""
    nd = low.ndim - 2
    ct = low.dtype
    o = (f - 1) // 2
    xx = np.ascontiguousarray(np.concatenate([low * conf, conf], axis=1))
    g = np.ascontiguousarray(guide / ct.type(sigma_color))
    w = F._gaussian_window(radii, sigmas, ct)
    op = getattr(pacnp, f"pacconv_transpose{nd}d_fused")
    out, _ = op(
        xx,
        g,
        w.reshape((1, 1) + w.shape),
        stride=f,
        padding=tuple(r - o for r in radii),
        output_padding=(f - 1) % 2,
        shared_filters=True,
        kernel_type="gaussian",
    )
    C = low.shape[1]
    num, den = out[:, :C], out[:, C:]
    tiny = np.finfo(ct).tiny
    return np.where(den >= tiny, num / np.where(den >= tiny, den, 1), np.nan)


@pytest.mark.parametrize("f", [2, 3, 4, 5])
@pytest.mark.parametrize("radius", [None, "min", "wide"])
def test_matches_definition(f, radius):
    rng = np.random.default_rng(f)
    low = rng.random((4, 3))
    guide = rng.random((2, 4 * f, 3 * f))
    conf = (rng.random((4, 3)) > 0.3).astype(float)
    o = (f - 1) // 2
    r = {None: 3 * f // 2, "min": f - 1 - o, "wide": 3 * f + 1}[radius]
    out = F.joint_bilateral_upsample(
        low, guide, f, sigma_color=0.4, radius=r, guide_channel_axis=0, confidence=conf
    )
    expect = brute_upsample(low, guide, f, f / 2, 0.4, r, conf)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("f", [2, 3, 4, 8])
def test_matches_old_transposed_pac(dtype, tol, f):
    rng = np.random.default_rng(10 + f)
    B, C, h, w = 2, 3, 5, 7
    low = rng.random((B, C, h, w)).astype(dtype)
    guide = rng.random((B, 3, h * f, w * f)).astype(dtype)
    conf = (rng.random((B, 1, h, w)) > 0.25).astype(dtype) * rng.random((B, 1, h, w)).astype(dtype)
    r = 3 * f // 2
    out = F.joint_bilateral_upsample(
        low,
        guide,
        f,
        sigma_color=0.3,
        channel_axis=1,
        guide_channel_axis=1,
        confidence=conf[:, 0],
    )
    expect = old_fused(low, guide, f, f / 2, 0.3, r, conf)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expect, rtol=tol, atol=tol, equal_nan=True)
    assert np.isnan(out).sum() == np.isnan(expect).sum()


def test_phase_tables_cover_exactly_the_samples_in_reach():
    for f in range(2, 9):
        o = (f - 1) // 2
        for r in (f - 1 - o, 3 * f // 2, 2 * f + 3):
            ws = F._gaussian_1d(r, f / 2, np.float64)
            taps, weights, counts = F._phase_taps(f, o, r, ws)
            for p in range(f):
                want = [m for m in range(-5 * f, 5 * f) if abs(m * f + p - o) <= r]
                got = list(taps[p, : counts[p]])
                assert got == want, (f, r, p)
                assert np.array_equal(weights[p, : counts[p]], ws[np.array(want) * f + p - o + r])
            # the default radius: a number of samples per axis that does not grow with f
            if r == 3 * f // 2:
                assert counts.max() <= 4


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32, np.float64])
def test_dtypes_and_layouts(dtype):
    rng = np.random.default_rng(3)
    f = 4
    hi = rng.random((2, 24, 20, 3))  # B H W C
    low = hi[:, 1::f, 1::f]
    if np.dtype(dtype).kind == "u":
        scale = np.iinfo(dtype).max
        low, guide = (low * scale).astype(dtype), (hi * scale).astype(dtype)
    else:
        low, guide = low.astype(dtype), hi.astype(dtype)
    conf = np.ones((2, 6, 5))
    conf[0, 2:4, 1:3] = 0  # pixels without weight where nothing is in reach
    out = F.joint_bilateral_upsample(
        low, guide, f, channel_axis=-1, guide_channel_axis=-1, confidence=conf, radius=2
    )
    assert out.dtype == dtype and out.shape == (2, 24, 20, 3)
    ct = F.compute_dtype(dtype)
    ref = F.joint_bilateral_upsample(
        low.astype(ct),
        guide.astype(ct),
        f,
        channel_axis=-1,
        guide_channel_axis=-1,
        confidence=conf,
        radius=2,
        sigma_color=F.default_sigma_color(np, np.moveaxis(guide, -1, 1), ct),
    )
    empty = np.isnan(ref)
    assert empty.any()
    if np.dtype(dtype).kind == "u":
        assert (out[empty] == 0).all()
        info = np.iinfo(dtype)
        np.testing.assert_array_equal(
            out[~empty], np.clip(np.rint(ref[~empty]), info.min, info.max).astype(dtype)
        )
    else:
        assert np.isnan(out[empty]).all()
        np.testing.assert_allclose(out[~empty], ref[~empty].astype(dtype), rtol=2e-3)


def test_guide_without_channels_and_batch_of_one():
    rng = np.random.default_rng(4)
    low, guide = rng.random((5, 6)), rng.random((15, 18))
    out = F.joint_bilateral_upsample(low, guide, 3, sigma_color=0.2)
    expect = brute_upsample(low, guide[None], 3, 1.5, 0.2, 4, np.ones((5, 6)))
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("f", [2, 3, 4, 8, 16, 32])
def test_work_per_pixel_does_not_grow_with_the_factor(f):
    """The kernel visits, per output pixel and axis, the samples in reach of the default
    window (r = ⌊3f/2⌋): at most 2⌊r/f⌋ + 2 = 4 whatever the factor — against the 2r + 1 taps
    per axis the transposed PAC evaluated (×16: 4 instead of 49). The phase tables are the
    kernel's loop bounds, so counting their entries counts the work (no timing)."""
    r, o = 3 * f // 2, (f - 1) // 2
    ws = np.ones(2 * r + 1)
    taps, weights, counts = F._phase_taps(f, o, r, ws)
    assert counts.max() <= 4 and counts.min() >= 2, counts
    # each entry is a sample in reach, and every sample in reach is listed
    for p in range(f):
        ms = set(taps[p, : counts[p]].tolist())
        assert ms == {m for m in range(-r, r + 1) if abs(m * f + p - o) <= r}, (p, ms)


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)
def test_cuda_twin_under_the_simulator():
    """The numba.cuda twin, run by numba's simulator in a fresh interpreter, against the CPU
    kernel on tiny signals, images and volumes, folded as ``filters._upsample_direct`` folds
    them (both launchers take the same arguments), the weight sum channel included."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    code = (
        "import numpy as np\n"
        "from numba import cuda\n"
        "from pacnp import filters as F\n"
        "from pacnp.cpu import upsample as cpu\n"
        "from pacnp.cuda import upsample as gpu\n"
        "rng = np.random.default_rng(0)\n"
        "cases = ((np.float32, 2, (3, 2), (3, 3), (1.0, 1.0)),\n"
        "         (np.float64, 3, (3, 2), (4, 2), (1.5, 0.75)),\n"
        "         (np.float64, 2, (2, 3, 2), (1, 3, 2), (0.8, 1.0, 1.3)),\n"
        "         (np.float32, 3, (4,), (4,), (1.5,)))\n"
        "for dt, f, s, radii, sigmas in cases:\n"
        "    nd, B, C, Cg = len(s), 1, 2, 2\n"
        "    o = (f - 1) // 2\n"
        "    xx = rng.random((B, C + 1) + s).astype(dt)\n"
        "    xx[(0, C) + (1,) * nd] = 0\n"
        "    g = rng.random((B, Cg) + tuple(n * f for n in s)).astype(dt)\n"
        "    gs = np.ascontiguousarray(g[(slice(None),) * 2 + (slice(o, None, f),) * nd])\n"
        "    rt, rw = F._row_tables(f, o, radii[:-1], sigmas[:-1], s[:-1], dt)\n"
        "    ws = F._gaussian_1d(radii[-1], sigmas[-1], dt)\n"
        "    t, wt, n = F._phase_taps(f, o, radii[-1], ws)\n"
        "    rows, R, W = int(np.prod(s[:-1])), rt.shape[0], s[-1] * f\n"
        "    fold = (xx.reshape(B, C + 1, rows, s[-1]), g.reshape(B, Cg, R, W),\n"
        "            gs.reshape(B, Cg, rows, s[-1]))\n"
        "    a = np.empty((B, C + 1, R, W), dt)\n"
        "    cpu.joint_upsample(*fold, f, rt, rw, t, wt, n, a)\n"
        "    d = cuda.device_array(a.shape, dtype=dt)\n"
        "    dev = [cuda.to_device(v) for v in fold]\n"
        "    gpu.joint_upsample(*dev, f, rt, rw, t, wt, n, d)\n"
        "    b = d.copy_to_host()\n"
        "    tol = 1e-5 if dt == np.float32 else 1e-12\n"
        "    np.testing.assert_allclose(b, a, rtol=tol, atol=tol, equal_nan=True)\n"
        "    assert np.isfinite(a[:, C]).all() and (a[:, C] > 0).any()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_weight_sum_channel():
    """An ``out`` of C + 1 channels also gets Σ w·conf (the demo reads it): the definition's
    denominator, 0 where no sample with confidence is in reach."""
    rng = np.random.default_rng(8)
    f, h, w = 3, 4, 5
    o, r = 1, 4
    low = rng.random((h, w))
    guide = rng.random((2, h * f, w * f))
    conf = (rng.random((h, w)) > 0.4).astype(float)
    xx = np.ascontiguousarray(np.stack([low * conf, conf])[None])
    g = np.ascontiguousarray(guide[None] / 0.3)
    out = np.empty((1, 2, h * f, w * f))
    F._upsample_direct(np, xx, g, f, r, 1.5, out)
    den = np.zeros((h * f, w * f))
    for Y in range(h * f):
        for X in range(w * f):
            for n in range(h):
                for m in range(w):
                    sy, sx = n * f + o, m * f + o
                    if abs(sy - Y) <= r and abs(sx - X) <= r:
                        den[Y, X] += (
                            np.exp(-((sy - Y) ** 2 + (sx - X) ** 2) / (2 * 1.5**2))
                            * np.exp(-np.sum((guide[:, Y, X] - guide[:, sy, sx]) ** 2) / 0.18)
                            * conf[n, m]
                        )
    np.testing.assert_allclose(out[0, 1], den, rtol=1e-12, atol=1e-300)
    expect = brute_upsample(low, guide, f, 1.5, 0.3, r, conf)
    np.testing.assert_allclose(out[0, 0], expect, rtol=1e-12, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------- 1-D, 3-D, anisotropic
CONFS = ("none", "binary", "fractional", "sparse")


def _confidence(kind, rng, shape):
    """None; 0/1; fractions with zeros; one sample only (voxels out of its reach: NaN)."""
    if kind == "none":
        return None
    if kind == "binary":
        return (rng.random(shape) > 0.3).astype(float)
    if kind == "fractional":
        return rng.random(shape) * (rng.random(shape) > 0.2)
    conf = np.zeros(shape)
    conf[(0,) * len(shape)] = 1
    return conf


def _expect(low, guide, plan, sigma_color, conf):
    """ref_upsample (``tests/test_filters_nd.py``) of a plan's resolved radii, σ_s, spacing:
    ``low`` [*s], ``guide`` [*S, Cg]."""
    conf = np.ones(low.shape) if conf is None else conf
    return ref_upsample(
        low, guide, plan.factor, plan.sigma_spatial, sigma_color, plan.radii, conf, plan.spacing
    )


def _min_radius(f):
    return f - 1 - (f - 1) // 2


@pytest.mark.parametrize("f", [2, 3, 4, 5])
@pytest.mark.parametrize("radius", [None, "min", "wide"])
@pytest.mark.parametrize("conf_kind", CONFS)
def test_1d_matches_definition(f, radius, conf_kind):
    rng = np.random.default_rng(f)
    low = rng.random((2, 7))  # C, L
    guide = rng.random((3, 7 * f))  # Cg, L·f
    conf = _confidence(conf_kind, rng, (7,))
    r = {None: None, "min": _min_radius(f), "wide": 3 * f + 1}[radius]
    kw = dict(sigma_color=0.4, radius=r, channel_axis=0, guide_channel_axis=0, spatial_dims=1)
    out = F.joint_bilateral_upsample(low, guide, f, confidence=conf, **kw)
    plan = F.plan_joint_bilateral_upsample(low, guide, f, **kw)
    assert out.shape == (2, 7 * f)
    for c in range(2):
        expect = _expect(low[c], guide.T, plan, 0.4, conf)
        np.testing.assert_allclose(out[c], expect, rtol=1e-12, atol=1e-12, equal_nan=True)
    if conf_kind == "sparse":
        assert np.isnan(out).any()


# radius, spacing, sigma_spatial: isotropic defaults, radii per axis, spacing (σ_s per axis),
# a radius beyond the short first axis (clamped per axis), both anisotropies at once
VOLUME_GEOMETRIES = [
    (None, None, None),
    ((1, 2, 3), None, 1.1),
    (None, (2.0, 1.0, 0.5), None),
    ((7, 1, 2), (1.0, 3.0, 1.0), 1.4),
]


@pytest.mark.parametrize("f", [2, 3])
@pytest.mark.parametrize("radius, spacing, sigma", VOLUME_GEOMETRIES)
@pytest.mark.parametrize("conf_kind", CONFS)
def test_3d_matches_definition(f, radius, spacing, sigma, conf_kind):
    rng = np.random.default_rng(20 + f)
    s = (2, 3, 4)
    low = rng.random(s)
    guide = rng.random(tuple(n * f for n in s) + (2,))
    conf = _confidence(conf_kind, rng, s)
    if radius is not None:
        radius = tuple(max(r, _min_radius(f)) for r in radius)
    kw = dict(
        sigma_spatial=sigma,
        sigma_color=0.5,
        radius=radius,
        spacing=spacing,
        guide_channel_axis=-1,
        spatial_dims=3,
    )
    out = F.joint_bilateral_upsample(low, guide, f, confidence=conf, **kw)
    plan = F.plan_joint_bilateral_upsample(low, guide, f, **kw)
    expect = _expect(low, guide, plan, 0.5, conf)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("f", [2, 3, 4])
@pytest.mark.parametrize("geometry", ["radii", "spacing", "both"])
@pytest.mark.parametrize("conf_kind", CONFS)
def test_anisotropic_2d_matches_definition(f, geometry, conf_kind):
    rng = np.random.default_rng(30 + f)
    low = rng.random((4, 3))
    guide = rng.random((2, 4 * f, 3 * f))
    conf = _confidence(conf_kind, rng, (4, 3))
    radius = {"radii": (_min_radius(f), 2 * f + 1), "spacing": None, "both": (2 * f, f)}
    spacing = {"radii": None, "spacing": (1.0, 2.0), "both": (0.5, 1.5)}
    kw = dict(
        sigma_color=0.4,
        radius=radius[geometry],
        spacing=spacing[geometry],
        guide_channel_axis=0,
    )
    out = F.joint_bilateral_upsample(low, guide, f, confidence=conf, **kw)
    plan = F.plan_joint_bilateral_upsample(low, guide, f, **kw)
    assert len(set(plan.radii)) > 1 or len(set(plan.voxel_sigmas)) > 1
    expect = _expect(low, np.moveaxis(guide, 0, -1), plan, 0.4, conf)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_3d_batch_channels_and_layout():
    rng = np.random.default_rng(40)
    f = 2
    low = rng.random((2, 3, 2, 3, 2))  # B, D, H, W, C
    guide = rng.random((2, 6, 4, 6, 3))  # B, D·f, H·f, W·f, Cg
    conf = rng.random((2, 3, 2, 3))
    kw = dict(sigma_color=0.6, channel_axis=-1, guide_channel_axis=-1, spatial_dims=3)
    out = F.joint_bilateral_upsample(low, guide, f, confidence=conf, **kw)
    plan = F.plan_joint_bilateral_upsample(low, guide, f, **kw)
    assert out.shape == (2, 6, 4, 6, 2)
    for b, c in itertools.product(range(2), range(2)):
        expect = _expect(low[b, ..., c], guide[b], plan, 0.6, conf[b])
        np.testing.assert_allclose(out[b, ..., c], expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize(
    "f, s, radii, spacing",
    [
        (4, (6,), (6,), (1.0,)),
        (3, (4, 3), (4, 2), (1.0, 2.0)),
        (2, (3, 4, 3), (3, 3, 3), (1.0, 1.0, 1.0)),
        (3, (3, 2, 3), (2, 4, 3), (1.0, 2.0, 1.0)),
    ],
)
def test_matches_old_transposed_pac_nd(dtype, tol, f, s, radii, spacing):
    """The direct kernel against the transposed PAC it replaced for these shapes, float32
    included (the two sum the same terms in different orders)."""
    rng = np.random.default_rng(50 + f)
    B, C = 2, 2
    low = rng.random((B, C) + s).astype(dtype)
    guide = rng.random((B, 3) + tuple(n * f for n in s)).astype(dtype)
    conf = (rng.random((B, 1) + s) > 0.25).astype(dtype) * rng.random((B, 1) + s).astype(dtype)
    sigma = f / 2
    out = F.joint_bilateral_upsample(
        low,
        guide,
        f,
        sigma_spatial=sigma,
        sigma_color=0.3,
        radius=radii,
        spacing=spacing,
        channel_axis=1,
        guide_channel_axis=1,
        confidence=conf[:, 0],
        spatial_dims=len(s),
    )
    sigmas = tuple(sigma / h for h in spacing)
    expect = old_fused_nd(low, guide, f, sigmas, 0.3, radii, conf)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expect, rtol=tol, atol=tol, equal_nan=True)
    assert np.isnan(out).sum() == np.isnan(expect).sum()


def test_row_tables_cover_exactly_the_samples_in_reach():
    """rtab/rw over two folded leading axes: each high-res row lists every low-res row in
    reach on both axes once, with the product of the axes' w_s; unused entries are −1 with
    weight 0. No leading axis: one row reading row 0 with weight 1."""
    f, o = 3, 1
    radii, sigmas, s = (2, 4), (1.0, 2.0), (2, 3)
    rtab, rw = F._row_tables(f, o, radii, sigmas, s, np.float64)
    assert rtab.shape[0] == rw.shape[0] == (2 * f) * (3 * f)
    assert (rw[rtab < 0] == 0).all()
    for Y0, Y1 in itertools.product(range(2 * f), range(3 * f)):
        row = Y0 * 3 * f + Y1
        valid = rtab[row] >= 0
        got = dict(zip(rtab[row, valid].tolist(), rw[row, valid].tolist()))
        assert len(got) == valid.sum()  # no sample twice
        want = {}
        for n0, n1 in itertools.product(range(2), range(3)):
            d0, d1 = n0 * f + o - Y0, n1 * f + o - Y1
            if abs(d0) <= radii[0] and abs(d1) <= radii[1]:
                want[n0 * 3 + n1] = np.exp(-(d0**2) / 2 / sigmas[0] ** 2) * np.exp(
                    -(d1**2) / 2 / sigmas[1] ** 2
                )
        assert got.keys() == want.keys(), (Y0, Y1)
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-15)
    rtab, rw = F._row_tables(f, o, (), (), (), np.float32)
    assert rtab.tolist() == [[0]] and rw.tolist() == [[1.0]] and rw.dtype == np.float32


@pytest.mark.parametrize("f", [2, 3, 4, 8])
def test_volume_work_per_voxel_does_not_grow_with_the_factor(f):
    """A volume's voxel visits at most 4 samples per axis for the default radius ⌊3f/2⌋:
    ≤ 16 folded rows × ≤ 4 columns, against the transposed PAC's (2r + 1)³ taps. The tables
    are the kernel's loop bounds, so counting their entries counts the work (no timing)."""
    r, o = 3 * f // 2, (f - 1) // 2
    rtab, _ = F._row_tables(f, o, (r, r), (f / 2, f / 2), (9, 9), np.float64)
    assert ((rtab >= 0).sum(axis=1) <= 16).all()
    assert (rtab >= 0).sum(axis=1).min() >= 4


def test_weight_sum_channel_3d():
    """``_upsample_direct`` with a radius and σ_s per axis: the C + 1'th channel is the
    definition's denominator Σ w·conf (0 where no sample with confidence is in reach)."""
    rng = np.random.default_rng(9)
    f, s = 2, (2, 3, 3)
    radii, sigmas = (1, 3, 2), (0.7, 1.5, 1.1)
    o = 0
    low = rng.random(s)
    guide = rng.random((2,) + tuple(n * f for n in s))
    conf = (rng.random(s) > 0.4).astype(float)
    xx = np.ascontiguousarray(np.stack([low * conf, conf])[None])
    g = np.ascontiguousarray(guide[None] / 0.3)
    out = np.empty((1, 2) + tuple(n * f for n in s))
    F._upsample_direct(np, xx, g, f, radii, sigmas, out)
    den = np.zeros(out.shape[2:])
    for Y in itertools.product(*[range(n * f) for n in s]):
        for n in itertools.product(*[range(m) for m in s]):
            P = tuple(k * f + o for k in n)
            d = [p - y for p, y in zip(P, Y)]
            if all(abs(v) <= r for v, r in zip(d, radii)):
                ws = np.exp(-sum(v * v / (2 * sg * sg) for v, sg in zip(d, sigmas)))
                wc = np.exp(
                    -np.sum((guide[(slice(None),) + Y] - guide[(slice(None),) + P]) ** 2) / 0.18
                )
                den[Y] += ws * wc * conf[n]
    np.testing.assert_allclose(out[0, 1], den, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("min_cols", [1, 2, 3])
@pytest.mark.parametrize("s", [(9,), (1, 8)])
def test_rows_cut_into_column_blocks(monkeypatch, min_cols, s):
    """A signal (or an image of few rows) is also cut into blocks of columns so that every
    thread gets work (``config.UPSAMPLE_MIN_BLOCK_COLS``, lowered here so that tiny inputs are
    cut into blocks down to one column): the same result as the definition."""
    from pacnp import config

    monkeypatch.setattr(config, "UPSAMPLE_MIN_BLOCK_COLS", min_cols)
    rng = np.random.default_rng(60 + min_cols)
    f = 3
    low = rng.random(s)
    guide = rng.random(tuple(n * f for n in s) + (2,))
    conf = (rng.random(s) > 0.2).astype(float)
    kw = dict(sigma_color=0.5, guide_channel_axis=-1, spatial_dims=len(s))
    out = F.joint_bilateral_upsample(low, guide, f, confidence=conf, **kw)
    plan = F.plan_joint_bilateral_upsample(low, guide, f, **kw)
    expect = _expect(low, guide, plan, 0.5, conf)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12, equal_nan=True)
