"""Tests of ``pacnp._imageio``, the image files of the command line: every format and sample
type round-trips bit for bit (16-bit colour PNG above all), files of other writers (Pillow,
tifffile, OpenCV, a hand-built PNG with every row filter) read exactly, and damaged, hostile or
misnamed files give one-line errors."""

from __future__ import annotations

import functools
import io
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from pacnp import _imageio
from pacnp._imageio import ImageFileError, read_array, write_array

tifffile = pytest.importorskip("tifffile")
imagecodecs = pytest.importorskip("imagecodecs")
Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[1]


def _chunks(data):
    """(tag, offset of the chunk's length field, data length) of every chunk of PNG bytes."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], pos, n))
        pos += 12 + n
    return out


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("fmt", [".png", ".tif", ".npy", ".npz"])
def test_files_round_trip(tmp_path, dtype, channels, fmt):
    rng = np.random.default_rng(channels)
    shape = (5, 7) if channels == 0 else (5, 7, channels)
    a = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    write_array(tmp_path / ("a" + fmt), a)
    b = read_array(tmp_path / ("a" + fmt))
    assert b.dtype == dtype
    np.testing.assert_array_equal(b, a[..., 0] if (fmt == ".png" and channels == 1) else a)


@pytest.mark.parametrize("channels, colour_type", [(3, 2), (4, 6)])
def test_16bit_rgb_png_round_trip(tmp_path, channels, colour_type):
    """16-bit RGB(A) — what Pillow cannot write and reads as 8-bit — stored as a true 16-bit
    colour PNG (IHDR bit depth 16, colour type 2 or 6) and read back bit for bit, low bytes
    included."""
    rng = np.random.default_rng(16)
    a = rng.integers(0, 65536, (37, 53, channels)).astype(np.uint16)
    a[:, :5] = (40000 + np.arange(5, dtype=np.uint16))[None, :, None]  # smooth runs too
    a[0, 0] = [65535, 1, 256, 257][:channels]  # extremes and values whose bytes differ
    write_array(tmp_path / "rgb16.png", a)
    data = (tmp_path / "rgb16.png").read_bytes()
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (53, 37, 16, colour_type)
    b = read_array(tmp_path / "rgb16.png")
    assert b.dtype == np.uint16 and b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    assert (b & 0xFF).any() and (b & 0xFF != b >> 8).any()  # low bytes survived, not a copy


def test_non_native_and_non_contiguous_arrays_are_written_as_their_values(tmp_path):
    a = np.arange(6 * 8 * 3, dtype=np.uint16).reshape(6, 8, 3) * 211
    for arr in (a.astype(">u2"), a[:, ::-1], np.asfortranarray(a)):
        for fmt in (".png", ".tif", ".npy"):
            write_array(tmp_path / ("x" + fmt), arr)
            got = read_array(tmp_path / ("x" + fmt))
            assert got.dtype == np.uint16 and got.dtype.byteorder in "=|"
            np.testing.assert_array_equal(got, arr)


def test_tiff_stack_and_big_endian_tiff(tmp_path):
    stack = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    write_array(tmp_path / "stack.tiff", stack)
    np.testing.assert_array_equal(read_array(tmp_path / "stack.tiff"), stack)
    tifffile.imwrite(tmp_path / "be.tif", stack[0].astype(">f4"), byteorder=">")
    got = read_array(tmp_path / "be.tif")
    assert got.dtype.byteorder in "=|"
    np.testing.assert_array_equal(got, stack[0])


def test_compressed_tiff_is_read(tmp_path):
    """LZW and deflate TIFFs (what most image editors write): tifffile decodes them through
    imagecodecs."""
    a = np.random.default_rng(1).integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    for compression in ("lzw", "zlib"):
        tifffile.imwrite(
            tmp_path / f"{compression}.tif", a, photometric="rgb", compression=compression
        )
        np.testing.assert_array_equal(read_array(tmp_path / f"{compression}.tif"), a)


def test_npz_key_and_errors(tmp_path):
    np.savez(tmp_path / "z.npz", first=np.zeros((2, 2)), images=np.ones((3, 3)))
    np.testing.assert_array_equal(read_array(tmp_path / "z.npz"), np.zeros((2, 2)))
    np.testing.assert_array_equal(read_array(tmp_path / "z.npz", key="images"), np.ones((3, 3)))
    with pytest.raises(ImageFileError, match="no array 'nope'; it holds first, images"):
        read_array(tmp_path / "z.npz", key="nope")
    write_array(tmp_path / "w.npz", np.ones(3), key="image")
    with np.load(tmp_path / "w.npz") as z:
        assert z.files == ["image"]


# --------------------------------------------------------------------------- volumes
#: (shape, tifffile axes) of volumes as the command line writes them: grey D×H×W, D×H×W×C of
#: one, two, three (RGB) and five channels, a batch of RGB volumes, planar C×D×H×W
VOLUMES = [
    ((4, 5, 6), "ZYX"),
    ((4, 5, 6, 1), "ZYXS"),
    ((4, 5, 6, 2), "ZYXS"),
    ((3, 5, 6, 3), "ZYXS"),
    ((4, 5, 6, 5), "ZYXS"),
    ((2, 3, 5, 6, 3), "QZYXS"),
    ((2, 4, 5, 6), "CZYX"),
]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape, axes", VOLUMES)
def test_volumes_round_trip_as_a_stack_of_pages(tmp_path, shape, axes, dtype):
    """A volume written with its axes comes back bit for bit, and other readers see what it
    is: one TIFF page per Y × X slice (RGB pages for three samples), not rows of one image."""
    a = (np.random.default_rng(len(shape)).random(shape) * 60000).astype(dtype)
    write_array(tmp_path / "v.tif", a, axes=axes)
    got = read_array(tmp_path / "v.tif")
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, a)
    samples = shape[-1] if axes.endswith("S") and shape[-1] > 1 else 1
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        pages = tif.pages
        y = axes.index("Y")
        assert len(pages) == int(np.prod(shape[:y]))
        assert pages[0].shape == shape[y : y + 2] + ((samples,) if samples > 1 else ())
        assert pages[0].photometric.name == ("RGB" if samples == 3 else "MINISBLACK")
        assert tif.series[0].axes == axes
        # a page is the slice it should be: the second slice of the first volume
        second = a.reshape((-1,) + pages[0].shape)[1]
        np.testing.assert_array_equal(pages[1].asarray(), second)
    for fmt in (".npy", ".npz"):
        write_array(tmp_path / ("v" + fmt), a)
        got = read_array(tmp_path / ("v" + fmt))
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, a)


def test_bad_tiff_axes_are_refused_before_writing(tmp_path):
    for shape, axes in [((4, 5, 6), "YX"), ((4, 5, 6), "YXZ"), ((4, 5, 6), "ZYW"), ((7,), "X")]:
        with pytest.raises(ValueError, match=f"axes={axes!r} does not describe"):
            write_array(tmp_path / "v.tif", np.zeros(shape, np.uint8), axes=axes)
    assert list(tmp_path.iterdir()) == []


def test_multipage_tiffs_of_other_writers_are_read_as_volumes(tmp_path):
    """Stacks as other programs write them: pages without tifffile's shape metadata (any
    libtiff writer), Pillow's multi-page TIFF, an ImageJ hyperstack, big-endian RGB pages: all
    read as one D×H×W (D×H×W×3) array, pages first."""
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 65536, (7, 5, 6)).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "plain.tif") as tw:
        for page in vol:
            tw.write(page, metadata=None)
    tifffile.imwrite(tmp_path / "imagej.tif", vol, imagej=True, metadata={"axes": "ZYX"})
    vol8 = (vol >> 8).astype(np.uint8)
    first, *rest = [Image.fromarray(p) for p in vol8]
    first.save(tmp_path / "pillow.tif", save_all=True, append_images=rest)
    rgb = rng.integers(0, 256, (4, 5, 6, 3)).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "rgb.tif", byteorder=">") as tw:
        for page in rgb:
            tw.write(page, photometric="rgb", metadata=None)
    for name, expected in [
        ("plain.tif", vol),
        ("imagej.tif", vol),
        ("pillow.tif", vol8),
        ("rgb.tif", rgb),
    ]:
        got = read_array(tmp_path / name)
        assert got.dtype == expected.dtype and got.dtype.byteorder in "=|", name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_tiff_of_many_series_warns_that_only_the_first_is_read(tmp_path):
    """Pages written one call at a time with tifffile's metadata are separate series: the
    first is read (as tifffile.imread does) and a warning says the others were not."""
    vol = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with tifffile.TiffWriter(tmp_path / "series.tif") as tw:
        for page in vol:
            tw.write(page)
    with pytest.warns(UserWarning, match=r"holds 3 TIFF series of shape \(4, 5\); only the first"):
        got = read_array(tmp_path / "series.tif")
    np.testing.assert_array_equal(got, vol[0])
    # a thumbnail (another shape) is no slice: no warning
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as tw:
        tw.write(vol[0])
        tw.write(vol[0, ::2, ::2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_array(tmp_path / "thumb.tif"), vol[0])


def test_npy_of_python_objects_or_a_pickle_is_refused_unloaded(tmp_path, monkeypatch):
    """Object arrays and pickles are refused from their first bytes, with a message saying
    so: loading them would run code of the file's choosing."""
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(
        tmp_path / "struct.npy",
        np.zeros(2, dtype=[("x", "f4"), ("o", object)]),
        allow_pickle=True,
    )
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps(np.zeros((3, 3))))
    np.savez(tmp_path / "obj.npz", image=np.array([1, "a"], dtype=object), allow_pickle=True)
    loads = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: loads.append(a))
    for name, words in [
        ("obj.npy", "the array holds Python objects (dtype object)"),
        ("struct.npy", "holds Python objects"),
        ("pickle.npy", "a Python pickle, not an .npy array; pacnp never unpickles"),
        ("obj.npz", "member image.npy holds Python objects"),
    ]:
        pattern = f"cannot read input .*{re.escape(name)}: .*{re.escape(words)}"
        with pytest.raises(ImageFileError, match=pattern) as info:
            read_array(tmp_path / name)
        assert not info.value.usage
    assert loads == []


