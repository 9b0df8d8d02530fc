"""W5 — the joint bilateral filter of a 1024×1024 RGB image guided by itself, 11×11 window
(radius 5), σ_s = 3 px, σ_c = 25 (0–255 scale), float32 — pacnp.filters against its peers:

* ``pacnp`` — :func:`pacnp.filters.joint_bilateral_filter` (border 'reflect').
* ``opencv`` — ``cv2.ximgproc.jointBilateralFilter(guide, image, d=11, 25, 3)`` from
  opencv-contrib (BORDER_REFLECT_101, as pacnp's 'reflect'); OpenCV's window is the disc of
  radius 5 inside the 11×11 square (81 of 121 taps) and its colour distance the L1 norm.
* ``kornia`` — ``kornia.filters.joint_bilateral_blur(image, guide, (11, 11), 25, (3, 3))``
  (its default L1 colour distance, border 'reflect').

Peers raise NotImplementedError (asv: skipped) when not installed. Parameter ``size`` also
runs a 256² image for a quick look. Threads: numba's maximum; OpenCV and torch are given the
same count.
"""

import importlib.util

import numpy as np

from .common import fix_malloc_threshold, measure_extra_peak, set_threads

SIGMA_SPATIAL = 3.0
SIGMA_COLOR = 25.0
RADIUS = 5
IMPLS_W5 = ("pacnp", "opencv", "kornia")


def w5_image(size=1024, seed=0):
    """A real photograph (scikit-image's astronaut) resized to size², float32 on 0–255; a
    smooth random image when scikit-image is absent (same sizes, same work)."""
    try:
        from skimage import data, transform

        img = transform.resize(data.astronaut(), (size, size), preserve_range=True)
    except ImportError:
        rng = np.random.default_rng(seed)
        img = rng.random((size, size, 3)) * 255
    return np.ascontiguousarray(img, dtype=np.float32)


def w5_runner(impl, img):
    """A no-argument callable filtering ``img`` (H, W, 3) with ``impl``."""
    threads = set_threads()
    if impl == "pacnp":
        from pacnp import filters

        return lambda: filters.joint_bilateral_filter(
            img,
            img,
            sigma_spatial=SIGMA_SPATIAL,
            sigma_color=SIGMA_COLOR,
            radius=RADIUS,
            border="reflect",
            channel_axis=-1,
        )
    if impl == "opencv":
        if importlib.util.find_spec("cv2") is None:
            raise NotImplementedError("opencv-contrib-python is not installed")
        import cv2

        if not hasattr(cv2, "ximgproc"):
            raise NotImplementedError("cv2 has no ximgproc: install opencv-contrib-python")
        cv2.setNumThreads(threads)
        return lambda: cv2.ximgproc.jointBilateralFilter(
            img, img, 2 * RADIUS + 1, SIGMA_COLOR, SIGMA_SPATIAL
        )
    if impl == "kornia":
        if importlib.util.find_spec("kornia") is None:
            raise NotImplementedError("kornia is not installed")
        import kornia
        import torch

        torch.set_num_threads(threads)
        t = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
        k = 2 * RADIUS + 1

        def run():
            with torch.no_grad():
                return kornia.filters.joint_bilateral_blur(
                    t, t, (k, k), SIGMA_COLOR, (SIGMA_SPATIAL, SIGMA_SPATIAL)
                )

        return run
    raise ValueError(f"unknown impl {impl!r}")


class JointBilateralW5:
    """Time and peak memory of W5 (parameter ``size``: 1024 is W5 itself)."""

    params = [[1024, 256], list(IMPLS_W5)]
    param_names = ["size", "impl"]
    timeout = 600

    def setup(self, size, impl):
        self.img = w5_image(size)
        self.run = w5_runner(impl, self.img)
        self.run()  # JIT / first-call costs are not timed

    def time_filter(self, size, impl):
        self.run()

    def peakmem_filter(self, size, impl):
        self.run()

    def track_extra_peak_mib(self, size, impl):
        fix_malloc_threshold()
        extra, _ = measure_extra_peak(self.run)
        return extra / 2**20

    track_extra_peak_mib.unit = "MiB"
