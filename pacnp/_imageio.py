"""Reading and writing the image files of the ``pacnp`` command line.

Formats, chosen by the file name's extension:

* PNG — 8 and 16 bit; grey, grey+alpha, RGB, RGBA (palette and 1/2/4-bit files are read as the
  8-bit colours they show). Read and written by **imagecodecs** (libpng).
* TIFF — anything tifffile reads and writes, stacks included. Read and written by **tifffile**.
* ``.npy`` / ``.npz`` — NumPy's own (an ``.npz`` holds one array per key).

Why these libraries. PNG files of 16-bit colour are what depth cameras, raw developers and HDR
pipelines hand over, and they must come back bit for bit. Pillow reads a 16-bit RGB(A) PNG as
8-bit (dropping the low byte without a word) and cannot write one, and imageio's PNG goes
through Pillow; that gap is why this command line once carried a PNG codec of its own.
imagecodecs wraps libpng, the reference implementation, and reads and writes every PNG colour
type at 8 and 16 bits losslessly (interlaced files and CRC checks included). It comes from
tifffile's author and is the codec package tifffile itself uses for compressed TIFFs (LZW,
JPEG, zstd …, which tifffile alone cannot decode), so one dependency serves both formats.
The alternatives: pypng is pure Python (slow on large images, rarely released); OpenCV is a
large wheel and stores colour as BGR.

Safety. A PNG header can announce far more pixels than its few bytes hold (a "decompression
bomb"); the size is checked before decoding against ``MAX_PNG_PIXELS`` (Pillow's limit, which
the command line had while its 8-bit PNGs went through Pillow; ``PACNP_MAX_IMAGE_PIXELS``
raises it). Outputs are written to a temporary ``.part`` file beside the target, flushed and
renamed over it, so a failed or interrupted write never leaves half a file, and
``refuse_overwrite`` keeps an output from naming one of the inputs.

Every problem is an :class:`ImageFileError` with a one-line message that names the file;
``usage`` marks the ones a corrected command line fixes (an unknown extension, an output that
is an input) as opposed to failures while reading or writing.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "MAX_PNG_PIXELS", "ImageFileError", "check_writable", "file_format",
           "read_array", "refuse_overwrite", "write_array"]

#: extension → format; the only files read and written
FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".npz": "npz"}
#: a PNG announcing more pixels than this is refused before decoding: Pillow's
#: decompression-bomb limit (2 × Image.MAX_IMAGE_PIXELS)
MAX_PNG_PIXELS = 2 * 89_478_485
MAX_PIXELS_ENV = "PACNP_MAX_IMAGE_PIXELS"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageFileError(Exception):
    """A problem with an image file, as one line that names it. ``usage`` is true where the
    command line itself is at fault (unknown extension, output naming an input)."""

    def __init__(self, message, *, usage=False):
        super().__init__(message)
        self.usage = usage


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _library(name):
    """Import a codec library of the cli extra, saying how to install it when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"{name} is not installed: pip install 'pacnp[cli]'") from None