@pytest.mark.parametrize("fmt", [".tif", ".npy"])
def test_the_limit_counts_a_volumes_bytes(tmp_path, monkeypatch, fmt):
    """A volume's size is all its slices: refused from the header one byte below it."""
    a = np.ones((9, 5, 6, 3), np.uint16)
    write_array(tmp_path / ("v" + fmt), a, axes="ZYXS" if fmt == ".tif" else None)
    monkeypatch.setenv(_imageio.MAX_BYTES_ENV, str(a.nbytes))
    np.testing.assert_array_equal(read_array(tmp_path / ("v" + fmt)), a)
    monkeypatch.setenv(_imageio.MAX_BYTES_ENV, str(a.nbytes - 1))
    with pytest.raises(ImageFileError, match=r"shape \(9, 5, 6, 3\) and type uint16 = 1620 bytes"):
        read_array(tmp_path / ("v" + fmt))


def test_a_failed_volume_write_leaves_the_old_file_and_no_part_file(tmp_path, monkeypatch):
    """tifffile failing after it wrote some slices: the .part file goes, the old output
    stays."""
    real = tifffile.imwrite

    def half(f, a, **kw):
        real(f, a[:1], **{k: v for k, v in kw.items() if k != "metadata"})
        raise OSError("No space left on device")

    (tmp_path / "v.tif").write_bytes(b"previous result")
    monkeypatch.setattr(tifffile, "imwrite", half)
    with pytest.raises(ImageFileError, match="cannot write output .*v.tif: No space left"):
        write_array(tmp_path / "v.tif", np.zeros((4, 5, 6), np.uint8), axes="ZYX")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.tif"]
    assert (tmp_path / "v.tif").read_bytes() == b"previous result"


