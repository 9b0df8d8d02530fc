"""Reading and writing the image files of the ``pacnp`` command line.

Formats, chosen by the file name's extension:

* PNG — 8 and 16 bit; grey, grey+alpha, RGB, RGBA (palette and 1/2/4-bit files are read as the
  8-bit colours they show). Read and written by **imagecodecs** (libpng).
* TIFF — anything tifffile reads and writes. Read and written by **tifffile**. A multi-page
  TIFF (a stack of equal pages: a z-stack, a volume) is one array, pages first: D × H × W, or
  D × H × W × C for pages of C samples (RGB). Of a file of several series (tifffile's word for
  the images of a file: a main image and a thumbnail, or pages written one by one with their
  own shapes) the first is read, with a warning when another has its shape.
* ``.npy`` / ``.npz`` — NumPy's own (an ``.npz`` holds one array per key), any number of axes;
  never a pickle (``allow_pickle=False``): an object array or a pickled file is refused with a
  message that says so.

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

Safety. A file's header can announce far more data than its few bytes hold (a "decompression
bomb": a PNG or an ``.npz`` of compressed zeros, a TIFF or ``.npy`` whose header claims a huge
shape). Every reader takes the shape and sample type from the header first and refuses, before
anything is decoded or allocated, a file whose decoded array would hold more than
``MAX_IMAGE_BYTES`` bytes: one limit for every format, bit depth and channel count (716 MB, the
size of an 8-bit RGBA image at Pillow's decompression-bomb limit of 178,956,970 pixels, which the
command line had while its 8-bit PNGs went through Pillow; a 16-bit or float image reaches it at
fewer pixels, as its memory does). ``PACNP_MAX_IMAGE_BYTES`` raises it for trusted files.

Outputs are written to a temporary ``.part`` file beside the target, flushed and renamed over
it, so a failed or interrupted write never leaves half a file: an exception, Ctrl-C
(``KeyboardInterrupt``) or, in the main thread, SIGTERM, SIGHUP or SIGXFSZ removes the ``.part``
file first; a signal is then handed on to the handler that was there before (by default it ends
the process, status 128 + N in a shell). ``refuse_overwrite`` keeps an output from naming one of
the inputs.

Every problem is an :class:`ImageFileError` with a one-line message that names the file;
``usage`` marks the ones a corrected command line fixes (an unknown extension, an output that
is an input) as opposed to failures while reading or writing.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import re
import signal
import struct
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "FORMATS",
    "TIFF_AXES",
    "MAX_IMAGE_BYTES",
    "ImageFileError",
    "check_writable",
    "file_format",
    "read_array",
    "refuse_overwrite",
    "write_array",
]

#: extension → format; the only files read and written
FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".npz": "npz"}
#: a file whose header announces a decoded array of more bytes than this is refused before
#: decoding: an 8-bit RGBA image at Pillow's decompression-bomb limit (2 × 89,478,485 pixels)
MAX_IMAGE_BYTES = 4 * 2 * 89_478_485
MAX_BYTES_ENV = "PACNP_MAX_IMAGE_BYTES"

#: PNG colour type → samples a pixel once decoded (a palette becomes RGB, or RGBA with a tRNS
#: chunk: counted as 4, the larger)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}


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
        raise ImageFileError(
            f"{what} {path}: unknown extension {Path(path).suffix or '(none)'!r}"
            f"; use one of {' '.join(sorted(set(FORMATS)))}",
            usage=True,
        )
    return fmt


# --------------------------------------------------------------------------- reading
def _max_image_bytes():
    text = os.environ.get(MAX_BYTES_ENV)
    if text is None or not text.strip():
        return MAX_IMAGE_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ImageFileError(
            f"{MAX_BYTES_ENV}={text!r} is not a number of bytes >= 0; unset it "
            f"for the default limit of {MAX_IMAGE_BYTES}",
            usage=True,
        )
    return limit


def _gib(n):
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _check_size(path, what, shape, dtype, claim="header", image=None):
    """Refuse ``path`` if its header's ``shape`` × ``dtype`` is more bytes than the limit: called
    before anything is decoded or allocated (Python integers: a claimed shape cannot overflow).
    ``image``: (width, height, samples a pixel), to say the size as an image does."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
    limit = _max_image_bytes()
    if nbytes > limit:
        if image is None:
            size = f"an array of shape {tuple(int(n) for n in shape)} and type {dtype}"
        else:
            w, h, c = image
            size = f"{w}x{h} = {w * h} pixels of {c} × {dtype}"
        raise ImageFileError(
            f"{what} {path}: its {claim} claims {size} = {nbytes} bytes ({_gib(nbytes)}) once "
            f"decoded, more than the limit of {limit} bytes ({_gib(limit)}; a decompression "
            f"bomb?); if the file is trusted, raise the limit: {MAX_BYTES_ENV}={nbytes}"
        )


