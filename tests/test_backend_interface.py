"""The backend interface (pacnp._backend), the CPU backend's own schedule (pacnp.cpu.schedule)
and the compile-time tunables (pacnp._jit): one interface that both backends satisfy, and no
edit of ``config`` that silently does nothing."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import pacnp
from pacnp import _backend, _core, _jit, config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter on this checkout's pacnp; returns its stdout."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# --------------------------------------------------------------------------- interface
def test_protocols_name_every_family_and_function():
    assert set(_backend.MODULES) == {
        "conv",
        "depthwise",
        "kernel",
        "smooth",
        "upsample",
        "arrays",
    }
    for proto in _backend.MODULES.values():
        functions = [n for n, m in vars(proto).items() if not n.startswith("_") and callable(m)]
        assert functions, proto


def test_cpu_backend_conforms():
    import pacnp.cpu

    assert _backend.mismatches(pacnp.cpu) == []
    for family, proto in _backend.MODULES.items():
        assert isinstance(getattr(pacnp.cpu, family), proto)


def test_mismatches_reports_a_missing_function_and_a_renamed_parameter():
    import types

    import pacnp.cpu

    fake = types.ModuleType("fake")
    for name in ("conv", "kernel", "smooth", "upsample", "arrays", "blas_guard", "launch"):
        setattr(fake, name, getattr(pacnp.cpu, name))
    fake.xp = fake.arrays
    dw = types.SimpleNamespace(
        **{
            n: getattr(pacnp.cpu.depthwise, n)
            for n in (
                "pac_depthwise_forward",
                "pac_depthwise_backward_params",
                "pac_depthwise_backward_input",
            )
        }
    )
    dw.pac_depthwise_forward = lambda x, K, w, geometry, out, y0: None
    fake.depthwise = dw
    problems = _backend.mismatches(fake)
    assert any("pac_depthwise_symmetric_forward: missing" in p for p in problems), problems
    assert any("pac_depthwise_forward" in p and "geometry" in p for p in problems), problems
    assert len(problems) == 2, problems


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)
def test_cuda_backend_conforms_under_the_simulator():
    """pacnp.cuda, imported in a process with numba's CUDA simulator (no GPU needed)."""
    out = run_python(
        "import pacnp.cuda as be; from pacnp._backend import mismatches; "
        "print(repr(mismatches(be)))",
        NUMBA_ENABLE_CUDASIM="1",
    )
    assert out.strip() == "[]", out


