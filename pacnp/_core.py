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
def pair(value, name: str, fn: str, *, minimum: int = 0, odd: bool = False) -> tuple[int, int]:
    """Normalise an int or (h, w) pair; name the function and argument when it is wrong."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(
                f"{fn}: {name} must be an int or a pair of ints, got {value!r}"
            ) from None
        if len(items) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items
        ):
            raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
        out = (int(items[0]), int(items[1]))
    for v in out:
        if v < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            raise ValueError(f"{fn}: {name} must be {what}, got {value!r}")
        if odd and v % 2 == 0:
            raise ValueError(f"{fn}: {name} must be odd (the window needs a centre), got {value!r}")
        check_size(fn, name, v, value)
    return out


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
    """Output (H, W) of a convolution (op None) or transposed convolution; error if empty."""
    if op is None:
        out = tuple(conv_out_size(hw[a], k[a], s[a], p[a], d[a]) for a in range(2))
    else:
        out = tuple(conv_transpose_out_size(hw[a], k[a], s[a], p[a], op[a], d[a]) for a in range(2))
    if min(out) < 1:
        raise ValueError(
            f"{fn}: {what} of spatial size {tuple(hw)} with kernel_size={k}, stride={s}, "
            f"padding={p}, dilation={d}"
            + ("" if op is None else f", output_padding={op}")
            + f" gives an empty output {out}"
        )
    return out


def check_output_padding(fn, op, s, d):
    for a in range(2):
        if op[a] >= max(s[a], d[a]):
            raise ValueError(
                f"{fn}: output_padding={op} must be smaller than stride={s} or dilation={d} "
                f"on each axis (as in torch.conv_transpose2d)"
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
    """Tap tables of one spatial op (conv, transposed conv or pool) for both axes; stride and
    transposed tell a backend how the taps repeat (the CPU groups a transposed convolution's
    output columns by X mod stride)."""

    in_hw: tuple
    out_hw: tuple
    ty: np.ndarray  # [kh, Ho] input row per (tap, output row), -1 invalid
    tx: np.ndarray  # [kw, Wo]
    stride: tuple = (1, 1)
    transposed: bool = False


def _ints(t):
    return None if t is None else tuple(int(v) for v in t)


def op_geometry(fn, what, in_hw, k, s, p, d, op=None) -> OpGeometry:
    """Tap tables of a conv (op None) or transposed conv of these sizes. Memoised: a layer
    called again with the same sizes reuses its tables (they are never written)."""
    return _op_geometry(fn, what, _ints(in_hw), _ints(k), _ints(s), _ints(p), _ints(d), _ints(op))


@functools.lru_cache(maxsize=256)
def _op_geometry(fn, what, in_hw, k, s, p, d, op) -> OpGeometry:
    out = out_hw(fn, what, in_hw, k, s, p, d, op)
    if op is None:
        ty = conv_taps(in_hw[0], out[0], k[0], s[0], p[0], d[0])
        tx = conv_taps(in_hw[1], out[1], k[1], s[1], p[1], d[1])
    else:
        ty = conv_transpose_taps(in_hw[0], out[0], k[0], s[0], p[0], d[0])
        tx = conv_transpose_taps(in_hw[1], out[1], k[1], s[1], p[1], d[1])
    return OpGeometry(tuple(in_hw), out, ty, tx, s, op is not None)


@dataclass(frozen=True)
class KernelGeometry:
    """Where the windows of packernel2d read the guide.

    gy[i, y] / gx[j, x]: guide row/column of tap (i, j) of output (y, x), -1 for an invalid tap;
    cy[y] / cx[x]: guide row/column of the window centre; stride, padding, dilation: the
    op's, per axis; transposed: windows of a transposed op (centres at every guide pixel).
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


