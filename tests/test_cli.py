"""Tests of the ``pacnp`` command line (pacnp/cli.py), driven as a user drives it: ``python -m
pacnp ...`` in a subprocess on real image files in a temporary folder, outputs compared with the
library call they stand for. The in-process tests (``cli.main([...])``) cover what would need
many subprocesses (tiling geometry over many tile sizes) or cannot be done from outside
(failure in the middle of a write)."""

from __future__ import annotations

import configparser
import importlib.util
import os
import pickle
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pacnp import _imageio, cli, filters

skimage_data = pytest.importorskip("skimage.data")
tifffile = pytest.importorskip("tifffile")
Image = pytest.importorskip("PIL.Image")
imagecodecs = pytest.importorskip("imagecodecs")

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures
def _astronaut(h=48, w=64):
    """A crop of a real photograph with edges and texture (the astronaut's face and suit)."""
    return np.ascontiguousarray(skimage_data.astronaut()[80 : 80 + h, 200 : 200 + w])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real image files in every supported format, written once for the module."""
    d = tmp_path_factory.mktemp("cli")
    rgb8 = _astronaut()
    rgb16 = (
        rgb8.astype(np.uint16) * 257
        + np.arange(rgb8.size, dtype=np.uint16).reshape(rgb8.shape) % 251
    )  # low bytes that an 8-bit reader would lose
    grey16 = (rgb16.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint16)
    Image.fromarray(rgb8).save(d / "rgb8.png")  # written by Pillow, not by pacnp
    (d / "rgb16.png").write_bytes(imagecodecs.png_encode(rgb16))  # by libpng, not by pacnp
    tifffile.imwrite(d / "grey16.tif", grey16)
    np.save(d / "rgbf32.npy", rgb8.astype(np.float32) / 255)
    np.savez(d / "stack.npz", first=np.zeros((2, 2)), images=np.stack([rgb8, rgb8[::-1]]))
    Image.fromarray(_astronaut(40, 64)).save(d / "small.png")
    (d / "garbage.png").write_bytes(b"this is not a PNG file at all")
    (d / "truncated.npy").write_bytes((d / "rgbf32.npy").read_bytes()[:200])
    # volumes: a D×H×W stack of the photo's grey rows (ambiguous without --dims), a smaller
    # one, an object array and a pickle under .npy names
    np.save(d / "vol.npy", np.stack([grey16[i : i + 8, :10] for i in range(6)]))
    np.save(d / "vol_small.npy", np.zeros((6, 8, 9), np.uint16))
    np.save(d / "vol3.npy", np.zeros((6, 8, 3), np.uint16))
    np.save(d / "planar3.npy", np.zeros((3, 8, 4), np.uint8))
    np.save(d / "obj.npy", np.array([[None, 1], [2, 3]], dtype=object), allow_pickle=True)
    (d / "pickle.npy").write_bytes(pickle.dumps(np.zeros((6, 8, 10))))
    return dict(dir=d, rgb8=rgb8, rgb16=rgb16, grey16=grey16)


def _env(extra=None):
    """The environment of a ``python -m pacnp`` subprocess: this checkout's pacnp first, so
    that a worktree's tests run its own code and not an installed copy's."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    e.update(extra or {})
    return e