def _read_png(path, what):
    imagecodecs = _library("imagecodecs")
    with open(path, "rb") as f:
        head = f.read(33)  # signature and IHDR chunk: nothing more is read before the check
        if not imagecodecs.png_check(head[:8]):
            raise ValueError("not a PNG file")
        # the size sits at a fixed place of the first chunk (IHDR): checking it here keeps a
        # small file that announces a giant image from taking the memory before libpng notices
        if len(head) < 33 or head[12:16] != b"IHDR":
            raise ValueError("no IHDR chunk after the signature (a damaged PNG)")
        width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
        samples = _PNG_SAMPLES.get(colour, 4)
        # as libpng decodes it: 16-bit samples stay 16-bit, 1/2/4/8-bit ones become uint8
        dtype = np.uint16 if depth == 16 else np.uint8
        _check_size(
            path,
            what,
            (height, width, samples),
            dtype,
            claim="PNG header",
            image=(width, height, samples),
        )
        data = head + f.read()
    return imagecodecs.png_decode(data)


class _TiffLog(logging.Filter):
    """Keeps tifffile's log messages about a file being read in this thread (damaged tags,
    unknown compression …) out of the root logger, which prints them on stderr without a word
    of which file or program: a failed read names the first of them in its one-line error, a
    successful one turns it into a warning. Attached once; a thread-local list, so that reads
    in other threads keep their own."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record):
        kept = getattr(self.local, "records", None)
        if kept is None:
            return True  # not one of ours: tifffile's usual logging
        kept.append(_one_line(record.getMessage()))
        return False

    @contextlib.contextmanager
    def collect(self):
        self.local.records = kept = []
        try:
            yield kept
        finally:
            self.local.records = None


_TIFF_LOG = _TiffLog()
logging.getLogger("tifffile").addFilter(_TIFF_LOG)


def _read_tiff(path, what):
    tifffile = _library("tifffile")
    with _TIFF_LOG.collect() as logged:
        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise ValueError("the TIFF holds no image")
                # what imread returns: the first series, shape and type from the page headers
                series = tif.series[0]
                _check_size(path, what, series.shape, series.dtype, claim="TIFF header")
                a = tif.asarray()
                # pages written one call at a time can come back as one series each: read
                # as the first page only, a stack would lose its other slices unannounced
                alike = sum(s.shape == series.shape for s in tif.series[1:])
        except ImageFileError:
            raise
        except Exception as exc:  # read_array makes it "cannot read"
            if logged:
                raise ValueError(f"{_one_line(exc)} (tifffile: {logged[0]})") from None
            raise
    if logged:
        warnings.warn(
            f"{what} {path} was read but tifffile reports: {logged[0]}"
            + (f" (and {len(logged) - 1} more)" if len(logged) > 1 else ""),
            stacklevel=3,
        )
    if alike:
        warnings.warn(
            f"{what} {path} holds {alike + 1} TIFF series of shape {a.shape}; only the first "
            f"was read (for a stack or volume, store its slices as one multi-page series, as "
            f"tifffile.imwrite of the whole array does)",
            stacklevel=3,
        )
    return a


def _npy_header(f):
    """(shape, dtype) from the header of the .npy data at ``f``'s position, nothing more read."""
    version = np.lib.format.read_magic(f)
    reader = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )  # 2.0 and 3.0: the same layout
    shape, _, dtype = reader(f)
    return shape, dtype


def _no_objects(dtype, where):
    """Refuse a dtype that holds Python objects (also inside a structured dtype): loading them
    means unpickling, which can run any code the file's author chose."""
    if np.dtype(dtype).hasobject:
        raise ValueError(
            f"{where} holds Python objects (dtype {dtype}), which only a pickle can load; "
            f"pacnp reads numeric arrays only and never unpickles"
        )


