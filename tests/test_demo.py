"""Tests of the joint depth upsampling demo (pacnp.demo): its building blocks on small synthetic
data, and one run of the command on the real Middlebury data."""

import numpy as np
import pytest

from pacnp import demo

METHODS = ("nearest", "mean")


def _random_case(rng, h, w, f, invalid=0.2):
    lo = (rng.random((h, w)) * 20 + 5).astype(np.float32)
    lo_valid = rng.random((h, w)) > invalid
    rgb = rng.random((h * f, w * f, 3)) * 60.0  # moderate contrast: no colour weight underflows
    return lo, lo_valid, rgb


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("f", [2, 3, 4, 8, 16])
def test_geometry_gives_exactly_f_times_the_size(f):
    k, p, op = demo.pac_geometry(f)
    assert k % 2 == 1 and 2 * f + 1 <= k <= 4 * f + 1
    assert 0 <= p <= (k - 1) // 2 and 0 <= op < f
    for h in (1, 2, 5):  # torch conv_transpose2d output size
        assert (h - 1) * f - 2 * p + (k - 1) + op + 1 == h * f


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("f", [2, 3, 4])
def test_constant_disparity_round_trips(method, f):
    """A constant (with invalid ground-truth pixels, hence invalid samples for ``nearest``)
    comes back constant from both upsamplers, at exactly f times the low-res size."""
    rng = np.random.default_rng(f)
    H, W = 6 * f, 7 * f
    gt = np.full((H, W), 17.25, np.float32)
    valid = rng.random((H, W)) > 0.3
    valid[f : 2 * f, 2 * f : 3 * f] = False  # one whole block: an invalid sample for both methods
    gt[~valid] = 1e6  # garbage where invalid
    lo, lo_valid = demo.downsample(gt, valid, f, method)
    assert lo.shape == (6, 7) and not lo_valid.all()
    bil = demo.upsample_bilinear(lo, lo_valid, f, method)
    pac = demo.upsample_pac(lo, lo_valid, rng.random((H, W, 3)) * 255, f, method=method)
    assert bil.shape == pac.shape == (H, W)
    np.testing.assert_allclose(bil, 17.25, rtol=1e-6)
    np.testing.assert_allclose(pac, 17.25, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("f", [2, 3, 4, 8])
def test_linear_ramp_is_not_shifted(method, f):
    """Alignment: downsampling a plane and upsampling it with a uniform guide gives the plane
    back. Bilinear is exact inside; the Gaussian weights leave a small periodic ripple, but no
    bias: a misalignment by half a pixel would shift the mean error by ~0.4."""
    h, w = 12, 14
    Y, X = np.mgrid[0 : h * f, 0 : w * f].astype(np.float64)
    plane = 0.5 * Y + 0.25 * X + 3.0
    lo, lo_valid = demo.downsample(plane.astype(np.float32), np.ones(plane.shape, bool), f, method)
    bil = demo.upsample_bilinear(lo, lo_valid, f, method)
    pac = demo.upsample_pac(lo, lo_valid, np.full((h * f, w * f, 3), 100.0), f, method=method)
    inner = (slice(3 * f, -3 * f), slice(3 * f, -3 * f))  # whole periods, away from borders
    np.testing.assert_allclose(bil[inner], plane[inner], atol=1e-4)
    err = (pac - plane)[inner]
    assert abs(err.mean()) < 0.02
    assert np.abs(err).max() < 0.03 * f


# --------------------------------------------------------------------------- PAC = formula
def _direct_joint_bilateral(lo, lo_valid, rgb, f, sigma_s, sigma_c, method):
    """The docstring's formula, one pixel and one sample at a time."""
    h, w = lo.shape
    k, _, _ = demo.pac_geometry(f)
    r = (k - 1) // 2
    g = (f - 1) // 2  # guide pixel of sample n: n·f + g
    s = (f - 1) / 2 if method == "mean" else (f - 1) // 2  # its position: n·f + s
    guide = rgb.astype(np.float64) / sigma_c
    out = np.zeros((h * f, w * f))
    den = np.zeros((h * f, w * f))
    for Y in range(h * f):
        for X in range(w * f):
            num = tot = 0.0
            for n in range(h):
                for m in range(w):
                    gy, gx = n * f + g, m * f + g
                    if not lo_valid[n, m] or abs(gy - Y) > r or abs(gx - X) > r:
                        continue
                    colour = np.exp(-0.5 * np.sum((guide[Y, X] - guide[gy, gx]) ** 2))
                    space = np.exp(
                        -0.5 * ((Y - n * f - s) ** 2 + (X - m * f - s) ** 2) / sigma_s**2
                    )
                    num += colour * space * lo[n, m]
                    tot += colour * space
            out[Y, X] = num / tot if tot > 0 else np.nan
            den[Y, X] = tot
    return out, den


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("f", [3, 4])
def test_pac_upsampling_equals_the_joint_bilateral_formula(method, f):
    rng = np.random.default_rng(10 + f)
    lo, lo_valid, rgb = _random_case(rng, 3, 4, f)
    lo_valid[0, 0] = True
    sigma_s, sigma_c = 0.7 * f, 25.0
    out, den = demo.upsample_pac(
        lo,
        lo_valid,
        rgb,
        f,
        sigma_spatial=sigma_s,
        sigma_color=sigma_c,
        method=method,
        return_weight=True,
    )
    ref, ref_den = _direct_joint_bilateral(lo, lo_valid, rgb, f, sigma_s, sigma_c, method)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(den, ref_den, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_tiling_does_not_change_the_result():
    rng = np.random.default_rng(3)
    f = 4
    lo, lo_valid, rgb = _random_case(rng, 9, 11, f)
    kw = dict(direct=False)  # the tiles belong to the transposed PAC path
    whole = demo.upsample_pac(
        lo, lo_valid, rgb, f, tile_width=10**6, max_kernel_bytes=1 << 40, **kw
    )
    tiled = demo.upsample_pac(lo, lo_valid, rgb, f, tile_width=1, max_kernel_bytes=1, **kw)
    np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=0)


@pytest.mark.parametrize("f", [2, 3, 4, 8])
def test_direct_kernel_equals_the_transposed_pac(f):
    """The fast path (filters' direct kernel, taken by default for 'nearest') computes the
    transposed PAC's sums: the same map and weight sum to float32 rounding."""
    rng = np.random.default_rng(20 + f)
    lo, lo_valid, rgb = _random_case(rng, 5, 6, f)
    lo_valid[2:4, 2:4] = False
    fast, den = demo.upsample_pac(lo, lo_valid, rgb, f, return_weight=True)
    slow, den0 = demo.upsample_pac(lo, lo_valid, rgb, f, return_weight=True, direct=False)
    np.testing.assert_allclose(den, den0, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_direct_kernel_needs_a_centred_weight():
    rng = np.random.default_rng(1)
    lo, lo_valid, rgb = _random_case(rng, 3, 3, 4)
    with pytest.raises(ValueError, match="direct"):
        demo.upsample_pac(lo, lo_valid, rgb, 4, method="mean", direct=True)
    odd = demo.upsample_pac(*_random_case(rng, 3, 3, 3), 3, method="mean")  # odd f: direct
    assert np.isfinite(odd).all()


# --------------------------------------------------------------------------- guided filter
def test_guided_filter_keeps_a_linear_function_of_the_guide():
    """With ε → 0 the guided filter reproduces any src that is a linear function of the guide
    (its local model is exact), and a constant stays constant."""
    rng = np.random.default_rng(4)
    g = rng.random((20, 23, 3)) * 255
    p = 0.5 * g[..., 0] - 0.25 * g[..., 2] + 7.0
    np.testing.assert_allclose(demo.guided_filter_numpy(g, p, 3, 1e-9), p, atol=1e-5)
    np.testing.assert_allclose(demo.guided_filter_numpy(g, np.full((20, 23), 4.0), 5, 625), 4.0)


def test_guided_filter_numpy_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "ximgproc"):
        pytest.skip("cv2 has no ximgproc")
    rng = np.random.default_rng(5)
    g = (rng.random((40, 50, 3)) * 255).astype(np.float32)
    p = (rng.random((40, 50)) * 30).astype(np.float32)
    ours = demo.guided_filter_numpy(g, p, 8, 625.0)
    theirs = cv2.ximgproc.guidedFilter(g, p, 8, 625.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_upsample_guided_numpy_fallback(monkeypatch):
    """Without OpenCV the baseline is the NumPy guided filter of the bilinear map."""
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *a, **k):
        if name == "cv2":
            raise ImportError("no cv2")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    rng = np.random.default_rng(6)
    lo, lo_valid, rgb = _random_case(rng, 6, 7, 4)
    out, impl = demo.upsample_guided(lo, lo_valid, rgb, 4)
    assert impl == "numpy" and out.dtype == np.float32 and out.shape == (24, 28)
    bil = demo.upsample_bilinear(lo, lo_valid, 4)
    expect = demo.guided_filter_numpy(rgb, bil, demo.GUIDED_RADIUS, demo.GUIDED_EPS)
    np.testing.assert_allclose(out, expect, rtol=1e-6, atol=1e-4)


def test_pac_falls_back_to_bilinear_where_no_sample_reaches():
    f = 2
    lo = np.zeros((8, 8), np.float32)
    lo_valid = np.zeros((8, 8), bool)
    lo[0, 0], lo[7, 7] = 3.0, 9.0
    lo_valid[0, 0] = lo_valid[7, 7] = True
    rgb = np.full((16, 16, 3), 50.0)
    bil = demo.upsample_bilinear(lo, lo_valid, f)
    out, den = demo.upsample_pac(lo, lo_valid, rgb, f, return_weight=True)
    empty = den == 0
    assert empty.any() and (~empty).any()
    np.testing.assert_array_equal(out[empty], bil[empty])
    reached = out[~empty]  # one sample in reach: its value
    assert np.all(np.isclose(reached, 3.0, rtol=1e-6) | np.isclose(reached, 9.0, rtol=1e-6))
    assert np.isfinite(out).all()


# --------------------------------------------------------------------------- small helpers
def test_downsample_respects_invalid_pixels():
    f = 4
    d = np.arange(64, dtype=np.float32).reshape(8, 8)
    valid = np.ones((8, 8), bool)
    valid[0:4, 0:4] = False  # block (0, 0) entirely invalid
    valid[4, 4] = False  # block (1, 1): one invalid pixel
    d[~valid] = np.nan
    lo, lo_valid = demo.downsample(d, valid, f, "mean")
    assert lo_valid.tolist() == [[False, True], [True, True]]
    block = np.arange(64.0).reshape(8, 8)[4:8, 4:8].ravel()[1:]
    assert lo[1, 1] == pytest.approx(block.mean())
    assert np.isfinite(lo).all() and lo[0, 0] == 0
    lo, lo_valid = demo.downsample(d, valid, f, "nearest")  # pixel n·f + (f-1)//2 = 4n + 1
    assert lo_valid.tolist() == [[False, True], [True, True]]
    assert lo[1, 0] == 5 * 8 + 1 and lo[1, 1] == 5 * 8 + 5


def test_bilinear_ignores_invalid_samples():
    lo = np.full((5, 6), 4.0, np.float32)
    lo_valid = np.ones((5, 6), bool)
    lo[2, 3], lo_valid[2, 3] = 1e9, False
    lo[0:2, 0:2], lo_valid[0:2, 0:2] = -1e9, False
    out = demo.upsample_bilinear(lo, lo_valid, 4)
    np.testing.assert_allclose(out, 4.0)


def test_rmse_ignores_invalid_pixels():
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    valid = np.array([[True, False], [True, True]])
    pred = gt + np.array([[2.0, np.nan], [-2.0, 2.0]])
    assert demo.rmse(pred, gt, valid) == pytest.approx(2.0)
    pred[0, 1] = 1e30
    assert demo.rmse(pred, gt, valid) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        demo.rmse(pred, gt, np.zeros((2, 2), bool))


def test_colorize_maps_the_range_and_blacks_out_invalid():
    a = np.array([[0.0, 5.0, 10.0, 20.0]])
    rgb = demo.colorize(a, 0.0, 10.0, valid=np.array([[True, True, True, False]]))
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 3].tolist() == [0, 0, 0]
    lightness = rgb[0, :3].astype(int).sum(axis=1)
    assert lightness[0] < lightness[1] < lightness[2]