def run_cli(cwd, *args, env=None):
    """``python -m pacnp ARGS`` in ``cwd``; the CompletedProcess (text stdout/stderr)."""
    e = _env(env)
    return subprocess.run(
        [sys.executable, "-m", "pacnp", *map(str, args)],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res


# --------------------------------------------------------------------------- help, entry points
def test_help_lists_every_command_with_examples(files):
    res = _ok(run_cli(files["dir"], "--help"))
    for word in (
        "filter",
        "upsample",
        "crf",
        "demo",
        "--backend",
        "--threads",
        "--quiet",
        "examples:",
        "pacnp upsample depth_low.npy",
    ):
        assert word in res.stdout
    assert "bench" not in res.stdout  # the ratio table needs a source checkout: no command


@pytest.mark.parametrize(
    "command, example",
    [
        ("filter", "pacnp filter photo.png -o smooth.png"),
        ("upsample", "--factor 8"),
        ("crf", "pacnp crf probs.npy --image rgb.png -o labels.png"),
    ],
)
def test_subcommand_help_has_examples(capsys, command, example):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: pacnp {command}" in out and "examples:" in out and example in out


def test_crf_help_shows_crf_refine_defaults(capsys):
    import inspect

    from pacnp.crf import crf_refine

    assert cli.main(["crf", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    default = inspect.signature(crf_refine).parameters["num_steps"].default
    assert f"mean-field steps (default: {default})" in out


def test_console_script_is_declared():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = cfg["options.entry_points"]["console_scripts"]
    assert "pacnp = pacnp.cli:main" in [s.strip() for s in scripts.splitlines()]


def test_demo_options_pass_through(files):
    assert "--factors" in _ok(run_cli(files["dir"], "demo", "--help")).stdout
    res = run_cli(files["dir"], "demo", "--factors", "1")  # the demo's own usage error
    assert res.returncode == 2 and "factor" in res.stderr


def test_bench_is_not_a_command(files):
    """The ratio table lives beside the asv suite (asv_benchmarks/ratio_table.py); an installed
    pacnp has no suite to run it on."""
    res = run_cli(files["dir"], "bench", "--quick")
    assert res.returncode == 2 and "invalid choice" in res.stderr and "bench" in res.stderr


# --------------------------------------------------------------------------- filter
@pytest.mark.parametrize(
    "name, guide, extra",
    [
        ("rgb8.png", None, ["--sigma-spatial", "2", "--sigma-color", "30"]),
        ("rgb16.png", None, ["--tile-rows", "7", "--border", "nearest"]),
        (
            "grey16.tif",
            "rgb8.png",
            ["--radius", "4", "--border", "renormalize", "--tile-rows", "5"],
        ),
        ("rgbf32.npy", "grey16.tif", ["--sigma-color", "4000", "--border", "constant"]),
    ],
)
def test_filter_writes_what_the_library_computes(files, tmp_path, name, guide, extra):
    d = files["dir"]
    out = tmp_path / ("out" + Path(name).suffix)
    args = ["filter", d / name, "-o", out] + (["--guide", d / guide] if guide else []) + extra
    _ok(run_cli(tmp_path, *args))
    image = _imageio.read_array(d / name)
    g = image if guide is None else _imageio.read_array(d / guide)
    opts = dict(zip([a.lstrip("-").replace("-", "_") for a in extra[::2]], extra[1::2]))
    opts.pop("tile_rows", None)
    kw = dict(
        sigma_spatial=float(opts.get("sigma_spatial", 1.0)),
        sigma_color=float(opts["sigma_color"]) if "sigma_color" in opts else None,
        radius=int(opts["radius"]) if "radius" in opts else None,
        border=opts.get("border", "reflect"),
        channel_axis=-1 if image.ndim == 3 else None,
        guide_channel_axis=-1 if g.ndim == 3 else None,
    )
    expected = filters.joint_bilateral_filter(image, g, **kw)
    got = _imageio.read_array(out)
    assert got.dtype == image.dtype and got.shape == image.shape
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, image)  # it did filter


def test_filter_npz_key_batch(files, tmp_path):
    """A batch N×H×W×3 from an .npz key, tiled, equals the library on the whole batch."""
    _ok(
        run_cli(
            tmp_path,
            "filter",
            files["dir"] / "stack.npz",
            "--key",
            "images",
            "-o",
            "out.npz",
            "--sigma-color",
            "25",
            "--tile-rows",
            "16",
        )
    )
    stack = np.load(files["dir"] / "stack.npz")["images"]
    with np.load(tmp_path / "out.npz") as z:
        assert z.files == ["images"]
        got = z["images"]
    expected = filters.bilateral_filter(stack, sigma_color=25.0, channel_axis=-1)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "border, tile_rows", [(b, t) for b in filters.BORDERS for t in (3, 10, 47)] + [("reflect", 1)]
)
def test_tiles_equal_the_untiled_call(files, tmp_path, border, tile_rows):
    """Tiles of fewer rows than the radius (5), of more, an uneven last tile of one row, tiles
    of a single row: exactly the untiled call, for every border mode, with the default σ_c
    (the guide's standard deviation)."""
    d = files["dir"]
    out = tmp_path / "out.tif"
    assert (
        cli.main(
            [
                "filter",
                str(d / "grey16.tif"),
                "--guide",
                str(d / "rgb8.png"),
                "-o",
                str(out),
                "--sigma-spatial",
                "1.5",
                "--border",
                border,
                "--tile-rows",
                str(tile_rows),
                "--quiet",
            ]
        )
        == 0
    )
    expected = filters.joint_bilateral_filter(
        files["grey16"], files["rgb8"], sigma_spatial=1.5, border=border, guide_channel_axis=-1
    )
    np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_filter_planar_channel_axis(files, tmp_path):
    planar = np.moveaxis(files["rgb16"], -1, 0).copy()
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert (
        cli.main(
            [
                "filter",
                str(tmp_path / "planar.tif"),
                "--channel-axis",
                "0",
                "-o",
                str(tmp_path / "out.tif"),
                "--tile-rows",
                "9",
                "-q",
            ]
        )
        == 0
    )
    expected = filters.bilateral_filter(planar, channel_axis=0)
    got = tifffile.imread(tmp_path / "out.tif")
    assert got.shape == planar.shape
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- upsample
@pytest.mark.parametrize("factor, tile_rows", [(4, 7), (3, 0), (2, 1)])
def test_upsample_writes_what_the_library_computes(files, tmp_path, factor, tile_rows):
    """Low-res samples point-sampled from the 16-bit grey image at the library's sample
    positions, a confidence map with holes, tiles of odd heights: the library's result."""
    H, W = (s // factor * factor for s in files["grey16"].shape)
    o = (factor - 1) // 2
    low = files["grey16"][o:H:factor, o:W:factor].astype(np.float32)
    conf = np.random.default_rng(factor).random(low.shape) > 0.2
    guide = files["rgb8"][:H, :W]
    np.save(tmp_path / "low.npy", low)
    np.save(tmp_path / "conf.npy", conf)
    Image.fromarray(guide).save(tmp_path / "guide.png")
    args = [
        "upsample",
        "low.npy",
        "--guide",
        "guide.png",
        "--factor",
        factor,
        "--confidence",
        "conf.npy",
        "--sigma-color",
        "20",
        "-o",
        "up.npy",
        "--tile-rows",
        tile_rows,
    ]
    if tile_rows:
        _ok(run_cli(tmp_path, *args))
    else:  # the untiled path, in process (the subprocess cases cover the command)
        local = {"low.npy", "guide.png", "conf.npy", "up.npy"}
        assert cli.main([str(tmp_path / a) if a in local else str(a) for a in args]) == 0
    expected = filters.joint_bilateral_upsample(
        low,
        guide,
        factor,
        sigma_color=20.0,
        confidence=conf.astype(np.uint8),
        guide_channel_axis=-1,
    )
    got = np.load(tmp_path / "up.npy")
    assert got.shape == (H, W) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_upsample_keeps_uint16_png(files, tmp_path):
    guide = files["rgb8"]
    low = files["grey16"][1::4, 1::4]
    (tmp_path / "low16.png").write_bytes(imagecodecs.png_encode(np.ascontiguousarray(low)))
    _ok(
        run_cli(
            tmp_path,
            "upsample",
            "low16.png",
            "--guide",
            files["dir"] / "rgb8.png",
            "--factor",
            "4",
            "-o",
            "up16.png",
        )
    )
    got = _imageio.read_array(tmp_path / "up16.png")
    assert got.dtype == np.uint16
    expected = filters.joint_bilateral_upsample(low, guide, 4, guide_channel_axis=-1)
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- volumes
#: voxel sizes of the tests: anisotropic (thick slices), as in most CT and MRI
SPACING = (3.0, 1.0, 1.5)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Real volumes as the command line meets them: a crop of the T1 MRI shipped with nibabel
    (anatomical.nii, 2 mm voxels) as a plain multi-page TIFF written page by page (as other
    programs write stacks) and as float32 .npy; an RGB D×H×W×3 volume (rows of the photo
    sliding down: a real colour "video"), its grey version as a guide; a batch of two RGB
    volumes in an .npz."""
    nib = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    d = tmp_path_factory.mktemp("volumes")
    mri = np.asarray(nib.load(Path(data_path) / "anatomical.nii").dataobj)  # (33, 41, 25) >i2
    mri16 = np.clip(mri[6:18, 8:30, 4:20].astype(np.int32) + 610, 0, 65535).astype(np.uint16)
    with tifffile.TiffWriter(d / "mri.tif") as tw:
        for page in mri16:
            tw.write(page, metadata=None)
    np.save(d / "mri.npy", mri16.astype(np.float32))
    photo = skimage_data.astronaut()
    rgbvol = np.stack([photo[100 + 3 * i : 118 + 3 * i, 200:222] for i in range(7)])
    grey = (rgbvol.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.float32)
    np.save(d / "rgbvol.npy", rgbvol)
    np.save(d / "greyvol.npy", grey)
    np.savez(d / "batch.npz", vols=np.stack([rgbvol, rgbvol[::-1]]))
    return dict(dir=d, mri16=mri16, rgbvol=rgbvol, grey=grey)


def _tiff_pages(path):
    with tifffile.TiffFile(path) as tif:
        return len(tif.pages), tif.pages[0].shape


@pytest.mark.parametrize(
    "name, guide, extra, kw",
    [
        (
            "mri.tif",
            None,
            ["--spacing", "3,1,1.5", "--sigma-spatial", "2", "--sigma-color", "800"],
            dict(sigma_spatial=2.0, sigma_color=800.0, spacing=SPACING),
        ),
        (
            "rgbvol.npy",
            "greyvol.npy",
            ["--sigma-color", "20", "--border", "nearest", "--tile-rows", "2"],
            dict(sigma_color=20.0, border="nearest", channel_axis=-1, guide_channel_axis=None),
        ),
        (
            "mri.npy",
            None,
            ["--radius", "1,3,2", "--border", "renormalize", "--tile-rows", "5"],
            dict(radius=(1, 3, 2), border="renormalize"),
        ),
    ],
)
def test_volume_filter_writes_what_the_library_computes(volumes, tmp_path, name, guide, extra, kw):
    """``--dims 3``: the 3-D (joint) bilateral filter of pacnp.filters, bit for bit, in the
    input's dtype, written back to the input's format (a TIFF of one page per slice)."""
    d = volumes["dir"]
    out = tmp_path / ("out" + Path(name).suffix)
    args = ["filter", d / name, "-o", out, "--dims", "3"] + extra
    _ok(run_cli(tmp_path, *(args + (["--guide", d / guide] if guide else []))))
    image = _imageio.read_array(d / name)
    g = image if guide is None else _imageio.read_array(d / guide)
    expected = filters.joint_bilateral_filter(image, g, spatial_dims=3, **kw)
    got = _imageio.read_array(out)
    assert got.dtype == image.dtype and got.shape == image.shape
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, image)  # it did filter
    if out.suffix == ".tif":
        assert _tiff_pages(out) == (image.shape[0], image.shape[1:])


def test_volume_filter_is_3d_not_slice_by_slice(volumes, tmp_path):
    """The window reaches across slices: the result differs from filtering each slice as a
    2-D image, which --dims 2 --channel-axis none does (a batch of D grey images)."""
    d = volumes["dir"]
    for dims in ("3", "2"):
        args = ["filter", str(d / "mri.npy"), "-o", str(tmp_path / f"d{dims}.npy"), "-q"]
        args += ["--channel-axis", "none"] if dims == "2" else []
        assert cli.main(args + ["--dims", dims, "--sigma-color", "800"]) == 0
    vol = np.load(d / "mri.npy")
    slices = filters.bilateral_filter(vol, sigma_color=800.0)  # a batch of D images
    np.testing.assert_array_equal(np.load(tmp_path / "d2.npy"), slices)
    d3 = np.load(tmp_path / "d3.npy")
    np.testing.assert_array_equal(
        d3, filters.bilateral_filter(vol, sigma_color=800.0, spatial_dims=3)
    )
    assert np.abs(d3 - slices).max() > 1.0


@pytest.mark.parametrize(
    "border, tile_rows", [(b, t) for b in filters.BORDERS for t in (1, 4)] + [("reflect", 7)]
)
def test_volume_tiles_equal_the_untiled_call(volumes, tmp_path, border, tile_rows):
    """Slabs of one slice, of fewer slices than the reach along D, an uneven last slab: the
    untiled call exactly, for every border, with thick slices (spacing 3 along D) and the
    default σ_c (the whole guide's standard deviation, not a slab's)."""
    d = volumes["dir"]
    out = tmp_path / "out.npy"
    args = ["filter", str(d / "rgbvol.npy"), "--guide", str(d / "greyvol.npy"), "-o", str(out)]
    args += ["--dims", "3", "--spacing", "3,1,1.5", "--sigma-spatial", "3", "--border", border]
    assert cli.main(args + ["--tile-rows", str(tile_rows), "--quiet"]) == 0
    expected = filters.joint_bilateral_filter(
        volumes["rgbvol"],
        volumes["grey"],
        sigma_spatial=3.0,
        border=border,
        channel_axis=-1,
        guide_channel_axis=None,
        spatial_dims=3,
        spacing=SPACING,
    )
    np.testing.assert_array_equal(np.load(out), expected)


def test_volume_batch_and_planar_layouts(volumes, tmp_path):
    """N×D×H×W×C from an .npz key (5-D: a batch of RGB volumes), and planar C×D×H×W with
    --channel-axis 0 written as a TIFF: the library's result in the input's layout."""
    d = volumes["dir"]
    out = tmp_path / "out.npz"
    args = ["filter", str(d / "batch.npz"), "--key", "vols", "-o", str(out), "--dims", "3"]
    assert cli.main(args + ["--sigma-color", "25", "--tile-rows", "3", "-q"]) == 0
    batch = np.load(d / "batch.npz")["vols"]
    expected = filters.bilateral_filter(batch, sigma_color=25.0, channel_axis=-1, spatial_dims=3)
    with np.load(out) as z:
        assert z.files == ["vols"]
        np.testing.assert_array_equal(z["vols"], expected)
    planar = np.moveaxis(volumes["rgbvol"], -1, 0).copy()
    np.save(tmp_path / "planar.npy", planar)
    args = ["filter", str(tmp_path / "planar.npy"), "-o", str(tmp_path / "p.tif"), "--dims", "3"]
    assert cli.main(args + ["--channel-axis", "0", "--sigma-color", "25", "-q"]) == 0
    got = _imageio.read_array(tmp_path / "p.tif")
    expected = filters.bilateral_filter(planar, sigma_color=25.0, channel_axis=0, spatial_dims=3)
    np.testing.assert_array_equal(got, expected)
    assert _tiff_pages(tmp_path / "p.tif") == (3 * planar.shape[1], planar.shape[2:])


@pytest.mark.parametrize("factor, tile_rows", [(2, 3), (3, 0)])
def test_volume_upsample_writes_what_the_library_computes(volumes, tmp_path, factor, tile_rows):
    """3-D joint bilateral upsampling of the MRI's point samples guided by the full MRI, with
    a confidence volume with holes, in slabs: the library's result."""
    full = volumes["mri16"].astype(np.float32)
    D, H, W = (s // factor * factor for s in full.shape)
    o = (factor - 1) // 2
    guide = full[:D, :H, :W]
    low = guide[o::factor, o::factor, o::factor]
    conf = np.random.default_rng(factor).random(low.shape) > 0.2
    for name, a in (("low.npy", low), ("guide.npy", guide), ("conf.npy", conf)):
        np.save(tmp_path / name, a)
    args = ["upsample", "low.npy", "--guide", "guide.npy", "--factor", factor, "--dims", "3"]
    args += ["--confidence", "conf.npy", "--sigma-color", "900", "-o", "up.tif"]
    args += ["--tile-rows", tile_rows]
    _ok(run_cli(tmp_path, *args))
    expected = filters.joint_bilateral_upsample(
        low, guide, factor, sigma_color=900.0, confidence=conf.astype(np.uint8), spatial_dims=3
    )
    got = _imageio.read_array(tmp_path / "up.tif")
    assert got.shape == (D, H, W) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert _tiff_pages(tmp_path / "up.tif") == (D, (H, W))


def test_signal_filter_with_dims_1(volumes, tmp_path):
    """``--dims 1``: N×L×C signals (each row of the RGB volume's first slice, a real colour
    scanline), filtered along L only, per-axis radius given as one value."""
    sig = np.ascontiguousarray(volumes["rgbvol"][0]).astype(np.float32)  # 18 signals × 22 × 3
    np.save(tmp_path / "sig.npy", sig)
    args = ["filter", str(tmp_path / "sig.npy"), "-o", str(tmp_path / "o.npy"), "--dims", "1"]
    assert cli.main(args + ["--radius", "4", "--sigma-color", "30", "--tile-rows", "5", "-q"]) == 0
    expected = filters.bilateral_filter(
        sig, radius=4, sigma_color=30.0, channel_axis=-1, spatial_dims=1
    )
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), expected)


def test_a_3d_array_of_many_values_per_pixel_needs_dims(files, tmp_path):
    """6×8×10: a volume or an image of 10 channels? Refused without --dims (exit 2, nothing
    written); --dims 2 or --channel-axis -1 take it as the image, as before --dims existed."""
    vol = files["dir"] / "vol.npy"
    res = run_cli(tmp_path, "filter", vol, "-o", "o.npy")
    assert res.returncode == 2 and "give --dims 3 for a volume, --dims 2" in res.stderr
    assert list(tmp_path.iterdir()) == []
    a = np.load(vol)
    expected = filters.bilateral_filter(a, channel_axis=-1)
    for extra in (["--dims", "2"], ["--channel-axis", "-1"]):
        assert cli.main(["filter", str(vol), "-o", str(tmp_path / "o.npy"), "-q"] + extra) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), expected)