def check_padding_reach(fn, k, p, d):
    """packernel2d's padding is at most the window's reach r = dilation·(kernel_size − 1)/2
    (a window centre must be a guide pixel); returns r."""
    r = tuple(d[a] * (k[a] - 1) // 2 for a in range(2))
    for a in range(2):
        if p[a] > r[a]:
            raise ValueError(
                f"{fn}: padding={p} exceeds dilation*(kernel_size-1)/2={r} "
                f"(kernel_size={k}, dilation={d}); a window centre would fall outside the guide"
            )
    return r


def kernel_geometry(fn, guide_hw, k, s, p, op, d, transposed) -> KernelGeometry:
    """Where packernel2d's windows read the guide (memoised like op_geometry)."""
    return _kernel_geometry(
        fn, _ints(guide_hw), _ints(k), _ints(s), _ints(p), _ints(op), _ints(d), bool(transposed)
    )


@functools.lru_cache(maxsize=256)
def _kernel_geometry(fn, guide_hw, k, s, p, op, d, transposed) -> KernelGeometry:
    r = check_padding_reach(fn, k, p, d)
    if not transposed:
        geo = op_geometry(fn, "guide", guide_hw, k, s, p, d)
        cy = np.arange(geo.out_hw[0], dtype=np.int64) * s[0] - p[0] + r[0]
        cx = np.arange(geo.out_hw[1], dtype=np.int64) * s[1] - p[1] + r[1]
        return KernelGeometry(tuple(guide_hw), geo.out_hw, geo.ty, geo.tx, cy, cx, s, p, d)
    check_output_padding(fn, op, s, d)
    n_in = []
    for a in range(2):
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
    for a in range(2):
        valid = conv_transpose_taps(n_in[a], guide_hw[a], k[a], s[a], p[a], d[a]) >= 0
        y = np.arange(guide_hw[a])[None, :]
        i = np.arange(k[a])[:, None]
        tabs.append(np.where(valid, y - r[a] + i * d[a], -1).astype(np.int64))
    cy = np.arange(guide_hw[0], dtype=np.int64)
    cx = np.arange(guide_hw[1], dtype=np.int64)
    return KernelGeometry(tuple(guide_hw), tuple(guide_hw), tabs[0], tabs[1], cy, cx, s, p, d, True)


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


def parse_smooth_type(smooth_kernel_type, fn: str):
    """Return (kind, N): kind in {'none', 'gaussian', 'average', 'full'}."""
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
        check_window(fn, "smooth_kernel_type", smooth_kernel_type, n * n)
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


def smoothing_kernel(kind: str, n: int, dtype) -> np.ndarray | None:
    """The fixed smoothing kernels; 'full' is supplied by the caller."""
    if kind == "gaussian":
        v = np.array([0.25, 0.5, 0.25])
        return np.outer(v, v).astype(dtype)
    if kind == "average":
        return np.full((n, n), 1.0 / (n * n), dtype=dtype)
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
    """Everything a backend needs to compute packernel2d and its backward."""

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

    @property
    def out_shape(self):
        B = self.guide.shape[0]
        return (B, self.KC, self.k[0], self.k[1]) + tuple(self.geo.out_hw)


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
) -> KernelPlan:
    """Validate a packernel2d call. ``values=False``: check shapes, dtypes and options only
    (the adapters' checks on shape-only stand-ins; the mask's 0/1 values are checked when the
    call runs)."""
    check_array(guide, "guide", fn, ndim=4)
    dtype = compute_dtype(guide, "guide", fn)
    k = pair(kernel_size, "kernel_size", fn, minimum=1, odd=True)
    s = pair(stride, "stride", fn, minimum=1)
    p = pair(padding, "padding", fn, minimum=0)
    op = pair(output_padding, "output_padding", fn, minimum=0)
    d = pair(dilation, "dilation", fn, minimum=1)
    channel_wise = check_bool(fn, "channel_wise", channel_wise)
    normalize = check_bool(fn, "normalize_kernel", normalize_kernel)
    transposed = check_bool(fn, "transposed", transposed)
    if not transposed and any(op):
        raise ValueError(f"{fn}: output_padding={op} is only meaningful with transposed=True")
    check_window(fn, "kernel_size", kernel_size, k[0] * k[1])
    spec = parse_kernel_type(kernel_type, fn)
    B, Cg, H, W = guide.shape
    KC = Cg if channel_wise else 1
    # K's size before anything of it (or of its tap tables) is allocated; empty axes count as
    # one, so an empty batch cannot hide an absurd geometry
    check_padding_reach(fn, k, p, d)
    out = (H, W) if transposed else out_hw(fn, "guide", (H, W), k, s, p, d)
    check_elements(
        fn,
        f"K (guide {(H, W)}, kernel_size={k}, stride={s}, padding={p}, dilation={d})",
        (max(B, 1), max(KC, 1)) + k + tuple(max(v, 1) for v in out),
    )
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
    skind, n = parse_smooth_type(smooth_kernel_type, fn)
    S = smoothing_kernel(skind, n, dtype)
    S_shape = None
    if skind == "full":
        if smooth_kernel is None:
            raise ValueError(
                f"{fn}: smooth_kernel_type={smooth_kernel_type!r} needs smooth_kernel "
                f"of shape ({n}, {n}) or (1, 1, {n}, {n})"
            )
        check_array(smooth_kernel, "smooth_kernel", fn, dtype=dtype)
        if tuple(smooth_kernel.shape) not in ((n, n), (1, 1, n, n)):
            raise ValueError(
                f"{fn}: smooth_kernel has shape {tuple(smooth_kernel.shape)}; "
                f"smooth_kernel_type={smooth_kernel_type!r} expects ({n}, {n}) "
                f"or (1, 1, {n}, {n})"
            )
        S = np.ascontiguousarray(smooth_kernel.reshape(n, n))
        S_shape = tuple(smooth_kernel.shape)
    elif smooth_kernel is not None:
        raise ValueError(
            f"{fn}: smooth_kernel is given but smooth_kernel_type="
            f"{smooth_kernel_type!r} does not use it; use 'full_N'"
        )
    m3 = None
    if mask is not None:
        if mask.ndim != 4 or tuple(mask.shape) != (B, 1, H, W):
            raise ValueError(
                f"{fn}: mask has shape {tuple(mask.shape)}; expected "
                f"{(B, 1, H, W)} (batch, 1, guide height, guide width)"
            )
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: mask must be bool or numeric 0/1, got dtype {mask.dtype}")
        if values:
            m3 = _mask_values(fn, mask, dtype)
    geo = kernel_geometry(fn, (H, W), k, s, p, op, d, transposed)
    return KernelPlan(
        guide,
        geo,
        k,
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
    )


