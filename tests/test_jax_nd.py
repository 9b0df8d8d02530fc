"""pacnp.jax in 1-D and 3-D: forward equals pacnp's NumPy functions, gradients against central
finite differences (float64) under jax.jit, jax.grad of a loss against pacnp's backward, vmap,
errors. Every body runs for nd = 1 and nd = 3; sizes are tiny."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import pacnp  # noqa: E402
import pacnp.jax as pj  # noqa: E402

ND = pytest.mark.parametrize("nd", [1, 3])


@pytest.fixture
def r(jax_x64):
    rng = np.random.default_rng(11)

    def rand(*shape, pos=False, scale=1.0):
        a = rng.standard_normal(shape) * scale
        return jnp.asarray(np.abs(a) + 0.2 if pos else a)

    rand.rng = rng
    return rand


def grads_ok(f, args):
    """Reverse-mode gradients against central finite differences (custom_vjp: no forward mode)."""
    check_grads(f, args, order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


def S(nd, *sizes):
    return tuple(sizes[:nd])


def jx(name, nd):
    return getattr(pj, name.format(nd))


def npf(name, nd):
    return getattr(pacnp, name.format(nd))


def a_(x):
    return None if x is None else np.asarray(x)


@ND
def test_forward_equals_pacnp(r, nd):
    s = S(nd, 9, 4, 5)
    x, g = r(2, 2, *s), r(2, 3, *s)
    w, b = r(3, 2, *(3,) * nd), r(3)
    kt = dict(kernel_type="inv_0.5_-1", smooth_kernel_type="gaussian")
    mask = r.rng.random((2, 1) + s) < 0.7
    K, m = jx("packernel{}d", nd)(g, 3, padding=1, mask=mask, **kt)
    Kn, mn = npf("packernel{}d", nd)(a_(g), 3, padding=1, mask=mask, **kt)
    assert isinstance(K, jax.Array) and K.shape == (2, 1) + (3,) * nd + s
    np.testing.assert_allclose(K, Kn, rtol=1e-13)
    np.testing.assert_array_equal(m, mn)
    out = jx("pacconv{}d", nd)(x, K, w, b, padding=1)
    np.testing.assert_allclose(
        out, npf("pacconv{}d", nd)(a_(x), Kn, a_(w), a_(b), padding=1), rtol=1e-13
    )
    fused, fm = jx("pacconv{}d_fused", nd)(x, g, w, b, padding=1, mask=mask, **kt)
    np.testing.assert_allclose(fused, out, rtol=1e-10)
    np.testing.assert_array_equal(fm, mn)
    # transposed: the guide at the output resolution
    st = S(nd, 4, 2, 3)
    xt, gt, wt = r(2, 2, *st), r(2, 3, *(2 * n for n in st)), r(2, 3, *(3,) * nd)
    geo = dict(stride=2, padding=1, output_padding=1)
    Kt, _ = jx("packernel{}d", nd)(gt, 3, transposed=True, **geo)
    ot = jx("pacconv_transpose{}d", nd)(xt, Kt, wt, **geo)
    np.testing.assert_allclose(
        ot, npf("pacconv_transpose{}d", nd)(a_(xt), a_(Kt), a_(wt), **geo), rtol=1e-13
    )
    np.testing.assert_allclose(
        jx("pacconv_transpose{}d_fused", nd)(xt, gt, wt, **geo)[0], ot, rtol=1e-10
    )
    # pooling, channel-wise kernel, per-axis stride
    stride = (2,) if nd == 1 else (1, 2, 2)
    Kc, _ = jx("packernel{}d", nd)(g[:, :2], 3, stride=stride, padding=1, channel_wise=True)
    p = jx("pacpool{}d", nd)(x, Kc, 3, stride=stride, padding=1)
    np.testing.assert_allclose(
        p, npf("pacpool{}d", nd)(a_(x), a_(Kc), 3, stride=stride, padding=1), rtol=1e-13
    )
    pf, pm = jx("pacpool{}d_fused", nd)(x, g[:, :2], 3, stride=stride, padding=1, channel_wise=True)
    np.testing.assert_allclose(pf, p, rtol=1e-10)
    assert pm is None


@ND
def test_grads_packernel(r, nd):
    s = S(nd, 5, 3, 2)
    g = r(1, 2, *s)
    a, lam = r(2, pos=True), -r(2, pos=True)
    sk = r(*(3,) * nd, scale=0.3)
    mask = r.rng.random((1, 1) + s) < 0.8
    grads_ok(
        jax.jit(
            lambda g, a, lam, sk: jx("packernel{}d", nd)(
                g,
                3,
                padding=1,
                kernel_type="inv_0.5_-1",
                inv_alpha=a,
                inv_lambda=lam,
                channel_wise=True,
                smooth_kernel_type="full_3",
                smooth_kernel=sk,
                mask=mask,
                normalize_kernel=True,
            )[0]
        ),
        (g, a, lam, sk),
    )
    grads_ok(
        lambda g: jx("packernel{}d", nd)(
            g, 3, stride=2, padding=1, output_padding=1, transposed=True
        )[0],
        (r(1, 1, *S(nd, 6, 4, 2)),),
    )


@ND
def test_grads_two_step_ops(r, nd):
    s = S(nd, 5, 3, 4)
    x = r(1, 2, *s)
    k = (3,) * nd
    stride, dilation = ((2,), (2,)) if nd == 1 else ((2, 1, 1), (1, 1, 2))
    out = tuple((n + 2 - 2 * d - 1) // st + 1 for n, st, d in zip(s, stride, dilation))
    K, w, b = r(1, 1, *k, *out, pos=True), r(3, 2, *k), r(3)
    grads_ok(
        jax.jit(
            lambda x, K, w, b: jx("pacconv{}d", nd)(
                x, K, w, b, stride=stride, padding=1, dilation=dilation
            )
        ),
        (x, K, w, b),
    )
    grads_ok(
        lambda x, K, w: jx("pacconv{}d", nd)(x, K, w, padding=1, shared_filters=True),
        (x, r(1, 1, *k, *s, pos=True), r(1, 1, *k)),
    )
    st = S(nd, 3, 2, 2)
    grads_ok(
        lambda x, K, w, b: jx("pacconv_transpose{}d", nd)(
            x, K, w, b, stride=2, padding=1, output_padding=1
        ),
        (r(1, 2, *st), r(1, 2, *k, *(2 * n for n in st), pos=True), r(2, 3, *k), r(3)),
    )
    grads_ok(
        lambda x, K: jx("pacpool{}d", nd)(x, K, 3, stride=2, padding=1),
        (x, r(1, 2, *k, *((n + 1) // 2 for n in s), pos=True)),
    )


@ND
def test_grads_fused_ops(r, nd):
    s = S(nd, 5, 3, 2)
    x, g = r(1, 2, *s), r(1, 2, *s)
    k = (3,) * nd
    w, b = r(2, 2, *k), r(2)
    a, lam, sk = r(pos=True), -r(pos=True), r(1, 1, *k, scale=0.3)
    mask = r.rng.random((1, 1) + s) < 0.8
    grads_ok(
        jax.jit(
            lambda x, g, w, b, a, lam, sk: jx("pacconv{}d_fused", nd)(
                x,
                g,
                w,
                b,
                padding=1,
                kernel_type="inv_0.5_-1",
                inv_alpha=a,
                inv_lambda=lam,
                smooth_kernel_type="full_3",
                smooth_kernel=sk,
                mask=mask,
            )[0]
        ),
        (x, g, w, b, a, lam, sk),
    )
    st = S(nd, 2, 2, 1)
    grads_ok(
        lambda x, g, w: jx("pacconv_transpose{}d_fused", nd)(
            x, g, w, stride=2, padding=1, output_padding=1, normalize_kernel=True
        )[0],
        (r(1, 2, *st), r(1, 2, *(2 * n for n in st)), w),
    )
    grads_ok(
        lambda x, g, a: jx("pacpool{}d_fused", nd)(
            x, g, 3, padding=1, kernel_type="inv_1_-1_asym", inv_alpha=a
        )[0],
        (x, g, r(pos=True)),
    )


@ND
def test_grad_of_a_loss_under_jit_and_vmap(r, nd):
    s = S(nd, 8, 4, 3)
    x, g, w = r(2, 2, *s), r(2, 3, *s), r(2, 2, *(3,) * nd)
    fused = jx("pacconv{}d_fused", nd)

    @jax.jit
    def loss(w, x, g):
        out, _ = fused(x, g, w, padding=1)
        return jnp.sum(out**2)

    dw = jax.grad(loss)(w, x, g)
    dw_np = npf("pacconv{}d_fused_backward", nd)(
        2 * np.asarray(fused(x, g, w, padding=1)[0]), a_(x), a_(g), a_(w), padding=1
    )[2]
    np.testing.assert_allclose(dw, dw_np, rtol=1e-12)
    batched = jax.vmap(lambda x, g: fused(x[None], g[None], w, padding=1)[0][0])
    np.testing.assert_allclose(batched(x, g), fused(x, g, w, padding=1)[0], rtol=1e-12)


def test_float32_and_bfloat16_3d():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4, 4)).astype(np.float32)
    K = np.ones((1, 1, 3, 3, 3, 3, 4, 4), np.float32)
    out32 = pj.pacpool3d(jnp.asarray(x), jnp.asarray(K), 3, padding=1)
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32, pacnp.pacpool3d(x, K, 3, padding=1), rtol=1e-6)
    out16 = pj.pacpool3d(jnp.asarray(x, jnp.bfloat16), jnp.asarray(K, jnp.bfloat16), 3, padding=1)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), out32, rtol=0.02, atol=0.1)


def test_errors(r):
    x = r(1, 2, 5)
    with pytest.raises(TypeError, match=r"pacconv1d: stride must be an int"):
        pj.pacconv1d(x, r(1, 1, 3, 5), r(2, 2, 3), stride=(1, 1))
    with pytest.raises(TypeError, match=r"pacpool3d_fused: padding must be an int"):
        pj.pacpool3d_fused(r(1, 1, 3, 3, 3), r(1, 1, 3, 3, 3), 3, padding=(1, 1))
    with pytest.raises(ValueError, match=r"pacconv3d: kernel has shape"):
        pj.pacconv3d(r(1, 1, 3, 3, 3), r(1, 1, 3, 3, 3, 3, 3, 3), r(1, 1, 3, 3, 3), padding=2)