# --------------------------------------------------------------------------- crf
def _probabilities(files, classes=3):
    """Noisy class probabilities of a colour clustering of the photo: the CRF has work to do."""
    rgb = files["rgb8"].astype(np.float64)
    centres = rgb.reshape(-1, 3)[:: rgb.shape[0] * rgb.shape[1] // classes][:classes]
    dist = ((rgb[:, :, None, :] - centres) ** 2).sum(-1)
    logits = -dist / dist.std() + np.random.default_rng(0).normal(0, 1.0, dist.shape)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def test_crf_writes_labels_of_crf_refine(files, tmp_path):
    from pacnp.crf import crf_refine

    p = _probabilities(files)
    np.savez(tmp_path / "probs.npz", probs=np.moveaxis(p, -1, 0))  # C×H×W under a key
    _ok(
        run_cli(
            tmp_path,
            "crf",
            "probs.npz",
            "--key",
            "probs",
            "--channel-axis",
            "0",
            "--image",
            files["dir"] / "rgb8.png",
            "-o",
            "labels.png",
            "--num-steps",
            "3",
            "--probabilities-out",
            "refined.npy",
        )
    )
    q = crf_refine(np.moveaxis(p, -1, 0), files["rgb8"], num_steps=3)
    labels = _imageio.read_array(tmp_path / "labels.png")
    assert labels.dtype == np.uint8 and labels.shape == p.shape[:2]
    np.testing.assert_array_equal(labels, np.argmax(q, axis=0))
    refined = np.load(tmp_path / "refined.npy")
    assert refined.shape == (3,) + p.shape[:2]  # the input's C×H×W layout
    np.testing.assert_allclose(refined, q, rtol=1e-6, atol=1e-7)
    assert (labels != np.argmax(p, axis=-1)).any()  # the CRF changed something


def test_crf_many_classes_give_uint16_labels(files, tmp_path):
    p = np.random.default_rng(1).random((12, 16, 300)).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    Image.fromarray(files["rgb8"][:12, :16]).save(tmp_path / "img.png")
    assert (
        cli.main(
            [
                "crf",
                str(tmp_path / "p.npy"),
                "--image",
                str(tmp_path / "img.png"),
                "-o",
                str(tmp_path / "labels.png"),
                "--num-steps",
                "1",
                "-q",
            ]
        )
        == 0
    )
    labels = _imageio.read_array(tmp_path / "labels.png")
    assert labels.dtype == np.uint16 and labels.max() < 300


# --------------------------------------------------------------------------- progress
def run_cli_on_a_terminal(cwd, *args, env=None):
    """``python -m pacnp ARGS`` with stderr on a pseudo-terminal (stdout a pipe), as a user at
    a terminal runs it; returns (exit status, stdout, what the terminal received)."""
    e = _env(env)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacnp", *map(str, args)],
        cwd=cwd,
        env=e,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)  # the child holds its copy; EOF (EIO) once it exits
    received = b""
    while True:  # drain as it comes: a full terminal buffer would block the child
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    code = proc.wait(timeout=300)
    # the terminal turns "\n" into "\r\n" (onlcr); undo it to see what pacnp wrote
    return code, out, received.decode().replace("\r\n", "\n")


