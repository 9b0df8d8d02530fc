"""The ``pacnp`` command line: pixel-adaptive filters on image files.

::

    pacnp filter IN -o OUT [--guide G] [--sigma-spatial S] [--sigma-color S] [--radius R]
                           [--border B] [--dims 2|3] [--spacing Z,Y,X]
    pacnp upsample LOW --guide RGB --factor N -o OUT [--confidence C] [--dims 2|3]
    pacnp crf PROBS --image RGB -o LABELS
    pacnp demo [demo options]       (python -m pacnp.demo)

with ``--backend cpu|cuda``, ``--threads N`` and ``--quiet`` on every computing command (before
or after the subcommand). ``python -m pacnp`` is the same program.

Files (``pacnp._imageio``): PNG (8 and 16 bit, grey, grey+alpha, RGB, RGBA), TIFF (anything
tifffile reads and writes, stacks included), ``.npy``, ``.npz`` (the first array, or ``--key``).
The format is the file name's extension. Integer images stay integer: pacnp.filters returns the
input's dtype.

Layout: a 2-D array is one grey image; a 3-D array is H×W×C and a 4-D one N×H×W×C (a batch)
unless ``--channel-axis`` says otherwise (``none``: no channel axis, the last two axes are the
image and any before them a batch; an integer: that axis holds the channels).

Volumes (``filter`` and ``upsample``): ``--dims 3`` filters in 3-D over the last three axes
other than the channels: a 3-D array is one grey D×H×W volume, a 4-D one D×H×W×C, a 5-D one
N×D×H×W×C (``--channel-axis`` as for images); ``--spacing z,y,x`` gives the voxel size per
axis (σ_s is then in its units). Volumes come from multi-page TIFFs (tifffile: pages first)
and ``.npy`` files, and go back to them (a TIFF of D pages). Without ``--dims`` the default
is 2, except for a 3-D array whose last axis has more than 4 entries and no
``--channel-axis``: that is refused (exit status 2) as ambiguous, a D×H×W volume or an H×W
image of many channels, rather than guessed.

Work is split into batches and horizontal tiles of ``--tile-rows`` output rows (slabs of
slices of a volume), each computed with the halo of input rows its window reaches, so that
the result is exactly the untiled call's; the tiles drive a progress bar (tqdm) on stderr
that appears once a command has run for a second (``PACNP_PROGRESS_DELAY`` seconds) when
stderr is a terminal; ``--quiet`` turns it off, and logs and pipes never get it.

Errors are one line, ``pacnp: error: ...``, and exit status 2 for a bad command line (argument
values, unknown extensions, an output that is also an input) or 1 for a failure while running
(missing or unreadable file, shapes that do not fit, a file that cannot be written). Outputs are
written to a temporary file beside the target and renamed over it, so a failed or interrupted
run never leaves half a file, and an input is never overwritten: Ctrl-C removes the temporary
file and exits with status 130; SIGTERM and SIGHUP remove it too, then end the process by that
signal (status 143 and 129 in a shell), as any program killed so. Files whose header announces
more than ``PACNP_MAX_IMAGE_BYTES`` bytes of decoded data (716 MB) are refused unread.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import re
import sys
import warnings

import numba
import numpy as np

# the commands below read and write through these; the underscored names are the ones they
# had when the file code lived here
from ._imageio import ImageFileError, read_array, write_array
from ._imageio import check_writable as _check_writable
from ._imageio import refuse_overwrite as _refuse_overwrite

__all__ = ["main"]

PROG = "pacnp"
#: what pacnp.filters accepts (and returns unchanged)
IMAGE_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
#: a tile holds about this many output pixels when --tile-rows is not given: big enough that
#: the halo rows computed twice cost a few percent, small enough that a megapixel image
#: shows progress
TILE_PIXELS = 1 << 18
PROGRESS_DELAY_ENV = "PACNP_PROGRESS_DELAY"


class CLIError(Exception):
    """A problem the user can fix, reported as one line; ``code`` is the exit status."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- progress
#: what the bar looks like: ``pacnp filter [#####...] 3/8 tiles  38% 00:02<00:03``
_BAR_FORMAT = (
    "{desc} [{bar:24}] {n_fmt}/{total_fmt} {unit} {percentage:3.0f}% {elapsed}<{remaining}"
)