# --------------------------------------------------------------------------- other writers
@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_pillow_reads_our_8bit_pngs(tmp_path, mode):
    c = len(mode)
    a = np.random.default_rng(c).integers(0, 256, (6, 9, c), dtype=np.uint8)
    write_array(tmp_path / "a.png", a)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.array(im).reshape(a.shape), a)


def test_pillow_reads_our_16bit_grey_png(tmp_path):
    a = np.random.default_rng(2).integers(0, 65536, (6, 9)).astype(np.uint16)
    write_array(tmp_path / "g16.png", a)
    with Image.open(tmp_path / "g16.png") as im:
        np.testing.assert_array_equal(np.array(im).astype(np.uint16), a)


def test_pngs_from_pillow_read_as_the_colours_they_show(tmp_path):
    """Palette (with and without transparency), 1-bit, interlaced, 16-bit grey: what a viewer
    shows, i.e. what Pillow's conversions give."""
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (7, 10, 3)).astype(np.uint8))
    pal = rgb.convert("P")
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_array(tmp_path / "p.png"), np.array(pal.convert("RGB")))
    pal.save(tmp_path / "pt.png", transparency=0)
    with Image.open(tmp_path / "pt.png") as im:
        expected = np.array(im.convert("RGBA"))
    np.testing.assert_array_equal(read_array(tmp_path / "pt.png"), expected)
    bits = Image.fromarray(rng.integers(0, 2, (7, 10)).astype(bool))
    bits.save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_array(tmp_path / "b.png"), np.array(bits.convert("L")))
    rgb.save(tmp_path / "i.png", interlace=1)
    np.testing.assert_array_equal(read_array(tmp_path / "i.png"), np.array(rgb))
    g16 = rng.integers(0, 65536, (7, 10)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    got = read_array(tmp_path / "g16.png")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, g16)


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
        out += chunk(b"IDAT", data[i : i + step])
    return out + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_decoder_handles_every_row_filter(tmp_path, channels):
    a = np.random.default_rng(channels).integers(0, 65536, (11, 13, channels)).astype(np.uint16)
    a[:, :4] = (40000 + np.arange(4, dtype=np.uint16))[None, :, None]  # smooth runs too
    (tmp_path / "f.png").write_bytes(_png_with_every_filter(a, chunks=3))
    np.testing.assert_array_equal(read_array(tmp_path / "f.png"), a)


