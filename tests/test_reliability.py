"""Reliability: results never alias inputs, backward calls need their gradient, degenerate σ
and memory layouts give the same well-defined answers, byte-swapped arrays work everywhere."""

from __future__ import annotations

import numpy as np
import pytest

import pacnp
from pacnp import crf, filters

RNG = np.random.default_rng(3)
X = RNG.standard_normal((1, 2, 5, 4))
G = RNG.standard_normal((1, 3, 5, 4))
W = RNG.standard_normal((3, 2, 3, 3))
K = pacnp.packernel2d(G, 3, padding=1)[0]

BACKWARDS = {
    "packernel2d_backward": lambda: pacnp.packernel2d_backward(None, G, 3, padding=1),
    "pacconv2d_backward": lambda: pacnp.pacconv2d_backward(None, X, K, W, padding=1),
    "pacconv_transpose2d_backward": lambda: pacnp.pacconv_transpose2d_backward(
        None, X, K, W.transpose(1, 0, 2, 3), padding=1
    ),
    "pacpool2d_backward": lambda: pacnp.pacpool2d_backward(None, X, K, 3, padding=1),
    "pacconv2d_fused_backward": lambda: pacnp.pacconv2d_fused_backward(None, X, G, W, padding=1),
    "pacconv_transpose2d_fused_backward": lambda: pacnp.pacconv_transpose2d_fused_backward(
        None, X, G, W.transpose(1, 0, 2, 3), padding=1
    ),
    "pacpool2d_fused_backward": lambda: pacnp.pacpool2d_fused_backward(None, X, G, 3, padding=1),
}


@pytest.mark.parametrize("name", sorted(BACKWARDS))
def test_backward_without_gradient_is_a_type_error(name):
    with pytest.raises(TypeError, match=f"{name}: grad_.* is required"):
        BACKWARDS[name]()


def _term():
    return crf.PairwiseTerm("potts", np.ones((1, 1, 3, 3)), weight=1.0)


def test_crf_results_never_alias_inputs():
    u = RNG.standard_normal((1, 3, 5, 4))
    f = RNG.standard_normal((1, 2, 5, 4))
    keep = u.copy()
    out = crf.paccrf(u, f, [_term()], num_steps=0)
    assert not np.shares_memory(out, u)
    out[...] = 7.0
    np.testing.assert_array_equal(u, keep)
    g = RNG.standard_normal(u.shape)
    keep_g = g.copy()
    grads = crf.paccrf_backward(g, u, f, [_term()], num_steps=0)
    assert not np.shares_memory(grads.unary, g)
    grads.unary[...] = 7.0
    np.testing.assert_array_equal(g, keep_g)


def test_crf_results_never_alias_torch_inputs():
    torch = pytest.importorskip("torch")
    u = torch.randn(1, 3, 5, 4, dtype=torch.float64)
    f = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    keep = u.clone()
    out = crf.paccrf(
        u, f, [crf.PairwiseTerm("potts", torch.ones(1, 1, 3, 3, dtype=torch.float64))], num_steps=0
    )
    out[...] = 7.0
    assert torch.equal(u, keep)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_underflowing_sigma_color_is_the_limit_not_nan(dtype):
    # all pixels differ: only each pixel's own tap has weight > 0 in the limit σ_c → 0
    img = (np.arange(7 * 6, dtype=np.float64).reshape(7, 6) / 41).astype(dtype)
    out = filters.bilateral_filter(img, sigma_spatial=1.0, sigma_color=1e-300)
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, img, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    up = filters.joint_bilateral_upsample(
        img[:3, :3], np.repeat(np.repeat(img[:3, :3], 2, 0), 2, 1), 2, sigma_color=1e-300
    )
    assert not np.isnan(up).any()


@pytest.mark.parametrize("fn", ["bilateral_filter", "joint_bilateral_upsample"])
def test_default_sigma_color_does_not_depend_on_memory_layout(fn):
    img = RNG.integers(0, 65535, size=(7, 4, 3)).astype(np.uint16)
    fimg = np.asfortranarray(img)
    if fn == "bilateral_filter":
        a = filters.bilateral_filter(img, channel_axis=-1)
        b = filters.bilateral_filter(fimg, channel_axis=-1)
    else:
        low = img[:3, :2]
        a = filters.joint_bilateral_upsample(low, img[:6, :4], 2, channel_axis=-1)
        b = filters.joint_bilateral_upsample(
            np.asfortranarray(low), fimg[:6, :4], 2, channel_axis=-1
        )
    np.testing.assert_array_equal(a, b)


def test_byte_swapped_arrays_work_in_filters_and_crf():
    img = RNG.random((6, 5, 3))
    swapped = img.astype(img.dtype.newbyteorder(">" if img.dtype.byteorder != ">" else "<"))
    np.testing.assert_allclose(
        filters.bilateral_filter(swapped, channel_axis=-1),
        filters.bilateral_filter(img, channel_axis=-1),
        rtol=0,
        atol=0,
    )
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    feats = crf.create_YXRGB(chw.astype(swapped.dtype), yx_scale=2.0, rgb_scale=0.5)
    assert feats.dtype == np.float64
    np.testing.assert_array_equal(feats, crf.create_YXRGB(chw, yx_scale=2.0, rgb_scale=0.5))
    probs = RNG.dirichlet(np.ones(3), size=(6, 5)).transpose(2, 0, 1)
    np.testing.assert_array_equal(
        crf.crf_refine(probs.astype(swapped.dtype), swapped, num_steps=1),
        crf.crf_refine(probs, img, num_steps=1),
    )