def _last_draw(text):
    """The bar as a terminal shows it at the end: what follows the last carriage return."""
    return text.rstrip("\n").split("\r")[-1]


def test_progress_on_a_terminal_and_quiet(files, tmp_path):
    args = ["filter", files["dir"] / "rgb8.png", "-o", "out.png", "--tile-rows", "8"]
    code, out, term = run_cli_on_a_terminal(tmp_path, *args, env={cli.PROGRESS_DELAY_ENV: "0"})
    assert code == 0 and out == "", term
    last = _last_draw(term)
    assert last.startswith("pacnp filter [") and "6/6 tiles" in last and "100%" in last, term
    assert term.endswith("\n") and term.count("\n") == 1  # redrawn in place, one line
    code, out, term = run_cli_on_a_terminal(
        tmp_path, *args, "--quiet", env={cli.PROGRESS_DELAY_ENV: "0"}
    )
    assert code == 0 and out == "" and term == ""


def test_progress_stays_out_of_logs(files, tmp_path):
    """stderr a pipe or a file (a log): no bar, whatever the delay."""
    res = _ok(
        run_cli(
            tmp_path,
            "filter",
            files["dir"] / "rgb8.png",
            "-o",
            "out.png",
            "--tile-rows",
            "8",
            env={cli.PROGRESS_DELAY_ENV: "0"},
        )
    )
    assert res.stdout == "" and res.stderr == ""


