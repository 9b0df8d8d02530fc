"""pacnp.filters against brute-force loops written from the filters' definitions (float64)."""

import numpy as np
import pytest

from pacnp import filters as F

PAD = {"reflect": "reflect", "nearest": "edge", "constant": "constant"}


def brute_joint_bilateral(img, guide, ss, sc, r, border):
    """img [H, W, C], guide [H, W, Cg]; the definition, one pixel and one tap at a time."""
    H, W, C = img.shape
    inside = np.ones((H, W))
    if border == "renormalize":
        pi = np.pad(img, ((r, r), (r, r), (0, 0)))
        pg = np.pad(guide, ((r, r), (r, r), (0, 0)))
        pm = np.pad(inside, r)
    else:
        pi = np.pad(img, ((r, r), (r, r), (0, 0)), mode=PAD[border])
        pg = np.pad(guide, ((r, r), (r, r), (0, 0)), mode=PAD[border])
        pm = np.pad(inside, r, mode="constant", constant_values=1)
    out = np.zeros_like(img)
    for y in range(H):
        for x in range(W):
            num, den = np.zeros(C), 0.0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    q = (y + r + dy, x + r + dx)
                    ws = np.exp(-(dy * dy + dx * dx) / (2 * ss * ss))
                    wc = np.exp(-np.sum((pg[q] - guide[y, x]) ** 2) / (2 * sc * sc))
                    num += ws * wc * pm[q] * pi[q]
                    den += ws * wc * pm[q]
            out[y, x] = num / den
    return out


@pytest.mark.parametrize("border", F.BORDERS)
@pytest.mark.parametrize("cg", [1, 2])
def test_joint_bilateral_matches_definition(border, cg):
    rng = np.random.default_rng(1)
    img = rng.random((7, 9, 3))
    guide = rng.random((7, 9, cg))
    out = F.joint_bilateral_filter(
        img, guide, sigma_spatial=1.3, sigma_color=0.4, radius=2, border=border, channel_axis=-1
    )
    expect = brute_joint_bilateral(img, guide, 1.3, 0.4, 2, border)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


def test_bilateral_is_joint_with_itself_and_defaults():
    rng = np.random.default_rng(2)
    img = rng.random((6, 8))
    out = F.bilateral_filter(img, sigma_spatial=0.8)
    r = F.default_radius(0.8)
    assert r == 3
    sc = img.std()  # the documented default sigma_color
    expect = brute_joint_bilateral(img[..., None], img[..., None], 0.8, sc, r, "reflect")[..., 0]
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("border", F.BORDERS)
@pytest.mark.parametrize("hw", [(7, 9), (2, 3), (1, 5)])
def test_bilateral_rgb_guided_by_itself(border, hw):
    """The image as its own guide (one padded copy serves both) with an RGB guide (the pair
    form's single-pass distance), small images included (radius ≥ the image: numpy's repeated
    reflection)."""
    rng = np.random.default_rng(3)
    img = rng.random(hw + (3,))
    out = F.bilateral_filter(
        img, sigma_spatial=1.1, sigma_color=0.3, radius=3, border=border, channel_axis=-1
    )
    expect = brute_joint_bilateral(img, img, 1.1, 0.3, 3, border)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)
    out32 = F.bilateral_filter(
        img.astype(np.float32),
        sigma_spatial=1.1,
        sigma_color=0.3,
        radius=3,
        border=border,
        channel_axis=-1,
    )
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_fill_border_is_numpy_pad(mode):
    rng = np.random.default_rng(4)
    for h, w, r in [(5, 6, 0), (5, 6, 2), (4, 4, 3), (2, 7, 1), (1, 1, 2), (3, 2, 5)]:
        inner = rng.random((2, 3, h, w))
        a = np.full((2, 3, h + 2 * r, w + 2 * r), np.nan)
        a[..., r : r + h, r : r + w] = inner
        F._fill_border(np, a, r, mode)
        np.testing.assert_array_equal(
            a, np.pad(inner, ((0, 0), (0, 0), (r, r), (r, r)), mode=mode), err_msg=f"{(h, w, r)}"
        )


