"""Validation, option parsing and shape/index maths: the one place for all of it.

Everything here is backend-neutral NumPy on small arrays (index tables of size k × H_out), so the
CPU and CUDA kernels can share it. The kernels never see strides, paddings or dilations: they see
per-axis *tap tables* ``tab[i, y]`` giving the input (or guide) index read by tap ``i`` of output
position ``y``, or -1 where that tap falls on padding (or, for transposed convolution, between the
samples of the zero-inserted input). Their inverses ``inv[i, n]`` give the output position whose tap
``i`` reads index ``n`` (or -1), which lets a backward be written as a gather. How a backend walks
a geometry (the CPU's scatter rounds, column phases and blocks, the GPU's inverse tables) is its
own business (``pacnp.cpu.schedule``, ``pacnp.cuda``); either way each gradient element is
written by one thread at a time, in a fixed order: no races, no atomics, deterministic results.
"""

from __future__ import annotations

import functools
import numbers
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "pair",
    "check_array",
    "conv_out_size",
    "conv_transpose_out_size",
    "conv_taps",
    "conv_transpose_taps",
    "inverse_taps",
    "KernelSpec",
    "parse_kernel_type",
    "smoothing_kernel",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
SMOOTH_TYPES = ("none", "gaussian", "average_N", "full_N")
KERNEL_TYPES = ("gaussian", "inv_{alpha}_{lambda}[_asym][_fixed]")

#: The largest stride, padding, dilation, kernel size, radius or factor pacnp takes. Index maths
#: runs in int64: with every size below 2**31, ``y·stride − padding + i·dilation`` cannot
#: overflow.
MAX_SIZE = 2**31 - 1
#: The most taps a window (kernel_size², a smoothing kernel's N², a filter's (2·radius + 1)²)
#: may have: 8192 × 8192. The work is taps × pixels, so a larger window is years of compute on
#: any image it could matter for, and its fixed arrays (tap tables, smoothing kernel) would be
#: gigabytes before the first pixel: it is refused by name instead.
MAX_WINDOW_TAPS = 2**26
#: The most elements of an array pacnp allocates (NumPy's limit on the byte size of float64
#: arrays, below which sizes and byte offsets fit in int64).
MAX_ELEMENTS = np.iinfo(np.intp).max // 8


# --------------------------------------------------------------------------- small helpers
def _tuple_words(nd: int) -> str:
    return "a pair of ints" if nd == 2 else f"a tuple of {nd} int" + ("" if nd == 1 else "s")


def ntuple(
    value, name: str, fn: str, nd: int, *, minimum: int = 0, odd: bool = False
) -> tuple[int, ...]:
    """Normalise an int or a tuple of ``nd`` ints (one per spatial axis); name the function and
    argument when it is wrong."""
    words = _tuple_words(nd)
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise TypeError(f"{fn}: {name} must be an int or {words}, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = (int(value),) * nd
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{fn}: {name} must be an int or {words}, got {value!r}") from None
        if len(items) != nd or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items
        ):
            raise TypeError(f"{fn}: {name} must be an int or {words}, got {value!r}")
        out = tuple(int(v) for v in items)
    for v in out:
        if v < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            raise ValueError(f"{fn}: {name} must be {what}, got {value!r}")
        if odd and v % 2 == 0:
            raise ValueError(f"{fn}: {name} must be odd (the window needs a centre), got {value!r}")
        check_size(fn, name, v, value)
    return out


def pair(value, name: str, fn: str, *, minimum: int = 0, odd: bool = False) -> tuple[int, int]:
    """:func:`ntuple` for two spatial axes."""
    return ntuple(value, name, fn, 2, minimum=minimum, odd=odd)


def prod(values) -> int:
    n = 1
    for v in values:
        n *= int(v)
    return n


def check_size(fn, name, v, shown=None):
    """``v`` (an int already checked for sign) is at most MAX_SIZE."""
    if v > MAX_SIZE:
        raise ValueError(
            f"{fn}: {name}={v if shown is None else shown!r} is larger than "
            f"{MAX_SIZE} (2**31 - 1), the largest size pacnp takes"
        )
    return v


def check_window(fn, name, shown, taps):
    """A window of ``taps`` taps is at most MAX_WINDOW_TAPS (checked before anything of its
    size is allocated)."""
    if taps > MAX_WINDOW_TAPS:
        raise ValueError(
            f"{fn}: {name}={shown!r} gives a window of {taps} taps, more than "
            f"{MAX_WINDOW_TAPS} (8192 × 8192), the largest window pacnp takes"
        )


def check_elements(fn, what, shape):
    """An array of ``shape`` that pacnp is about to allocate is addressable at all (else NumPy
    would say "array is too big" or "Maximum allowed size exceeded" without naming anything)."""
    n = 1
    for v in shape:
        n *= int(v)
    if n > MAX_ELEMENTS:
        raise ValueError(
            f"{fn}: {what} would have shape {tuple(int(v) for v in shape)}, "
            f"{n} elements: more than any array can hold ({MAX_ELEMENTS})"
        )


def check_array(a, name: str, fn: str, ndim: int | None = None, dtype=None) -> None:
    """Check ndim and dtype of an already converted NumPy array."""
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {tuple(a.shape)} ({a.ndim}-D)")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {a.dtype} but the computation runs in {dtype}; "
            f"pass all floating arrays in one dtype (float32 or float64)"
        )


