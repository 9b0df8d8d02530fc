"""joint_bilateral_upsample's direct kernel over (high-res pixel, low-res sample) pairs
(``pacnp.cpu.upsample``, its CUDA twin ``pacnp.cuda.upsample``): the definition, the
transposed-PAC form it replaces, the phase tables, dtypes, layouts, and the cost that no longer
grows with the factor."""

import importlib.util

import numpy as np
import pytest
from test_filters import brute_upsample

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
    kernel on a tiny shape (both launchers take the same arguments)."""
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
        "for dt, f in ((np.float32, 2), (np.float64, 3)):\n"
        "    B, C, h, w = 1, 2, 3, 2\n"
        "    o = (f - 1) // 2\n"
        "    r = 3 * f // 2\n"
        "    xx = rng.random((B, C + 1, h, w)).astype(dt)\n"
        "    xx[0, C, 1, 1] = 0\n"
        "    g = rng.random((B, 2, h * f, w * f)).astype(dt)\n"
        "    ws = F._gaussian_1d(r, f / 2, dt)\n"
        "    t, wt, n = F._phase_taps(f, o, r, ws)\n"
        "    a = np.empty((B, C + 1, h * f, w * f), dt)\n"
        "    cpu.joint_upsample(xx, g, f, o, t, wt, n, a)\n"
        "    d = cuda.device_array(a.shape, dtype=dt)\n"
        "    gpu.joint_upsample(cuda.to_device(xx), cuda.to_device(g), f, o, t, wt, n, d)\n"
        "    b = d.copy_to_host()\n"
        "    tol = 1e-5 if dt == np.float32 else 1e-12\n"
        "    np.testing.assert_allclose(b, a, rtol=tol, atol=tol, equal_nan=True)\n"
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