def test_crf_progress_counts_mean_field_steps(files, tmp_path):
    p = _probabilities(files)
    np.save(tmp_path / "probs.npy", p)  # H×W×C
    code, _, term = run_cli_on_a_terminal(
        tmp_path,
        "crf",
        "probs.npy",
        "--image",
        files["dir"] / "rgb8.png",
        "-o",
        "labels.npy",
        "--num-steps",
        "4",
        env={cli.PROGRESS_DELAY_ENV: "0"},
    )
    assert code == 0, term
    last = _last_draw(term)
    assert last.startswith("pacnp crf [") and "4/4 steps" in last, term


class _Tty:
    """A stream that says it is a terminal and keeps what is written to it."""

    def __init__(self, tty=True):
        self.text, self.tty = "", tty

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_waits_for_its_delay_and_redraws_on_a_tty():
    quiet_start = _Tty()
    with cli.progress_bar("x", 3, "tiles", stream=quiet_start, delay=3600) as bar:
        for _ in range(3):
            bar.update()
    assert quiet_start.text == ""  # finished before the delay: never drawn
    tty = _Tty()
    with cli.progress_bar("x", 3, "tiles", stream=tty, delay=0) as bar:
        for _ in range(3):
            bar.update()
    assert tty.text.startswith("\rx [") and "3/3 tiles 100%" in tty.text
    assert tty.text.endswith("\n") and tty.text.count("\n") == 1  # redrawn in place
    for stream, enabled in ((_Tty(), False), (_Tty(tty=False), True)):  # --quiet; a log
        with cli.progress_bar("x", 3, "tiles", stream=stream, delay=0, enabled=enabled) as bar:
            for _ in range(3):
                bar.update()
        assert stream.text == ""


