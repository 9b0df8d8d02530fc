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

W7 — joint bilateral upsampling ×4, ×8, ×16 (below). W8 — the 3-D bilateral filter of a 128³
float32 volume, σ_s = 1.5 voxels, radius 4 (9³ window), exact Gaussian, against SimpleITK's
``BilateralImageFilter`` (its window for σ_s = 1.5 is the same 9³). W9 — the 1-D joint bilateral
filter of a 2²⁰-sample 3-channel signal guided by itself, window 31: its time per tap against
the 2-D filter's (W5).
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


# --------------------------------------------------------------------------- W8
W8_SIZE = 128
W8_SIGMA_SPATIAL = 1.5
W8_RADIUS = 4  # SimpleITK's reach for σ_s = 1.5: ⌈2.5 · 1.5⌉ (peers.simpleitk_radius)
W8_SIGMA_COLOR = 0.1
IMPLS_W8 = ("pacnp", "simpleitk")


def w8_volume(size=W8_SIZE, seed=0):
    """A size³ float32 volume on 0–1: eight balls of different intensities on a smooth
    background (edges for the range term to keep), plus Gaussian noise of σ = 0.05."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:size, :size, :size]
    vol = 0.2 + 0.1 * np.sin(2 * np.pi * x / size) * np.cos(2 * np.pi * y / size)
    vol = np.broadcast_to(vol, (size, size, size)).copy()
    for _ in range(8):
        c = rng.uniform(0.2, 0.8, 3) * size
        r = rng.uniform(0.08, 0.2) * size
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r
        vol[inside] = rng.uniform(0.4, 1.0)
    vol += 0.05 * rng.standard_normal(vol.shape)
    return np.ascontiguousarray(vol, dtype=np.float32)


def w8_runner(impl, vol):
    """A no-argument callable filtering ``vol`` (D, H, W) with ``impl``: ``pacnp`` —
    :func:`pacnp.filters.bilateral_filter` with ``spatial_dims=3``, radius 4, border
    'nearest' (ITK's zero-flux Neumann border); ``simpleitk`` — ``BilateralImageFilter``
    (``peers.simpleitk_bilateral``) on as many threads as numba."""
    threads = set_threads()
    if impl == "pacnp":
        from pacnp import filters

        return lambda: filters.bilateral_filter(
            vol,
            sigma_spatial=W8_SIGMA_SPATIAL,
            sigma_color=W8_SIGMA_COLOR,
            radius=W8_RADIUS,
            border="nearest",
            spatial_dims=3,
        )
    if impl == "simpleitk":
        from .peers import simpleitk_bilateral, simpleitk_radius

        assert simpleitk_radius(W8_SIGMA_SPATIAL) == W8_RADIUS  # the same 9³ window
        return simpleitk_bilateral(vol, W8_SIGMA_SPATIAL, W8_SIGMA_COLOR, threads)
    raise ValueError(f"unknown impl {impl!r}")


class Bilateral3dW8:
    """Time and peak memory of W8: the 3-D bilateral filter of a 128³ float32 volume, 9³
    window (parameter ``size``: 128 is W8 itself; 64 for a quick look)."""

    params = [[128, 64], list(IMPLS_W8)]
    param_names = ["size", "impl"]
    timeout = 900

    def setup(self, size, impl):
        self.run = w8_runner(impl, w8_volume(size))
        self.run()  # JIT / first-call costs are not timed

    def time_filter(self, size, impl):
        self.run()

    def peakmem_filter(self, size, impl):
        self.run()


# --------------------------------------------------------------------------- W9
W9_SAMPLES = 2**20
W9_RADIUS = 15  # window 31
W9_SIGMA_SPATIAL = 5.0  # default radius ⌈3σ_s⌉ = 15
W9_SIGMA_COLOR = SIGMA_COLOR  # 25 on 0–255, as W5


def w9_signal(n=W9_SAMPLES, seed=0):
    """An n × 3 float32 signal on 0–255: a random walk with jumps (edges) per channel, plus
    noise."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, 3)) * 0.5
    jumps = (rng.random((n, 1)) < 2e-4) * rng.uniform(-80, 80, (n, 3))
    sig = np.cumsum(steps + jumps, axis=0)
    sig -= sig.min(axis=0)
    sig *= 200 / max(float(sig.max()), 1e-9)
    sig += 5 * rng.standard_normal(sig.shape)
    return np.ascontiguousarray(sig, dtype=np.float32)


def w9_runner(sig):
    """:func:`pacnp.filters.joint_bilateral_filter` of ``sig`` (n, 3) guided by itself,
    window 31, ``spatial_dims=1``."""
    set_threads()
    from pacnp import filters

    return lambda: filters.joint_bilateral_filter(
        sig,
        sig,
        sigma_spatial=W9_SIGMA_SPATIAL,
        sigma_color=W9_SIGMA_COLOR,
        radius=W9_RADIUS,
        border="reflect",
        channel_axis=-1,
        spatial_dims=1,
    )


class JointBilateral1dW9:
    """Time of W9: the 1-D joint bilateral filter of a 2²⁰-sample RGB signal, window 31."""

    timeout = 600

    def setup(self):
        self.run = w9_runner(w9_signal())
        self.run()

    def time_filter(self):
        self.run()


def _median_time(run, repeats, warmup=1):
    import statistics
    import time

    for _ in range(warmup):
        run()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def w8_once(impls=IMPLS_W8, repeats=5, log=print, size=W8_SIZE):
    """W8 in one process, outside asv: medians of ``repeats`` timed calls after a warm-up
    (SimpleITK: at most 3), then the ratio. Returns {impl: seconds}."""
    vol = w8_volume(size)
    res = {}
    for impl in impls:
        try:
            run = w8_runner(impl, vol)
        except NotImplementedError as exc:
            log(f"W8 {impl:10s} skipped: {exc}")
            continue
        n = min(repeats, 3) if impl == "simpleitk" else repeats
        res[impl] = _median_time(run, n)
        log(f"W8 {impl:10s} {size}³, 9³ window: median {res[impl]:.3f} s (n={n})")
    if "pacnp" in res and "simpleitk" in res:
        log(f"W8 SimpleITK / pacnp = {res['simpleitk'] / res['pacnp']:.1f}×  (target >= 10)")
    return res


def w9_once(repeats=7, log=print):
    """W9 and W5's pacnp in one process: medians, then the time per sample and per tap of
    each and their ratio. Returns a dict of seconds and nanoseconds."""
    t1 = _median_time(w9_runner(w9_signal()), repeats)
    t2 = _median_time(w5_runner("pacnp", w5_image(1024)), repeats)
    taps1, taps2 = 2 * W9_RADIUS + 1, (2 * RADIUS + 1) ** 2
    res = dict(
        w9=t1,
        w5=t2,
        ns_per_sample=t1 / W9_SAMPLES * 1e9,
        ns_per_tap_1d=t1 / (W9_SAMPLES * taps1) * 1e9,
        ns_per_tap_2d=t2 / (1024 * 1024 * taps2) * 1e9,
    )
    res["tap_ratio"] = res["ns_per_tap_1d"] / res["ns_per_tap_2d"]
    log(
        f"W9 1-D, 2^20 × 3, window {taps1}: {t1 * 1e3:.1f} ms = {res['ns_per_sample']:.1f} ns per "
        f"sample, {res['ns_per_tap_1d']:.3f} ns per tap"
    )
    log(
        f"W5 2-D, 1024² × 3, window {taps2}: {t2 * 1e3:.1f} ms = "
        f"{res['ns_per_tap_2d']:.3f} ns per tap;  1-D / 2-D per tap = {res['tap_ratio']:.2f}"
    )
    return res


if __name__ == "__main__":
    # python -m asv_benchmarks.benchmarks.bench_filters [--workload W7|W8|W9]
    #     [--pacnp-root DIR] [--impls a,b] [-n N]
    # --pacnp-root: the checkout whose pacnp is measured (another tree: before / after)
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="W7, W8 or W9 once, medians after warm-up")
    ap.add_argument("--pacnp-root", default=None)
    ap.add_argument("--workload", default="W7", choices=["W7", "W8", "W9"])
    ap.add_argument("--impls", default=None, help="W7, W8: comma-separated implementations")
    ap.add_argument("-n", type=int, default=7)
    a = ap.parse_args()
    if a.pacnp_root:
        sys.path.insert(0, a.pacnp_root)
    import pacnp

    print("pacnp from", pacnp.__file__)
    if a.workload == "W7":
        w7_once((a.impls or ",".join(IMPLS_W7)).split(","), a.n)
    elif a.workload == "W8":
        w8_once((a.impls or ",".join(IMPLS_W8)).split(","), a.n)
    else:
        w9_once(a.n)
