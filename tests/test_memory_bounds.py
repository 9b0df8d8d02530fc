"""Memory and cost bounded by the output and what the window can reach (issue 14).

* A failed allocation is a MemoryError that reaches the caller, never a partial result: the CPU
  kernels allocate no scratch inside their parallel regions (the launchers do), checked in a
  subprocess under a tight address-space limit.
* Taps that can never meet the guide are left out of the fused path (``pacnp._ops.live_taps``),
  so a window far larger than the image neither stores nor evaluates them: equal to the
  two-step path, which keeps them.
* The filters with a radius far beyond the image: the padded taps fold onto the pixels they
  repeat (``filters._direct_weighted_sum``), equal to the window form and to the definition.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_filters import brute_joint_bilateral, brute_upsample

import pacnp
from pacnp import config
from pacnp import filters as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- folding
@pytest.mark.parametrize("mode", ["edge", "reflect"])
def test_border_index_is_numpy_pad(mode):
    for n in range(1, 7):
        for r in (0, 1, n, 3 * n + 2, 25):
            want = np.pad(np.arange(n), r, mode=mode)
            got = F._border_index(np.arange(-r, n + r), n, mode)
            np.testing.assert_array_equal(got, want, err_msg=f"{mode} n={n} r={r}")


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 4),
    w=st.integers(1, 5),
    extra=st.integers(0, 4),
    border=st.sampled_from(["nearest", "reflect", "constant"]),
    guided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_direct_sum_equals_window_form(h, w, extra, border, guided, seed):
    """Where both run (a radius ≥ the image), the folded sum equals the padded window form."""
    rng = np.random.default_rng(seed)
    x = rng.random((2, 2, h, w))
    g = rng.random((2, 3, h, w)) if guided else None
    r = max(h, w) + extra
    ss, sc = 0.7 + rng.random() * 3, 0.3 + rng.random()
    ws = F._gaussian_1d(r, ss, np.float64)
    num0, den0 = F._weighted_sum("t", np, x, g, sc, np.outer(ws, ws), border, r, np.float64)
    num1, den1 = F._direct_weighted_sum(np, x, g, sc, r, ss, border, np.float64)
    np.testing.assert_allclose(num1, num0, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(den1, den0, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("border", F.BORDERS)
def test_radius_beyond_image_matches_definition(border):
    rng = np.random.default_rng(3)
    img, guide = rng.random((2, 3, 2)), rng.random((2, 3, 1))
    for r in (3, 8):
        out = F.joint_bilateral_filter(
            img, guide, sigma_spatial=2.5, sigma_color=0.4, radius=r, border=border, channel_axis=-1
        )
        expect = brute_joint_bilateral(img, guide, 2.5, 0.4, r, border)
        np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12, err_msg=f"r={r}")


@pytest.mark.parametrize("border", F.BORDERS)
def test_huge_radius_costs_what_the_image_reaches(border):
    """The issue's case: a 1×6 image, radius 4000 (nearest took > 300 s, cost ~ r³)."""
    rng = np.random.default_rng(4)
    img = rng.random((1, 6)).astype(np.float32)
    far = F.bilateral_filter(
        img, sigma_spatial=4000 / 3, sigma_color=0.3, radius=4000, border=border
    )
    far64 = F.bilateral_filter(
        img.astype(np.float64), sigma_spatial=4000 / 3, sigma_color=0.3, radius=4000, border=border
    )
    assert np.isfinite(far).all()
    # folded onto the image: float32 agrees with float64 (the padded window form summed 64 M
    # float32 taps per pixel and drifted by ~1e-4)
    np.testing.assert_allclose(far, far64, rtol=2e-6, atol=2e-7)
    # σ_s = 2: every tap beyond ~30 pixels weighs 0 in float32, so radius 4000 is radius 40
    a = F.bilateral_filter(img, sigma_spatial=2.0, sigma_color=0.3, radius=4000, border=border)
    b = F.bilateral_filter(img, sigma_spatial=2.0, sigma_color=0.3, radius=40, border=border)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_upsample_radius_beyond_image_is_exact_and_small():
    rng = np.random.default_rng(5)
    low, guide = rng.random((3, 2)), rng.random((6, 4))
    out = F.joint_bilateral_upsample(low, guide, 2, sigma_spatial=3.0, sigma_color=0.5, radius=2000)
    expect = brute_upsample(low, guide[None], 2, 3.0, 0.5, 2000, np.ones((3, 2)))
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(1, 4),
    w=st.integers(1, 5),
    extra=st.integers(0, 3),
    border=st.sampled_from(["nearest", "reflect", "constant"]),
    stride=st.integers(1, 3),
    lam=st.sampled_from([-1.0, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_direct_pool_equals_window_form(h, w, extra, border, stride, lam, seed):
    """detail_preserving_pool with a window larger than the image (folded over the image's
    pixels) equals the padded window form it replaces."""
    rng = np.random.default_rng(seed)
    x = rng.random((2, 2, h, w))
    r = max(h, w) + extra
    plan = F.plan_detail_preserving_pool(
        x, 2 * r + 1, stride=stride, alpha=0.3, lam=lam, border=border, channel_axis=1
    )
    got = F.pool(plan, x)
    pad = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode=F._PAD_MODE[border])
    want, _ = pacnp.pacpool2d_fused(
        pad,
        pad,
        2 * r + 1,
        stride=stride,
        padding=0,
        kernel_type=f"inv_{0.3!r}_{2 * lam!r}_fixed",
        smooth_kernel_type="gaussian",
        channel_wise=True,
        normalize_kernel=True,
    )
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_huge_pool_window_is_bounded_by_the_image():
    """An 8001-wide window on a 1 × 6 image: accepted (the window-size limit applies to what
    the window can reach) and computed by folding onto the image — the same numbers in float32
    and float64 (the padded window form summed 64 M float32 taps per output and drifted)."""
    rng = np.random.default_rng(8)
    img = rng.random((1, 6))
    for border in F.BORDERS:
        out32 = F.detail_preserving_pool(img.astype(np.float32), 8001, stride=2, border=border)
        out64 = F.detail_preserving_pool(img, 8001, stride=2, border=border)
        assert np.isfinite(out64).all(), border
        np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-6, err_msg=border)


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    f=st.integers(2, 4),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_direct_upsample_equals_definition(h, w, f, extra, seed):
    """joint_bilateral_upsample with a window wider than the samples' grid (summed over the
    samples) equals the definition, confidence and guide channels included."""
    rng = np.random.default_rng(seed)
    low = rng.random((h, w))
    guide = rng.random((2, h * f, w * f))
    conf = rng.random((h, w)) * (rng.random((h, w)) > 0.2)
    r = max(h, w) * f // 2 + f + extra
    out = F.joint_bilateral_upsample(
        low,
        guide,
        f,
        sigma_spatial=1.5,
        sigma_color=0.5,
        radius=r,
        guide_channel_axis=0,
        confidence=conf,
    )
    expect = brute_upsample(low, guide, f, 1.5, 0.5, r, conf)
    np.testing.assert_allclose(out, expect, rtol=1e-11, atol=1e-12, equal_nan=True)