def test_main_rejects_bad_arguments(capsys):
    assert demo.main(["--factors", "1"]) == 2
    assert demo.main(["--downsample", "bicubic"]) == 2
    assert demo.main(["--only", "sharpening"]) == 2
    assert "usage" in capsys.readouterr().err
    with pytest.raises(ValueError, match="factor"):
        demo.pac_geometry(1)
    with pytest.raises(ValueError, match="multiple"):
        demo.downsample(np.zeros((6, 6), np.float32), np.ones((6, 6), bool), 4)


# --------------------------------------------------------------------------- real data
def test_main_on_the_real_data_factor_8(tmp_path, capsys):
    """The real-data check: main() with one factor writes its panel and PAC beats bilinear
    (about 2 s here once numba has cached its kernels)."""
    from PIL import Image

    assert demo.main(["--out", str(tmp_path), "--factors", "8", "--only", "upsampling"]) == 0
    assert not (tmp_path / "denoising.png").exists()  # --only ran one part
    png = tmp_path / "upsampling_x8.png"
    assert png.is_file()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 3 * 736 and im.height > 2 * 496
    out = capsys.readouterr().out
    header = [line for line in out.splitlines() if line.split()[:1] == ["factor"]]
    assert header and "RMSE guided" in header[0] and "guided time" in header[0]
    row = [line.split() for line in out.splitlines() if line.split()[:1] == ["8"]]
    assert len(row) == 1
    rmse_bilinear, rmse_pac, rmse_guided = (float(v) for v in row[0][2:5])
    assert rmse_pac < rmse_bilinear
    assert 0 < rmse_guided < 3 * rmse_bilinear  # a real baseline, reported whatever it shows
    pac_time, guided_time = (float(v.rstrip("s")) for v in row[0][5:7])
    assert pac_time > 0 and guided_time > 0