def test_16bit_rgb_png_from_opencv_is_read_exactly(tmp_path):
    """An independent writer (OpenCV's libpng, adaptive filters) where it is installed; the
    decoder's own test above does not depend on it."""
    cv2 = pytest.importorskip("cv2")
    a = (np.random.default_rng(4).integers(0, 256, (48, 64, 3)) * 257 + 3).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "cv.png"), a[..., ::-1])  # OpenCV stores BGR
    np.testing.assert_array_equal(read_array(tmp_path / "cv.png"), a)


# --------------------------------------------------------------------------- errors
def test_corrupt_16bit_png_is_an_error(tmp_path):
    a = np.zeros((4, 4, 3), np.uint16)
    write_array(tmp_path / "ok.png", a)
    data = bytearray((tmp_path / "ok.png").read_bytes())
    _, pos, n = next(c for c in _chunks(data) if c[0] == b"IDAT")
    data[pos + 8 + n] ^= 0xFF  # the IDAT chunk's CRC no longer matches its data
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ImageFileError, match="cannot read.*bad.png.*CRC"):
        read_array(tmp_path / "bad.png")


@pytest.mark.parametrize("content", [b"this is not a PNG file at all", b""])
def test_not_a_png_is_an_error(tmp_path, content):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageFileError, match="cannot read input .*x.png: not a PNG"):
        read_array(tmp_path / "x.png")


def test_truncated_png_is_an_error(tmp_path):
    write_array(tmp_path / "ok.png", np.arange(64 * 48, dtype=np.uint16).reshape(64, 48))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFileError, match="cannot read"):
        read_array(tmp_path / "cut.png")


