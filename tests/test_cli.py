"""Tests of the ``pacnp`` command line (pacnp/cli.py), driven as a user drives it: ``python -m
pacnp ...`` in a subprocess on real image files in a temporary folder, outputs compared with the
library call they stand for. The in-process tests (``cli.main([...])``) cover what would need
many subprocesses (tiling geometry over many tile sizes) or cannot be done from outside
(failure in the middle of a write)."""
from __future__ import annotations

import configparser
import importlib.util
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from pacnp import cli, filters

skimage_data = pytest.importorskip("skimage.data")
tifffile = pytest.importorskip("tifffile")
Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures
def _astronaut(h=48, w=64):
    """A crop of a real photograph with edges and texture (the astronaut's face and suit)."""
    return np.ascontiguousarray(skimage_data.astronaut()[80:80 + h, 200:200 + w])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real image files in every supported format, written once for the module."""
    d = tmp_path_factory.mktemp("cli")
    rgb8 = _astronaut()
    rgb16 = rgb8.astype(np.uint16) * 257 + np.arange(rgb8.size, dtype=np.uint16).reshape(
        rgb8.shape) % 251  # low bytes that an 8-bit reader would lose
    grey16 = (rgb16.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint16)
    Image.fromarray(rgb8).save(d / "rgb8.png")  # written by Pillow, not by pacnp
    (d / "rgb16.png").write_bytes(cli.png_encode(rgb16))
    tifffile.imwrite(d / "grey16.tif", grey16)
    np.save(d / "rgbf32.npy", rgb8.astype(np.float32) / 255)
    np.savez(d / "stack.npz", first=np.zeros((2, 2)), images=np.stack([rgb8, rgb8[::-1]]))
    Image.fromarray(_astronaut(40, 64)).save(d / "small.png")
    (d / "garbage.png").write_bytes(b"this is not a PNG file at all")
    (d / "truncated.npy").write_bytes((d / "rgbf32.npy").read_bytes()[:200])
    return dict(dir=d, rgb8=rgb8, rgb16=rgb16, grey16=grey16)


def run_cli(cwd, *args, env=None):
    """``python -m pacnp ARGS`` in ``cwd``; the CompletedProcess (text stdout/stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pacnp", *map(str, args)], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=300)


def _ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return res


# --------------------------------------------------------------------------- help, entry points
def test_help_lists_every_command_with_examples(files):
    res = _ok(run_cli(files["dir"], "--help"))
    for word in ("filter", "upsample", "crf", "demo", "bench", "--backend", "--threads",
                 "--quiet", "examples:", "pacnp upsample depth_low.npy"):
        assert word in res.stdout


@pytest.mark.parametrize("command, example", [
    ("filter", "pacnp filter photo.png -o smooth.png"),
    ("upsample", "--factor 8"),
    ("crf", "pacnp crf probs.npy --image rgb.png -o labels.png"),
])
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


def test_demo_and_bench_options_pass_through(files):
    assert "--factors" in _ok(run_cli(files["dir"], "demo", "--help")).stdout
    assert "--quick" in _ok(run_cli(files["dir"], "bench", "--help")).stdout
    res = run_cli(files["dir"], "demo", "--factors", "1")  # the demo's own usage error
    assert res.returncode == 2 and "factor" in res.stderr


# --------------------------------------------------------------------------- filter
@pytest.mark.parametrize("name, guide, extra", [
    ("rgb8.png", None, ["--sigma-spatial", "2", "--sigma-color", "30"]),
    ("rgb16.png", None, ["--tile-rows", "7", "--border", "nearest"]),
    ("grey16.tif", "rgb8.png", ["--radius", "4", "--border", "renormalize", "--tile-rows", "5"]),
    ("rgbf32.npy", "grey16.tif", ["--sigma-color", "4000", "--border", "constant"]),
])
def test_filter_writes_what_the_library_computes(files, tmp_path, name, guide, extra):
    d = files["dir"]
    out = tmp_path / ("out" + Path(name).suffix)
    args = ["filter", d / name, "-o", out] + (["--guide", d / guide] if guide else []) + extra
    _ok(run_cli(tmp_path, *args))
    image = cli.read_array(d / name)
    g = image if guide is None else cli.read_array(d / guide)
    opts = dict(zip([a.lstrip("-").replace("-", "_") for a in extra[::2]], extra[1::2]))
    opts.pop("tile_rows", None)
    kw = dict(sigma_spatial=float(opts.get("sigma_spatial", 1.0)),
              sigma_color=float(opts["sigma_color"]) if "sigma_color" in opts else None,
              radius=int(opts["radius"]) if "radius" in opts else None,
              border=opts.get("border", "reflect"),
              channel_axis=-1 if image.ndim == 3 else None,
              guide_channel_axis=-1 if g.ndim == 3 else None)
    expected = filters.joint_bilateral_filter(image, g, **kw)
    got = cli.read_array(out)
    assert got.dtype == image.dtype and got.shape == image.shape
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, image)  # it did filter


