"""
CRF refinement of a segmentation
================================

A pixel-by-pixel classifier speckles every region of a noisy photo. A conditional random field
lets each pixel listen to its neighbours of similar colour: :func:`pacnp.crf.crf_refine` runs a
few steps of mean-field inference whose messages are pixel-adaptive convolutions (the paper's
Sec. 5, DenseCRF's model restricted to a window), guided by the photo itself.
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data, transform

from pacnp import crf

# %%
# scikit-image's coffee at half size, taken with sensor noise σ = 30. Four colour classes:
# the centres come from a few rounds of k-means on the smoothed clean photo, whose own
# nearest-centre labels are the reference.

photo = transform.rescale(data.coffee(), 0.5, channel_axis=-1, anti_aliasing=True)
photo = (photo * 255).astype(np.float64)  # (200, 300, 3)
smooth = transform.resize(transform.rescale(photo, 0.2, channel_axis=-1), photo.shape)
rng = np.random.default_rng(0)
pixels = smooth.reshape(-1, 3)[::17]
centres = pixels[rng.choice(len(pixels), 4, replace=False)]
for _ in range(20):
    nearest = np.argmin(((pixels[:, None] - centres) ** 2).sum(-1), axis=1)
    centres = np.array(
        [pixels[nearest == c].mean(0) if np.any(nearest == c) else centres[c] for c in range(4)]
    )


def sq_dist(img):
    return ((img[..., None, :] - centres) ** 2).sum(-1)  # (H, W, 4)


truth = np.argmin(sq_dist(smooth), axis=-1)
noisy = np.clip(photo + rng.normal(0.0, 30.0, photo.shape), 0, 255).astype(np.uint8)

# %%
# A soft nearest-centre classifier gives the per-pixel probabilities, (C, H, W).

logits = -sq_dist(noisy.astype(np.float64)) / (2 * 60.0**2)
p = np.exp(logits - logits.max(-1, keepdims=True))
probs = (p / p.sum(-1, keepdims=True)).transpose(2, 0, 1).astype(np.float32)

# the image is uint8, so σ_c is on the [0, 1] scale: 0.2 for this much noise
refined = crf.crf_refine(probs, noisy, sigma_color=0.2)
before, after = probs.argmax(0), refined.argmax(0)
print(f"probabilities {probs.shape} -> refined {refined.shape} {refined.dtype}")
print(f"pixel accuracy {np.mean(before == truth):.1%} -> {np.mean(after == truth):.1%}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 2.7), layout="constrained")
colours = np.clip(centres, 0, 255).astype(np.uint8)
panels = [
    (noisy, "noisy photo (the guide)"),
    (colours[before], f"per pixel: {np.mean(before == truth):.1%}"),
    (colours[after], f"crf_refine: {np.mean(after == truth):.1%}"),
    (colours[truth], "reference"),
]
for ax, (img, title) in zip(axes, panels):
    ax.imshow(img)
    ax.set_title(title)
    ax.axis("off")
plt.show()