def _mask_values(fn, mask, dtype):
    """The 0/1 mask as [B, H, W] in the compute dtype."""
    B, _, H, W = mask.shape
    mf = mask.astype(dtype, copy=False)
    if not np.all((mf == 0) | (mf == 1)):
        raise ValueError(
            f"{fn}: mask must hold only 0 and 1 (found other values, "
            f"e.g. {float(mf[(mf != 0) & (mf != 1)].flat[0])!r})"
        )
    return np.ascontiguousarray(mf.reshape(B, H, W))


@dataclass
class OpPlan:
    """A PAC op (pacconv2d, pacconv_transpose2d, pacpool2d) reduced to tap tables and either a
    dense weight matrix Wm [Cout, C·kh·kw] or a depthwise filter w [kh, kw]."""

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

    @property
    def out_shape(self):
        return (self.x.shape[0], self.Cout) + tuple(self.geo.out_hw)

    def weight_grad(self, dW):
        """Map a gradient of Wm ([Cout, C, kh, kw]) or w ([kh, kw]) back to the weight layout."""
        if not self.dense:
            dW = dW.reshape(1, 1, *dW.shape)
        elif self.transposed:
            dW = dW.transpose(1, 0, 2, 3)
        if self.transposed:
            dW = dW[:, :, ::-1, ::-1]
        return np.ascontiguousarray(dW)