# --------------------------------------------------------------------------- errors
ERRORS = [
    # (name, args, exit status, words of the message)
    ("missing file", ["filter", "missing.png", "-o", "o.png"], 1, ["missing.png", "no such file"]),
    ("unreadable png", ["filter", "{d}/garbage.png", "-o", "o.png"], 1, ["cannot read", "garbage"]),
    ("truncated npy", ["filter", "{d}/truncated.npy", "-o", "o.npy"], 1, ["cannot read"]),
    (
        "guide size",
        ["filter", "{d}/rgb8.png", "--guide", "{d}/small.png", "-o", "o.png"],
        1,
        ["shape mismatch", "64x40", "64x48"],
    ),
    (
        "negative sigma",
        ["filter", "{d}/rgb8.png", "-o", "o.png", "--sigma-spatial", "-1"],
        2,
        ["--sigma-spatial", "positive"],
    ),
    (
        "nan sigma",
        ["filter", "{d}/rgb8.png", "-o", "o.png", "--sigma-color", "nan"],
        2,
        ["--sigma-color"],
    ),
    ("bad radius", ["filter", "{d}/rgb8.png", "-o", "o.png", "--radius", "2.5"], 2, ["--radius"]),
    (
        "output is input",
        ["filter", "{d}/rgb8.png", "-o", "{d}/../{n}/rgb8.png"],
        2,
        ["never overwrites"],
    ),
    (
        "unknown output extension",
        ["filter", "{d}/rgb8.png", "-o", "o.jpg"],
        2,
        ["unknown extension", ".jpg"],
    ),
    ("unknown input extension", ["filter", "photo.bmp", "-o", "o.png"], 2, ["unknown extension"]),
    ("float to png", ["filter", "{d}/rgbf32.npy", "-o", "o.png"], 1, ["PNG holds", "float32"]),
    (
        "missing key",
        ["filter", "{d}/stack.npz", "--key", "nope", "-o", "o.npz"],
        1,
        ["no array 'nope'", "first, images"],
    ),
    ("no output", ["filter", "{d}/rgb8.png"], 2, ["-o"]),
    (
        "upsample guide size",
        ["upsample", "{d}/small.png", "--guide", "{d}/rgb8.png", "--factor", "2", "-o", "o.png"],
        1,
        ["shape mismatch", "--factor 2"],
    ),
    (
        "upsample factor",
        ["upsample", "{d}/small.png", "--guide", "{d}/rgb8.png", "--factor", "1", "-o", "o.png"],
        2,
        ["--factor", ">= 2"],
    ),
    (
        "crf image size",
        ["crf", "{d}/rgbf32.npy", "--image", "{d}/small.png", "-o", "l.png"],
        1,
        ["shape mismatch"],
    ),
    (
        "bad crf kernel",
        ["crf", "{d}/rgbf32.npy", "--image", "{d}/rgb8.png", "-o", "l.png", "--kernel-size", "4"],
        1,
        ["kernel_size"],
    ),
    ("threads", ["filter", "{d}/rgb8.png", "-o", "o.png", "--threads", "0"], 2, ["--threads"]),
    (
        "too many threads",
        ["--threads", "100000", "filter", "{d}/rgb8.png", "-o", "o.png"],
        2,
        ["--threads 100000"],
    ),
    (
        "ambiguous volume",
        ["filter", "{d}/vol.npy", "-o", "o.npy"],
        2,
        ["(6, 8, 10)", "--dims 3 for a volume"],
    ),
    ("bad dims", ["filter", "{d}/vol.npy", "-o", "o.npy", "--dims", "4"], 2, ["--dims"]),
    (
        "spacing count",
        ["filter", "{d}/vol.npy", "-o", "o.npy", "--dims", "3", "--spacing", "2,1"],
        2,
        ["--spacing 2,1 gives 2 value(s)", "3 spatial axes"],
    ),
    (
        "radius count",
        ["filter", "{d}/vol.npy", "-o", "o.npy", "--dims", "3", "--radius", "1,2"],
        2,
        ["--radius 1,2 gives 2 values", "3 spatial axes"],
    ),
    (
        "radius list",
        ["filter", "{d}/vol.npy", "-o", "o.npy", "--dims", "3", "--radius", "1,-2,1"],
        2,
        ["--radius", "one per axis", "'1,-2,1'"],
    ),
    (
        "spacing zero",
        ["filter", "{d}/vol.npy", "-o", "o.npy", "--dims", "3", "--spacing", "2,0,1"],
        2,
        ["--spacing", "positive numbers", "'2,0,1'"],
    ),
    (
        "spacing text",
        ["filter", "{d}/vol.npy", "-o", "o.npy", "--dims", "3", "--spacing", "a,b,c"],
        2,
        ["--spacing"],
    ),
    (
        "image as a volume",
        ["filter", "{d}/grey16.tif", "-o", "o.tif", "--dims", "3"],
        1,
        ["(48, 64)", "a volume needs 3 non-empty axes"],
    ),
    (
        "volume guide size",
        ["filter", "{d}/vol.npy", "--guide", "{d}/vol_small.npy", "-o", "o.npy", "--dims", "3"],
        1,
        ["shape mismatch", "9x8x6 voxels", "10x8x6"],
    ),
    (
        "object array",
        ["filter", "{d}/obj.npy", "-o", "o.npy", "--dims", "3"],
        1,
        ["cannot read", "Python objects", "never unpickles"],
    ),
    (
        "pickle",
        ["filter", "{d}/pickle.npy", "-o", "o.npy", "--dims", "3"],
        1,
        ["cannot read", "a Python pickle"],
    ),
    (
        "volume to png",
        ["filter", "{d}/vol.npy", "-o", "o.png", "--dims", "3"],
        1,
        ["PNG holds one H×W image", "a volume, shape (6, 8, 10)"],
    ),
    (
        "narrow volume to png",  # D×H×3: the shape of an RGB image, but a grey volume
        ["filter", "{d}/vol3.npy", "-o", "o.png", "--dims", "3"],
        1,
        ["PNG holds one H×W image", "a volume, shape (6, 8, 3)"],
    ),
    (
        "planar image to png",
        ["filter", "{d}/planar3.npy", "-o", "o.png", "--channel-axis", "0"],
        1,
        ["PNG holds one H×W image", "an image with channels on axis 0", "(3, 8, 4)"],
    ),
]