def progress_bar(label, total, unit, *, enabled=True, stream=None, delay=None):
    """A tqdm progress bar on stderr for ``total`` steps (advance it with ``update()``).

    Nothing is drawn until ``delay`` seconds have passed (``PACNP_PROGRESS_DELAY``, default 1:
    work that ends sooner stays silent), and nothing at all when disabled (``--quiet``) or when
    the stream is not a terminal: in a log file or a pipe the redraws would pile up. On a
    terminal the bar is redrawn in place, at most 10 times a second.
    """
    try:  # the cli extra; imported here so that --help needs nothing more
        from tqdm import tqdm
    except ImportError:
        raise CLIError("the progress bar needs tqdm: pip install 'pacnp[cli]'") from None
    stream = sys.stderr if stream is None else stream
    if delay is None:
        try:
            delay = float(os.environ.get(PROGRESS_DELAY_ENV, "1"))
        except ValueError:
            delay = 1.0
    tty = bool(getattr(stream, "isatty", lambda: False)())
    size = {}  # tqdm asks the terminal
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if tty and os.get_terminal_size(stream.fileno()).columns == 0:
            # a terminal that reports no size (a pty nobody sized): tqdm would take it for
            # 0 columns and -1 rows and draw nothing
            size = dict(ncols=80, nrows=24)
    return tqdm(
        total=max(int(total), 1),
        desc=label,
        unit=unit,
        file=stream,
        delay=delay,
        disable=not (enabled and tty),
        mininterval=0.1,
        ascii=".#",
        bar_format=_BAR_FORMAT,
        leave=True,
        **size,
    )


# --------------------------------------------------------------------------- layouts
#: what one spatial extent is called in messages, by --dims
_THING = {1: "signal", 2: "image", 3: "volume"}


def _layout(a, channel_axis, what, path, dims=2):
    """``a``'s layout (pacnp.filters.Layout, the one layout class of the filters, Dask and
    this command line) with ``dims`` spatial axes; ``auto``: an array of ``dims`` axes has no
    channels (a grey image or volume), more axes end in channels."""
    from .filters import Layout

    if channel_axis == "auto":  # (fewer axes than dims: refused below as too few)
        channel_axis = None if a.ndim <= dims else -1
    try:
        return Layout(PROG, what, a.shape, channel_axis, spatial_dims=dims)
    except ValueError:
        thing = _THING[dims]
        if channel_axis is None:
            raise CLIError(
                f"{what} {path} has shape {a.shape}: {'an' if dims == 2 else 'a'} {thing} "
                f"needs {dims} non-empty axes (see --dims)"
            ) from None
        raise CLIError(
            f"{what} {path} has shape {a.shape}: no channel axis {channel_axis} "
            f"beside {dims} non-empty {thing} axes (see --channel-axis, --dims)"
        ) from None


def _shape(lay):
    """The spatial sizes of layout ``lay`` (H, W; D, H, W for a volume)."""
    return tuple(lay.shape[i] for i in lay.spatial)


def _size(shape):
    """Spatial sizes as people write them: width first (64x48; 33x41x25 for W×H×D)."""
    return "x".join(str(n) for n in reversed(shape))


def _resolve_dims(args, a):
    """--dims, or the rule for its absence: 2, except that a 3-D array whose last axis holds
    more than 4 values (no grey, grey+alpha, RGB or RGBA image) and no --channel-axis is
    ambiguous: a D×H×W volume, or an H×W image of many channels? Guessing either way would
    filter the other silently wrong, so the user is asked."""
    if args.dims is not None:
        return args.dims
    if a.ndim == 3 and args.channel_axis == "auto" and a.shape[-1] > 4:
        raise CLIError(
            f"input {args.input} has shape {a.shape}: a D×H×W volume or an H×W image of "
            f"{a.shape[-1]} channels? give --dims 3 for a volume, --dims 2 for an image",
            code=2,
        )
    return 2


def _spacing_for(args, dims):
    """--spacing as one float per spatial axis (None when not given), checked against
    --dims, as is a --radius of one value per axis."""
    radius = args.radius
    if isinstance(radius, tuple) and len(radius) != dims:
        raise CLIError(
            f"--radius {','.join(map(str, radius))} gives {len(radius)} values but the "
            f"{_THING[dims]} has {dims} spatial axes (--dims {dims}); give one radius, or one "
            f"per axis",
            code=2,
        )
    spacing = args.spacing
    if spacing is None:
        return None
    if len(spacing) != dims:
        raise CLIError(
            f"--spacing {','.join(f'{v:g}' for v in spacing)} gives {len(spacing)} "
            f"value(s) but the {_THING[dims]} has {dims} spatial axes (--dims {dims}); give "
            f"one per axis, in array order ({','.join('zyx'[-dims:])})",
            code=2,
        )
    return spacing


def _check_png_layout(path, lay, dims):
    """A PNG holds one H×W image with its channels last: refuse any other layout before the
    work. (The shape check of the writer alone would take a D×H×3 grey volume, or a batch of
    three-pixel-wide images, for one RGB image.)"""
    if os.path.splitext(str(path))[1].lower() != ".png":
        return
    if dims == 2 and not lay.batch and lay.caxis in (None, len(lay.shape) - 1):
        return
    thing = _THING[dims]
    what = f"a batch of {thing}s" if lay.batch else f"{'an' if dims == 2 else 'a'} {thing}"
    if lay.caxis is not None:
        what += f" with channels on axis {lay.caxis}"
    raise CLIError(
        f"output {path}: PNG holds one H×W image with its channels last, but the result is "
        f"{what}, shape {lay.shape}; write .tif, .npy or .npz instead"
    )


