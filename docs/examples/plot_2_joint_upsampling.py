"""
Joint depth upsampling ×8
=========================

The paper's first use case, done without training: a low-resolution depth map is brought up to
the resolution of a photo, and the photo's edges decide where the depth may jump. Each
high-resolution pixel averages the low-resolution samples around it, weighted by distance and by
how similar the photo's colour at the sample is to its own (joint bilateral upsampling, Kopf et
al. 2007) — one transposed pixel-adaptive convolution,
:func:`pacnp.filters.joint_bilateral_upsample`.

The data is the Middlebury 2014 *motorcycle* stereo pair shipped with scikit-image, with its
ground-truth disparity (non-finite where unknown).
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data

from pacnp import filters

left, _, disparity = data.stereo_motorcycle()
f = 8
H, W = (s // f * f for s in disparity.shape)  # a multiple of the factor
rgb, disparity = left[:H, :W], disparity[:H, :W]
valid = np.isfinite(disparity)
print(f"photo {rgb.shape} {rgb.dtype}, disparity {disparity.shape}, {valid.mean():.1%} valid")

# %%
# A depth sensor samples points: low-res sample ``n`` is the disparity at pixel
# ``n·f + (f−1)//2``. Unknown samples get confidence 0 and are left out of every average.

o = (f - 1) // 2
low = np.where(valid, disparity, 0.0)[o::f, o::f].astype(np.float32)
confidence = valid[o::f, o::f].astype(np.float32)
print(f"low-res input {low.shape}")

# %%
# Guided by the photo (σ_c = 25 grey levels) and, for comparison, by a constant guide: with no
# colour information the same call is a plain Gaussian interpolation of the samples.

guided = filters.joint_bilateral_upsample(
    low, rgb, f, sigma_color=25.0, channel_axis=None, guide_channel_axis=-1, confidence=confidence
)
flat = filters.joint_bilateral_upsample(
    low, np.zeros(rgb.shape[:2], np.float32), f, sigma_color=25.0, confidence=confidence
)


def rmse(pred):
    ok = valid & np.isfinite(pred)
    return float(np.sqrt(np.mean((pred[ok] - disparity[ok]) ** 2)))


print(f"RMSE on the valid pixels: unguided {rmse(flat):.3f}, PAC guided {rmse(guided):.3f}")

# %%
lo, hi = np.percentile(disparity[valid], [1, 99])
fig, axes = plt.subplots(1, 4, figsize=(13, 2.9), layout="constrained")
panels = [
    (rgb, "guide (left photo)"),
    (np.where(valid, disparity, np.nan), "ground truth"),
    (flat, f"unguided, RMSE {rmse(flat):.2f}"),
    (guided, f"PAC, RMSE {rmse(guided):.2f}"),
]
for ax, (img, title) in zip(axes, panels):
    ax.imshow(img, cmap=None if img.ndim == 3 else "magma", vmin=lo, vmax=hi)
    ax.set_title(title)
    ax.axis("off")
plt.show()
