"""The CPU kernels' shared helpers (pacnp/cpu/common.py): the vectorised float32 exp, the
unit-stride run detection the fast loops rely on, and the cache-prefetch hint."""

import platform

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from pacnp import _core
from pacnp.cpu.common import exp_f32, prefetch, unit_runs, vexp


@njit(cache=False)
def _exp_all(a, out):
    for i in range(a.shape[0]):
        out[i] = exp_f32(a[i])


@njit(cache=False)
def _vexp_all(a, out):
    for i in range(a.shape[0]):
        out[i] = vexp(a[i])


def test_exp_f32_relative_error_below_float32_resolution():
    a = np.linspace(-87.0, 88.0, 2_000_003, dtype=np.float32)
    out = np.empty_like(a)
    _exp_all(a, out)
    exact = np.exp(a.astype(np.float64))
    rel = np.abs(out.astype(np.float64) - exact) / exact
    # float32 spacing is 2^-23 ≈ 1.19e-7 relative; the polynomial stays within about one ulp
    assert rel.max() < 2.0e-7, rel.max()


def test_exp_f32_special_values():
    a = np.array(
        [-np.inf, np.nan, np.inf, 0.0, -0.0, -1e30, 1e30, -87.5, 88.5, -100.0], dtype=np.float32
    )
    out = np.empty_like(a)
    _exp_all(a, out)
    assert out[0] == 0.0
    assert np.isnan(out[1])
    assert out[2] == np.inf
    assert out[3] == 1.0 and out[4] == 1.0
    assert out[5] == 0.0 and out[6] == np.inf
    assert out[7] == 0.0 and out[8] == np.inf and out[9] == 0.0


def test_vexp_dispatches_on_dtype():
    a64 = np.array([-3.3, 0.5, -20.0])
    o64 = np.empty_like(a64)
    _vexp_all(a64, o64)
    np.testing.assert_allclose(o64, np.exp(a64), rtol=1e-15)  # float64: libm exp, not exp_f32
    a32 = a64.astype(np.float32)
    o32 = np.empty_like(a32)
    _vexp_all(a32, o32)
    np.testing.assert_allclose(o32, np.exp(a32.astype(np.float64)), rtol=2e-7)


def _runs(tab):
    runs = np.empty((tab.shape[0], 3), dtype=np.int64)
    unit_runs(tab, runs)
    return runs


@pytest.mark.parametrize(
    "n_in,k,s,p,d", [(7, 3, 1, 1, 1), (7, 5, 1, 2, 2), (9, 3, 1, 0, 1), (1, 5, 1, 2, 1)]
)
def test_unit_runs_of_stride1_convolutions(n_in, k, s, p, d):
    n_out = _core.conv_out_size(n_in, k, s, p, d)
    tab = _core.conv_taps(n_in, n_out, k, s, p, d)
    for i, (lo, hi, base) in enumerate(_runs(tab)):
        assert lo >= 0, "every stride-1 tap row is one unit-stride run"
        x = np.arange(n_out)
        expect = np.where((x >= lo) & (x < hi), base + x, -1)
        np.testing.assert_array_equal(tab[i], expect)


def test_unit_runs_reject_strided_and_zero_inserted_tables():
    strided = _core.conv_taps(9, 4, 3, 2, 1, 1)
    assert (_runs(strided)[:, 0] == -1).all()
    transposed = _core.conv_transpose_taps(4, 8, 3, 2, 1, 1)
    assert (_runs(transposed)[:, 0] == -1).all()


@njit(cache=False)
def _sum_with_hints(a):
    total = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            # hints at the next row, past the end included: a prefetch never faults
            prefetch(a, (i + 1, j), False)
            prefetch(a, (i + 1, j), True)
            total += a[i, j]
    return total


def test_prefetch_is_a_hint_only():
    a = np.arange(12 * 7, dtype=np.float32).reshape(12, 7)
    before = a.copy()
    assert _sum_with_hints(a) == float(before.sum())
    np.testing.assert_array_equal(a, before)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 mnemonics")
def test_prefetch_compiles_to_prefetch_instructions():
    _sum_with_hints(np.ones((2, 2), np.float32))
    asm = _sum_with_hints.inspect_asm(_sum_with_hints.signatures[0])
    assert "prefetcht0" in asm  # read, keep in every cache level
    assert "prefetchw" in asm  # for writing


def test_prefetch_rejects_what_it_cannot_address():
    @njit(cache=False)
    def too_few_indices(a):
        prefetch(a, (0,), False)

    @njit(cache=False)
    def flag_not_a_literal(a, w):
        prefetch(a, (0, 0), w)

    a = np.ones((2, 2), np.float32)
    with pytest.raises(TypingError):
        too_few_indices(a)
    with pytest.raises(TypingError):
        flag_not_a_literal(a, True)