def test_giant_png_header_is_refused_before_decoding(tmp_path, monkeypatch):
    """A few hundred bytes announcing 100000 × 100000 pixels (a decompression bomb): refused
    from the header, before libpng allocates 30 GB. The limit (bytes of the decoded image) can
    be raised for trusted files."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    body = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + header
        + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    )
    idat = zlib.compress(b"\0" * 4096)
    body += (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    (tmp_path / "bomb.png").write_bytes(body)
    with pytest.raises(
        ImageFileError, match="bomb.png: .*10000000000 pixels.*PACNP_MAX_IMAGE_BYTES=30000000000"
    ):
        read_array(tmp_path / "bomb.png")
    small = np.zeros((20, 30), np.uint8)
    write_array(tmp_path / "small.png", small)
    monkeypatch.setenv(_imageio.MAX_BYTES_ENV, "599")
    with pytest.raises(
        ImageFileError,
        match="30x20 = 600 pixels of 1 × uint8 = 600 bytes .*more than the limit of 599 bytes",
    ):
        read_array(tmp_path / "small.png")
    monkeypatch.setenv(_imageio.MAX_BYTES_ENV, "600")
    np.testing.assert_array_equal(read_array(tmp_path / "small.png"), small)


@functools.cache
def _deflated_zeros(n):
    """A zlib stream of ``n`` zero bytes, made in a fraction of a second: after a full flush
    the compressor's output for the same block repeats, so one block is repeated (and the
    Adler-32 check computed separately)."""
    block = 1 << 22
    c = zlib.compressobj(9)
    first = c.compress(b"\0" * block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(b"\0" * block) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(n, block)
    rest_data = c.compress(b"\0" * rest) + c.flush()
    check = 1
    for _ in range(full):
        check = zlib.adler32(b"\0" * block, check)
    check = zlib.adler32(b"\0" * rest, check)
    if full == 0:
        c = zlib.compressobj(9)
        return c.compress(b"\0" * n) + c.flush()
    return first + again * (full - 1) + rest_data[:-4] + struct.pack(">I", check)


def _png_claiming(width, height, depth=16, colour=2, idat=None):
    """PNG bytes with a valid IHDR (CRC included) claiming width × height, and one IDAT (by
    default a few compressed zeros): a decompression bomb."""

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 << 20)) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tiff_claiming(width, height, data=None):
    """A little-endian TIFF of one deflate strip whose tags claim a width × height 16-bit grey
    page; the strip holds ``data`` (default: 1 KB of compressed zeros)."""
    data = zlib.compress(b"\0" * 1024) if data is None else data
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 16),
        (259, 3, 8),
        (262, 3, 1),
        (273, 4, 0),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(data)),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    tags[5] = (273, 4, 8 + ifd_size)  # the strip right after the IFD
    ifd = (
        struct.pack("<H", len(tags))
        + b"".join(
            struct.pack("<HHI", tag, kind, 1)
            + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
            for tag, kind, value in tags
        )
        + struct.pack("<I", 0)
    )
    return b"II*\0" + struct.pack("<I", 8) + ifd + data


def _npy_claiming(shape, descr="<u2"):
    """.npy bytes whose header claims ``shape`` of ``descr``, followed by 64 bytes of data."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return f.getvalue() + b"\0" * 64


def _npz_claiming(shape, descr="<u2"):
    """An .npz whose member image.npy claims ``shape``; its data, a megabyte of zeros, is
    deflated to a kilobyte (np.load would allocate the whole claimed array before reading)."""
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("image.npy", _npy_claiming(shape, descr) + b"\0" * (1 << 20))
    return f.getvalue()