def file_format(path, what="input"):
    """The format of ``path`` from its extension: png, tiff, npy or npz."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ImageFileError(f"{what} {path}: unknown extension {Path(path).suffix or '(none)'!r}"
                             f"; use one of {' '.join(sorted(set(FORMATS)))}", usage=True)
    return fmt


# --------------------------------------------------------------------------- reading
def _max_png_pixels():
    try:
        return int(os.environ.get(MAX_PIXELS_ENV, MAX_PNG_PIXELS))
    except ValueError:
        return MAX_PNG_PIXELS


def _read_png(path):
    imagecodecs = _library("imagecodecs")
    data = Path(path).read_bytes()
    if not imagecodecs.png_check(data[:8]):
        raise ValueError("not a PNG file")
    # the image size sits at a fixed place of the first chunk (IHDR); checking it here keeps a
    # small file that announces a giant image from taking the memory before libpng notices
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        limit = _max_png_pixels()
        if width * height > limit:
            raise ValueError(f"the image is {width}x{height} = {width * height} pixels, more than "
                             f"the limit of {limit} (a decompression bomb?); if the file is "
                             f"trusted, set {MAX_PIXELS_ENV} to allow it")
    return imagecodecs.png_decode(data)


def read_array(path, *, key=None, what="input"):
    """The array stored in ``path`` (format from the extension), in native byte order.

    ``key`` picks the array of an ``.npz`` (default: its first); ``what`` names the file in
    messages (input, guide, …).
    """
    fmt = file_format(path, what)
    p = Path(path)
    if not p.exists():
        raise ImageFileError(f"{what} {path}: no such file")
    if p.is_dir():
        raise ImageFileError(f"{what} {path}: is a directory, not a file")
    try:
        if fmt == "npy":
            a = np.load(p, allow_pickle=False)
            if not isinstance(a, np.ndarray):  # an .npz archive under an .npy name
                a.close()
                raise ValueError("not an .npy file (an .npz archive? rename it)")
        elif fmt == "npz":
            with np.load(p, allow_pickle=False) as z:
                names = list(z.files)
                if not names:
                    raise ImageFileError(f"{what} {path}: the archive holds no arrays")
                if key is None:
                    key = names[0]
                elif key not in names:
                    raise ImageFileError(f"{what} {path} has no array {key!r}; it holds "
                                         f"{', '.join(names)}")
                a = z[key]
        elif fmt == "tiff":
            a = _library("tifffile").imread(p)
        else:
            a = _read_png(p)
    except ImageFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to decode is "unreadable"
        raise ImageFileError(f"cannot read {what} {path}: {_one_line(exc)}") from None
    a = np.asarray(a)
    if a.dtype.byteorder not in "=|":  # big-endian TIFF/npy: the kernels want native order
        a = a.astype(a.dtype.newbyteorder("="))
    return a


# --------------------------------------------------------------------------- writing
def check_writable(path, dtype, shape, what="output"):
    """Fail before any work if ``path``'s folder or format cannot take an array of ``dtype``
    and ``shape``; returns the format."""
    fmt = file_format(path, what)
    parent = Path(path).parent
    if not parent.is_dir():
        raise ImageFileError(f"{what} {path}: folder {parent} does not exist")
    if Path(path).is_dir():
        raise ImageFileError(f"{what} {path}: is a directory")
    if fmt == "png":
        dtype = np.dtype(dtype)
        if dtype.kind != "u" or dtype.itemsize > 2:  # uint8/uint16 in either byte order
            raise ImageFileError(f"{what} {path}: PNG holds uint8 or uint16 images but the result "
                                 f"is {dtype}; write .tif, .npy or .npz instead")
        if not (len(shape) == 2 or (len(shape) == 3 and 1 <= shape[2] <= 4)):
            raise ImageFileError(f"{what} {path}: PNG holds one H×W image with 1 to 4 channels "
                                 f"(channels last) but the result has shape {tuple(shape)}; "
                                 f"write .tif, .npy or .npz instead")
    return fmt


def _encode_png(a):
    """PNG bytes of an H×W or H×W×C (C = 1…4) uint8/uint16 array."""
    imagecodecs = _library("imagecodecs")
    if a.ndim == 3 and a.shape[2] == 1:  # one channel is grey: colour type 0, not 2
        a = a[:, :, 0]
    # libpng takes native-order, C-contiguous samples and writes them big-endian itself
    return imagecodecs.png_encode(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")))


def _write_tiff(f, a):
    tifffile = _library("tifffile")
    # channels-last colour as RGB(A) so that viewers show it; anything else as grey pages
    # (tifffile's shape metadata brings any shape back as written)
    rgb = a.ndim >= 3 and a.shape[-1] in (3, 4)
    tifffile.imwrite(f, a, photometric="rgb" if rgb else "minisblack",
                     planarconfig="contig" if rgb else None)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_array(path, a, *, key="arr_0", what="output"):
    """Write ``a`` to ``path`` atomically: a temporary ``.part`` file in the same folder (same
    file system, so the rename is atomic), flushed to disk, then renamed over ``path``.
    ``key`` names the array in an ``.npz``."""
    a = np.asarray(a)
    fmt = check_writable(path, a.dtype, a.shape, what)
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    except OSError as exc:
        raise ImageFileError(f"cannot write {what} {path}: {_one_line(exc)}") from None
    os.close(fd)  # reopened by name: tifffile wants a file object whose name is a path
    try:
        with open(tmp, "wb") as f:
            if fmt == "npy":
                np.save(f, a, allow_pickle=False)
            elif fmt == "npz":
                np.savez_compressed(f, **{key: a})
            elif fmt == "tiff":
                _write_tiff(f, a)
            else:
                f.write(_encode_png(a))
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, Exception):
            raise ImageFileError(f"cannot write {what} {path}: {_one_line(exc)}") from None
        raise


def refuse_overwrite(output, inputs):
    """Refuse an output path that names one of ``inputs`` ((name, path or None) pairs), after
    resolving links and ``..``, or through a hard link."""
    out = Path(output)
    for name, path in inputs:
        if path is None:
            continue
        same = out.resolve() == Path(path).resolve()
        if not same and out.exists() and Path(path).exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, path)  # hard links
        if same:
            raise ImageFileError(f"-o {output} is the {name} {path}; pacnp never "
                                 f"overwrites an input, choose another output path", usage=True)
