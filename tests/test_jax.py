"""pacnp.jax: forward equals pacnp, gradients against finite differences (float64), jit, grad,
vmap, reduced precision, errors."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import pacnp  # noqa: E402
import pacnp.jax as pj  # noqa: E402


@pytest.fixture
def r(jax_x64):
    rng = np.random.default_rng(7)

    def rand(*shape, pos=False, scale=1.0):
        a = rng.standard_normal(shape) * scale
        return jnp.asarray(np.abs(a) + 0.2 if pos else a)

    rand.rng = rng
    return rand


def grads_ok(f, args):
    """Reverse-mode gradients against central finite differences (custom_vjp: no forward mode)."""
    check_grads(f, args, order=1, modes=["rev"], eps=1e-6, atol=1e-5, rtol=1e-5)


def test_forward_equals_pacnp(r):
    x, g = r(2, 2, 5, 4), r(2, 3, 5, 4)
    w, b = r(3, 2, 3, 3), r(3)
    K, m = pj.packernel2d(g, 3, padding=1, kernel_type="inv_0.5_-1")
    Kn, _ = pacnp.packernel2d(np.asarray(g), 3, padding=1, kernel_type="inv_0.5_-1")
    assert isinstance(K, jax.Array) and m is None
    np.testing.assert_allclose(K, Kn, rtol=1e-13)
    np.testing.assert_allclose(
        pj.pacconv2d(x, K, w, b, padding=1),
        pacnp.pacconv2d(np.asarray(x), Kn, np.asarray(w), np.asarray(b), padding=1),
        rtol=1e-13,
    )
    out, m = pj.pacconv2d_fused(x, g, w, b, padding=1, kernel_type="inv_0.5_-1")
    np.testing.assert_allclose(out, pj.pacconv2d(x, K, w, b, padding=1), rtol=1e-10)
    gt = r(2, 3, 6, 4)  # at the output resolution of the transposed op
    Kt, _ = pj.packernel2d(gt, 3, stride=2, padding=1, output_padding=1, transposed=True)
    xt = r(2, 2, 3, 2)
    wt = r(2, 3, 3, 3)
    ot, _ = pj.pacconv_transpose2d_fused(xt, gt, wt, stride=2, padding=1, output_padding=1)
    np.testing.assert_allclose(
        ot, pj.pacconv_transpose2d(xt, Kt, wt, stride=2, padding=1, output_padding=1), rtol=1e-10
    )
    p, pm = pj.pacpool2d_fused(
        x, g[:, :2], 3, padding=1, channel_wise=True, mask=np.ones((2, 1, 5, 4), bool)
    )
    assert p.shape == (2, 2, 5, 4) and pm.shape == (2, 1, 5, 4)
    Kc, _ = pj.packernel2d(
        g[:, :2], 3, padding=1, channel_wise=True, mask=np.ones((2, 1, 5, 4), bool)
    )
    np.testing.assert_allclose(p, pj.pacpool2d(x, Kc, 3, padding=1), rtol=1e-10)


def test_grads_packernel2d(r):
    g = r(1, 2, 4, 4)
    a, lam = r(2, pos=True), -r(2, pos=True)
    sk = r(3, 3, scale=0.3)
    mask = r.rng.random((1, 1, 4, 4)) < 0.8
    grads_ok(
        jax.jit(
            lambda g, a, lam, sk: pj.packernel2d(
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
    gt = r(1, 2, 6, 4)
    grads_ok(
        lambda g: pj.packernel2d(
            g,
            3,
            stride=2,
            padding=1,
            output_padding=1,
            transposed=True,
            smooth_kernel_type="gaussian",
        )[0],
        (gt,),
    )


def test_grads_two_step_ops(r):
    x = r(1, 2, 5, 5)
    K, w, b = r(1, 1, 3, 3, 3, 3, pos=True), r(3, 2, 3, 3), r(3)
    grads_ok(
        jax.jit(
            lambda x, K, w, b: pj.pacconv2d(x, K, w, b, stride=(2, 1), padding=1, dilation=(1, 2))
        ),
        (x, K, w, b),
    )
    Ks = r(1, 1, 3, 3, 5, 5, pos=True)
    grads_ok(
        lambda x, K, w: pj.pacconv2d(x, K, w, padding=1, shared_filters=True),
        (x, Ks, r(1, 1, 3, 3)),
    )
    xt, Kt, wt = r(1, 2, 3, 2), r(1, 2, 3, 3, 6, 4, pos=True), r(2, 3, 3, 3)
    grads_ok(
        lambda x, K, w, b: pj.pacconv_transpose2d(
            x, K, w, b, stride=2, padding=1, output_padding=1
        ),
        (xt, Kt, wt, r(3)),
    )
    grads_ok(
        lambda x, K: pj.pacpool2d(x, K, 3, stride=2, padding=1), (x, r(1, 2, 3, 3, 3, 3, pos=True))
    )


def test_grads_fused_ops(r):
    x, g = r(1, 2, 4, 4), r(1, 2, 4, 4)
    w, b = r(3, 2, 3, 3), r(3)
    a, lam, sk = r(pos=True), -r(pos=True), r(1, 1, 3, 3, scale=0.3)
    mask = r.rng.random((1, 1, 4, 4)) < 0.8
    grads_ok(
        jax.jit(
            lambda x, g, w, b, a, lam, sk: pj.pacconv2d_fused(
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
    grads_ok(
        lambda x, g, w: pj.pacconv_transpose2d_fused(
            x, g, w, stride=2, padding=1, output_padding=1, normalize_kernel=True
        )[0],
        (r(1, 2, 3, 2), r(1, 2, 6, 4), r(2, 2, 3, 3)),
    )
    grads_ok(
        lambda x, g, a: pj.pacpool2d_fused(
            x, g, 3, padding=1, kernel_type="inv_1_-1_asym", inv_alpha=a
        )[0],
        (r(1, 2, 5, 5), r(1, 2, 5, 5), r(pos=True)),
    )


def test_grad_of_a_loss_under_jit_and_vmap(r):
    x, g, w = r(2, 2, 5, 5), r(2, 3, 5, 5), r(2, 2, 3, 3)

    @jax.jit
    def loss(w, x, g):
        out, _ = pj.pacconv2d_fused(x, g, w, padding=1)
        return jnp.sum(out**2)

    dw = jax.grad(loss)(w, x, g)
    dw_np = pacnp.pacconv2d_fused_backward(
        2 * np.asarray(pj.pacconv2d_fused(x, g, w, padding=1)[0]),
        np.asarray(x),
        np.asarray(g),
        np.asarray(w),
        padding=1,
    )[2]
    np.testing.assert_allclose(dw, dw_np, rtol=1e-12)
    # vmap over a leading axis runs one callback per element
    batched = jax.vmap(lambda x, g: pj.pacconv2d_fused(x[None], g[None], w, padding=1)[0][0])
    np.testing.assert_allclose(batched(x, g), pj.pacconv2d_fused(x, g, w, padding=1)[0], rtol=1e-12)


def test_reduced_precision_and_float32(r):
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    K = np.ones((1, 1, 3, 3, 5, 5), np.float32)
    out32 = pj.pacpool2d(jnp.asarray(x), jnp.asarray(K), 3, padding=1)
    assert out32.dtype == jnp.float32
    out16 = pj.pacpool2d(jnp.asarray(x, jnp.bfloat16), jnp.asarray(K, jnp.bfloat16), 3, padding=1)
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), out32, rtol=0.02, atol=0.05)


def test_errors(r):
    x = r(1, 2, 5, 5)
    with pytest.raises(TypeError, match="pacconv2d: stride must be an int or a pair of ints"):
        pj.pacconv2d(x, r(1, 1, 3, 3, 5, 5), r(2, 2, 3, 3), stride="1")
    # pacnp's own message, raised in the callback, reaches the caller
    with pytest.raises(Exception, match=r"pacconv2d: kernel has shape \(1, 1, 3, 3, 5, 5\)"):
        jax.block_until_ready(pj.pacconv2d(x, r(1, 1, 3, 3, 5, 5), r(2, 2, 3, 3), padding=2))