def test_filter_npz_key_batch(files, tmp_path):
    """A batch N×H×W×3 from an .npz key, tiled, equals the library on the whole batch."""
    _ok(run_cli(tmp_path, "filter", files["dir"] / "stack.npz", "--key", "images", "-o",
                "out.npz", "--sigma-color", "25", "--tile-rows", "16"))
    stack = np.load(files["dir"] / "stack.npz")["images"]
    with np.load(tmp_path / "out.npz") as z:
        assert z.files == ["images"]
        got = z["images"]
    expected = filters.bilateral_filter(stack, sigma_color=25.0, channel_axis=-1)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("border, tile_rows", [(b, t) for b in filters.BORDERS for t in (3, 10, 47)]
                         + [("reflect", 1)])
def test_tiles_equal_the_untiled_call(files, tmp_path, border, tile_rows):
    """Tiles of fewer rows than the radius (5), of more, an uneven last tile of one row, tiles
    of a single row: exactly the untiled call, for every border mode, with the default σ_c
    (the guide's standard deviation)."""
    d = files["dir"]
    out = tmp_path / "out.tif"
    assert cli.main(["filter", str(d / "grey16.tif"), "--guide", str(d / "rgb8.png"), "-o",
                     str(out), "--sigma-spatial", "1.5", "--border", border, "--tile-rows",
                     str(tile_rows), "--quiet"]) == 0
    expected = filters.joint_bilateral_filter(files["grey16"], files["rgb8"], sigma_spatial=1.5,
                                              border=border, guide_channel_axis=-1)
    np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_filter_planar_channel_axis(files, tmp_path):
    planar = np.moveaxis(files["rgb16"], -1, 0).copy()
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert cli.main(["filter", str(tmp_path / "planar.tif"), "--channel-axis", "0", "-o",
                     str(tmp_path / "out.tif"), "--tile-rows", "9", "-q"]) == 0
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
    conf = (np.random.default_rng(factor).random(low.shape) > 0.2)
    guide = files["rgb8"][:H, :W]
    np.save(tmp_path / "low.npy", low)
    np.save(tmp_path / "conf.npy", conf)
    Image.fromarray(guide).save(tmp_path / "guide.png")
    args = ["upsample", "low.npy", "--guide", "guide.png", "--factor", factor, "--confidence",
            "conf.npy", "--sigma-color", "20", "-o", "up.npy", "--tile-rows", tile_rows]
    if tile_rows:
        _ok(run_cli(tmp_path, *args))
    else:  # the untiled path, in process (the subprocess cases cover the command)
        local = {"low.npy", "guide.png", "conf.npy", "up.npy"}
        assert cli.main([str(tmp_path / a) if a in local else str(a) for a in args]) == 0
    expected = filters.joint_bilateral_upsample(low, guide, factor, sigma_color=20.0,
                                                confidence=conf.astype(np.uint8),
                                                guide_channel_axis=-1)
    got = np.load(tmp_path / "up.npy")
    assert got.shape == (H, W) and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_upsample_keeps_uint16_png(files, tmp_path):
    guide = files["rgb8"]
    low = files["grey16"][1::4, 1::4]
    (tmp_path / "low16.png").write_bytes(cli.png_encode(low))
    _ok(run_cli(tmp_path, "upsample", "low16.png", "--guide", files["dir"] / "rgb8.png",
                "--factor", "4", "-o", "up16.png"))
    got = cli.read_array(tmp_path / "up16.png")
    assert got.dtype == np.uint16
    expected = filters.joint_bilateral_upsample(low, guide, 4, guide_channel_axis=-1)
    np.testing.assert_array_equal(got, expected)


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
    _ok(run_cli(tmp_path, "crf", "probs.npz", "--key", "probs", "--channel-axis", "0",
                "--image", files["dir"] / "rgb8.png", "-o", "labels.png", "--num-steps", "3",
                "--probabilities-out", "refined.npy"))
    q = crf_refine(np.moveaxis(p, -1, 0), files["rgb8"], num_steps=3)
    labels = cli.read_array(tmp_path / "labels.png")
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
    assert cli.main(["crf", str(tmp_path / "p.npy"), "--image", str(tmp_path / "img.png"),
                     "-o", str(tmp_path / "labels.png"), "--num-steps", "1", "-q"]) == 0
    labels = cli.read_array(tmp_path / "labels.png")
    assert labels.dtype == np.uint16 and labels.max() < 300