def test_drivers_hold_no_schedule():
    """Rounds, phases, blocks and inverse tables are the backends' business: the drivers only
    hand over geometries."""
    from pacnp import _ops

    src = pathlib.Path(_ops.__file__).read_text()
    for name in (
        "conflict_free_rounds",
        "column_phases",
        "inverse_taps",
        "geo.phases",
        "rnd",
        "ROW_BLOCKS",
        "PAIR_BLOCK_COLS",
        "HostArrays",
        "_reached",
        "_blocks",
    ):
        assert name not in src, name
    geo = _core.op_geometry("f", "input", (9, 9), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
    assert not hasattr(geo, "phases")


# --------------------------------------------------------------------------- CPU schedule
def test_cpu_schedule_from_geometry():
    from pacnp.cpu import schedule

    conv = _core.op_geometry("f", "input", (10, 12), (3, 3), (1, 1), (1, 1), (1, 1))
    # stride 1, 3 taps: rows 3 apart never share an input row
    assert schedule.op_rounds(conv) == 3
    assert schedule.phases(conv)[0].shape[0] == 1  # one phase: every column
    tconv = _core.op_geometry("f", "input", (5, 6), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
    pcols, pncols, ptaps, pntaps = schedule.phases(tconv)
    assert pcols.shape[0] == 2 and pncols.sum() == tconv.out_hw[1]
    # each phase keeps only the taps that land on input samples
    assert list(pntaps) == [2, 1] or list(pntaps) == [1, 2]
    assert schedule.phases(tconv) is schedule.phases(tconv)  # memoised on the geometry
    inv = schedule.inverse_rows(conv)
    for i in range(conv.ty.shape[0]):
        for y in range(conv.out_hw[0]):
            if conv.ty[i, y] >= 0:
                assert inv[i, conv.ty[i, y]] == y
    kgeo = _core.kernel_geometry("f", (10, 12), (5, 5), (1, 1), (2, 2), (0, 0), (1, 1), False)
    assert schedule.kernel_rounds(kgeo) == 5


def test_runtime_tunables_take_effect_without_recompiling(monkeypatch):
    """Block and tile sizes are read at every call by the CPU launchers: changing them keeps
    the result (each output element has one writer) and raises nothing."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 11))
    guide = rng.standard_normal((2, 2, 9, 11))
    w = rng.standard_normal((4, 3, 3, 3))
    K, _ = pacnp.packernel2d(guide, 3, padding=1)
    ref = pacnp.pacconv2d(x, K, w, padding=1)
    for name, value in (
        ("ROW_BLOCKS", 1),
        ("GEMM_SMALL_MNK", 0),
        ("PARAM_GROUP_BYTES", 1),
        ("STRIPE_BYTES", 1),
    ):
        monkeypatch.setattr(config, name, value)
    np.testing.assert_array_equal(pacnp.pacconv2d(x, K, w, padding=1), ref)


# --------------------------------------------------------------------------- frozen tunables
def test_frozen_names_are_the_compile_time_ones():
    assert set(config.FROZEN_AT_COMPILE) == {"CACHE", "FASTMATH", "PAIR_FASTMATH", "INV_EPS"}
    import pacnp.cpu.kernel

    assert pacnp.cpu.kernel.EPS == _jit.frozen("INV_EPS") == config.INV_EPS


@pytest.mark.parametrize(
    "name,value",
    [
        ("INV_EPS", 1e-3),
        ("FASTMATH", True),
        ("CACHE", False),
        ("PAIR_FASTMATH", {"contract", "arcp"}),
    ],
)
def test_editing_a_frozen_tunable_after_the_first_call_raises(monkeypatch, name, value):
    guide = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    pacnp.packernel2d(guide, 3, padding=1)  # the kernels are built (snapshot taken)
    monkeypatch.setattr(config, name, value)
    with pytest.raises(RuntimeError, match=f"config.{name} .*before the first pacnp call"):
        pacnp.packernel2d(guide, 3, padding=1)
    monkeypatch.undo()
    pacnp.packernel2d(guide, 3, padding=1)  # set back: fine again


def test_mutating_a_frozen_set_in_place_is_caught():
    guide = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    pacnp.packernel2d(guide, 3, padding=1)
    config.PAIR_FASTMATH.add("arcp")
    try:
        with pytest.raises(RuntimeError, match="PAIR_FASTMATH"):
            pacnp.packernel2d(guide, 3, padding=1)
    finally:
        config.PAIR_FASTMATH.discard("arcp")
    pacnp.packernel2d(guide, 3, padding=1)


def test_a_frozen_tunable_set_before_the_first_call_is_compiled_in_not_loaded_stale():
    """A new process that sets INV_EPS before its first call gets kernels built with it, even
    though numba's on-disk cache already holds kernels built with the default (the cache is
    keyed on the compile-time tunables)."""
    guide = np.zeros((1, 1, 3, 3))
    guide[0, 0, 1, 1] = 1.0
    pacnp.packernel2d(guide, 3, padding=1, kernel_type="inv_0.5_-1")  # default ε, cached
    code = (
        "import numpy as np, pacnp; from pacnp import config; config.INV_EPS = 0.5; "
        "g = np.zeros((1, 1, 3, 3)); g[0, 0, 1, 1] = 1.0; "
        "K, _ = pacnp.packernel2d(g, 3, padding=1, kernel_type='inv_0.5_-1'); "
        "print(repr(float(K[0, 0, 0, 0, 1, 1])), repr(float(K[0, 0, 1, 1, 1, 1])))"
    )
    off, centre = (float(v) for v in run_python(code).split())
    # tap (0, 0) of the centre pixel: Δ² = 1; the centre tap: Δ² = 0; K = α + (Δ² + ε)^(λ/2)
    assert off == pytest.approx(0.5 + (1 + 0.5) ** -0.5, rel=1e-12)
    assert centre == pytest.approx(0.5 + 0.5**-0.5, rel=1e-12)
    K, _ = pacnp.packernel2d(guide, 3, padding=1, kernel_type="inv_0.5_-1")
    assert K[0, 0, 1, 1, 1, 1] == pytest.approx(0.5 + 1e-4**-0.5, rel=1e-12)