def _read_npy(path, what):
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PK\x03\x04":  # an .npz archive (a zip file) under an .npy name
            raise ValueError("not an .npy file (an .npz archive? rename it)")
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            # pickle protocols 2 to 5 start so (np.save of an object with allow_pickle, or
            # pickle.dump): say what it is rather than "the magic string is not correct"
            raise ValueError("a Python pickle, not an .npy array; pacnp never unpickles")
        f.seek(0)
        shape, dtype = _npy_header(f)
        _no_objects(dtype, "the array")
        _check_size(path, what, shape, dtype, claim=".npy header")
        f.seek(0)
        return np.load(f, allow_pickle=False)


def _read_npz(path, key, what):
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        if not names:
            raise ImageFileError(f"{what} {path}: the archive holds no arrays")
        if key is None:
            key = names[0]
        elif key not in names:
            raise ImageFileError(f"{what} {path} has no array {key!r}; it holds {', '.join(names)}")
        # NpzFile's own rule: the member of that very name, else the name plus .npy
        member = key if key in z.zip.namelist() else key + ".npy"
        # the member's own .npy header, read through the zip stream: np.load would allocate
        # the claimed shape at once and fill it from compressed zeros
        with z.zip.open(member) as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(f"member {member} is not an .npy array")
            f.seek(0)
            shape, dtype = _npy_header(f)
        _no_objects(dtype, f"member {member}")
        _check_size(path, what, shape, dtype, claim=f"member {member}'s header")
        return z[key]


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
            a = _read_npy(p, what)
        elif fmt == "npz":
            a = _read_npz(p, key, what)
        elif fmt == "tiff":
            a = _read_tiff(p, what)
        else:
            a = _read_png(p, what)
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
            raise ImageFileError(
                f"{what} {path}: PNG holds uint8 or uint16 images but the result "
                f"is {dtype}; write .tif, .npy or .npz instead"
            )
        if not (len(shape) == 2 or (len(shape) == 3 and 1 <= shape[2] <= 4)):
            raise ImageFileError(
                f"{what} {path}: PNG holds one H×W image with 1 to 4 channels "
                f"(channels last) but the result has shape {tuple(shape)}; "
                f"write .tif, .npy or .npz instead"
            )
    return fmt


