"""
A JAX gradient through PAC
==========================

:mod:`pacnp.jax` wraps the PAC functions as ``jax.custom_vjp`` functions, so ``jax.grad`` and
``jax.jit`` go through them. Here gradient descent learns the colour bandwidth of a joint
bilateral filter written with :func:`pacnp.jax.pacconv2d_fused`: the loss is the error against
the clean image, and its gradient reaches the bandwidth through the guide, ``guide / σ_c``.
"""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import pacnp.jax as pj

# %%
# A grey 96 × 96 crop of scikit-image's camera photo with noise σ = 0.1 on [0, 1], as
# (1, 1, H, W).

clean = jnp.asarray(data.camera()[100:196, 200:296] / 255.0, jnp.float32)[None, None]
noisy = clean + 0.1 * jax.random.normal(jax.random.PRNGKey(0), clean.shape)

# a 7×7 Gaussian spatial filter (σ_s = 1.5 px), applied to [x, 1] to normalise the weights
r = jnp.arange(-3, 4, dtype=jnp.float32)
w = jnp.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))[None, None]


def bilateral(x, log_sigma):
    guide = x / jnp.exp(log_sigma)
    num, _ = pj.pacconv2d_fused(x, guide, w, padding=3)
    den, _ = pj.pacconv2d_fused(jnp.ones_like(x), guide, w, padding=3)
    return num / den


def loss(log_sigma):
    return jnp.mean((bilateral(noisy, log_sigma) - clean) ** 2)


value_and_grad = jax.jit(jax.value_and_grad(loss))

# %%
# Gradient descent on log σ_c, from σ_c = 0.05, which is below the noise (σ = 0.1): almost
# every neighbour looks like an edge and the filter barely smooths.

log_sigma, history = jnp.float32(np.log(0.05)), []
for _ in range(20):
    value, g = value_and_grad(log_sigma)
    history.append((float(jnp.exp(log_sigma)), float(value)))
    log_sigma = log_sigma - 150.0 * g
print(
    f"sigma_c {history[0][0]:.3f} -> {float(jnp.exp(log_sigma)):.3f}, "
    f"MSE {history[0][1]:.5f} -> {float(loss(log_sigma)):.5f}"
)

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3.1), layout="constrained")
axes[0].plot([s for s, _ in history], [v for _, v in history], "o-")
axes[0].set_xlabel("σ_c")
axes[0].set_ylabel("MSE")
axes[0].set_title("gradient descent")
for ax, (img, title) in zip(
    axes[1:],
    [
        (noisy, "noisy"),
        (bilateral(noisy, np.log(0.05)), "σ_c = 0.05"),
        (bilateral(noisy, log_sigma), f"learnt σ_c = {float(jnp.exp(log_sigma)):.2f}"),
    ],
):
    ax.imshow(np.asarray(img)[0, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
plt.show()