def _check_kernel_shape(fn, kernel, B, C, k, out, dtype, hint):
    check_array(kernel, "kernel", fn, ndim=6, dtype=dtype)
    shp = tuple(kernel.shape)
    if shp[0] != B or shp[1] not in (1, C) or shp[2:4] != tuple(k) or shp[4:] != tuple(out):
        ks = k[0] if k[0] == k[1] else k
        raise ValueError(
            f"{fn}: kernel has shape {shp} but input, kernel size {ks}, {hint} give "
            f"({B}, 1 or {C}, {k[0]}, {k[1]}, {out[0]}, {out[1]}); compute it with "
            f"packernel2d(..., kernel_size={ks}) and the same stride/padding/dilation"
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
) -> OpPlan:
    """Validate a conv / transposed conv / pool call. ``weight is None`` means pooling."""
    check_array(x, "input", fn, ndim=4)
    dtype = compute_dtype(x, "input", fn)
    B, C, H, W = x.shape
    s = pair(stride, "stride", fn, minimum=1)
    p = pair(padding, "padding", fn, minimum=0)
    d = pair(dilation, "dilation", fn, minimum=1)
    op = None
    if transposed:
        op = pair(output_padding, "output_padding", fn, minimum=0)
        check_output_padding(fn, op, s, d)
    Wm = w = None
    weight_shape = None
    if weight is None:  # pooling
        k = pair(kernel_size, "kernel_size", fn, minimum=1, odd=True)
        check_window(fn, "kernel_size", kernel_size, k[0] * k[1])
        dense = False
        w = np.ones(k, dtype=dtype)
        Cout = C
    else:
        shared_filters = check_bool(fn, "shared_filters", shared_filters)
        check_array(weight, "weight", fn, ndim=4, dtype=dtype)
        weight_shape = tuple(weight.shape)
        k = tuple(weight.shape[2:])
        for kk in k:
            if kk % 2 == 0:
                raise ValueError(
                    f"{fn}: weight has shape {weight_shape}; its kernel size {k} "
                    f"must be odd (the window needs a centre)"
                )
        layout = "(C_in, C_out, kh, kw)" if transposed else "(C_out, C_in, kh, kw)"
        if shared_filters:
            if weight.shape[:2] != (1, 1):
                raise ValueError(
                    f"{fn}: with shared_filters=True weight must have shape "
                    f"(1, 1, kh, kw), got {weight_shape}"
                )
            dense = False
            w = weight[0, 0, ::-1, ::-1] if transposed else weight[0, 0]
            w = np.ascontiguousarray(w)
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
                Wm = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
            else:
                Cout = weight.shape[0]
                Wm = weight
            Wm = np.ascontiguousarray(Wm).reshape(Cout, C * k[0] * k[1])
    # sizes first (Python ints), tap tables after: K's shape and the output's size are
    # checked before anything of the geometry's size is allocated
    if kernel is None:  # the fused path: K's padding rule, before any table of the op's size
        check_padding_reach(fn, k, p, d)
    out = out_hw(fn, "input", (H, W), k, s, p, d, op)
    check_elements(
        fn,
        f"the output (input {(H, W)}, kernel_size={k}, stride={s}, padding={p}, dilation={d})",
        (max(B, 1), max(Cout, 1)) + tuple(max(v, 1) for v in out),
    )
    hint = f"stride={s}, padding={p}, dilation={d}" + (f", output_padding={op}" if op else "")
    if kernel is not None:  # None: the fused path computes K itself
        _check_kernel_shape(fn, kernel, B, C, k, out, dtype, hint)
    geo = op_geometry(fn, "input", (H, W), k, s, p, d, op)
    if bias is not None:
        check_array(bias, "bias", fn, ndim=1, dtype=dtype)
        if bias.shape[0] != Cout:
            raise ValueError(
                f"{fn}: bias has shape {tuple(bias.shape)}; expected ({Cout},), "
                f"one per output channel"
            )
    return OpPlan(x, kernel, geo, dense, Wm, w, bias, transposed, weight_shape, Cout)