def compute_dtype(a, name: str, fn: str) -> np.dtype:
    dt = np.dtype(a.dtype).newbyteorder("=")
    if dt not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: {name} has dtype {a.dtype}; expected float32 or float64 "
            f"(convert integer images first, e.g. x.astype(np.float32))"
        )
    return dt


# --------------------------------------------------------------------------- output sizes
def conv_out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    """torch.conv2d / avg_pool2d output length (floor mode)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_out_size(n: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """torch.conv_transpose2d output length."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def out_hw(fn, what, hw, k, s, p, d, op=None):
    """Output sizes (one per spatial axis) of a convolution (op None) or transposed
    convolution; error if empty."""
    n = range(len(hw))
    if op is None:
        out = tuple(conv_out_size(hw[a], k[a], s[a], p[a], d[a]) for a in n)
    else:
        out = tuple(conv_transpose_out_size(hw[a], k[a], s[a], p[a], op[a], d[a]) for a in n)
    if min(out) < 1:
        raise ValueError(
            f"{fn}: {what} of spatial size {tuple(hw)} with kernel_size={k}, stride={s}, "
            f"padding={p}, dilation={d}"
            + ("" if op is None else f", output_padding={op}")
            + f" gives an empty output {out}"
        )
    return out


def check_output_padding(fn, op, s, d):
    for a in range(len(op)):
        if op[a] >= max(s[a], d[a]):
            raise ValueError(
                f"{fn}: output_padding={op} must be smaller than stride={s} or dilation={d} "
                f"on each axis (as in torch.conv_transpose{len(op)}d)"
            )