def test_large_upsample_with_huge_radius_is_bounded():
    rng = np.random.default_rng(9)
    low, guide = rng.random((24, 20)).astype(np.float32), rng.random((48, 40)).astype(np.float32)
    out = F.joint_bilateral_upsample(low, guide, 2, radius=10**6)
    # no output pixel is farther than 2 · 24 high-res pixels from any sample: the radius is
    # clamped to that reach, exactly (the window-size limit applies to the reach too)
    reach = F.joint_bilateral_upsample(low, guide, 2, radius=48)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, reach)


# --------------------------------------------------------------------------- dead taps
@pytest.mark.parametrize("op", ["conv", "conv_dense", "transpose", "pool"])
def test_dead_taps_trimmed_equal_two_step(backend, op, monkeypatch):
    """A window much larger than the image (padding beyond reach): the fused path, which drops
    the taps that never meet the guide, equals the two-step path on the CPU (K whole), forward
    and the gradients of input, guide and α/λ; with many small stripes too."""
    monkeypatch.setattr(config, "STRIPE_BYTES", 1)
    rng = np.random.default_rng(7)
    k, p = 15, 7
    x = rng.standard_normal((2, 2, 4, 3))
    kw = dict(kernel_type="inv_0.5_-1")
    if op == "transpose":
        guide = rng.standard_normal((2, 2, 7, 5))
        w = rng.standard_normal((1, 1, k, k))
        geo = dict(stride=2, padding=p, output_padding=0)
        K, _ = pacnp.packernel2d(guide, k, transposed=True, **geo, **kw)
        ref = pacnp.pacconv_transpose2d(x, K, w, shared_filters=True, **geo)
        out, _ = backend.call(
            pacnp.pacconv_transpose2d_fused, x, guide, w, shared_filters=True, **geo, **kw
        )
    else:
        guide = rng.standard_normal((2, 2, 4, 3))
        geo = dict(padding=p)
        K, _ = pacnp.packernel2d(guide, k, **geo, **kw)
        if op == "pool":
            ref = pacnp.pacpool2d(x, K, k, **geo)
            out, _ = backend.call(pacnp.pacpool2d_fused, x, guide, k, **geo, **kw)
        else:
            w = rng.standard_normal((3, 2, k, k) if op == "conv_dense" else (1, 1, k, k))
            sh = op == "conv"
            ref = pacnp.pacconv2d(x, K, w, shared_filters=sh, **geo)
            out, _ = backend.call(
                pacnp.pacconv2d_fused, x, guide, w, shared_filters=sh, **geo, **kw
            )
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    if op == "conv":
        g = rng.standard_normal(out.shape)
        kb = dict(kernel_type="inv", inv_alpha=0.5, inv_lambda=-1.0)
        got = backend.call(
            pacnp.pacconv2d_fused_backward,
            g,
            x,
            guide,
            w,
            shared_filters=True,
            **geo,
            **kb,
            needs=(True, True, False, False, True, True, False),
        )
        full = pacnp.pacconv2d_fused_backward(g, x, guide, w, shared_filters=True, **geo, **kb)
        for a, b in zip(got, full):
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    half=st.integers(0, 9),
    pad=st.integers(0, 9),
    stride=st.integers(1, 3),
    norm=st.booleans(),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_generated_windows_beyond_the_image(h, w, half, pad, stride, norm, masked, seed):
    """Generated geometries, windows up to 19 wide on images down to 1 pixel, padding up to
    the reach: the fused pool (dead taps dropped) equals the two-step pool (K whole), with
    kernel normalisation and masks (whose statistics must skip exactly the dropped taps)."""
    k = 2 * half + 1
    pad = min(pad, half)
    if (h + 2 * pad - k) < 0 or (w + 2 * pad - k) < 0:
        return  # an empty output: refused, not this test's subject
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, h, w))
    guide = rng.standard_normal((1, 2, h, w))
    mask = (rng.random((1, 1, h, w)) > 0.3).astype(np.float64) if masked else None
    kw = dict(kernel_type="gaussian", normalize_kernel=norm, mask=mask)
    geo = dict(stride=stride, padding=pad)
    K, om = pacnp.packernel2d(guide, k, **geo, **kw)
    ref = pacnp.pacpool2d(x, K, k, **geo)
    out, om2 = pacnp.pacpool2d_fused(x, guide, k, **geo, **kw)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    if masked:
        np.testing.assert_array_equal(om2, om)