BOMBS = {  # file name → (bytes, what the message says of the claim)
    # complete, valid files under the old limit of 178,956,970 pixels that decode to ~770 MB of
    # zeros from less than a megabyte: the limit counts bytes, 16-bit samples and channels
    "rgba16.png": (
        lambda: _png_claiming(9800, 9800, colour=6, idat=_deflated_zeros(9800 * (1 + 9800 * 8))),
        "9800x9800 = 96040000 pixels of 4 × uint16 = 768320000 bytes",
    ),
    "deflate16.tif": (
        lambda: _tiff_claiming(20_000, 20_000, _deflated_zeros(20_000**2 * 2)),
        "shape (20000, 20000) and type uint16 = 800000000 bytes",
    ),
    # headers claiming far more than the file holds
    "rgb16.png": (
        lambda: _png_claiming(100_000, 100_000),
        "100000x100000 = 10000000000 pixels of 3 × uint16 = 60000000000 bytes",
    ),
    "palette.png": (
        lambda: _png_claiming(60_000, 60_000, depth=8, colour=3),
        "60000x60000 = 3600000000 pixels of 4 × uint8",
    ),
    "grey16.tif": (
        lambda: _tiff_claiming(100_000, 100_000),
        "shape (100000, 100000) and type uint16 = 20000000000 bytes",
    ),
    "huge.npy": (
        lambda: _npy_claiming((100_000, 100_000, 3)),
        "shape (100000, 100000, 3) and type uint16 = 60000000000 bytes",
    ),
    "huge.npz": (
        lambda: _npz_claiming((100_000, 100_000, 3)),
        "member image.npy's header claims an array of shape (100000, 100000, 3)",
    ),
    "float64.npy": (lambda: _npy_claiming((2**62, 2**62), "<f8"), str(2**124 * 8) + " bytes"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_are_refused_from_the_header(tmp_path, name):
    make, claim = BOMBS[name]
    (tmp_path / name).write_bytes(make())
    with pytest.raises(ImageFileError) as info:
        read_array(tmp_path / name, what="guide")
    message = str(info.value)
    assert message.startswith(f"guide {tmp_path / name}: its ")
    assert claim in message
    assert f"more than the limit of {_imageio.MAX_IMAGE_BYTES} bytes" in message
    assert "raise the limit: PACNP_MAX_IMAGE_BYTES=" in message
    assert "\n" not in message


def test_decompression_bombs_stay_within_a_small_memory(tmp_path):
    """Read in a fresh process whose address space may grow by only 256 MiB past the imports
    (RLIMIT_AS): every bomb is refused from its header; the peak of Python-level allocations
    (NumPy's included, tracemalloc) and the growth of the resident set stay a few MiB."""
    for name, (make, _) in BOMBS.items():
        (tmp_path / name).write_bytes(make())
    script = textwrap.dedent(f"""
        import resource, sys, tracemalloc
        import imagecodecs, numpy, tifffile
        from pacnp._imageio import ImageFileError, read_array
        vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1])
        resource.setrlimit(resource.RLIMIT_AS, (vm * 1024 + (256 << 20),) * 2)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name in {sorted(BOMBS)!r}:
            tracemalloc.start()
            try:
                read_array({str(tmp_path)!r} + '/' + name)
            except ImageFileError as exc:
                assert 'more than the limit' in str(exc), exc
            else:
                sys.exit(name + ' was read')
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(name, peak)
        print('rss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    env.pop(_imageio.MAX_BYTES_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = dict(line.split() for line in proc.stdout.splitlines())
    assert set(report) == set(BOMBS) | {"rss"}
    for name in BOMBS:  # the PNGs read their few-kilobyte file whole, nothing more
        assert int(report[name]) < 4 << 20, (name, report[name])
    assert int(report["rss"]) < 64 << 10, report["rss"]  # KiB on Linux


@pytest.mark.parametrize("fmt", [".png", ".tif", ".npy", ".npz"])
@pytest.mark.parametrize(
    "dtype, channels", [(np.uint8, 1), (np.uint8, 3), (np.uint16, 3), (np.uint16, 4)]
)
def test_the_limit_counts_bytes_in_every_format(tmp_path, monkeypatch, fmt, dtype, channels):
    """One limit for every format, sample type and channel count: a file is read when its
    decoded array has at most the limit's bytes, refused one byte below."""
    a = np.full((6, 5, channels), 7, dtype)
    write_array(tmp_path / ("a" + fmt), a)
    expected = a[..., 0] if channels == 1 and fmt == ".png" else a
    monkeypatch.setenv(_imageio.MAX_BYTES_ENV, str(a.nbytes))
    np.testing.assert_array_equal(read_array(tmp_path / ("a" + fmt)), expected)
    monkeypatch.setenv(_imageio.MAX_BYTES_ENV, str(a.nbytes - 1))
    with pytest.raises(ImageFileError, match=f"= {a.nbytes} bytes .*limit of {a.nbytes - 1} bytes"):
        read_array(tmp_path / ("a" + fmt))


def test_a_bad_limit_is_a_usage_error(tmp_path, monkeypatch):
    write_array(tmp_path / "a.npy", np.zeros(3))
    for text in ("lots", "-1", "1.5"):
        monkeypatch.setenv(_imageio.MAX_BYTES_ENV, text)
        with pytest.raises(
            ImageFileError, match="PACNP_MAX_IMAGE_BYTES=.* is not a number of bytes"
        ) as info:
            read_array(tmp_path / "a.npy")
        assert info.value.usage


def test_npz_member_that_is_no_array_is_refused_unread(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("image", b"\0" * (1 << 20))  # raw bytes, which np.load would read whole
    with pytest.raises(ImageFileError, match="member image is not an .npy array"):
        read_array(tmp_path / "z.npz")


def test_unknown_extension_and_missing_files(tmp_path):
    with pytest.raises(ImageFileError, match="unknown extension '.jpg'") as info:
        read_array(tmp_path / "photo.jpg")
    assert info.value.usage
    with pytest.raises(ImageFileError, match="no such file") as info:
        read_array(tmp_path / "missing.png")
    assert not info.value.usage
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ImageFileError, match="is a directory"):
        read_array(tmp_path / "dir.npy")


def test_formats_that_cannot_hold_the_result_are_refused_before_writing(tmp_path):
    with pytest.raises(
        ImageFileError, match="PNG holds uint8 or uint16 images but the result is float32"
    ):
        write_array(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ImageFileError, match="1 to 4 channels"):
        write_array(tmp_path / "c.png", np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageFileError, match="folder .* does not exist"):
        write_array(tmp_path / "nowhere" / "a.npy", np.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_output_naming_an_input_is_refused(tmp_path):
    (tmp_path / "in.png").write_bytes(b"x")
    (tmp_path / "hard.png").hardlink_to(tmp_path / "in.png")
    for out in (tmp_path / "in.png", tmp_path / "sub" / ".." / "in.png", tmp_path / "hard.png"):
        with pytest.raises(ImageFileError, match="never overwrites an input") as info:
            _imageio.refuse_overwrite(out, [("guide", None), ("input", tmp_path / "in.png")])
        assert info.value.usage
    _imageio.refuse_overwrite(tmp_path / "out.png", [("input", tmp_path / "in.png")])


# --------------------------------------------------------------------------- signals
_ENCODE_PNG = _imageio._encode_png


class _Stop(Exception):
    pass


def _raising_mid_write(monkeypatch, signum):
    """Make the PNG encoder raise ``signum`` at this process, as a kill would mid-write."""

    def encode(a):
        data = _ENCODE_PNG(a)
        signal.raise_signal(signum)
        return data

    monkeypatch.setattr(_imageio, "_encode_png", encode)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_mid_write_removes_the_part_file_then_reaches_the_previous_handler(
    tmp_path, monkeypatch, name
):
    """The handler that was there before sees the signal after the .part file is gone, and is
    put back: here one that raises (as a server's shutdown handler would)."""
    signum = getattr(signal, name, None)
    if signum is None:
        pytest.skip(f"no {name} here")
    seen = []

    def previous(s, frame):
        seen.append(s)
        raise _Stop(s)

    old = signal.signal(signum, previous)
    try:
        _raising_mid_write(monkeypatch, signum)
        (tmp_path / "out.png").write_bytes(b"previous result")
        with pytest.raises(_Stop):
            write_array(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
        assert seen == [signum]
        assert signal.getsignal(signum) is previous
    finally:
        signal.signal(signum, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert (tmp_path / "out.png").read_bytes() == b"previous result"


def test_a_signal_whose_handler_returns_is_an_error_and_sigint_is_keyboardinterrupt(
    tmp_path, monkeypatch
):
    old = signal.signal(signal.SIGTERM, lambda s, frame: None)
    try:
        _raising_mid_write(monkeypatch, signal.SIGTERM)
        with pytest.raises(
            ImageFileError,
            match="writing output .*out.png was interrupted by SIGTERM; nothing was written",
        ):
            write_array(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    finally:
        signal.signal(signal.SIGTERM, old)
    _raising_mid_write(monkeypatch, signal.SIGINT)  # Python's own handler: Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        write_array(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_handlers_are_restored_and_other_threads_install_none(tmp_path):
    before = {s: signal.getsignal(s) for s in _imageio._CLEANUP_SIGNALS}
    write_array(tmp_path / "a.npy", np.zeros(3))
    assert {s: signal.getsignal(s) for s in _imageio._CLEANUP_SIGNALS} == before
    errors = []

    def write():
        try:
            write_array(tmp_path / "b.npy", np.ones(3))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=write)
    t.start()
    t.join()
    assert errors == []
    np.testing.assert_array_equal(read_array(tmp_path / "b.npy"), np.ones(3))
    assert {s: signal.getsignal(s) for s in _imageio._CLEANUP_SIGNALS} == before


def _wait_for_part(folder, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = [p for p in folder.iterdir() if p.name.endswith(".part")]
        if parts:
            return parts
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"no .part file appeared: {proc.communicate()}")


@pytest.mark.parametrize("name, delay", [("SIGTERM", 0.3), ("SIGHUP", 0.3), ("SIGTERM", 0.0)])
def test_killed_mid_write_leaves_no_part_file(tmp_path, name, delay):
    """A process writing a large compressed output, killed while the .part file exists (at
    once: the signal may come while the file is being created; or well into the deflating):
    it removes the file, then ends by the signal (status 128 + N in a shell)."""
    signum = getattr(signal, name, None)
    if signum is None:
        pytest.skip(f"no {name} here")
    script = textwrap.dedent(f"""
        import numpy as np
        from pacnp._imageio import write_array
        a = np.random.default_rng(0).random((2000, 4000))  # 64 MB, seconds to deflate
        write_array({str(tmp_path / "out.npz")!r}, a)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for_part(tmp_path, proc)
    time.sleep(delay)
    assert proc.poll() is None, "the write ended before the signal: make it larger"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signum, err
    assert list(tmp_path.iterdir()) == []