# --------------------------------------------------------------------------- tap tables
def conv_taps(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """tab[i, y] = y*s - p + i*d, or -1 where that falls outside [0, n_in)."""
    y = np.arange(n_out, dtype=np.int64)[None, :]
    i = np.arange(k, dtype=np.int64)[:, None]
    n = y * s - p + i * d
    return np.where((n >= 0) & (n < n_in), n, -1).astype(np.int64)


def conv_transpose_taps(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """tab[i, y] = n where the zero-inserted input has sample n under tap i of output y, else -1.

    Output y of a transposed convolution receives x[n] through weight tap t when
    y = n*s - p + t*d; pacnp's K is indexed by the window tap i = k-1-t (the tap of the
    "same"-padded window on the output grid), so n*s = y + p - d*(k-1) + i*d.
    """
    y = np.arange(n_out, dtype=np.int64)[None, :]
    i = np.arange(k, dtype=np.int64)[:, None]
    q = y + p - d * (k - 1) + i * d
    ok = (q >= 0) & (q % s == 0) & (q // s < n_in)
    return np.where(ok, q // s, -1).astype(np.int64)


def fold_tables(tabs, n_in) -> np.ndarray:
    """The tap tables of the leading spatial axes as one table over folded rows.

    Volumes are handed to the kernels as images of rows: a (D, H, W) volume is a (D·H, W)
    image whose row z·H + y is the volume's row (z, y), and a window's leading taps (i_z, i_y)
    fold the same way. ``tabs[a][i, y]`` (input index of tap i of output y on leading axis a,
    -1: none) becomes ``tab[i_0·k_1·… + …, y_0·n_1·… + …] = Σ_a tabs[a][i_a, y_a]·Π_{b>a} n_in[b]``,
    -1 where any axis has none — exactly the per-axis validity, so a tap never wraps into the
    next plane. No leading axis (a 1-D signal): one row, one tap, reading row 0.
    """
    out = np.zeros((1, 1), dtype=np.int64)
    for tab, n in zip(tabs, n_in):
        a = out[:, None, :, None]
        t = tab[None, :, None, :]
        folded = np.where((a < 0) | (t < 0), -1, a * n + t)
        out = folded.reshape(out.shape[0] * tab.shape[0], out.shape[1] * tab.shape[1])
    return np.ascontiguousarray(out, dtype=np.int64)


def fold_index(vecs, n_in) -> np.ndarray:
    """Per-axis indices (window centres) of the leading axes as folded row indices."""
    out = np.zeros(1, dtype=np.int64)
    for v, n in zip(vecs, n_in):
        out = (out[:, None] * n + np.asarray(v, dtype=np.int64)[None, :]).reshape(-1)
    return out


def folded_hw(shape) -> tuple[int, int]:
    """(rows, columns) of an N-D spatial shape folded into an image (1-D: one row)."""
    return (prod(shape[:-1]), int(shape[-1]))


def inverse_taps(tab: np.ndarray, n_in: int) -> np.ndarray:
    """inv[i, n] = y with tab[i, y] == n, else -1 (tab is injective in y for a fixed tap)."""
    k, n_out = tab.shape
    inv = np.full((k, n_in), -1, dtype=np.int64)
    for i in range(k):
        ys = np.nonzero(tab[i] >= 0)[0]
        inv[i, tab[i, ys]] = ys
    return inv


def reached_rows(tab: np.ndarray, y0: int, y1: int) -> tuple[int, int]:
    """[lo, hi) of the input (or guide) rows that output rows y0..y1-1 read through ``tab``."""
    part = tab[:, y0:y1]
    valid = part[part >= 0]
    if valid.size == 0:
        return 0, 0
    return int(valid.min()), int(valid.max()) + 1


@dataclass(frozen=True)
class OpGeometry:
    """Tap tables of one spatial op (conv, transposed conv or pool), folded to two axes.

    in_hw / out_hw, ty [kr, rows_out] and tx [kw, W_out]: the folded image (rows: every spatial
    axis but the last, see :func:`fold_tables`; for 2-D exactly the image's). stride: the
    folded strides (rows: the last leading axis's, 1 for 1-D; columns) — a backend groups a
    transposed convolution's output columns (rows) by X mod stride. in_shape / out_shape:
    the spatial sizes before folding."""

    in_hw: tuple
    out_hw: tuple
    ty: np.ndarray  # [kr, rows_out] input row per (tap, output row), -1 invalid
    tx: np.ndarray  # [kw, Wo]
    stride: tuple = (1, 1)
    transposed: bool = False
    in_shape: tuple | None = None
    out_shape: tuple | None = None

    @property
    def nd(self) -> int:
        return 2 if self.in_shape is None else len(self.in_shape)


def _ints(t):
    return None if t is None else tuple(int(v) for v in t)


def _folded_stride(s):
    return (s[-2] if len(s) > 1 else 1, s[-1])


def op_geometry(fn, what, in_hw, k, s, p, d, op=None) -> OpGeometry:
    """Tap tables of a conv (op None) or transposed conv of these sizes (one value per spatial
    axis). Memoised: a layer called again with the same sizes reuses its tables (they are
    never written)."""
    return _op_geometry(fn, what, _ints(in_hw), _ints(k), _ints(s), _ints(p), _ints(d), _ints(op))


@functools.lru_cache(maxsize=256)
def _op_geometry(fn, what, in_hw, k, s, p, d, op) -> OpGeometry:
    out = out_hw(fn, what, in_hw, k, s, p, d, op)
    taps = conv_taps if op is None else conv_transpose_taps
    tabs = [taps(in_hw[a], out[a], k[a], s[a], p[a], d[a]) for a in range(len(in_hw))]
    return OpGeometry(
        folded_hw(in_hw),
        folded_hw(out),
        fold_tables(tabs[:-1], in_hw[:-1]),
        tabs[-1],
        _folded_stride(s),
        op is not None,
        tuple(in_hw),
        out,
    )


def smooth_geometry(shape, n: int) -> OpGeometry:
    """The tap tables of the centre-feature smoothing: an n^nd window, same size, zero padded."""
    nd = len(shape)
    return op_geometry("smooth", "guide", shape, (n,) * nd, (1,) * nd, (n // 2,) * nd, (1,) * nd)


@dataclass(frozen=True)
class KernelGeometry:
    """Where the windows of packernel2d read the guide, folded to two axes like OpGeometry.

    gy[i, y] / gx[j, x]: guide row/column of tap (i, j) of output (y, x), -1 for an invalid tap;
    cy[y] / cx[x]: guide row/column of the window centre; stride, padding, dilation: the
    op's, per spatial axis; transposed: windows of a transposed op (centres at every guide
    pixel). guide_shape / out_shape: the spatial sizes before folding.
    """

    guide_hw: tuple
    out_hw: tuple
    gy: np.ndarray
    gx: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    transposed: bool = False
    guide_shape: tuple | None = None
    out_shape: tuple | None = None

    @property
    def nd(self) -> int:
        return len(self.stride)


def check_padding_reach(fn, k, p, d):
    """packernel's padding is at most the window's reach r = dilation·(kernel_size − 1)/2
    (a window centre must be a guide pixel); returns r."""
    r = tuple(d[a] * (k[a] - 1) // 2 for a in range(len(k)))
    for a in range(len(k)):
        if p[a] > r[a]:
            raise ValueError(
                f"{fn}: padding={p} exceeds dilation*(kernel_size-1)/2={r} "
                f"(kernel_size={k}, dilation={d}); a window centre would fall outside the guide"
            )
    return r


def kernel_geometry(fn, guide_hw, k, s, p, op, d, transposed) -> KernelGeometry:
    """Where packernel's windows read the guide (memoised like op_geometry)."""
    return _kernel_geometry(
        fn, _ints(guide_hw), _ints(k), _ints(s), _ints(p), _ints(op), _ints(d), bool(transposed)
    )


@functools.lru_cache(maxsize=256)
def _kernel_geometry(fn, guide_hw, k, s, p, op, d, transposed) -> KernelGeometry:
    r = check_padding_reach(fn, k, p, d)
    nd = len(guide_hw)
    if not transposed:
        geo = op_geometry(fn, "guide", guide_hw, k, s, p, d)
        cs = [np.arange(geo.out_shape[a], dtype=np.int64) * s[a] - p[a] + r[a] for a in range(nd)]
        return KernelGeometry(
            folded_hw(guide_hw),
            geo.out_hw,
            geo.ty,
            geo.tx,
            fold_index(cs[:-1], guide_hw[:-1]),
            cs[-1],
            s,
            p,
            d,
            False,
            tuple(guide_hw),
            geo.out_shape,
        )
    check_output_padding(fn, op, s, d)
    n_in = []
    for a in range(nd):
        num = guide_hw[a] - 1 + 2 * p[a] - 2 * r[a] - op[a]
        if num < 0 or num % s[a]:
            raise ValueError(
                f"{fn}: with transposed=True the guide is at the output resolution, but guide size "
                f"{tuple(guide_hw)} is not (H_in-1)*stride - 2*padding + dilation*(kernel_size-1) "
                f"+ output_padding + 1 for any H_in (stride={s}, padding={p}, "
                f"output_padding={op}, kernel_size={k}, dilation={d})"
            )
        n_in.append(num // s[a] + 1)
    tabs = []
    for a in range(nd):
        valid = conv_transpose_taps(n_in[a], guide_hw[a], k[a], s[a], p[a], d[a]) >= 0
        y = np.arange(guide_hw[a])[None, :]
        i = np.arange(k[a])[:, None]
        tabs.append(np.where(valid, y - r[a] + i * d[a], -1).astype(np.int64))
    cs = [np.arange(n, dtype=np.int64) for n in guide_hw]
    hw = folded_hw(guide_hw)
    return KernelGeometry(
        hw,
        hw,
        fold_tables(tabs[:-1], guide_hw[:-1]),
        tabs[-1],
        fold_index(cs[:-1], guide_hw[:-1]),
        cs[-1],
        s,
        p,
        d,
        True,
        tuple(guide_hw),
        tuple(guide_hw),
    )


# --------------------------------------------------------------------------- kernel options
@dataclass(frozen=True)
class KernelSpec:
    kind: int  # 0 gaussian, 1 inv
    asym: bool
    fixed: bool
    alpha: float | None  # from the string, if it held numbers
    lam: float | None


_KIND_GAUSSIAN, _KIND_INV = 0, 1


def parse_kernel_type(kernel_type, fn: str) -> KernelSpec:
    if not isinstance(kernel_type, str):
        raise TypeError(f"{fn}: kernel_type must be a string, got {kernel_type!r}")
    if kernel_type == "gaussian":
        return KernelSpec(_KIND_GAUSSIAN, False, False, None, None)
    parts = kernel_type.split("_")
    if parts[0] == "inv":
        rest = parts[1:]
        alpha = lam = None
        if len(rest) >= 2 and _is_number(rest[0]) and _is_number(rest[1]):
            alpha, lam = float(rest[0]), float(rest[1])
            rest = rest[2:]
        flags = set(rest)
        if flags <= {"asym", "fixed"} and len(flags) == len(rest):
            return KernelSpec(_KIND_INV, "asym" in flags, "fixed" in flags, alpha, lam)
    raise ValueError(
        f"{fn}: unknown kernel_type {kernel_type!r}; expected one of {list(KERNEL_TYPES)}, "
        f"e.g. 'gaussian', 'inv_0.5_-1', 'inv_1_-0.5_asym_fixed'"
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


_SMOOTH_RE = re.compile(r"^(average|full)_(\d+)$")


def parse_smooth_type(smooth_kernel_type, fn: str, nd: int = 2):
    """Return (kind, N): kind in {'none', 'gaussian', 'average', 'full'} (windows of N^nd)."""
    if not isinstance(smooth_kernel_type, str):
        raise TypeError(f"{fn}: smooth_kernel_type must be a string, got {smooth_kernel_type!r}")
    if smooth_kernel_type == "none":
        return "none", 0
    if smooth_kernel_type == "gaussian":
        return "gaussian", 3
    m = _SMOOTH_RE.match(smooth_kernel_type)
    if m:
        if len(m.group(2)) > 9:  # int() of a huge digit string is itself slow
            n = MAX_SIZE + 1
        else:
            n = int(m.group(2))
        check_window(fn, "smooth_kernel_type", smooth_kernel_type, n**nd)
        if n < 1 or n % 2 == 0:
            raise ValueError(
                f"{fn}: smooth_kernel_type={smooth_kernel_type!r} needs an odd size N >= 1 "
                f"(the smoothed value is centred on the window centre)"
            )
        return m.group(1), n
    raise ValueError(
        f"{fn}: unknown smooth_kernel_type {smooth_kernel_type!r}; expected one of "
        f"{list(SMOOTH_TYPES)} with N an odd integer, e.g. 'average_3', 'full_5'"
    )


def smoothing_kernel(kind: str, n: int, dtype, nd: int = 2) -> np.ndarray | None:
    """The fixed smoothing kernels over ``nd`` axes, folded like the guide (rows: every axis
    but the last); 'full' is supplied by the caller. 'gaussian' is the separable binomial
    [¼, ½, ¼] on every axis, 'average_N' the mean over the N^nd window."""
    if kind == "gaussian":
        v = np.array([0.25, 0.5, 0.25])
        S = np.ones(())
        for _ in range(nd):
            S = np.multiply.outer(S, v)
        return S.reshape(3 ** (nd - 1), 3).astype(dtype)
    if kind == "average":
        return np.full((n ** (nd - 1), n), 1.0 / n**nd, dtype=dtype)
    return None


# --------------------------------------------------------------------------- plans
def check_bool(fn, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be True or False, got {value!r}")
    return bool(value)


def check_needs(fn, needs, names):
    if needs is None:
        return (True,) * len(names)
    try:
        items = tuple(needs)
    except TypeError:
        items = None
    if (
        items is None
        or len(items) != len(names)
        or not all(isinstance(v, (bool, np.bool_)) for v in items)
    ):
        raise ValueError(
            f"{fn}: needs must be None or a tuple of {len(names)} bools for {names}, got {needs!r}"
        )
    return tuple(bool(v) for v in items)


def check_grad(fn, name, g, expected_shape, dtype):
    check_array(g, name, fn, ndim=len(expected_shape), dtype=dtype)
    if tuple(g.shape) != tuple(expected_shape):
        raise ValueError(
            f"{fn}: {name} has shape {tuple(g.shape)} but the forward output has shape "
            f"{tuple(expected_shape)}"
        )


@dataclass
class KernelPlan:
    """Everything a backend needs to compute packernel and its backward.

    The arrays a backend sees are folded to two spatial axes (:func:`fold_tables`): guide
    [B, Cg, rows, W], mask [B, rows, W], S [N^(nd-1), N], and ``k`` is the folded window
    (rows of taps, columns of taps). ``guide_shape``, ``kernel_size`` and :attr:`out_shape`
    are the caller's N-D ones."""

    guide: np.ndarray
    geo: KernelGeometry
    k: tuple
    KC: int
    kind: int
    asym: bool
    alpha: np.ndarray  # [KC] (dummy ones for gaussian)
    lam: np.ndarray  # [KC]
    alpha_shape: tuple | None  # shape to give dα in, None: no gradient
    lam_shape: tuple | None
    S: np.ndarray | None  # smoothing kernel [N, N]
    S_shape: tuple | None  # shape to give dS in, None: fixed smoothing (no gradient)
    mask: np.ndarray | None  # [B, H, W]
    normalize: bool
    guide_shape: tuple = ()  # the caller's (B, Cg, *spatial)
    kernel_size: tuple = ()  # per spatial axis
    Sgeo: OpGeometry | None = None  # tap tables of the smoothing (with S)

    @property
    def nd(self) -> int:
        return len(self.kernel_size)

    @property
    def out_shape(self):
        """K's shape: (B, KC, *kernel_size, *output spatial sizes)."""
        B = self.guide.shape[0]
        return (B, self.KC) + tuple(self.kernel_size) + tuple(self.geo.out_shape)

    @property
    def mask_shape(self):
        return (self.guide.shape[0], 1) + tuple(self.geo.out_shape)


def _param_vector(fn, name, value, from_string, KC, Cg, channel_wise, dtype, fixed):
    """α or λ as a [KC] vector, and the shape its gradient is returned in (None: no gradient)."""
    if value is None:
        if from_string is None:
            raise ValueError(
                f"{fn}: kernel_type needs {name}; pass {name}= (a scalar"
                + (f", or {Cg} values with channel_wise=True" if channel_wise else "")
                + ") or put it in the string, e.g. kernel_type='inv_0.5_-1'"
            )
        return np.full(KC, from_string, dtype=dtype), None
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {name} must be real numbers, got dtype {arr.dtype}")
    ok = arr.size == 1 and arr.ndim <= 1 or (channel_wise and arr.shape == (Cg,))
    if not ok:
        want = "a scalar, shape () or (1,)" + (
            f", or shape ({Cg},) (one per guide channel)" if channel_wise else ""
        )
        raise ValueError(f"{fn}: {name} has shape {tuple(arr.shape)}; expected {want}")
    # a writeable copy: a read-only broadcast view would make numba compile another variant
    vec = np.array(np.broadcast_to(arr.reshape(-1).astype(dtype), (KC,)), dtype=dtype)
    return vec, (None if fixed else tuple(arr.shape))


def plan_packernel(
    fn,
    guide,
    kernel_size,
    *,
    stride,
    padding,
    output_padding,
    dilation,
    kernel_type,
    smooth_kernel_type,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    channel_wise,
    normalize_kernel,
    mask,
    transposed,
    values=True,
    nd=2,
) -> KernelPlan:
    """Validate a packernel call over ``nd`` spatial axes. ``values=False``: check shapes,
    dtypes and options only (the adapters' checks on shape-only stand-ins; the mask's 0/1
    values are checked when the call runs)."""
    check_array(guide, "guide", fn, ndim=nd + 2)
    dtype = compute_dtype(guide, "guide", fn)
    k = ntuple(kernel_size, "kernel_size", fn, nd, minimum=1, odd=True)
    s = ntuple(stride, "stride", fn, nd, minimum=1)
    p = ntuple(padding, "padding", fn, nd, minimum=0)
    op = ntuple(output_padding, "output_padding", fn, nd, minimum=0)
    d = ntuple(dilation, "dilation", fn, nd, minimum=1)
    channel_wise = check_bool(fn, "channel_wise", channel_wise)
    normalize = check_bool(fn, "normalize_kernel", normalize_kernel)
    transposed = check_bool(fn, "transposed", transposed)
    if not transposed and any(op):
        raise ValueError(f"{fn}: output_padding={op} is only meaningful with transposed=True")
    check_window(fn, "kernel_size", kernel_size, prod(k))
    spec = parse_kernel_type(kernel_type, fn)
    B, Cg = guide.shape[:2]
    sp = tuple(guide.shape[2:])
    KC = Cg if channel_wise else 1
    # K's size before anything of it (or of its tap tables) is allocated; empty axes count as
    # one, so an empty batch cannot hide an absurd geometry
    check_padding_reach(fn, k, p, d)
    out = sp if transposed else out_hw(fn, "guide", sp, k, s, p, d)
    check_elements(
        fn,
        f"K (guide {sp}, kernel_size={k}, stride={s}, padding={p}, dilation={d})",
        (max(B, 1), max(KC, 1)) + k + tuple(max(v, 1) for v in out),
    )
    # the folded tap tables (window rows × output rows) before they are built
    check_elements(fn, "the tap tables", (prod(k[:-1]), max(prod(out[:-1]), 1)))
    if spec.kind == _KIND_GAUSSIAN:
        for name, v in (("inv_alpha", inv_alpha), ("inv_lambda", inv_lambda)):
            if v is not None:
                raise ValueError(
                    f"{fn}: {name} is given but kernel_type='gaussian' does not use "
                    f"it; use kernel_type='inv_...' or drop {name}"
                )
        alpha = lam = np.ones(KC, dtype=dtype)
        a_shape = l_shape = None
    else:
        alpha, a_shape = _param_vector(
            fn, "inv_alpha", inv_alpha, spec.alpha, KC, Cg, channel_wise, dtype, spec.fixed
        )
        lam, l_shape = _param_vector(
            fn, "inv_lambda", inv_lambda, spec.lam, KC, Cg, channel_wise, dtype, spec.fixed
        )
    skind, n = parse_smooth_type(smooth_kernel_type, fn, nd)
    S = smoothing_kernel(skind, n, dtype, nd)
    S_shape = None
    if skind == "full":
        win = (n,) * nd
        if smooth_kernel is None:
            raise ValueError(
                f"{fn}: smooth_kernel_type={smooth_kernel_type!r} needs smooth_kernel "
                f"of shape {win} or {(1, 1) + win}"
            )
        check_array(smooth_kernel, "smooth_kernel", fn, dtype=dtype)
        if tuple(smooth_kernel.shape) not in (win, (1, 1) + win):
            raise ValueError(
                f"{fn}: smooth_kernel has shape {tuple(smooth_kernel.shape)}; "
                f"smooth_kernel_type={smooth_kernel_type!r} expects {win} "
                f"or {(1, 1) + win}"
            )
        S = np.ascontiguousarray(smooth_kernel.reshape(n ** (nd - 1), n))
        S_shape = tuple(smooth_kernel.shape)
    elif smooth_kernel is not None:
        raise ValueError(
            f"{fn}: smooth_kernel is given but smooth_kernel_type="
            f"{smooth_kernel_type!r} does not use it; use 'full_N'"
        )
    m3 = None
    if mask is not None:
        if tuple(mask.shape) != (B, 1) + sp:
            raise ValueError(
                f"{fn}: mask has shape {tuple(mask.shape)}; expected "
                f"{(B, 1) + sp} (batch, 1, the guide's spatial sizes)"
            )
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: mask must be bool or numeric 0/1, got dtype {mask.dtype}")
        if values:
            m3 = _mask_values(fn, mask, dtype)
    geo = kernel_geometry(fn, sp, k, s, p, op, d, transposed)
    return KernelPlan(
        guide.reshape((B, Cg) + folded_hw(sp)),
        geo,
        folded_hw(k),
        KC,
        spec.kind,
        spec.asym,
        alpha,
        lam,
        a_shape,
        l_shape,
        S,
        S_shape,
        m3,
        normalize,
        tuple(guide.shape),
        k,
        None if S is None else smooth_geometry(sp, n),
    )


def _mask_values(fn, mask, dtype):
    """The 0/1 mask as [B, rows, W] (folded) in the compute dtype."""
    B = mask.shape[0]
    H, W = folded_hw(mask.shape[2:])
    mf = mask.astype(dtype, copy=False)
    if not np.all((mf == 0) | (mf == 1)):
        raise ValueError(
            f"{fn}: mask must hold only 0 and 1 (found other values, "
            f"e.g. {float(mf[(mf != 0) & (mf != 1)].flat[0])!r})"
        )
    return np.ascontiguousarray(mf.reshape(B, H, W))


@dataclass
class OpPlan:
    """A PAC op (pacconv, pacconv_transpose, pacpool) reduced to tap tables and either a
    dense weight matrix Wm [Cout, C·kr·kw] or a depthwise filter w [kr, kw].

    Like :class:`KernelPlan`, the arrays are folded to two spatial axes: x [B, C, rows, W],
    K [B, KC, kr, kw, rows_out, W_out], kr the window's taps over every axis but the last;
    ``x_shape`` and :attr:`out_shape` are the caller's N-D ones."""

    x: np.ndarray
    K: np.ndarray
    geo: OpGeometry
    dense: bool
    Wm: np.ndarray | None
    w: np.ndarray | None
    bias: np.ndarray | None
    transposed: bool
    weight_shape: tuple | None
    Cout: int
    x_shape: tuple = ()  # the caller's (B, C, *spatial)
    kernel_size: tuple = ()

    @property
    def nd(self) -> int:
        return len(self.kernel_size)

    @property
    def out_shape(self):
        """The output's shape: (B, C_out, *output spatial sizes)."""
        return (self.x.shape[0], self.Cout) + tuple(self.geo.out_shape)

    @property
    def folded_out_shape(self):
        """The output as the kernels write it: (B, C_out, rows, W_out)."""
        return (self.x.shape[0], self.Cout) + tuple(self.geo.out_hw)

    @property
    def K_shape(self):
        """The caller's shape of K (and of its gradient)."""
        return tuple(self.K.shape[:2]) + tuple(self.kernel_size) + tuple(self.geo.out_shape)

    def weight_grad(self, dW):
        """Map a gradient of Wm ([Cout, C, kr, kw]) or w ([kr, kw]) back to the weight layout.
        A folded axis reversed is each of its axes reversed, so the transposed op's flips
        act on the folded window."""
        if not self.dense:
            dW = dW.reshape(1, 1, *dW.shape)
        elif self.transposed:
            dW = dW.transpose(1, 0, 2, 3)
        if self.transposed:
            dW = dW[:, :, ::-1, ::-1]
        dW = np.ascontiguousarray(dW)
        return dW if self.weight_shape is None else dW.reshape(self.weight_shape)


def _check_kernel_shape(fn, kernel, B, C, k, out, dtype, hint):
    nd = len(k)
    check_array(kernel, "kernel", fn, ndim=2 + 2 * nd, dtype=dtype)
    shp = tuple(kernel.shape)
    if (
        shp[0] != B
        or shp[1] not in (1, C)
        or shp[2 : 2 + nd] != tuple(k)
        or shp[2 + nd :] != tuple(out)
    ):
        ks = k[0] if len(set(k)) == 1 else k
        want = ", ".join(str(v) for v in (B, f"1 or {C}") + tuple(k) + tuple(out))
        raise ValueError(
            f"{fn}: kernel has shape {shp} but input, kernel size {ks}, {hint} give "
            f"({want}); compute it with "
            f"packernel{nd}d(..., kernel_size={ks}) and the same stride/padding/dilation"
        )


def plan_op(
    fn,
    x,
    kernel,
    weight,
    bias,
    *,
    stride,
    padding,
    dilation,
    output_padding=None,
    shared_filters=False,
    transposed=False,
    kernel_size=None,
    nd=2,
) -> OpPlan:
    """Validate a conv / transposed conv / pool call over ``nd`` spatial axes. ``weight is
    None`` means pooling."""
    check_array(x, "input", fn, ndim=nd + 2)
    dtype = compute_dtype(x, "input", fn)
    B, C = x.shape[:2]
    sp = tuple(x.shape[2:])
    s = ntuple(stride, "stride", fn, nd, minimum=1)
    p = ntuple(padding, "padding", fn, nd, minimum=0)
    d = ntuple(dilation, "dilation", fn, nd, minimum=1)
    op = None
    if transposed:
        op = ntuple(output_padding, "output_padding", fn, nd, minimum=0)
        check_output_padding(fn, op, s, d)
    Wm = w = None
    weight_shape = None
    flip = (slice(None, None, -1),) * nd
    if weight is None:  # pooling
        k = ntuple(kernel_size, "kernel_size", fn, nd, minimum=1, odd=True)
        check_window(fn, "kernel_size", kernel_size, prod(k))
        dense = False
        w = np.ones(folded_hw(k), dtype=dtype)
        Cout = C
    else:
        shared_filters = check_bool(fn, "shared_filters", shared_filters)
        check_array(weight, "weight", fn, ndim=nd + 2, dtype=dtype)
        weight_shape = tuple(weight.shape)
        k = tuple(weight.shape[2:])
        for kk in k:
            if kk % 2 == 0:
                raise ValueError(
                    f"{fn}: weight has shape {weight_shape}; its kernel size {k} "
                    f"must be odd (the window needs a centre)"
                )
        axes = ", ".join(("kd", "kh", "kw")[3 - nd :]) if nd <= 3 else "k..."
        layout = f"(C_in, C_out, {axes})" if transposed else f"(C_out, C_in, {axes})"
        if shared_filters:
            if weight.shape[:2] != (1, 1):
                raise ValueError(
                    f"{fn}: with shared_filters=True weight must have shape "
                    f"(1, 1, {axes}), got {weight_shape}"
                )
            dense = False
            w = weight[0, 0][flip] if transposed else weight[0, 0]
            w = np.ascontiguousarray(w).reshape(folded_hw(k))
            Cout = C
        else:
            dense = True
            cin = weight.shape[0] if transposed else weight.shape[1]
            if cin != C:
                raise ValueError(
                    f"{fn}: weight has shape {weight_shape}, i.e. {cin} input "
                    f"channels in layout {layout}, but input has {C} channels"
                )
            if transposed:
                Cout = weight.shape[1]
                Wm = np.swapaxes(weight[(slice(None), slice(None)) + flip], 0, 1)
            else:
                Cout = weight.shape[0]
                Wm = weight
            Wm = np.ascontiguousarray(Wm).reshape(Cout, C * prod(k))
    # sizes first (Python ints), tap tables after: K's shape and the output's size are
    # checked before anything of the geometry's size is allocated
    if kernel is None:  # the fused path: K's padding rule, before any table of the op's size
        check_padding_reach(fn, k, p, d)
    out = out_hw(fn, "input", sp, k, s, p, d, op)
    check_elements(
        fn,
        f"the output (input {sp}, kernel_size={k}, stride={s}, padding={p}, dilation={d})",
        (max(B, 1), max(Cout, 1)) + tuple(max(v, 1) for v in out),
    )
    check_elements(fn, "the tap tables", (prod(k[:-1]), max(prod(out[:-1]), 1)))
    hint = f"stride={s}, padding={p}, dilation={d}" + (f", output_padding={op}" if op else "")
    if kernel is not None:  # None: the fused path computes K itself
        _check_kernel_shape(fn, kernel, B, C, k, out, dtype, hint)
        kernel = kernel.reshape(tuple(kernel.shape[:2]) + folded_hw(k) + folded_hw(out))
    geo = op_geometry(fn, "input", sp, k, s, p, d, op)
    if bias is not None:
        check_array(bias, "bias", fn, ndim=1, dtype=dtype)
        if bias.shape[0] != Cout:
            raise ValueError(
                f"{fn}: bias has shape {tuple(bias.shape)}; expected ({Cout},), "
                f"one per output channel"
            )
    return OpPlan(
        x.reshape((B, C) + folded_hw(sp)),
        kernel,
        geo,
        dense,
        Wm,
        w,
        bias,
        transposed,
        weight_shape,
        Cout,
        tuple(x.shape),
        k,
    )


def check_fused(fn, kplan: KernelPlan, oplan: OpPlan, transposed: bool) -> None:
    """The guide must fit the op: same batch, the kernel's output grid is the op's output grid,
    and a channel-wise kernel has one channel per input channel."""
    x, g = oplan.x_shape, kplan.guide_shape
    if g[0] != x[0]:
        raise ValueError(f"{fn}: guide has batch size {g[0]} but input has {x[0]}")
    if tuple(kplan.geo.out_shape) != tuple(oplan.geo.out_shape):
        where = "the output size" if transposed else "the input size"
        want = oplan.geo.out_shape if transposed else x[2:]
        raise ValueError(
            f"{fn}: guide has spatial size {tuple(g[2:])}; expected "
            f"{tuple(want)}, {where} (the guide lives at the "
            f"{'output' if transposed else 'input'} resolution; guide has shape "
            f"{tuple(g)}, input {tuple(x)})"
        )
    if kplan.KC not in (1, x[1]):
        raise ValueError(
            f"{fn}: channel_wise=True gives one kernel per guide channel "
            f"({kplan.KC}), but input has {x[1]} channels; they must match"
        )


@dataclass(frozen=True)
class PairGeometry:
    """The fused depthwise op as a sum over pairs of pixels (see :func:`pair_geometry`), on
    the folded image (:func:`fold_tables`).

    Tap t = u·kw + j (u: the window's tap over every spatial axis but the last, j: the last
    axis's) has column offset dx[t] and reaches, from image row s, the row nbr[u, s] (-1: off
    the image on some axis; a volume's row (z, y) is row z·H + y, so a neighbour never wraps
    into the next plane); dy[t]: its folded row offset. Taps after the centre, t > T // 2, are
    the half space of offsets lexicographically after 0 (dy > 0, or dy = 0 < dx); tap
    T − 1 − t mirrors t. reach: the largest dy. crow[y]: the image row of output row y's
    centres; orow[s]: the output row whose centres lie on image row s, or -1 (rows in the
    border band that padding < R leaves out). ox0: the image column of output column 0's
    centre (R − padding ≥ 0, R the window's reach dilation·(k − 1)/2).
    """

    dy: np.ndarray
    dx: np.ndarray
    crow: np.ndarray
    orow: np.ndarray
    ox0: int
    nbr: np.ndarray
    reach: int


def pair_geometry(kplan: KernelPlan, oplan: OpPlan) -> PairGeometry | None:
    """The pair geometry of a fused op whose tap weights are symmetric, else None.

    out_i = Σ_δ w(δ) K(f_i, f_(i+δ)) v_(i+δ) with K(f, g) = K(g, f) and w(δ) = w(−δ) weighs the
    pixel pair {i, i + δ} once for both of its outputs: half the kernel evaluations of the
    window form. That needs a symmetric K (gaussian or inv, not asym, one kernel channel, no
    smoothing of the centre features, no mask, no normalisation — each of those makes K depend
    on which end is the centre), a depthwise filter with w(δ) = w(−δ) (pooling's w ≡ 1
    included), a forward convolution of stride 1 (so every window centre is an image pixel and
    a neighbour of one is a centre too, unless it lies in the border band). The bilateral
    filters are exactly this case, in 1, 2 and 3 dimensions.
    """
    geo = kplan.geo
    if (
        oplan.dense
        or oplan.transposed
        or geo.transposed
        or any(v != 1 for v in geo.stride)
        or kplan.KC != 1
        or kplan.asym
        or kplan.mask is not None
        or kplan.normalize
        or kplan.S is not None
        or kplan.kind not in (_KIND_GAUSSIAN, _KIND_INV)
    ):
        return None
    k, d, p = tuple(kplan.kernel_size), geo.dilation, geo.padding
    w = np.asarray(oplan.w)  # folded: reversing both axes reverses every spatial axis
    if not np.array_equal(w, w[::-1, ::-1]):
        return None
    return _pair_geometry(k, d, p, tuple(geo.guide_shape), tuple(geo.out_shape))


@functools.lru_cache(maxsize=256)
def _pair_geometry(k, d, p, shape, out) -> PairGeometry:
    nd = len(k)
    lead = range(nd - 1)
    offs = [(np.arange(k[a], dtype=np.int64) - (k[a] - 1) // 2) * d[a] for a in range(nd)]
    tabs = []
    for a in lead:  # row neighbours per leading axis: n + offset, -1 off the image
        n = np.arange(shape[a], dtype=np.int64)[None, :] + offs[a][:, None]
        tabs.append(np.where((n >= 0) & (n < shape[a]), n, -1))
    nbr = fold_tables(tabs, shape[:-1])
    # the folded row offset of each row tap, in tap order
    row_off = np.zeros(1, dtype=np.int64)
    for a in lead:
        row_off = (row_off[:, None] * shape[a] + offs[a][None, :]).reshape(-1)
    dy = np.repeat(row_off, k[-1])
    dx = np.tile(offs[-1], row_off.size)
    # stride 1: output o of axis a is centred at image index o + R_a − p_a
    cs = [np.arange(out[a], dtype=np.int64) + d[a] * (k[a] - 1) // 2 - p[a] for a in lead]
    crow = fold_index(cs, shape[:-1])
    orow = np.full(prod(shape[:-1]), -1, dtype=np.int64)
    orow[crow] = np.arange(crow.size, dtype=np.int64)
    ox0 = d[-1] * (k[-1] - 1) // 2 - p[-1]
    return PairGeometry(dy, dx, crow, orow, ox0, nbr, int(dy[-1]))