def test_stripes_respect_the_budget(monkeypatch):
    from pacnp import _ops
    from pacnp._core import plan_packernel

    guide = np.zeros((1, 1, 40, 30))
    plan = plan_packernel(
        "t",
        guide,
        5,
        stride=1,
        padding=2,
        output_padding=0,
        dilation=1,
        kernel_type="gaussian",
        smooth_kernel_type="none",
        smooth_kernel=None,
        inv_alpha=None,
        inv_lambda=None,
        channel_wise=False,
        normalize_kernel=False,
        mask=None,
        transposed=False,
    )
    row = 25 * 30 * 8
    monkeypatch.setattr(config, "STRIPE_BYTES", 3 * row)
    s = _ops.stripes(plan)
    assert all(y1 - y0 <= 3 for y0, y1 in s) and s[-1][1] == 40
    monkeypatch.setattr(config, "STRIPE_BYTES", 1)  # one row: never less
    assert all(y1 - y0 == 1 for y0, y1 in _ops.stripes(plan))


# --------------------------------------------------------------------------- low memory
LOW_MEMORY = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import pacnp
    from pacnp import filters
    rng = np.random.default_rng(0)
    low = rng.random((3, 2)).astype(np.float32)
    g = rng.random((6, 4)).astype(np.float32)
    small = filters.joint_bilateral_upsample(low, g, 2, radius=5)  # compiled before the limit
    K0, _ = pacnp.packernel2d(g[None, None], 5, padding=2)
    limit = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    def report(name, f):
        try:
            ok = f()
        except MemoryError:
            print(name, "MemoryError")
        else:
            print(name, "ok" if ok else "WRONG")
    report("upsample", lambda: np.allclose(
        filters.joint_bilateral_upsample(low, g, 2, radius=2000), small, rtol=1e-5, atol=1e-6))
    def kernel():
        K, _ = pacnp.packernel2d(g[None, None], 4001, padding=2000)
        c = K[0, 0, 1998:2003, 1998:2003]
        return np.allclose(c, K0[0, 0]) and np.count_nonzero(K) == np.count_nonzero(K0)
    report("packernel2d", kernel)
    img = rng.random((1, 6)).astype(np.float32)
    near = filters.bilateral_filter(img, sigma_spatial=2.0, sigma_color=0.3, radius=40,
                                    border="nearest")
    report("bilateral", lambda: np.allclose(filters.bilateral_filter(
        img, sigma_spatial=2.0, sigma_color=0.3, radius=4000, border="nearest"), near,
        rtol=1e-6, atol=1e-7))
    x = rng.standard_normal((1, 2, 6, 4))
    gg = rng.standard_normal((1, 2, 6, 4))
    wt = rng.standard_normal((3, 2, 5, 5))
    ref = pacnp.pacconv2d_fused_backward(np.ones((1, 3, 6, 4)), x, gg, wt, padding=2,
                                         needs=(True, True, False, False, False, False, False))
    big = np.zeros((3, 2, 2001, 2001))
    big[:, :, 998:1003, 998:1003] = wt
    def fused():
        got = pacnp.pacconv2d_fused_backward(
            np.ones((1, 3, 6, 4)), x, gg, big, padding=1000,
            needs=(True, True, False, False, False, False, False))
        return all(np.allclose(a, b) for a, b in zip(got[:2], ref[:2]))
    report("fused_backward", fused)
""")


@pytest.mark.parametrize("limit_mib", [2560, 1400])
def test_failed_allocation_reaches_the_caller(limit_mib):
    """Under a tight address-space limit every call gives the right result or a MemoryError:
    never NaN, a SystemError or a K left partly unwritten."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-c", LOW_MEMORY, str(limit_mib)],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = r.stdout.split("\n")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("upsample", "packernel2d", "bilateral", "fused_backward"):
        line = next(ln for ln in lines if ln.startswith(name + " "))
        assert line.split()[1] in ("ok", "MemoryError"), (line, r.stderr[-3000:])
    # these store only what reaches the image: they must fit in any such limit
    assert "upsample ok" in lines and "bilateral ok" in lines