@pytest.mark.parametrize("layout", ["HW", "HWC", "CHW", "NHWC", "NCHW"])
def test_layouts_and_batches_agree(layout):
    rng = np.random.default_rng(3)
    imgs = rng.random((2, 6, 7, 3))  # N H W C
    kw = dict(sigma_spatial=1.0, sigma_color=0.3, radius=1)
    per = [F.joint_bilateral_filter(im, im, channel_axis=-1, **kw) for im in imgs]
    if layout == "HW":
        out = F.bilateral_filter(imgs[0, ..., 0], **kw)
        expect = brute_joint_bilateral(imgs[0, ..., :1], imgs[0, ..., :1], 1.0, 0.3, 1, "reflect")[
            ..., 0
        ]
    elif layout == "HWC":
        out, expect = F.bilateral_filter(imgs[0], channel_axis=-1, **kw), per[0]
    elif layout == "CHW":
        out = F.bilateral_filter(imgs[0].transpose(2, 0, 1), channel_axis=0, **kw)
        expect = per[0].transpose(2, 0, 1)
    elif layout == "NHWC":
        out, expect = F.bilateral_filter(imgs, channel_axis=-1, **kw), np.stack(per)
    else:
        out = F.bilateral_filter(imgs.transpose(0, 3, 1, 2), channel_axis=1, **kw)
        expect = np.stack(per).transpose(0, 3, 1, 2)
    assert out.shape == expect.shape
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float16])
def test_dtypes_round_clip_and_come_back(dtype):
    rng = np.random.default_rng(4)
    top = 255 if dtype == np.uint8 else (65535 if dtype == np.uint16 else 1.0)
    img = (rng.random((8, 9, 3)) * top).astype(dtype)
    out = F.bilateral_filter(img, sigma_spatial=1.0, sigma_color=0.2 * top, channel_axis=-1)
    assert out.dtype == img.dtype and out.shape == img.shape
    exact = brute_joint_bilateral(
        img.astype(np.float64),
        img.astype(np.float64),
        1.0,
        0.2 * top,
        F.default_radius(1.0),
        "reflect",
    )
    if dtype in (np.uint8, np.uint16):
        # float32 compute, then round to nearest: at most one step off the exact rounding
        assert np.abs(out.astype(np.int64) - np.rint(exact).astype(np.int64)).max() <= 1
        assert out.min() >= 0 and out.max() <= top
    else:
        tol = 2e-3 if dtype == np.float16 else 1e-5
        np.testing.assert_allclose(out.astype(np.float64), exact, rtol=tol, atol=tol)


def test_constant_image_and_edge_preservation():
    img = np.full((10, 12), 0.25)
    np.testing.assert_allclose(F.bilateral_filter(img, sigma_color=0.1), 0.25, atol=1e-15)
    step = np.zeros((10, 12))
    step[:, 6:] = 1.0
    noisy = step + np.random.default_rng(5).normal(0, 0.05, step.shape)
    out = F.bilateral_filter(noisy, sigma_spatial=2.0, sigma_color=0.2)
    assert np.abs(out - step).mean() < 0.5 * np.abs(noisy - step).mean()  # denoised
    assert out[:, 7:].min() > 0.8 and out[:, :5].max() < 0.2  # the edge survives


def brute_upsample(low, guide, f, ss, sc, r, conf):
    h, w = low.shape
    H, W = h * f, w * f
    o = (f - 1) // 2
    out = np.full((H, W), np.nan)
    for Y in range(H):
        for X in range(W):
            num = den = 0.0
            for n in range(h):
                for m in range(w):
                    sy, sx = n * f + o, m * f + o
                    if abs(sy - Y) > r or abs(sx - X) > r:
                        continue
                    wt = (
                        np.exp(-((sy - Y) ** 2 + (sx - X) ** 2) / (2 * ss * ss))
                        * np.exp(-np.sum((guide[:, Y, X] - guide[:, sy, sx]) ** 2) / (2 * sc * sc))
                        * conf[n, m]
                    )
                    num += wt * low[n, m]
                    den += wt
            if den > 0:
                out[Y, X] = num / den
    return out