def test_psnr():
    a = np.zeros((4, 4))
    assert demo.psnr(a, a) == float("inf")
    assert demo.psnr(a + 255.0, a) == pytest.approx(0.0)
    assert demo.psnr(a + 25.5, a) == pytest.approx(20.0)


def test_tour_denoising_raises_the_psnr(tmp_path):
    """Bilateral filtering of the noisy astronaut: the PSNR must rise by several dB."""
    p0, p1, _, png = demo.run_denoise(tmp_path, log=lambda *a: None)
    assert png.is_file()
    assert 20.0 < p0 < 25.0  # σ_n = 20 noise: ~22.7 dB
    assert p1 > p0 + 5.0  # measured 30.0 dB


def test_tour_crf_raises_the_accuracy(tmp_path):
    """crf_refine on the speckled per-pixel segmentation of the noisy coffee photo."""
    acc0, acc1, _, png = demo.run_crf(tmp_path, log=lambda *a: None)
    assert png.is_file()
    assert 0.7 < acc0 < 0.85  # measured 78.5 %
    assert acc1 > acc0 + 0.08  # measured 91.3 %


# --------------------------------------------------------------------------- tour: volume
def test_load_mri_is_the_real_volume_in_ras_orientation():
    """The T1 MRI inside nibabel's wheel: 33 × 41 × 25 voxels of 2 mm, its values exactly the
    file's, reoriented to RAS+ (the file stores x right-to-left: flipped on the first axis)."""
    nib = pytest.importorskip("nibabel")
    from importlib.resources import files

    vol, spacing = demo.load_mri()
    assert vol.shape == (33, 41, 25) and vol.dtype == np.float32
    assert spacing == (2.0, 2.0, 2.0)
    img = nib.load(files("nibabel.tests") / "data" / demo.VOLUME_FILE)
    raw = np.asarray(img.dataobj)
    assert img.affine[0, 0] < 0  # stored right to left …
    np.testing.assert_array_equal(vol, raw[::-1].astype(np.float32))  # … shown left to right
    crop = (slice(2, 10), slice(3, 12), slice(4, 9))
    np.testing.assert_array_equal(demo.load_mri(crop)[0], vol[crop])