# --------------------------------------------------------------------------- progress
def test_progress_on_stderr_and_quiet(files, tmp_path):
    args = ["filter", files["dir"] / "rgb8.png", "-o", "out.png", "--tile-rows", "8"]
    res = _ok(run_cli(tmp_path, *args, env={cli.PROGRESS_DELAY_ENV: "0"}))
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[-1].startswith("pacnp filter [") and "6/6 tiles" in lines[-1]
    assert "100%" in lines[-1] and len(lines) == 6  # not a tty: one line per tenth, here a tile
    res = _ok(run_cli(tmp_path, *args, "--quiet", env={cli.PROGRESS_DELAY_ENV: "0"}))
    assert res.stdout == "" and res.stderr == ""


def test_crf_progress_counts_mean_field_steps(files, tmp_path):
    p = _probabilities(files)
    np.save(tmp_path / "probs.npy", p)  # H×W×C
    res = _ok(run_cli(tmp_path, "crf", "probs.npy", "--image", files["dir"] / "rgb8.png", "-o",
                      "labels.npy", "--num-steps", "4", env={cli.PROGRESS_DELAY_ENV: "0"}))
    lines = res.stderr.splitlines()
    assert lines and lines[-1].startswith("pacnp crf [") and "4/4 steps" in lines[-1]


def test_progress_waits_for_its_delay_and_redraws_on_a_tty():
    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    quiet_start = Tty()
    with cli.Progress("x", 3, "tiles", stream=quiet_start, delay=3600) as bar:
        for _ in range(3):
            bar.advance()
    assert quiet_start.text == ""  # finished before the delay: never drawn
    tty = Tty()
    with cli.Progress("x", 3, "tiles", stream=tty, delay=0) as bar:
        for _ in range(3):
            bar.advance()
    assert tty.text.startswith("\rx [") and "3/3 tiles 100%" in tty.text
    assert tty.text.endswith("\n") and tty.text.count("\n") == 1  # redrawn in place


