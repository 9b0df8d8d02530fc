"""Tests of ``pacnp._imageio``, the image files of the command line: every format and sample
type round-trips bit for bit (16-bit colour PNG above all), files of other writers (Pillow,
tifffile, OpenCV, a hand-built PNG with every row filter) read exactly, and damaged, hostile or
misnamed files give one-line errors."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from pacnp import _imageio
from pacnp._imageio import ImageFileError, read_array, write_array

tifffile = pytest.importorskip("tifffile")
imagecodecs = pytest.importorskip("imagecodecs")
Image = pytest.importorskip("PIL.Image")


def _chunks(data):
    """(tag, offset of the chunk's length field, data length) of every chunk of PNG bytes."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], pos, n))
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
        tifffile.imwrite(tmp_path / f"{compression}.tif", a, photometric="rgb",
                         compression=compression)
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
        out += chunk(b"IDAT", data[i:i + step])
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
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageFileError, match="cannot read"):
        read_array(tmp_path / "cut.png")


def test_giant_png_header_is_refused_before_decoding(tmp_path, monkeypatch):
    """A few hundred bytes announcing 100000 × 100000 pixels (a decompression bomb): refused
    from the header, before libpng allocates 30 GB. The limit can be raised for trusted
    files."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + \
        struct.pack(">I", zlib.crc32(b"IHDR" + header))
    idat = zlib.compress(b"\0" * 4096)
    body += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(
        b"IDAT" + idat))
    (tmp_path / "bomb.png").write_bytes(body)
    with pytest.raises(ImageFileError, match="10000000000 pixels.*PACNP_MAX_IMAGE_PIXELS"):
        read_array(tmp_path / "bomb.png")
    small = np.zeros((20, 30), np.uint8)
    write_array(tmp_path / "small.png", small)
    monkeypatch.setenv(_imageio.MAX_PIXELS_ENV, "599")
    with pytest.raises(ImageFileError, match="30x20 = 600 pixels, more than the limit of 599"):
        read_array(tmp_path / "small.png")
    monkeypatch.setenv(_imageio.MAX_PIXELS_ENV, "600")
    np.testing.assert_array_equal(read_array(tmp_path / "small.png"), small)


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
    with pytest.raises(ImageFileError, match="PNG holds uint8 or uint16 images but the result "
                                             "is float32"):
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