def test_orthogonal_slices_geometry():
    """Three slices through the given voxel, stacked sagittal, coronal, axial, each upward
    axis pointing up and every axis enlarged in proportion to its voxel size."""
    vol = np.zeros((4, 5, 6), np.float32)
    vol[1, 2, 3] = 10.0  # one bright voxel, where the three slices cross
    vol[1, 4, 5] = 5.0  # anterior-superior corner of the sagittal slice x = 1
    out = demo.orthogonal_slices(vol, (1.0, 2.0, 1.0), 0.0, 10.0, zoom=2, at=(1, 2, 3))
    # sagittal (y across ×4, z up ×2): 12 × 20; coronal (x across ×2, z up ×2): 12 × 8;
    # axial (x across ×2, y up ×4): 20 × 8; 6 white rows between
    assert out.shape == (12 + 6 + 12 + 6 + 20, 20) and out.dtype == np.uint8
    sag, cor, ax = out[:12], out[18:30, :8], out[36:, :8]
    assert (out[12:18] == 255).all() and (out[18:30, 8:] == 255).all()
    # the bright voxel: z = 3 of 6 is row 6 - 1 - 3 = 2 from the top (×2), y = 2 column 2 (×4)
    assert (sag[4:6, 8:12] == 255).all() and sag[4:6, 8:12].sum() == sag[sag == 255].sum()
    assert (sag[0:2, 16:20] == 128).all()  # 5 of 10 → 127.5, rounded to 128
    assert (cor[4:6, 2:4] == 255).all() and (cor == 255).sum() == 4
    # axial: y = 2 of 5 is row 5 - 1 - 2 = 2 (×4), x = 1 column 1 (×2)
    assert (ax[8:12, 2:4] == 255).all() and (ax == 255).sum() == 8