@pytest.mark.parametrize("f", [2, 3, 4])
def test_joint_bilateral_upsample_matches_definition(f):
    rng = np.random.default_rng(6)
    low = rng.random((3, 4))
    guide = rng.random((2, 3 * f, 4 * f))
    conf = (rng.random((3, 4)) > 0.2).astype(float)
    out = F.joint_bilateral_upsample(
        low, guide, f, sigma_color=0.5, guide_channel_axis=0, confidence=conf
    )
    expect = brute_upsample(low, guide, f, f / 2, 0.5, 3 * f // 2, conf)
    np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_detail_preserving_pool_matches_definition():
    rng = np.random.default_rng(7)
    img = rng.random((2, 7, 8))  # C H W
    alpha, lam, k, s = 0.5, 0.8, 3, 2
    out = F.detail_preserving_pool(img, k, stride=s, alpha=alpha, lam=lam, channel_axis=0)
    b = np.array([0.25, 0.5, 0.25])
    S = np.outer(b, b)
    C, H, W = img.shape
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    expect = np.zeros((C, Ho, Wo))
    for c in range(C):
        pz = np.pad(img[c], 1)
        smooth = sum(S[u, v] * pz[u : u + H, v : v + W] for u in range(3) for v in range(3))
        for yo in range(Ho):
            for xo in range(Wo):
                num = den = 0.0
                cy, cx = yo * s, xo * s
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        y, x = cy + dy, cx + dx
                        if 0 <= y < H and 0 <= x < W:
                            d = alpha + ((img[c, y, x] - smooth[cy, cx]) ** 2 + 1e-4) ** lam
                            num += d * img[c, y, x]
                            den += d
                expect[c, yo, xo] = num / den
    np.testing.assert_allclose(out, expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.bilateral_filter(np.ones((4, 4)), sigma_spatial=-1), "sigma_spatial"),
        (lambda: F.bilateral_filter(np.ones((4, 4)), sigma_color="x"), "sigma_color"),
        (lambda: F.bilateral_filter(np.ones((4, 4)), radius=1.5), "radius"),
        (lambda: F.bilateral_filter(np.ones((4, 4)), border="wrap"), "border"),
        (lambda: F.bilateral_filter(np.ones((4, 4), dtype=np.int32)), "dtype int32"),
        (lambda: F.bilateral_filter(np.ones(4)), "at least 2 axes"),
        (lambda: F.bilateral_filter(np.ones((4, 4, 3)), channel_axis=5), "channel_axis=5"),
        (lambda: F.joint_bilateral_filter(np.ones((4, 4)), np.ones((4, 5))), "do not match"),
        (lambda: F.joint_bilateral_upsample(np.ones((2, 2)), np.ones((4, 4)), 1), "factor"),
        (
            lambda: F.joint_bilateral_upsample(np.ones((2, 2)), np.ones((5, 4)), 2),
            "guide has shape",
        ),
        (
            lambda: F.joint_bilateral_upsample(
                np.ones((2, 2)), np.ones((4, 4)), 2, border="reflect"
            ),
            "border",
        ),
        (lambda: F.detail_preserving_pool(np.ones((4, 4)), 2), "odd"),
    ],
)
def test_errors_name_function_argument_and_value(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_inputs_are_not_modified():
    rng = np.random.default_rng(8)
    img = rng.random((5, 6, 3))
    guide = rng.random((5, 6, 2))
    before = img.copy(), guide.copy()
    F.joint_bilateral_filter(img, guide, channel_axis=-1, border="constant")
    np.testing.assert_array_equal(img, before[0])
    np.testing.assert_array_equal(guide, before[1])