def _tiff_axes(lay, dims):
    """tifffile's axis letters for an output of layout ``lay`` (Z Y X spatial, S channels
    last, C channels elsewhere, Q batch), so that a volume becomes a stack of D pages; None
    where no page of Y × X can be made of it (a 1-D signal, channels between spatial axes)."""
    letters = ["Q"] * len(lay.shape)
    for ax, c in zip(lay.spatial, "ZYX"[-dims:]):
        letters[ax] = c
    if lay.caxis is not None:
        letters[lay.caxis] = "S" if lay.caxis == len(lay.shape) - 1 else "C"
    axes = "".join(letters)
    return axes if re.fullmatch("[ZCQ]*YXS?", axes) else None


def _check_image_dtype(a, what, path):
    if a.dtype.name not in IMAGE_DTYPES:
        raise CLIError(
            f"{what} {path} has dtype {a.dtype}; pacnp filters take {', '.join(IMAGE_DTYPES)}"
        )


def _planned(make):
    """A filter plan; its argument errors are command-line errors (exit status 2)."""
    try:
        return make()
    except ValueError as exc:
        raise CLIError(_one_line(exc), code=2) from None


def _guide_batch(glay, lay, args, dims=2):
    """The guide's images as [N or 1, Cg, *S]: one guide for every image, or one each."""
    thing = _THING[dims]
    if _shape(glay) != _shape(lay):
        raise CLIError(
            f"shape mismatch: guide {args.guide} is {_size(_shape(glay))} "
            f"{'pixels' if dims < 3 else 'voxels'} but input {args.input} is "
            f"{_size(_shape(lay))} (shapes {glay.shape} and {lay.shape}); the guide must "
            f"have the {thing}'s size"
        )
    n, ng = (int(np.prod(x.batch_shape, dtype=np.int64)) for x in (lay, glay))
    if ng not in (1, n):
        raise CLIError(
            f"shape mismatch: guide {args.guide} holds {ng} {thing}s but input "
            f"{args.input} {n}; give one guide or one per {thing}"
        )


def _row_tiles(height, rows):
    rows = height if rows <= 0 else rows
    return [(y, min(y + rows, height)) for y in range(0, height, rows)]


