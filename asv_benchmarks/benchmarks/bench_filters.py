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


# --------------------------------------------------------------------------- W7
W7_SIZE = (1024, 1536)  # H, W of the guide: 1536×1024
W7_FACTORS = (4, 8, 16)
IMPLS_W7 = ("pacnp", "opencv_guided", "opencv_jbf")
#: radius of the guided filter baseline (He et al.'s r), as in issue 15
W7_GUIDED_RADIUS = 8


def w7_inputs(factor, size=W7_SIZE):
    """(low, guide): the W7 guide (scikit-image's astronaut resized to ``size``, float32 on
    0–255, H×W×3) and its luminance averaged over f×f blocks (the low-res image to upsample)."""
    try:
        from skimage import data, transform

        guide = transform.resize(data.astronaut(), size, preserve_range=True)
    except ImportError:
        guide = np.random.default_rng(0).random(size + (3,)) * 255
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    H, W = size
    lum = guide @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    low = lum.reshape(H // factor, factor, W // factor, factor).mean(axis=(1, 3))
    return np.ascontiguousarray(low, dtype=np.float32), guide


def w7_runner(impl, low, guide, factor):
    """A no-argument callable upsampling ``low`` by ``factor`` under ``guide`` with ``impl``:

    * ``pacnp`` — :func:`pacnp.filters.joint_bilateral_upsample` with its defaults (σ_s = f/2,
      radius ⌊3f/2⌋, σ_c the guide's standard deviation);
    * ``opencv_guided`` — ``cv2.resize`` (bilinear) then ``cv2.ximgproc.guidedFilter``
      (radius 8, eps = σ_c²);
    * ``opencv_jbf`` — ``cv2.resize`` (bilinear) then ``cv2.ximgproc.jointBilateralFilter`` at
      pacnp's σ_s, σ_c and reach (d = 2·⌊3f/2⌋ + 1).

    OpenCV's peers raise NotImplementedError (asv: skipped) when opencv-contrib is absent."""
    threads = set_threads()
    if impl == "pacnp":
        from pacnp import filters

        return lambda: filters.joint_bilateral_upsample(low, guide, factor, guide_channel_axis=-1)
    if impl not in ("opencv_guided", "opencv_jbf"):
        raise ValueError(f"unknown impl {impl!r}")
    if importlib.util.find_spec("cv2") is None:
        raise NotImplementedError("opencv-contrib-python is not installed")
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise NotImplementedError("cv2 has no ximgproc: install opencv-contrib-python")
    cv2.setNumThreads(threads)
    H, W = guide.shape[:2]
    sigma_c = float(guide.std())  # pacnp's default σ_c
    if impl == "opencv_guided":

        def run():
            up = cv2.resize(low, (W, H), interpolation=cv2.INTER_LINEAR)
            return cv2.ximgproc.guidedFilter(guide, up, W7_GUIDED_RADIUS, sigma_c**2)

        return run
    d = 2 * (3 * factor // 2) + 1

    def run():
        up = cv2.resize(low, (W, H), interpolation=cv2.INTER_LINEAR)
        return cv2.ximgproc.jointBilateralFilter(guide, up, d, sigma_c, factor / 2)

    return run


class JointUpsampleW7:
    """Time of W7: joint bilateral upsampling of a 1536×1024 RGB guide at ×4, ×8, ×16
    (float32, defaults), against OpenCV's bilinear + guided filter and bilinear + joint
    bilateral filter."""

    params = [list(W7_FACTORS), list(IMPLS_W7)]
    param_names = ["factor", "impl"]
    timeout = 600

    def setup(self, factor, impl):
        low, guide = w7_inputs(factor)
        self.run = w7_runner(impl, low, guide, factor)
        self.run()  # JIT / first-call costs are not timed

    def time_upsample(self, factor, impl):
        self.run()


def w7_once(impls=IMPLS_W7, repeats=7, log=print):
    """W7 in one process, outside asv: the median of ``repeats`` timed calls after a warm-up
    call (two for the fast ones) per (impl, factor), then the issue's ratios. Returns
    {(impl, factor): seconds}."""
    import statistics
    import time

    res = {}
    for impl in impls:
        for f in W7_FACTORS:
            low, guide = w7_inputs(f)
            try:
                run = w7_runner(impl, low, guide, f)
            except NotImplementedError as exc:
                log(f"{impl:14s} x{f:<3d} skipped: {exc}")
                continue
            slow = impl == "opencv_jbf"  # seconds per call at x16: fewer repeats
            for _ in range(1 if slow else 2):
                run()
            ts = []
            for _ in range(min(repeats, 3) if slow else repeats):
                t = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t)
            res[impl, f] = statistics.median(ts)
            log(f"{impl:14s} x{f:<3d} median {res[impl, f] * 1e3:9.1f} ms  (n={len(ts)})")
    if ("pacnp", 4) in res and ("pacnp", 16) in res:
        log(f"pacnp x16 / x4 = {res['pacnp', 16] / res['pacnp', 4]:.2f}  (target <= 1.3)")
    if ("pacnp", 8) in res and ("opencv_guided", 8) in res:
        r = res["pacnp", 8] / res["opencv_guided", 8]
        log(f"pacnp x8 / (resize + guidedFilter) x8 = {r:.2f}  (target <= 1.5)")
    for f in W7_FACTORS:
        if ("pacnp", f) in res and ("opencv_jbf", f) in res:
            r = res["opencv_jbf", f] / res["pacnp", f]
            log(f"(resize + jointBilateralFilter) / pacnp x{f} = {r:.1f}  (target at x8: >= 20)")
    return res


if __name__ == "__main__":
    # python -m asv_benchmarks.benchmarks.bench_filters [--pacnp-root DIR] [--impls a,b] [-n N]
    # --pacnp-root: the checkout whose pacnp is measured (another tree: before / after)
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="W7 once, medians after warm-up")
    ap.add_argument("--pacnp-root", default=None)
    ap.add_argument("--impls", default=",".join(IMPLS_W7))
    ap.add_argument("-n", type=int, default=7)
    a = ap.parse_args()
    if a.pacnp_root:
        sys.path.insert(0, a.pacnp_root)
    import pacnp

    print("pacnp from", pacnp.__file__)
    w7_once(a.impls.split(","), a.n)
