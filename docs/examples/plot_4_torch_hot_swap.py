"""
Hot-swapping a trained convolution with PAC (PyTorch)
=====================================================

The paper's Sec. 6: a trained network's convolutions can be replaced by pixel-adaptive ones and
fine-tuned from there. :meth:`pacnp.torch.PacConv2d.from_conv` copies an ``nn.Conv2d``; with a
constant guide the new layer computes exactly what the old one did, so the swap costs nothing
until the guide starts to matter.

Here the "network" is one 5×5 convolution trained to denoise a photo. It learns a blur, which
also blurs the edges. After the swap, the PAC layer sees the noisy photo as its guide and, after
a few steps of fine-tuning, keeps the edges.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage import data

import pacnp.torch as pac

torch.manual_seed(0)
torch.set_num_threads(2)

# %%
# A grey 128 × 128 crop of scikit-image's camera photo, with noise σ = 0.1 on [0, 1].

clean = torch.from_numpy(data.camera()[96:224, 192:320].astype(np.float32) / 255)[None, None]
noisy = clean + 0.1 * torch.randn_like(clean)


def psnr(x):
    return float(10 * torch.log10(1 / torch.mean((x - clean) ** 2)))


# %%
# Train the convolution (a few hundred steps of Adam on this one image).

conv = torch.nn.Conv2d(1, 1, 5, padding=2)
opt = torch.optim.Adam(conv.parameters(), lr=1e-2)
for _ in range(300):
    opt.zero_grad()
    loss = torch.mean((conv(noisy) - clean) ** 2)
    loss.backward()
    opt.step()
with torch.no_grad():
    out_conv = conv(noisy)
print(f"trained conv: PSNR {psnr(noisy):.2f} dB -> {psnr(out_conv):.2f} dB")

# %%
# Swap. With a constant guide the Gaussian ``K`` is 1 at every tap: the same output.

layer = pac.PacConv2d.from_conv(conv)
with torch.no_grad():
    same = layer(noisy, torch.zeros_like(noisy))
print(f"max |PacConv2d - Conv2d| with a constant guide: {float((same - out_conv).abs().max()):.1e}")

# %%
# Fine-tune with the noisy photo as the guide, scaled by a colour bandwidth of 0.5: neighbours
# across an edge now weigh less, and the weights adapt to that.

guide = noisy / 0.5
opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
for step in range(60):
    opt.zero_grad()
    loss = torch.mean((layer(noisy, guide) - clean) ** 2)
    loss.backward()
    opt.step()
with torch.no_grad():
    out_pac = layer(noisy, guide)
print(f"PacConv2d after 60 steps: PSNR {psnr(out_pac):.2f} dB")

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.3), layout="constrained")
panels = [(clean, "clean"), (noisy, f"noisy {psnr(noisy):.1f} dB"),
          (out_conv, f"trained Conv2d {psnr(out_conv):.1f} dB"),
          (out_pac, f"swapped + fine-tuned PAC {psnr(out_pac):.1f} dB")]
for ax, (img, title) in zip(axes, panels):
    ax.imshow(img[0, 0].detach().numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
plt.show()