def _tile_rows(args, width, reach):
    """Rows (slices of a volume) a tile: ``width`` is the pixels of one row (of one slice)."""
    if args.tile_rows is not None:
        return args.tile_rows
    return max(-(-TILE_PIXELS // width), 8 * reach)


# --------------------------------------------------------------------------- devices
class Device:
    """Where the filters run: NumPy arrays on the CPU, or CuPy arrays on the GPU."""

    def __init__(self, backend):
        self.backend = backend
        if backend == "cuda":
            try:
                import cupy
            except ImportError:
                raise CLIError(
                    "--backend cuda needs CuPy and numba-cuda: pip install "
                    "'pacnp[cupy]' (or the CuPy wheel of your CUDA, e.g. "
                    "cupy-cuda12x)"
                ) from None
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:  # noqa: BLE001 - CuPy raises its own runtime errors
                raise CLIError(f"--backend cuda: no usable CUDA GPU ({_one_line(exc)})") from None
            if count < 1:
                raise CLIError("--backend cuda: no CUDA GPU found")
            self._cupy = cupy

    def put(self, a):
        if a is None or self.backend == "cpu":
            return a
        return self._cupy.asarray(np.ascontiguousarray(a))

    def get(self, a):
        return a if self.backend == "cpu" else self._cupy.asnumpy(a)


def _set_threads(n):
    if n is None:
        return
    try:
        numba.set_num_threads(n)
    except ValueError as exc:
        raise CLIError(
            f"--threads {n}: {_one_line(exc)} (NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})",
            code=2,
        ) from None


# --------------------------------------------------------------------------- commands
def cmd_filter(args, device, progress):
    from . import filters

    image = read_array(args.input, key=args.key, what="input")
    _check_image_dtype(image, "input", args.input)
    dims = _resolve_dims(args, image)
    spacing = _spacing_for(args, dims)
    lay = _layout(image, args.channel_axis, "input", args.input, dims)
    x = lay.to_bchw(np, image)  # [N, C, *S]
    if args.guide is None:
        g = x
    else:
        guide = read_array(args.guide, key=args.guide_key, what="guide")
        _check_image_dtype(guide, "guide", args.guide)
        gaxis = args.guide_channel_axis
        if gaxis == "auto" and args.channel_axis != "auto" and guide.ndim == image.ndim:
            gaxis = args.channel_axis  # the same layout as the image, as pacnp.filters does
        glay = _layout(guide, gaxis, "guide", args.guide, dims)
        _guide_batch(glay, lay, args, dims)
        g = glay.to_bchw(np, guide)
    _check_png_layout(args.output, lay, dims)
    _check_writable(args.output, image.dtype, image.shape)

    n, h = x.shape[0], x.shape[2]
    # one plan for the whole batch (radius, border, σ_c over the whole guide), repeated on
    # every tile through its keywords: the tiles compute exactly what the untiled call would
    plan = _planned(
        lambda: filters.plan_joint_bilateral_filter(
            x,
            np.broadcast_to(g, (n,) + g.shape[1:]),
            sigma_spatial=args.sigma_spatial,
            sigma_color=args.sigma_color,
            radius=args.radius,
            border=args.border,
            channel_axis=1,
            guide_channel_axis=1,
            spatial_dims=dims,
            spacing=spacing,
            fn="pacnp filter",
        )
    )
    # the plan's keywords carry spatial_dims, spacing and the per-axis radii to every tile
    opts = plan.resolve_sigma_color(np, g).chunk_kwargs()
    # tiles are bands along the first spatial axis (rows of an image, slices of a volume),
    # with that axis's halo: thick slices (a large spacing) need fewer halo slices
    halo = plan.halos[0]
    out = np.empty_like(x)
    tiles = _row_tiles(h, _tile_rows(args, math.prod(x.shape[3:]), halo))
    with progress("pacnp filter", n * len(tiles), "tiles") as bar:
        for b in range(n):
            gb = b if g.shape[0] > 1 else 0
            for y0, y1 in tiles:
                # output rows y0..y1 see input rows within the halo: compute on those and
                # keep the middle; the halo's own border handling never reaches kept rows
                lo, hi = max(0, y0 - halo), min(h, y1 + halo)
                res = filters.joint_bilateral_filter(
                    device.put(x[b : b + 1, :, lo:hi]), device.put(g[gb : gb + 1, :, lo:hi]), **opts
                )
                out[b, :, y0:y1] = device.get(res)[0, :, y0 - lo : y1 - lo]
                bar.update()
    write_array(
        args.output,
        lay.from_bchw(np, out),
        key=args.key or "image",
        axes=_tiff_axes(lay, dims),
    )
    return 0


def cmd_upsample(args, device, progress):
    from . import filters

    f = args.factor
    low = read_array(args.input, key=args.key, what="input")
    _check_image_dtype(low, "input", args.input)
    dims = _resolve_dims(args, low)
    spacing = _spacing_for(args, dims)
    thing = _THING[dims]
    lay = _layout(low, args.channel_axis, "input", args.input, dims)
    guide = read_array(args.guide, key=args.guide_key, what="guide")
    _check_image_dtype(guide, "guide", args.guide)
    gaxis = args.guide_channel_axis
    if gaxis == "auto" and args.channel_axis != "auto" and guide.ndim == low.ndim:
        gaxis = args.channel_axis
    glay = _layout(guide, gaxis, "guide", args.guide, dims)
    small = _shape(lay)
    big = tuple(s * f for s in small)
    if _shape(glay) != big:
        raise CLIError(
            f"shape mismatch: guide {args.guide} is {_size(_shape(glay))} "
            f"{'pixels' if dims < 3 else 'voxels'} but input {args.input} "
            f"({_size(small)}) times --factor {f} is {_size(big)}"
        )
    x = lay.to_bchw(np, low)
    g = glay.to_bchw(np, guide)
    n = x.shape[0]
    if g.shape[0] not in (1, n):
        raise CLIError(
            f"shape mismatch: guide {args.guide} holds {g.shape[0]} {thing}s "
            f"but input {args.input} {n}; give one guide or one per {thing}"
        )
    conf = None
    if args.confidence is not None:
        c = read_array(args.confidence, key=args.confidence_key, what="confidence")
        if c.dtype == bool:
            c = c.astype(np.uint8)
        _check_image_dtype(c, "confidence", args.confidence)
        conf = _layout(c, None, "confidence", args.confidence, dims).to_bchw(np, c)[:, 0]
        if conf.shape != (n,) + small:
            raise CLIError(
                f"shape mismatch: confidence {args.confidence} has shape {c.shape} "
                f"but input {args.input} has {n} {thing}(s) of {_size(small)} "
                f"{'pixels' if dims < 3 else 'voxels'}"
            )
    out_shape = lay.from_bchw(np, np.empty((n, x.shape[1]) + big, np.uint8), big).shape
    _check_png_layout(args.output, lay, dims)
    _check_writable(args.output, low.dtype, out_shape)

    plan = _planned(
        lambda: filters.plan_joint_bilateral_upsample(
            x,
            np.broadcast_to(g, (n,) + g.shape[1:]),
            f,
            sigma_spatial=args.sigma_spatial,
            sigma_color=args.sigma_color,
            radius=args.radius,
            channel_axis=1,
            guide_channel_axis=1,
            confidence=conf,
            spatial_dims=dims,
            spacing=spacing,
            fn="pacnp upsample",
        )
    )
    opts = plan.resolve_sigma_color(np, g).chunk_kwargs()
    h, H = small[0], big[0]  # tiles: bands of rows (of slices) of the output
    r, o = plan.radii[0], (f - 1) // 2  # low-res sample m sits at high-res pixel m·f + o
    out = np.empty((n, x.shape[1]) + big, x.dtype)
    tiles = _row_tiles(H, _tile_rows(args, math.prod(big[1:]), r))
    with progress("pacnp upsample", n * len(tiles), "tiles") as bar:
        for b in range(n):
            gb = b if g.shape[0] > 1 else 0
            for y0, y1 in tiles:
                # the samples m with |m·f + o − y| <= r for some output row y in [y0, y1);
                # samples beyond them are out of reach, so leaving them out changes nothing
                m0 = max(0, (y0 - r - o) // f)
                m1 = min(h, (y1 - 1 + r - o) // f + 1)
                res = filters.joint_bilateral_upsample(
                    device.put(x[b : b + 1, :, m0:m1]),
                    device.put(g[gb : gb + 1, :, m0 * f : m1 * f]),
                    f,
                    confidence=None if conf is None else device.put(conf[b : b + 1, m0:m1]),
                    **opts,
                )
                out[b, :, y0:y1] = device.get(res)[0, :, y0 - m0 * f : y1 - m0 * f]
                bar.update()
    write_array(
        args.output,
        lay.from_bchw(np, out, big),
        key=args.key or "image",
        axes=_tiff_axes(lay, dims),
    )
    return 0


def cmd_crf(args, device, progress):
    from . import crf

    probs = read_array(args.input, key=args.key, what="probabilities")
    if probs.dtype.kind not in "fu":
        raise CLIError(
            f"probabilities {args.input} have dtype {probs.dtype}; expected floats "
            f"(class probabilities) or unsigned integer scores"
        )
    play = _layout(probs, args.channel_axis, "probabilities", args.input)
    image = read_array(args.image, key=args.image_key, what="image")
    _check_image_dtype(image, "image", args.image)
    ilay = _layout(image, "auto", "image", args.image)
    p, im = play.to_bchw(np, probs), ilay.to_bchw(np, image)
    n, classes, h, w = p.shape
    if ilay.hw != (h, w):
        raise CLIError(
            f"shape mismatch: image {args.image} is {_size(ilay.hw)} pixels but "
            f"probabilities {args.input} are {_size((h, w))} (shapes {image.shape} "
            f"and {probs.shape}; see --channel-axis)"
        )
    if im.shape[0] not in (1, n):
        raise CLIError(
            f"shape mismatch: image {args.image} holds {im.shape[0]} images but "
            f"probabilities {args.input} {n}"
        )
    if classes < 2:
        raise CLIError(
            f"probabilities {args.input} have shape {probs.shape}: {classes} class "
            f"along the channel axis; expected 2 or more (see --channel-axis)"
        )
    label_dtype = np.uint8 if classes <= 256 else np.uint16
    # the probabilities' shape without the class axis (classes >= 2: there is one)
    label_shape = tuple(s for i, s in enumerate(probs.shape) if i != play.caxis)
    _check_writable(args.output, label_dtype, label_shape)
    refined_dtype = np.float64 if probs.dtype == np.float64 else np.float32  # crf_refine's
    if args.probabilities_out is not None:
        _check_writable(args.probabilities_out, refined_dtype, probs.shape, "--probabilities-out")

    options = {name: getattr(args, name) for name in CRF_OPTIONS if getattr(args, name) is not None}
    # the bar counts mean-field steps over all images (crf_refine reports each step)
    steps = options.get(
        "num_steps", inspect.signature(crf.crf_refine).parameters["num_steps"].default
    )
    labels = np.empty((n, h, w), label_dtype)
    refined = np.empty(p.shape, refined_dtype) if args.probabilities_out is not None else None
    with progress("pacnp crf", n * max(int(steps), 1), "steps") as bar:
        for b in range(n):
            q = crf.crf_refine(
                device.put(p[b]),  # crf_refine: C×H×W
                device.put(im[b if im.shape[0] > 1 else 0]),
                channel_axis=0,
                on_step=lambda done, total: bar.update(),
                **options,
            )
            q = np.asarray(device.get(q))
            labels[b] = np.argmax(q, axis=0)
            if refined is not None:
                refined[b] = q
    write_array(args.output, labels.reshape(label_shape), key=args.key or "labels")
    if refined is not None:
        write_array(
            args.probabilities_out,
            play.from_bchw(np, refined),
            key="probabilities",
            what="--probabilities-out",
        )
    return 0


def _delegate(fn, argv):
    """Run another module's ``main(argv)`` (the demo) and return its exit status."""
    try:
        code = fn(argv)
    except SystemExit as exc:  # its own --help or usage error
        code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


# --------------------------------------------------------------------------- arguments
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: the largest integer option: sizes beyond it cannot describe an image or a window, and
#: refusing them here keeps NumPy's "Maximum allowed size exceeded" and C-long overflows of
#: the kernels' geometry out of the messages
MAX_INT_OPTION = 2**31 - 1


def _number(kind, low, strict, what):
    def parse(text):
        try:
            v = kind(text)
        except (ValueError, OverflowError):  # OverflowError: float('1e999') is inf, int() fails
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(v) and (v > low if strict else v >= low)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if kind is int and v > MAX_INT_OPTION:
            raise argparse.ArgumentTypeError(
                f"expected {what} up to {MAX_INT_OPTION}, got {text!r}"
            )
        return v

    parse.__name__ = what  # argparse names the type in some messages
    return parse


_POSITIVE = _number(float, 0, True, "a positive number")
_RADIUS = _number(int, 0, False, "an integer >= 0")
_FACTOR = _number(int, 2, False, "an integer >= 2")
_COUNT = _number(int, 1, False, "an integer >= 1")
_FINITE = _number(float, -math.inf, True, "a finite number")


def _spacing(text):
    """``--spacing``: positive finite numbers separated by commas, one per spatial axis."""
    parts = text.split(",")
    try:
        values = tuple(_POSITIVE(p.strip()) for p in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected positive numbers separated by commas (z,y,x), got {text!r}"
        ) from None
    return values


_spacing.__name__ = "spacing"


def _radii(text):
    """``--radius``: an integer >= 0, or one per spatial axis separated by commas."""
    if "," not in text:
        return _RADIUS(text)
    try:
        return tuple(_RADIUS(p.strip()) for p in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0 or one per axis separated by commas, got {text!r}"
        ) from None


_radii.__name__ = "radius"


def _axis(text):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto, none or an integer, got {text!r}"
        ) from None


EXAMPLES_MAIN = """\
examples:
  pacnp filter photo.png -o smooth.png --sigma-spatial 3 --sigma-color 20
  pacnp filter depth.tif --guide rgb.png -o depth_jbf.tif --radius 5 --border nearest
  pacnp upsample depth_low.npy --guide rgb.png --factor 8 -o depth.npy
  pacnp filter mri.npy -o mri_bf.npy --dims 3 --spacing 2,1,1 --sigma-spatial 2
  pacnp crf probs.npy --image rgb.png -o labels.png
  pacnp demo --factors 4 8

Every command: pacnp COMMAND --help. Files: .png (8/16 bit), .tif/.tiff, .npy, .npz.
"""

EXAMPLES_FILTER = """\
examples:
  bilateral filter (the image guides itself), σ_s = 3 px, σ_c = 20 grey levels:
    pacnp filter photo.png -o smooth.png --sigma-spatial 3 --sigma-color 20
  joint bilateral filter of a 16-bit depth map with the edges of a colour photo:
    pacnp filter depth16.png --guide rgb.png -o depth_jbf.png --sigma-color 12
  a batch of float images N×H×W×3 stored under 'images' in an .npz, on the GPU:
    pacnp filter stack.npz --key images -o out.npz --backend cuda
  a planar C×H×W TIFF:
    pacnp filter planar.tif --channel-axis 0 -o out.tif
  a 3-D bilateral filter of a volume (a multi-page TIFF: D×H×W) of 3 mm slices of
  0.8 mm pixels, σ_s = 2 mm:
    pacnp filter stack.tif -o smooth.tif --dims 3 --spacing 3,0.8,0.8 --sigma-spatial 2
  an RGB volume D×H×W×3 as .npy, guided by a grey volume of the same size:
    pacnp filter rgbvol.npy --guide grey.npy -o out.npy --dims 3 --sigma-color 20

σ_c is in the guide's units (0-255 for 8-bit, 0-65535 for 16-bit); the default is the
guide's standard deviation. The window is (2·radius + 1)² ((2·radius + 1)³ for a volume),
radius ⌈3σ_s⌉ by default. --dims 3: the last three axes (other than channels) are D×H×W;
a 3-D array is one grey volume, a 4-D one D×H×W×C, a 5-D one N×D×H×W×C.
"""

EXAMPLES_UPSAMPLE = """\
examples:
  8× joint bilateral upsampling of a low-res depth map guided by the full-res photo:
    pacnp upsample depth_60x40.png --guide rgb_480x320.png --factor 8 -o depth.png
  missing samples (confidence 0) are left out, float output as .npy:
    pacnp upsample lidar.npy --confidence valid.npy --guide rgb.png --factor 4 -o dense.npy

  a low-res volume 4× in every axis, guided by the full-res volume (both D×H×W):
    pacnp upsample low.npy --guide full.npy --factor 4 --dims 3 -o up.npy

The guide must be exactly --factor times the input's size. Low-res sample m stands for
high-res pixel m·f + (f-1)//2. σ_s defaults to f/2 high-res pixels, the radius to ⌊3f/2⌋.
"""

EXAMPLES_CRF = """\
examples:
  refine a network's H×W×C class probabilities with the photo, labels as an 8-bit PNG:
    pacnp crf probs.npy --image rgb.png -o labels.png
  C×H×W probabilities in an .npz, keep the refined probabilities too:
    pacnp crf scores.npz --key probs --channel-axis 0 --image rgb.png -o labels.npy \\
        --probabilities-out refined.npy

Labels are the argmax over classes: uint8 for up to 256 classes, uint16 beyond.
"""


def _common_options():
    """--backend / --threads / --quiet, accepted before and after the subcommand; SUPPRESS
    keeps a subcommand's unset option from overwriting a value given before it."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("running")
    g.add_argument(
        "--backend",
        choices=("cpu", "cuda"),
        default=argparse.SUPPRESS,
        help="cpu (numba kernels, the default) or cuda (CuPy arrays on the GPU)",
    )
    g.add_argument(
        "--threads",
        type=_COUNT,
        default=argparse.SUPPRESS,
        metavar="N",
        help="numba threads for the CPU kernels (default: all cores)",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )
    return p


def _add_io(p, what):
    p.add_argument("input", metavar=what, help=f"{what} file (.png .tif .tiff .npy .npz)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file; its extension picks the format; never an input",
    )
    p.add_argument(
        "--key",
        default=None,
        help=f"array of an .npz {what} (default: its first), and the name in an .npz output",
    )
    p.add_argument(
        "--channel-axis",
        type=_axis,
        default="auto",
        metavar="AXIS",
        help="axis of the channels: auto (2-D grey, 3-D H×W×C, 4-D N×H×W×C), none "
        "(no channels; axes before the last two are a batch) or an integer",
    )


def _add_filter_params(p, sigma_default, sigma_help):
    g = p.add_argument_group("filter")
    g.add_argument(
        "--dims",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="spatial axes the filter works over: 2 (images, the default) or 3 (volumes: "
        "D×H×W, D×H×W×C); 1 for signals. Without it a 3-D array whose last axis is longer "
        "than 4 is refused as ambiguous (a volume or an image of many channels?)",
    )
    g.add_argument(
        "--spacing",
        type=_spacing,
        default=None,
        metavar="Z,Y,X",
        help="size of a pixel (voxel) along each spatial axis, in array order, e.g. 2,0.5,0.5 "
        "for 2 mm slices of 0.5 mm pixels; σ_s is then in the same units (default: 1 per "
        "axis, σ_s in pixels)",
    )
    g.add_argument(
        "--sigma-spatial", type=_POSITIVE, default=sigma_default, metavar="S", help=sigma_help
    )
    g.add_argument(
        "--sigma-color",
        type=_POSITIVE,
        default=None,
        metavar="S",
        help="σ_c of the colour Gaussian in guide units (default: the guide's standard deviation)",
    )
    g.add_argument(
        "--radius",
        type=_radii,
        default=None,
        metavar="R",
        help="window radius in pixels (window 2R+1), or one per spatial axis (R_z,R_y,R_x; "
        "default: ⌈3σ_s / spacing⌉ per axis)",
    )
    g.add_argument(
        "--tile-rows",
        type=_RADIUS,
        default=None,
        metavar="ROWS",
        help="output rows per tile (slices of a volume; 0: whole images); tiles give the "
        f"same result and drive the progress bar (default: about {TILE_PIXELS} pixels a tile)",
    )


def build_parser():
    from .filters import BORDERS

    common = _common_options()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        formatter_class=fmt,
        parents=[common],
        epilog=EXAMPLES_MAIN,
        description="Pixel-adaptive convolution filters on image files: (joint) "
        "bilateral filtering, joint bilateral upsampling, CRF "
        "refinement of segmentations; plus the demo.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    p = sub.add_parser(
        "filter",
        parents=[common],
        formatter_class=fmt,
        epilog=EXAMPLES_FILTER,
        help="(joint) bilateral filter of an image",
        description="Bilateral filter of IN, or joint bilateral filter with the "
        "edges of --guide: exact Gaussian weights "
        "exp(-|p_i-p_j|²/2σ_s²)·exp(-‖g_i-g_j‖²/2σ_c²), normalised.",
    )
    _add_io(p, "IN")
    p.add_argument(
        "--guide",
        default=None,
        metavar="G",
        help="guide image of the same size, any number of channels (default: IN)",
    )
    p.add_argument("--guide-key", default=None, help="array of an .npz guide")
    p.add_argument(
        "--guide-channel-axis",
        type=_axis,
        default="auto",
        metavar="AXIS",
        help="like --channel-axis, for the guide",
    )
    _add_filter_params(
        p, 1.0, "σ_s of the spatial Gaussian in pixels, or in --spacing units (default: 1)"
    )
    p.add_argument(
        "--border",
        choices=BORDERS,
        default="reflect",
        help="reflect (default; edge pixel not repeated), nearest, constant (zeros) "
        "or renormalize (outside taps left out)",
    )
    p.set_defaults(run=cmd_filter)

    p = sub.add_parser(
        "upsample",
        parents=[common],
        formatter_class=fmt,
        epilog=EXAMPLES_UPSAMPLE,
        help="joint bilateral upsampling",
        description="Joint bilateral upsampling (Kopf et al. 2007) of LOW by an "
        "integer factor, guided by the full-resolution --guide.",
    )
    _add_io(p, "LOW")
    p.add_argument(
        "--guide",
        required=True,
        metavar="RGB",
        help="full-resolution guide, exactly --factor times LOW's size",
    )
    p.add_argument("--guide-key", default=None, help="array of an .npz guide")
    p.add_argument(
        "--guide-channel-axis",
        type=_axis,
        default="auto",
        metavar="AXIS",
        help="like --channel-axis, for the guide",
    )
    p.add_argument(
        "--factor", type=_FACTOR, required=True, metavar="N", help="integer upsampling factor >= 2"
    )
    p.add_argument(
        "--confidence",
        default=None,
        metavar="C",
        help="per-sample weights >= 0 of LOW's size (0: missing sample)",
    )
    p.add_argument("--confidence-key", default=None, help="array of an .npz confidence")
    _add_filter_params(
        p,
        None,
        "σ_s in high-res pixels, or in --spacing units (default: factor/2 pixels of the "
        "finest axis)",
    )
    p.set_defaults(run=cmd_upsample)

    p = sub.add_parser(
        "crf",
        parents=[common],
        formatter_class=fmt,
        epilog=EXAMPLES_CRF,
        help="CRF refinement of segmentation probabilities",
        description="Mean-field CRF refinement (pacnp.crf.crf_refine) of class "
        "probabilities PROBS with the edges of an RGB --image; "
        "writes the label map.",
    )
    _add_io(p, "PROBS")
    p.set_defaults(channel_axis=-1)
    p.add_argument("--image", required=True, metavar="RGB", help="the RGB image, same size")
    p.add_argument("--image-key", default=None, help="array of an .npz image")
    p.add_argument(
        "--probabilities-out",
        default=None,
        metavar="FILE",
        help="also write the refined probabilities (PROBS's layout; .npy .npz .tif)",
    )
    _add_crf_params(p)
    p.set_defaults(run=cmd_crf)

    # the benchmarks' ratio table is no command: it needs the asv suite of a source checkout
    # (asv_benchmarks/ratio_table.py, `make bench`), which an installed pacnp does not have
    text = "the joint depth upsampling demo (python -m pacnp.demo)"
    p = sub.add_parser(
        "demo",
        add_help=False,
        help=text,
        description=f"{text}; every option after 'demo' is its own: pacnp demo --help",
    )
    p.set_defaults(run=None)
    return parser


#: options of pacnp.crf.crf_refine the command line passes on: name → (type, help)
CRF_OPTIONS = {
    "num_steps": (_COUNT, "mean-field steps"),
    "kernel_size": (_COUNT, "window of the appearance (colour) term, odd"),
    "dilation": (_COUNT, "spacing of the appearance window's taps, pixels"),
    "sigma_xy": (_POSITIVE, "spatial bandwidth of both terms, pixels"),
    "sigma_color": (_POSITIVE, "colour bandwidth on the 0-1 scale (0.1 ≈ 25 of 255)"),
    "weight": (_FINITE, "weight of the appearance term"),
    "smoothness_weight": (_FINITE, "weight of the smoothness term (0: off)"),
    "smoothness_kernel_size": (_COUNT, "window of the smoothness term, odd"),
    "unary_weight": (_FINITE, "weight of the unary (the input probabilities)"),
    "blur": (_COUNT, "pass appearance messages on a grid this many times coarser"),
}


def _add_crf_params(p):
    import inspect

    from .crf import crf_refine

    # the defaults shown are crf_refine's own, read from its signature so they cannot drift
    params = inspect.signature(crf_refine).parameters
    g = p.add_argument_group("CRF (pacnp.crf.crf_refine; unset options keep its defaults)")
    for name, (kind, text) in CRF_OPTIONS.items():
        default = params[name].default if name in params else None
        g.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=f"{text} (default: {default})",
        )


#: set to 1 for the traceback of an unexpected exception instead of its one-line message
TRACEBACK_ENV = "PACNP_TRACEBACK"


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """Python warnings (NumPy's overflow warnings above all) as one line each on stderr, like
    the errors, instead of a source line an end user cannot act on."""
    print(f"{PROG}: warning: {category.__name__}: {_one_line(message)}", file=sys.stderr)


def main(argv=None):
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        return _main(argv)


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else 2
    backend = getattr(args, "backend", "cpu")
    threads = getattr(args, "threads", None)
    quiet = getattr(args, "quiet", False)
    try:
        _set_threads(threads)
        if args.run is None:  # demo: its options are its own
            from . import demo

            return _delegate(demo.main, extra)
        if extra:
            sub = parser._subparsers._group_actions[0].choices[args.command]
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
        _refuse_overwrite(
            args.output,
            [
                (k, getattr(args, a, None))
                for k, a in (
                    ("input", "input"),
                    ("guide", "guide"),
                    ("confidence", "confidence"),
                    ("image", "image"),
                )
            ],
        )
        if getattr(args, "probabilities_out", None) is not None:
            _refuse_overwrite(
                args.probabilities_out,
                [("input", args.input), ("image", args.image), ("output", args.output)],
            )
        device = Device(backend)

        def progress(label, total, unit):
            return progress_bar(label, total, unit, enabled=not quiet)

        return args.run(args, device, progress)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except ImageFileError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    except (ValueError, TypeError, OSError, MemoryError) as exc:
        # pacnp's own argument checks name the function and the argument
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a user gets one line, never a traceback
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(
            f"{PROG}: error: unexpected {type(exc).__name__}: {_one_line(exc)} (a bug: "
            f"please report it; {TRACEBACK_ENV}=1 shows where it happened)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