def check_fused(fn, kplan: KernelPlan, oplan: OpPlan, transposed: bool) -> None:
    """The guide must fit the op: same batch, the kernel's output grid is the op's output grid,
    and a channel-wise kernel has one channel per input channel."""
    x, g = oplan.x, kplan.guide
    if g.shape[0] != x.shape[0]:
        raise ValueError(f"{fn}: guide has batch size {g.shape[0]} but input has {x.shape[0]}")
    if tuple(kplan.geo.out_hw) != tuple(oplan.geo.out_hw):
        where = "the output size" if transposed else "the input size"
        want = oplan.geo.out_hw if transposed else x.shape[2:]
        raise ValueError(
            f"{fn}: guide has spatial size {tuple(g.shape[2:])}; expected "
            f"{tuple(want)}, {where} (the guide lives at the "
            f"{'output' if transposed else 'input'} resolution; guide has shape "
            f"{tuple(g.shape)}, input {tuple(x.shape)})"
        )
    if kplan.KC not in (1, x.shape[1]):
        raise ValueError(
            f"{fn}: channel_wise=True gives one kernel per guide channel "
            f"({kplan.KC}), but input has {x.shape[1]} channels; they must match"
        )


@dataclass(frozen=True)
class PairGeometry:
    """The fused depthwise op as a sum over pairs of pixels (see :func:`pair_geometry`).

    dy[t], dx[t]: offset of tap t = i·kw + j from the window centre (taps after the centre,
    t > kh·kw // 2, are the half plane dy > 0 or dy = 0 < dx; tap kh·kw − 1 − t mirrors t);
    oy0, ox0: image row/column of output pixel (0, 0)'s centre (R − padding ≥ 0, R the
    window's reach dilation·(k − 1)/2).
    """

    dy: np.ndarray
    dx: np.ndarray
    oy0: int
    ox0: int


def pair_geometry(kplan: KernelPlan, oplan: OpPlan) -> PairGeometry | None:
    """The pair geometry of a fused op whose tap weights are symmetric, else None.

    out_i = Σ_δ w(δ) K(f_i, f_(i+δ)) v_(i+δ) with K(f, g) = K(g, f) and w(δ) = w(−δ) weighs the
    pixel pair {i, i + δ} once for both of its outputs: half the kernel evaluations of the
    window form. That needs a symmetric K (gaussian or inv, not asym, one kernel channel, no
    smoothing of the centre features, no mask, no normalisation — each of those makes K depend
    on which end is the centre), a depthwise filter with w[i, j] = w[kh−1−i, kw−1−j] (pooling's
    w ≡ 1 included), a forward convolution of stride 1 (so every window centre is an image
    pixel and a neighbour of one is a centre too, unless it lies in the border band). The
    bilateral filters are exactly this case.
    """
    geo = kplan.geo
    if (
        oplan.dense
        or oplan.transposed
        or geo.transposed
        or geo.stride != (1, 1)
        or kplan.KC != 1
        or kplan.asym
        or kplan.mask is not None
        or kplan.normalize
        or kplan.S is not None
        or kplan.kind not in (_KIND_GAUSSIAN, _KIND_INV)
    ):
        return None
    w = np.asarray(oplan.w)
    if not np.array_equal(w, w[::-1, ::-1]):
        return None
    return _pair_geometry(tuple(int(k) for k in w.shape), geo.dilation, geo.padding)


@functools.lru_cache(maxsize=256)
def _pair_geometry(k, d, p) -> PairGeometry:
    i, j = np.divmod(np.arange(k[0] * k[1], dtype=np.int64), k[1])
    dy = (i - (k[0] - 1) // 2) * d[0]
    dx = (j - (k[1] - 1) // 2) * d[1]
    return PairGeometry(dy, dx, d[0] * (k[0] - 1) // 2 - p[0], d[1] * (k[1] - 1) // 2 - p[1])