# --------------------------------------------------------------------------- errors
ERRORS = [
    # (name, args, exit status, words of the message)
    ("missing file", ["filter", "missing.png", "-o", "o.png"], 1, ["missing.png", "no such file"]),
    ("unreadable png", ["filter", "{d}/garbage.png", "-o", "o.png"], 1, ["cannot read", "garbage"]),
    ("truncated npy", ["filter", "{d}/truncated.npy", "-o", "o.npy"], 1, ["cannot read"]),
    ("guide size", ["filter", "{d}/rgb8.png", "--guide", "{d}/small.png", "-o", "o.png"], 1,
     ["shape mismatch", "64x40", "64x48"]),
    ("negative sigma", ["filter", "{d}/rgb8.png", "-o", "o.png", "--sigma-spatial", "-1"], 2,
     ["--sigma-spatial", "positive"]),
    ("nan sigma", ["filter", "{d}/rgb8.png", "-o", "o.png", "--sigma-color", "nan"], 2,
     ["--sigma-color"]),
    ("bad radius", ["filter", "{d}/rgb8.png", "-o", "o.png", "--radius", "2.5"], 2, ["--radius"]),
    ("output is input", ["filter", "{d}/rgb8.png", "-o", "{d}/../{n}/rgb8.png"], 2,
     ["never overwrites"]),
    ("unknown output extension", ["filter", "{d}/rgb8.png", "-o", "o.jpg"], 2,
     ["unknown extension", ".jpg"]),
    ("unknown input extension", ["filter", "photo.bmp", "-o", "o.png"], 2, ["unknown extension"]),
    ("float to png", ["filter", "{d}/rgbf32.npy", "-o", "o.png"], 1, ["PNG holds", "float32"]),
    ("missing key", ["filter", "{d}/stack.npz", "--key", "nope", "-o", "o.npz"], 1,
     ["no array 'nope'", "first, images"]),
    ("no output", ["filter", "{d}/rgb8.png"], 2, ["-o"]),
    ("upsample guide size", ["upsample", "{d}/small.png", "--guide", "{d}/rgb8.png", "--factor",
                             "2", "-o", "o.png"], 1, ["shape mismatch", "--factor 2"]),
    ("upsample factor", ["upsample", "{d}/small.png", "--guide", "{d}/rgb8.png", "--factor", "1",
                         "-o", "o.png"], 2, ["--factor", ">= 2"]),
    ("crf image size", ["crf", "{d}/rgbf32.npy", "--image", "{d}/small.png", "-o", "l.png"], 1,
     ["shape mismatch"]),
    ("bad crf kernel", ["crf", "{d}/rgbf32.npy", "--image", "{d}/rgb8.png", "-o", "l.png",
                        "--kernel-size", "4"], 1, ["kernel_size"]),
    ("threads", ["filter", "{d}/rgb8.png", "-o", "o.png", "--threads", "0"], 2, ["--threads"]),
    ("too many threads", ["--threads", "100000", "filter", "{d}/rgb8.png", "-o", "o.png"], 2,
     ["--threads 100000"]),
]


