"""Helpers the CPU kernels share: a vectorisable exp, unsigned indexing, a cache-prefetch hint,
unit-stride tap runs, round scheduling.

None of this has a CUDA twin: the GPU has a fast ``exp`` of its own, hides memory latency with
other warps rather than with prefetch hints, and has no use for the others.
"""

import math

import numpy as np
from llvmlite import ir
from llvmlite.binding import llvm_version_info
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._jit import njit


# --------------------------------------------------------------------------- exp
@intrinsic
def _int_bits_as_f32(typingctx, i):
    """The float32 whose bit pattern is the low 32 bits of the integer ``i``."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if i.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif i.bitwidth < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


@intrinsic
def _f32_bits(typingctx, x):
    """The bit pattern of the float32 ``x`` as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


# Range reduction exp(x) = 2^n · exp(r), n = round(x / ln 2), r = x − n·ln 2 split in a high part
# exact in float32 (ln 2 to 9 bits) and a low correction, so n·LN2_HI has no rounding error.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
# Adding 1.5·2^23 rounds a float32 of magnitude < 2^22 to an integer (round-to-nearest) and
# leaves that integer in the low mantissa bits: no float→int conversion in the loop.
_ROUND = np.float32(12582912.0)
_ROUND_BITS = 0x4B400000
# exp(r) on |r| ≤ ln2/2: 1 + r + r²·P(r), P the degree-5 Taylor polynomial of (e^r − 1 − r)/r²
# (coefficients 1/(k+2)!); truncation error < 2·10⁻⁸ relative, under float32's half-ulp.
_P = tuple(np.float32(1.0 / math.factorial(k + 2)) for k in range(6))
# below this exp underflows float32's normal range: return 0 rather than a wrong power of two
_LO = np.float32(-87.0)
_HI = np.float32(88.0)


@njit(inline="always")
def exp_f32(x):
    """exp of a float32 in straight-line float32 arithmetic, so LLVM vectorises loops of it
    (``math.exp`` is a scalar libm call: 6–7× slower on the gaussian kernel's 25 taps per
    pixel). Relative error < 10⁻⁷; exp(−inf) = 0, exp(NaN) = NaN, overflow → inf, results
    below float32's normal range flush to 0."""
    xc = min(max(x, _LO), _HI)
    t = xc * _LOG2E + _ROUND
    n = t - _ROUND
    r = xc - n * _LN2_HI - n * _LN2_LO
    p = _P[5]
    p = p * r + _P[4]
    p = p * r + _P[3]
    p = p * r + _P[2]
    p = p * r + _P[1]
    p = p * r + _P[0]
    e = (p * r * r + r) + np.float32(1.0)
    y = e * _int_bits_as_f32((_f32_bits(t) - (_ROUND_BITS - 127)) << 23)
    if x < _LO:
        y = np.float32(0.0)
    if x > _HI:
        y = np.float32(np.inf)
    if x != x:
        y = x
    return y


def vexp(x):
    """exp that vectorises: :func:`exp_f32` for float32, ``math.exp`` (exact) for float64."""
    return math.exp(x)