@pytest.mark.parametrize("name, args, code, words", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_one_line_and_write_nothing(files, tmp_path, name, args, code, words):
    d = files["dir"]
    before = {p: p.read_bytes() for p in d.iterdir()}
    res = run_cli(tmp_path, *[a.format(d=d, n=d.name) for a in args])
    assert res.returncode == code, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pacnp") and ": error: " in lines[0], res.stderr
    for w in words:
        assert w in lines[0]
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    assert {p: p.read_bytes() for p in d.iterdir()} == before  # inputs untouched


def test_output_through_a_link_to_an_input_is_refused(files, tmp_path):
    (tmp_path / "link.png").symlink_to(files["dir"] / "rgb8.png")
    res = run_cli(tmp_path, "filter", files["dir"] / "rgb8.png", "-o", "link.png")
    assert res.returncode == 2 and "never overwrites" in res.stderr
    assert _imageio.read_array(files["dir"] / "rgb8.png").tobytes() == files["rgb8"].tobytes()


def test_cuda_backend(files, tmp_path):
    """On a machine with CuPy and a GPU the result equals the CPU's (to float rounding, then
    integer rounding); elsewhere a one-line error says what to install."""
    res = run_cli(
        tmp_path,
        "filter",
        files["dir"] / "rgb8.png",
        "-o",
        "gpu.png",
        "--backend",
        "cuda",
        "--sigma-color",
        "30",
    )
    has_cupy = importlib.util.find_spec("cupy") is not None
    if res.returncode == 0:
        assert has_cupy
        cpu = filters.bilateral_filter(files["rgb8"], sigma_color=30.0, channel_axis=-1)
        diff = np.abs(_imageio.read_array(tmp_path / "gpu.png").astype(int) - cpu)
        assert diff.max() <= 1
    else:
        assert res.returncode == 1 and len(res.stderr.splitlines()) == 1
        assert ("pip install" in res.stderr) if not has_cupy else ("cuda" in res.stderr)


# --------------------------------------------------------------------------- writing
def test_failed_write_leaves_the_old_file_and_no_temporary(files, tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    out.write_bytes(b"previous result")

    def broken(a):
        raise OSError("disk full")

    monkeypatch.setattr(_imageio, "_encode_png", broken)
    code = cli.main(["filter", str(files["dir"] / "rgb8.png"), "-o", str(out), "-q"])
    assert code == 1
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_written_files_get_ordinary_permissions(files, tmp_path):
    mask = os.umask(0o022)
    try:
        _imageio.write_array(tmp_path / "a.npy", np.zeros((2, 2)))
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == 0o644


def test_sigterm_mid_write_leaves_no_part_file_and_no_output(tmp_path):
    """``pacnp filter`` killed (SIGTERM) while it deflates a large .npz output: the .part file
    is removed, no output appears, the input is untouched, and the process ends by SIGTERM."""
    big = np.random.default_rng(0).random((2000, 4000))  # 64 MB: seconds to deflate
    np.save(tmp_path / "big.npy", big)
    before = (tmp_path / "big.npy").read_bytes()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pacnp",
            "filter",
            "big.npy",
            "-o",
            "out.npz",
            "--radius",
            "0",
            "-q",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240  # a cold numba cache compiles first
    while not any(p.name.endswith(".part") for p in tmp_path.iterdir()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no .part file appeared: {proc.communicate()}")
        time.sleep(0.005)
    time.sleep(0.3)  # well into the deflating
    assert proc.poll() is None, "the write ended before the signal: make the image larger"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err  # 128 + 15 = 143 in a shell
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]
    assert (tmp_path / "big.npy").read_bytes() == before