@pytest.mark.parametrize("name, args, code, words", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_one_line_and_write_nothing(files, tmp_path, name, args, code, words):
    d = files["dir"]
    before = {p: p.read_bytes() for p in d.iterdir()}
    res = run_cli(tmp_path, *[a.format(d=d, n=d.name) for a in args])
    assert res.returncode == code, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pacnp") and ": error: " in lines[0], \
        res.stderr
    for w in words:
        assert w in lines[0]
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    assert {p: p.read_bytes() for p in d.iterdir()} == before  # inputs untouched


def test_output_through_a_link_to_an_input_is_refused(files, tmp_path):
    (tmp_path / "link.png").symlink_to(files["dir"] / "rgb8.png")
    res = run_cli(tmp_path, "filter", files["dir"] / "rgb8.png", "-o", "link.png")
    assert res.returncode == 2 and "never overwrites" in res.stderr
    assert cli.read_array(files["dir"] / "rgb8.png").tobytes() == files["rgb8"].tobytes()


def test_cuda_backend(files, tmp_path):
    """On a machine with CuPy and a GPU the result equals the CPU's (to float rounding, then
    integer rounding); elsewhere a one-line error says what to install."""
    res = run_cli(tmp_path, "filter", files["dir"] / "rgb8.png", "-o", "gpu.png", "--backend",
                  "cuda", "--sigma-color", "30")
    has_cupy = importlib.util.find_spec("cupy") is not None
    if res.returncode == 0:
        assert has_cupy
        cpu = filters.bilateral_filter(files["rgb8"], sigma_color=30.0, channel_axis=-1)
        diff = np.abs(cli.read_array(tmp_path / "gpu.png").astype(int) - cpu)
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

    monkeypatch.setattr(cli, "png_encode", broken)
    code = cli.main(["filter", str(files["dir"] / "rgb8.png"), "-o", str(out), "-q"])
    assert code == 1
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_written_files_get_ordinary_permissions(files, tmp_path):
    mask = os.umask(0o022)
    try:
        cli.write_array(tmp_path / "a.npy", np.zeros((2, 2)))
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == 0o644


# --------------------------------------------------------------------------- image files
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fmt", [".png", ".tif", ".npy", ".npz"])
def test_files_round_trip(tmp_path, dtype, channels, fmt):
    rng = np.random.default_rng(channels)
    shape = (5, 7) if channels == 0 else (5, 7, channels)
    a = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    cli.write_array(tmp_path / ("a" + fmt), a)
    b = cli.read_array(tmp_path / ("a" + fmt))
    assert b.dtype == dtype
    np.testing.assert_array_equal(b, a[..., 0] if (fmt == ".png" and channels == 1) else a)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_pillow_reads_our_8bit_pngs(tmp_path, mode):
    c = len(mode)
    a = np.random.default_rng(c).integers(0, 256, (6, 9, c), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(cli.png_encode(a))
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.array(im).reshape(a.shape), a)


def _png_with_every_filter(a, chunks=2):
    """PNG bytes of a 16-bit colour image whose rows use filter types 0, 1, 2, 3, 4 in turn
    (RFC 2083 Sec. 6), with the compressed data split over ``chunks`` IDAT chunks."""
    h, w, c = a.shape
    raw = a.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int64)
    bpp = 2 * c
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    upleft = np.zeros_like(raw)
    upleft[:, bpp:] = up[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    predictors = [np.zeros_like(raw), left, up, (left + up) // 2, paeth]
    rows = []
    for y in range(h):
        ft = y % 5
        rows.append(bytes([ft]) + ((raw[y] - predictors[ft][y]) % 256).astype(np.uint8).tobytes())
    data = zlib.compress(b"".join(rows))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    colour = {2: 4, 3: 2, 4: 6}[c]
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
    step = -(-len(data) // chunks)
    for i in range(0, len(data), step):
        out += chunk(b"IDAT", data[i:i + step])
    return out + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_decoder_handles_every_row_filter(tmp_path, channels):
    a = np.random.default_rng(channels).integers(0, 65536, (11, 13, channels)).astype(np.uint16)
    a[:, :4] = (40000 + np.arange(4, dtype=np.uint16))[None, :, None]  # smooth runs too
    (tmp_path / "f.png").write_bytes(_png_with_every_filter(a, chunks=3))
    np.testing.assert_array_equal(cli.read_array(tmp_path / "f.png"), a)


def test_16bit_rgb_png_from_opencv_is_read_exactly(tmp_path):
    """An independent writer (OpenCV's libpng, adaptive filters) where it is installed; the
    decoder's own test above does not depend on it."""
    cv2 = pytest.importorskip("cv2")
    a = (_astronaut().astype(np.uint16) * 257 + 3).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "cv.png"), a[..., ::-1])  # OpenCV stores BGR
    np.testing.assert_array_equal(cli.read_array(tmp_path / "cv.png"), a)


def test_corrupt_16bit_png_is_an_error(tmp_path):
    a = np.zeros((4, 4, 3), np.uint16)
    data = bytearray(cli.png_encode(a))
    data[-20] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(cli.CLIError, match="cannot read.*CRC"):
        cli.read_array(tmp_path / "bad.png")
