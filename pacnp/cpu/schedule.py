"""The CPU backend's schedule: how its kernels split a geometry into parallel work.

The drivers hand the launchers of ``pacnp.cpu`` a geometry (``pacnp._core.OpGeometry``,
``KernelGeometry`` or ``PairGeometry``: tap tables and sizes) and nothing about how to walk
it; what is derived here is a CPU device only (``pacnp.cuda`` gathers through inverse tap
tables instead, one thread per element):

* scatter rounds (:func:`conflict_free_rounds`): the backwards that scatter into the input
  (or guide) run output rows y ≡ r (mod R) together, R such that their writes never overlap;
* column phases (:func:`column_phases`): a transposed convolution's output columns grouped so
  that each GEMM skips the taps that fall between the input samples;
* blocks and tiles (:func:`row_blocks`, :func:`gemm_tile`, :func:`param_group`,
  :func:`pair_blocks`), read from ``config`` at every call.

Everything derived from a geometry alone is memoised on the geometry object (``_core``
memoises those, so a layer called again with the same sizes reuses its schedule). None of it
changes a result: every output element has one writer and sums in a fixed order.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from .. import config
from .._core import inverse_taps
from .common import unit_runs

_memo = {}
_memo_lock = threading.Lock()
_MEMO_SIZE = 512


def _per_geometry(what, geo, make):
    """``make(geo)``, once per geometry object (kept alive with its entry, so its id is not
    reused while the entry lives)."""
    key = (what, id(geo))
    hit = _memo.get(key)
    if hit is not None and hit[0] is geo:
        return hit[1]
    value = make(geo)
    with _memo_lock:
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = (geo, value)
    return value


# --------------------------------------------------------------------------- rounds
def conflict_free_rounds(tab: np.ndarray) -> int:
    """Smallest R such that output rows y and y' with y' - y ≥ R never read the same input row
    through ``tab`` (rows in one round y ≡ r mod R can then scatter gradients without races)."""
    k, n_out = tab.shape
    big = np.iinfo(np.int64).max
    lo = np.where(tab >= 0, tab, big).min(axis=0)
    hi = tab.max(axis=0)
    suffix_lo = np.minimum.accumulate(lo[::-1])[::-1]
    for R in range(1, n_out):
        if np.all(hi[: n_out - R] < suffix_lo[R:]):
            return R
    return max(n_out, 1)


def op_rounds(geo) -> int:
    """Scatter rounds of a conv / transposed conv / pool backward (input rows through ty)."""
    return _per_geometry("op_rounds", geo, lambda g: conflict_free_rounds(g.ty))


def kernel_rounds(geo) -> int:
    """Scatter rounds of packernel2d's backward: a row scatters into the guide rows its taps
    read and into its centre row."""
    return _per_geometry(
        "kernel_rounds", geo, lambda g: conflict_free_rounds(np.vstack([g.gy, g.cy[None, :]]))
    )


def inverse_rows(geo) -> np.ndarray:
    """inv[i, n]: the output row whose tap i reads input row n, or -1 (the depthwise input
    gradient gathers through it)."""
    return _per_geometry("inverse_rows", geo, lambda g: inverse_taps(g.ty, g.in_hw[0]))


# --------------------------------------------------------------------------- phases
def column_phases(tx: np.ndarray, period: int):
    """Group output columns by X mod ``period``; per phase the column taps that can be valid.

    Returns (pcols [P, n], pncols [P], ptaps [P, kw], pntaps [P]), rows padded with -1.
    """
    kw, n_out = tx.shape
    P = max(1, min(period, n_out))
    pcols = np.full((P, -(-n_out // P)), -1, dtype=np.int64)
    pncols = np.zeros(P, dtype=np.int64)
    ptaps = np.full((P, kw), -1, dtype=np.int64)
    pntaps = np.zeros(P, dtype=np.int64)
    for ph in range(P):
        cols = np.arange(ph, n_out, P)
        pcols[ph, : cols.size] = cols
        pncols[ph] = cols.size
        taps = np.nonzero((tx[:, cols] >= 0).any(axis=1))[0]
        ptaps[ph, : taps.size] = taps
        pntaps[ph] = taps.size
    return pcols, pncols, ptaps, pntaps


def phases(geo):
    """Column phases of an op: stride-many for a transposed convolution (the output columns
    X ≡ ph mod s share their valid taps), else one holding every column."""
    return _per_geometry(
        "phases", geo, lambda g: column_phases(g.tx, g.stride[1] if g.transposed else 1)
    )


def row_phases(geo):
    """Row phases of an op, as :func:`phases` for the rows (output rows y ≡ r mod s of a
    transposed convolution share their valid row taps)."""
    return _per_geometry(
        "row_phases", geo, lambda g: column_phases(g.ty, g.stride[0] if g.transposed else 1)
    )


def phase_runs(geo) -> np.ndarray:
    """runs[ph, j] = (lo, hi, base): within column phase ph, tap j meets the input exactly at
    the phase columns lo ≤ q < hi, input column base + q (common.unit_runs of the phase's tap
    table; -1s where it does not take that form)."""

    def make(g):
        pcols, pncols, _, _ = phases(g)
        runs = np.full((pcols.shape[0], g.tx.shape[0], 3), -1, dtype=np.int64)
        for ph in range(pcols.shape[0]):
            unit_runs(np.ascontiguousarray(g.tx[:, pcols[ph, : pncols[ph]]]), runs[ph])
        return runs

    return _per_geometry("phase_runs", geo, make)


def kernel_phases(geo):
    """The column phases of a transposed packernel2d geometry with the guide samples they read,
    or None where packernel2d's windows take another form (not transposed, stride 1).

    A transposed window reads the guide only at the positions of the input samples: columns
    c0 + s·m (m < Ws) of the output-resolution guide. Returns (pcols, pncols, ptaps, pntaps,
    runs, c0, Ws) with :func:`column_phases` of ``gx`` and runs[ph, j] = (lo, hi, base): within
    phase ph, tap j reads exactly the phase columns lo ≤ q < hi, at guide column
    c0 + s·(base + q) (lo = hi = 0 where it reads none). The kernel then gathers a row's
    samples once (Ws per channel) and every tap's distances run over contiguous memory."""

    def make(g):
        if not g.transposed or g.stride[-1] <= 1:
            return None
        s = g.stride[-1]
        gx = g.gx
        valid = gx[gx >= 0]
        if valid.size == 0:
            return None
        c0 = int(valid.min()) % s
        if np.any(valid % s != c0):
            return None
        pcols, pncols, ptaps, pntaps = column_phases(gx, s)
        runs = np.zeros((pcols.shape[0], gx.shape[0], 3), dtype=np.int64)
        for ph in range(pcols.shape[0]):
            sub = gx[:, pcols[ph, : pncols[ph]]]
            tab = np.where(sub >= 0, (sub - c0) // s, -1)
            unit_runs(np.ascontiguousarray(tab), runs[ph])
            if np.any(runs[ph, :, 0] < 0):
                return None
            empty = runs[ph, :, 1] <= runs[ph, :, 0]
            runs[ph, empty] = 0
        ws = (g.guide_hw[1] - 1 - c0) // s + 1 if g.guide_hw[1] > c0 else 0
        return pcols, pncols, ptaps, pntaps, runs, c0, ws

    return _per_geometry("kernel_phases", geo, make)


def by_phase(geo) -> bool:
    """Whether a dense backward runs by phase (a transposed convolution with a stride > 1:
    most of its taps miss the input samples)."""
    return bool(geo.transposed) and max(geo.stride) > 1


# --------------------------------------------------------------------------- blocks
def row_blocks(rows: int) -> int:
    """Contiguous blocks of rows for kernels without reductions (config.ROW_BLOCKS)."""
    return max(1, min(rows, config.ROW_BLOCKS))


def scratch_slices() -> int:
    """Scratch slices for the kernels that get their scratch from the launcher: one per
    thread, indexed by ``numba.get_thread_id()`` inside the parallel loop. The blocks of rows
    stay many (:func:`row_blocks`, for load balance) while the scratch is the threads' — what
    one allocation per block inside the loop held at any time, allocated outside it so that a
    failure is a MemoryError for the caller."""
    return max(1, numba.get_num_threads())


def thread_blocks(rows: int) -> int:
    """Row blocks of packernel2d's forward: a few per thread, for load balance."""
    return max(1, min(rows, 4 * numba.get_num_threads()))


def gemm_tile(Cout: int, m: int, n: int) -> int:
    """Output columns per GEMM of the dense forward: all n, unless narrower tiles keep
    Cout·m·cols within OpenBLAS's small-matrix path (config.GEMM_SMALL_MNK), which runs ~1.6×
    faster there. Tiles are balanced: 256 columns under a cap of 80 → 4 × 64, not 3 × 80 + 16."""
    unit = config.GEMM_MIN_TILE
    cap = config.GEMM_SMALL_MNK // max(1, Cout * m) // unit * unit
    if cap < unit or cap >= n:
        return max(n, 1)
    tiles = -(-n // cap)
    t = -(-n // tiles)
    return min(cap, -(-t // unit) * unit)


def param_group(m: int, Wo: int, itemsize: int) -> int:
    """Output rows whose columns go into one GEMM of the dense weight gradient (up to
    config.PARAM_GROUP_BYTES of columns)."""
    return max(1, config.PARAM_GROUP_BYTES // max(1, m * Wo * itemsize))


def pair_blocks(B: int, out_hw, reach: int):
    """(rows, cols) of the pair form's blocks (config.PAIR_ROWS_PER_REACH, PAIR_BLOCK_COLS), with
    at least config.ROW_BLOCKS blocks when the rows allow it."""
    Ho, Wo = out_hw
    rows = max(config.PAIR_ROWS_PER_REACH * reach, -(-B * Ho // config.ROW_BLOCKS), 1)
    return min(rows, max(Ho, 1)), max(min(config.PAIR_BLOCK_COLS, Wo), 1)


# --------------------------------------------------------------------------- forward by phase
def phase_weight_index(geo, C: int) -> np.ndarray:
    """idx[pr, pc, r]: the column of the rearranged weights Wm (c·kh·kw + i·kw + j) of row r of
    the by-phase forward's columns of row phase pr and column phase pc, rows in (ii, jj, c)
    order; 0 past the phase pair's C·(row taps)·(column taps) rows (never read)."""

    def make(g):
        _, _, rtaps, rntaps = row_phases(g)
        _, _, ptaps, pntaps = phases(g)
        kw = g.tx.shape[0]
        kk = g.ty.shape[0] * kw
        Pr, Pc = rntaps.shape[0], pntaps.shape[0]
        mmax = C * max(int(rntaps.max()), 1) * max(int(pntaps.max()), 1)
        idx = np.zeros((Pr, Pc, mmax), dtype=np.int64)
        for pr in range(Pr):
            for pc in range(Pc):
                ii, jj = rtaps[pr, : rntaps[pr]], ptaps[pc, : pntaps[pc]]
                taps = (ii[:, None] * kw + jj[None, :]).ravel()
                rows = (taps[:, None] + np.arange(C)[None, :] * kk).ravel()
                idx[pr, pc, : rows.size] = rows
        return idx

    return _per_geometry(f"phase_weight_index{C}", geo, make)


def full_rows(geo) -> np.ndarray:
    """full[y]: output row y has every row tap of its row phase (away from the border, where
    a transposed window's taps of that phase fall outside the input)."""

    def make(g):
        _, _, _, rntaps = row_phases(g)
        ys = np.arange(g.ty.shape[1])
        return (g.ty >= 0).sum(axis=0) == rntaps[ys % rntaps.shape[0]]

    return _per_geometry("full_rows", geo, make)


def phase_forward_units(geo, B: int, y0: int, n: int, C: int, Cout: int):
    """The work units of the by-phase dense forward (``conv._dense_forward_phased``) of the
    output rows y0 ≤ y < y0 + n, or None where it does not apply (not by phase, or a tap that
    meets the input other than on one unit-stride run of a phase's columns).

    Returns (units [U, 5], rows [R]): unit (b, pr, pc, start, cnt) is one GEMM over the rows
    rows[start : start + cnt] of row phase pr that have every tap of their phase, and column
    phase pc; (b, -1, 0, start, 1) the border row rows[start], done row by row. A GEMM takes as
    many rows as keep Cout·m·columns within OpenBLAS's small-matrix path
    (config.GEMM_SMALL_MNK), in balanced chunks; at least one row."""
    if not by_phase(geo):
        return None
    key = (B, y0, n, C, Cout, config.GEMM_SMALL_MNK)
    table = _per_geometry("phase_forward_units", geo, lambda g: {})
    hit = table.get(key)
    if hit is not None:
        return hit
    _, _, rtaps, rntaps = row_phases(geo)
    pcols, pncols, ptaps, pntaps = phases(geo)
    runs = phase_runs(geo)
    for pc in range(pcols.shape[0]):
        if np.any(runs[pc, ptaps[pc, : pntaps[pc]], 0] < 0):
            return None
    Pr = rntaps.shape[0]
    ys = np.arange(y0, y0 + n)
    pr_of = ys % Pr
    full = full_rows(geo)[y0 : y0 + n]
    rows, per_image = [], []
    for pr in range(Pr):
        fr = ys[full & (pr_of == pr)]
        if fr.size == 0:
            continue
        start = len(rows)
        rows.extend(fr.tolist())
        # one set of row chunks for every column phase (the largest GEMM's), each chunk's
        # column phases one after the other: the four phases of an output line then meet in
        # cache (phase by phase over all rows, each line of W4b's 8 MB output came from memory
        # once per phase: the op took ≈ 1 ms longer, one thread)
        mnk = max(
            Cout * C * int(rntaps[pr]) * int(pntaps[pc]) * int(pncols[pc])
            for pc in range(pcols.shape[0])
        )
        g = max(1, config.GEMM_SMALL_MNK // max(1, mnk))
        chunks = -(-fr.size // g)
        bounds = [fr.size * t // chunks for t in range(chunks + 1)]
        for t in range(chunks):
            for pc in range(pcols.shape[0]):
                per_image.append((pr, pc, start + bounds[t], bounds[t + 1] - bounds[t]))
    for y in ys[~full].tolist():
        per_image.append((-1, 0, len(rows), 1))
        rows.append(y)
    units = np.array([(b,) + u for b in range(B) for u in per_image], dtype=np.int64).reshape(-1, 5)
    value = (units, np.array(rows, dtype=np.int64))
    with _memo_lock:
        if len(table) >= 64:
            table.clear()
        table[key] = value
    return value