# Not inline="always": numba's IR inliner then warns (NumbaIRAssumptionWarning, a pedantic SSA
# check) when one function calls vexp at several sites. LLVM inlines the call anyway, so the
# loops still vectorise.
@overload(vexp)
def _vexp_overload(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: math.exp(x)


# --------------------------------------------------------------------------- indexing
def nowrap(i):
    """``i`` as an unsigned index: numba applies negative-index wraparound (``a[-1]``) only to
    signed indices, so ``a[nowrap(base + t)]`` is a plain address computation.

    Where a loop's index is ``base + t`` with a run-time ``base``, LLVM must prove
    ``base + t ≥ 0`` to drop the wraparound select; a guard on ``base`` before the loop usually
    suffices, but not once the loop is inlined into a larger nest (the guard gets hoisted and
    the proof lost): the loop then compiles to gathers, 4× slower. Callers guarantee the index
    is in range (as everywhere in numba, there is no bounds check)."""
    return np.uint64(i)


@overload(nowrap, inline="always")
def _nowrap_overload(i):
    return lambda i: np.uint64(i)


# --------------------------------------------------------------------------- memory hints
# the intrinsic's name carries its pointer type: i8* before LLVM 15 (llvmlite < 0.43, numba
# < 0.60), an opaque pointer after
_PREFETCH = "llvm.prefetch.p0" if llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, ary, idx, write):
    """Hint the cache to fetch the line of ``ary[idx]`` (idx: a tuple of one index per
    dimension; ``write``: a literal bool, True to fetch it for writing). No effect on results,
    no fault on an unmapped address: only on speed. For the kernels whose reads or writes jump
    every few lines between the rows of K's full tap layout, which the hardware prefetchers do
    not follow (see docs/performance.md, "Transposed PAC by phase")."""
    if not isinstance(ary, types.Array) or not isinstance(idx, types.BaseTuple):
        return None
    if len(idx) != ary.ndim or not all(isinstance(t, types.Integer) for t in idx):
        return None
    if not isinstance(write, types.BooleanLiteral):
        return None
    rw = 1 if write.literal_value else 0

    def codegen(context, builder, sig, args):
        aryty, idxty, _ = sig.args
        arr = context.make_array(aryty)(context, builder, args[0])
        indices = cgutils.unpack_tuple(builder, args[1], len(idxty))
        indices = [
            context.cast(builder, v, t, types.intp) for v, t in zip(indices, idxty, strict=True)
        ]
        ptr = cgutils.get_item_pointer(context, builder, aryty, arr, indices, wraparound=False)
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
        # locality 3: keep it in every level; cache type 1: data
        builder.call(fn, [ptr, i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(ary, idx, write), codegen


# --------------------------------------------------------------------------- tap runs
@njit()
def strided_runs(tab, runs, off):
    """runs[i, off:off + 4] = (x0, step, n, p0) when row i of a tap table is valid exactly at
    x = x0 + step·q, 0 ≤ q < n, with tab[i, x] = p0 + q (a transposed convolution's tap: it
    meets a sample at every step-th output column, one sample further each time; n = 0 when
    it meets none); (-1, -1, -1, -1) otherwise. Kernels then visit only the n columns where a
    tap exists instead of testing all of them."""
    n_out = tab.shape[1]
    for i in range(tab.shape[0]):
        x0 = -1
        step = 0
        n = 0
        ok = True
        prev = -1
        for x in range(n_out):
            if tab[i, x] < 0:
                continue
            if n == 0:
                x0 = x
            elif n == 1:
                step = x - prev
            elif x - prev != step:
                ok = False
            if tab[i, x] != tab[i, x0] + n:
                ok = False
            prev = x
            n += 1
        if n == 0:
            runs[i, off], runs[i, off + 1], runs[i, off + 2], runs[i, off + 3] = 0, 1, 0, 0
        elif not ok:
            runs[i, off], runs[i, off + 1], runs[i, off + 2], runs[i, off + 3] = -1, -1, -1, -1
        else:
            if n == 1:
                step = 1
            runs[i, off], runs[i, off + 1], runs[i, off + 2] = x0, step, n
            runs[i, off + 3] = tab[i, x0]


@njit()
def unit_runs(tab, runs):
    """runs[i] = (lo, hi, base) when row i of a tap table is valid exactly on lo ≤ x < hi with
    tab[i, x] = base + x (a unit-stride run: every tap of a stride-1 convolution or window);
    (-1, -1, -1) otherwise.

    Kernels take a contiguous-slice loop over such runs — it vectorises, where the general
    table lookup with its validity test does not (4–5× slower on 64-pixel rows) — and fall
    back to the table for strided or zero-inserted geometries.
    """
    n = tab.shape[1]
    for i in range(tab.shape[0]):
        lo = 0
        while lo < n and tab[i, lo] < 0:
            lo += 1
        hi = lo
        while hi < n and tab[i, hi] >= 0:
            hi += 1
        base = tab[i, lo] - lo if hi > lo else 0
        ok = True
        for x in range(n):
            if x >= lo and x < hi:
                ok = ok and tab[i, x] == base + x
            else:
                ok = ok and tab[i, x] < 0
        if ok:
            runs[i, 0], runs[i, 1], runs[i, 2] = lo, hi, base
        else:
            runs[i, 0], runs[i, 1], runs[i, 2] = -1, -1, -1


@njit()
def round_rows(y0, n, rnd, R):
    """(first, count) of the output rows y0 ≤ y < y0+n with y ≡ rnd (mod R)."""
    first = y0 + (rnd - y0) % R
    if first >= y0 + n:
        return first, 0
    return first, (y0 + n - 1 - first) // R + 1