def _encode_png(a):
    """PNG bytes of an H×W or H×W×C (C = 1…4) uint8/uint16 array."""
    imagecodecs = _library("imagecodecs")
    if a.ndim == 3 and a.shape[2] == 1:  # one channel is grey: colour type 0, not 2
        a = a[:, :, 0]
    # libpng takes native-order, C-contiguous samples and writes them big-endian itself
    return imagecodecs.png_encode(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")))


#: the axis letters ``write_array(..., axes=)`` takes, tifffile's: Z, Y, X space (depth, rows,
#: columns), S samples of a pixel (channels last), C channels elsewhere, Q anything else
TIFF_AXES = "ZYXSCQ"


def _write_tiff(f, a, axes=None):
    tifffile = _library("tifffile")
    if axes is None:
        # channels-last colour as RGB(A) so that viewers show it; anything else as grey
        # pages (tifffile's shape metadata brings any shape back as written)
        rgb = a.ndim >= 3 and a.shape[-1] in (3, 4)
        tifffile.imwrite(
            f, a, photometric="rgb" if rgb else "minisblack", planarconfig="contig" if rgb else None
        )
        return
    # the layout is known: every page is one Y × X slice with its samples (any number, RGB(A)
    # shown as colour), the axes before them stack the pages (a volume: D pages), so that
    # other readers see a stack of images and not the rows of one
    samples = axes.endswith("S") and a.shape[-1] > 1  # one sample: a grey page
    rgb = samples and a.shape[-1] in (3, 4)
    tifffile.imwrite(
        f,
        a,
        photometric="rgb" if rgb else "minisblack",
        planarconfig="contig" if samples else None,
        metadata={"axes": axes},
    )


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: signals that can end the process while an output is written (SIGXFSZ: the file-size
#: limit reached); SIGINT's KeyboardInterrupt would clean up anyway, it is caught too so that
#: it waits while the temporary file is being created
_CLEANUP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGXFSZ")
    if hasattr(signal, name)
)


class _Signalled(BaseException):
    """Unwinds a write on a signal so that its ``.part`` file is removed; never escapes
    :class:`_CleanupOnSignals`."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class _CleanupOnSignals:
    """For the length of a write: SIGINT, SIGTERM, SIGHUP and SIGXFSZ raise
    :class:`_Signalled`, so that the write's ``except`` removes its ``.part`` file as it does on
    an exception.
    On leaving, the previous handlers come back and a signal that arrived is raised again, for
    them: by default the process then ends by that signal (SIGINT: ``KeyboardInterrupt``), as it
    would have without pacnp; a handler that returns leaves an :class:`ImageFileError`
    (nothing was written).

    Python runs signal handlers in the main thread only and lets only it set them. A write in
    another thread installs nothing: there a signal does what the main thread's handler says
    (the default ends the process at once and can leave the ``.part`` file, which the next
    write never reads: the names are random). An ignored signal stays ignored.

    ``defer`` holds a signal back while the temporary file's name is not yet known (between
    its creation and the ``try`` that removes it); :meth:`armed` then raises it.
    """

    def __init__(self, what, path):
        self.what, self.path = what, path
        self.previous = {}
        self.defer = True
        self.pending = None

    def _handler(self, signum, frame):
        if self.defer:
            self.pending = self.pending or signum
            return
        raise _Signalled(signum)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in _CLEANUP_SIGNALS:
            old = signal.getsignal(signum)
            if old is None or old == signal.SIG_IGN:  # None: set outside Python, kept as is
                continue
            try:
                signal.signal(signum, self._handler)
            except (ValueError, OSError):  # not the main interpreter: nothing to install
                continue
            self.previous[signum] = old
        return self

    def armed(self):
        """The ``.part`` file is known from here on: a signal unwinds the write."""
        self.defer = False
        if self.pending is not None:
            raise _Signalled(self.pending)

    def __exit__(self, kind, exc, tb):
        self.defer = True  # no second unwinding while the handlers are put back
        for signum, old in self.previous.items():
            signal.signal(signum, old)
        signum = exc.signum if isinstance(exc, _Signalled) else self.pending
        if signum is None:
            return False
        signal.raise_signal(signum)  # the previous handler's turn: by default the end
        name = signal.Signals(signum).name
        raise ImageFileError(
            f"writing {self.what} {self.path} was interrupted by {name}; nothing was written"
        ) from None


def write_array(path, a, *, key="arr_0", what="output", axes=None):
    """Write ``a`` to ``path`` atomically: a temporary ``.part`` file in the same folder (same
    file system, so the rename is atomic), flushed to disk, then renamed over ``path``.
    ``key`` names the array in an ``.npz``. ``axes`` (TIFF only; letters of ``TIFF_AXES``, one
    an axis, e.g. ``"ZYX"`` for a volume, ``"ZYXS"`` with channels last) says what the axes
    are, so that a TIFF holds one page per Y × X slice; without it RGB(A)-shaped arrays are
    colour pages and the rest grey pages of the last two axes.

    The ``.part`` file is removed on any exception, on Ctrl-C and, when called from the main
    thread, on SIGTERM, SIGHUP and SIGXFSZ, which are then handed on to the handlers that were
    there before (see :class:`_CleanupOnSignals`)."""
    a = np.asarray(a)
    fmt = check_writable(path, a.dtype, a.shape, what)
    if axes is not None and (len(axes) != a.ndim or not re.fullmatch("[ZCQ]*YXS?", axes)):
        raise ValueError(
            f"write_array: axes={axes!r} does not describe an array of shape {a.shape}: one "
            f"letter of {TIFF_AXES} an axis, ending in YX or YXS"
        )
    p = Path(path)
    with _CleanupOnSignals(what, path) as guard:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
        except OSError as exc:
            raise ImageFileError(f"cannot write {what} {path}: {_one_line(exc)}") from None
        os.close(fd)  # reopened by name: tifffile wants a file object whose name is a path
        try:
            guard.armed()
            with open(tmp, "wb") as f:
                if fmt == "npy":
                    np.save(f, a, allow_pickle=False)
                elif fmt == "npz":
                    np.savez_compressed(f, **{key: a})
                elif fmt == "tiff":
                    _write_tiff(f, a, axes)
                else:
                    f.write(_encode_png(a))
                f.flush()
                os.fsync(f.fileno())
            # mkstemp makes the file private (0600); give it the permissions open() would
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, p)
        except BaseException as exc:
            guard.defer = True  # a second signal must not skip the removal
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
            raise ImageFileError(
                f"-o {output} is the {name} {path}; pacnp never "
                f"overwrites an input, choose another output path",
                usage=True,
            )