def test_tour_volume_on_a_crop_is_the_3d_bilateral_filter(tmp_path):
    """run_volume on a 16 × 20 × 12 crop of the MRI: the PSNR it reports is that of
    pacnp.filters.bilateral_filter in 3-D with the header's voxel size (recomputed here from
    the same seeded noise), it rises, and the 3-D filter beats the same filter slice by slice."""
    pytest.importorskip("nibabel")
    from PIL import Image

    from pacnp import filters

    crop = (slice(8, 24), slice(10, 30), slice(6, 18))
    lines = []
    r = demo.run_volume(tmp_path, log=lines.append, seed=3, crop=crop)
    clean, spacing = demo.load_mri(crop)
    assert r.shape == clean.shape and r.spacing == spacing == (2.0, 2.0, 2.0)
    lo, hi = float(clean.min()), float(clean.max())
    assert r.noise == pytest.approx(demo.VOLUME_NOISE * (hi - lo))
    noisy = (clean + np.random.default_rng(3).normal(0.0, r.noise, clean.shape)).astype(np.float32)
    den = filters.bilateral_filter(
        noisy,
        sigma_spatial=demo.VOLUME_SIGMA_SPATIAL,
        sigma_color=demo.VOLUME_SIGMA_COLOR_PER_NOISE * r.noise,
        spatial_dims=3,
        spacing=spacing,
    )
    assert r.psnr_noisy == demo.psnr(noisy, clean, hi - lo)
    assert r.psnr_3d == demo.psnr(den, clean, hi - lo)
    assert r.psnr_3d > r.psnr_noisy + 1.5  # measured +2.0 dB (the full volume: +4.8)
    assert r.psnr_3d > r.psnr_2d > r.psnr_noisy
    assert r.png == tmp_path / "volume.png"
    with Image.open(r.png) as im:
        assert im.format == "PNG" and im.width > 4 * 20 * demo.VOLUME_ZOOM
    assert "PSNR" in lines[0] and f"-> {r.psnr_3d:.2f} dB" in lines[0]


def test_main_runs_the_volume_part(tmp_path, capsys):
    """``--only volume``: the whole MRI (33 × 41 × 25), its line and picture, exit 0."""
    pytest.importorskip("nibabel")
    assert demo.main(["--out", str(tmp_path), "--only", "volume"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.png"]
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("volume:")]
    assert len(line) == 1 and "33x41x25 voxels of 2x2x2 mm" in line[0]
