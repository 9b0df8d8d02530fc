"""The benchmark suite and its ratio table (``asv_benchmarks/ratio_table.py``): the peers
compute what pacnp computes.

A speed-up over a peer means something only if the peer computes the same numbers, so the torch
peers of ``asv_benchmarks/benchmarks/peers.py`` — the unfold formulation (einsum and matmul
contractions) and the dense floor — are checked against pacnp in float64 on small shapes over
the geometries the workloads use and a few more: K itself, the forward, and every gradient
(input, guide, weight, bias). The runners the table and asv time are the objects under test.
Then the table builder runs end to end on tiny workloads.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cases import RATIO_TABLE, load_ratio_table

import pacnp

bench = load_ratio_table()
common = bench.load_suite()
Workload = common.Workload

# (name, workload): tiny versions of W1–W4 and of other geometries (float64 in the tests)
CONV = {
    "conv_k3_p1": Workload("conv", 2, 3, 4, 2, 3, 7, padding=1),
    "conv_k5_s2_p2": Workload("conv", 2, 3, 4, 2, 5, 9, stride=2, padding=2),
    "conv_k3_d2_p2": Workload("conv", 1, 2, 3, 3, 3, 8, padding=2, dilation=2),
    "conv_k3_p0_norm": Workload("conv", 1, 2, 3, 2, 3, 6, normalize=True),
}
TRANSPOSE = {
    "tr_k5_s2_p2_op1": Workload(
        "transpose", 2, 3, 4, 2, 5, 4, stride=2, padding=2, output_padding=1
    ),
    "tr_k3_s2_p1_op1": Workload(
        "transpose", 1, 2, 3, 2, 3, 5, stride=2, padding=1, output_padding=1
    ),
    "tr_k3_s3_p0_op2": Workload("transpose", 1, 2, 2, 2, 3, 3, stride=3, output_padding=2),
    "tr_k3_d2_p1_norm": Workload(
        "transpose", 1, 2, 3, 2, 3, 5, padding=1, dilation=2, normalize=True
    ),
}
POOL = {
    "pool_k5_s2_p2_norm": Workload("pool", 2, 3, 3, 2, 5, 9, stride=2, padding=2, normalize=True),
    "pool_k3_p1": Workload("pool", 1, 2, 2, 3, 3, 6, padding=1),
    "pool_k3_d2_p2_norm": Workload("pool", 1, 2, 2, 2, 3, 7, padding=2, dilation=2, normalize=True),
}
ALL = {**CONV, **TRANSPOSE, **POOL}
PACNP_IMPLS = ["pacnp", "pacnp_fused"]


def _np(a):
    if a is None:
        return None
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _close(a, b, what):
    a, b = _np(a), _np(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11 * scale, err_msg=what)


def _pacnp_runner(impl, w):
    if impl == "pacnp_fused" and not common.fused_available(w.op):
        pytest.skip(f"pacnp.{common.FUSED_NAMES[w.op]} does not exist yet")
    return common.make_runner(impl, w, "numpy", np.float64, seed=3)


def _torch_runner(impl, w):
    pytest.importorskip("torch")
    return common.make_runner(impl, w, "numpy", np.float64, seed=3)


def _forward_output(result):
    return result[0] if isinstance(result, tuple) else result


# --------------------------------------------------------------------------- workloads
def test_workloads_are_the_issue_s():
    W = common.WORKLOADS
    assert W["W1"].gemm_shape == (2 * 64 * 64, 400, 32)
    assert W["W2"].gemm_shape == (256 * 256, 576, 64)
    assert W["W3"].out_hw == 32 and W["W3"].normalize
    assert (W["W4"].hw, W["W4"].guide_hw, W["W4"].out_hw) == (32, 64, 64)
    for name, w in W.items():
        x, guide, weight, bias, grad = common.make_inputs(w)
        assert x.dtype == np.float32 and grad.shape == w.out_shape, name
        K, _ = pacnp.packernel2d(guide, w.k, **common.kernel_options(w))
        assert K.shape == w.kernel_shape, name


# --------------------------------------------------------------------------- peers vs pacnp
@pytest.mark.parametrize("name", list(ALL))
def test_unfold_kernel_equals_packernel2d(name):
    torch = pytest.importorskip("torch")
    from importlib import import_module

    peers = import_module(bench._SUITE_MODULE + ".peers")
    w = ALL[name]
    _, guide, _, _, _ = common.make_inputs(w, np.float64, seed=1)
    K, _ = pacnp.packernel2d(guide, w.k, **common.kernel_options(w))
    kw = dict(stride=w.stride, padding=w.padding, dilation=w.dilation, normalize=w.normalize)
    if w.op == "transpose":
        kw.update(transposed=True, output_padding=w.output_padding, in_hw=(w.hw, w.hw))
    Kt = peers.gaussian_kernel_unfold(torch.from_numpy(guide), w.k, **kw)
    _close(peers.kernel_to_pacnp(Kt, (w.out_hw, w.out_hw), w.k), K, f"{name}: K")


@pytest.mark.parametrize("peer", ["torch_unfold", "torch_unfold_mm"])
@pytest.mark.parametrize("impl", PACNP_IMPLS)
@pytest.mark.parametrize("name", list(ALL))
def test_unfold_peer_computes_what_pacnp_computes(name, impl, peer):
    """Forward and all gradients (input, guide, weight, bias) of the runners that are timed."""
    w = ALL[name]
    if w.op == "pool" and peer == "torch_unfold_mm":
        pytest.skip("pooling has no weight contraction")
    p = _pacnp_runner(impl, w)
    t = _torch_runner(peer, w)
    _close(t.forward(), _forward_output(p.forward()), f"{name}: forward")
    gp = p.forward_backward()
    gt = t.forward_backward()
    names = ("d_input", "d_guide", "d_weight", "d_bias")
    assert len(gp) == len(gt) == (2 if w.op == "pool" else 4)
    for n_, a, b in zip(names, gt, gp):
        _close(a, b, f"{name}: {n_}")
    # the saved-forward backward (what time_backward times) gives the same
    p.prepare_backward()
    t.prepare_backward()
    for n_, a, b in zip(names, t.backward(), p.backward()):
        _close(a, b, f"{name}: {n_} (backward from a saved forward)")


@pytest.mark.parametrize("name", list(ALL))
def test_dense_peer_is_pacnp_with_a_constant_guide(name):
    """The dense floor has the same shape: with a constant guide K is 1 on every valid tap
    (normalised: 1/count), and pacnp is exactly conv2d / conv_transpose2d / avg_pool2d."""
    w = ALL[name]
    if w.op == "pool" and not w.normalize:
        pytest.skip("avg_pool2d is the normalised pool")
    if w.op == "pool" and w.dilation != 1:
        pytest.skip("avg_pool2d has no dilation")
    if w.op != "pool" and w.normalize:
        pytest.skip("a normalised conv is not a dense conv")
    d = _torch_runner("torch_dense", w)
    p = _pacnp_runner("pacnp", w)
    p.guide = np.full_like(p.guide, 0.5)
    _close(d.forward(), p.forward()[0], f"{name}: forward")
    gd, gp = d.forward_backward(), p.forward_backward()
    gp = (gp[0],) + tuple(gp[2:])  # the dense op has no guide
    for n_, a, b in zip(("d_input", "d_weight", "d_bias"), gd, gp):
        _close(a, b, f"{name}: {n_}")


def test_einsum_and_matmul_contractions_agree():
    torch = pytest.importorskip("torch")
    from importlib import import_module

    peers = import_module(bench._SUITE_MODULE + ".peers")
    g = torch.Generator().manual_seed(0)
    cols = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    wm = torch.randn(4, 3, 9, generator=g, dtype=torch.float64)
    _close(peers._contract(cols, wm, "matmul"), peers._contract(cols, wm, "einsum"), "contract")
    with pytest.raises(ValueError):
        peers._contract(cols, wm, "bmm")


# --------------------------------------------------------------------------- suite plumbing
def test_cupy_backend_and_unknown_impls_are_skips_not_errors():
    if importlib.util.find_spec("cupy") is None or importlib.util.find_spec("pacnp.cuda") is None:
        with pytest.raises(NotImplementedError):
            common.make_runner("pacnp", "W1", "cupy")
    with pytest.raises(ValueError):
        common.make_runner("nope", "W1")
    w = Workload("pool", 1, 2, 2, 2, 3, 5, padding=1)
    if importlib.util.find_spec("torch") is not None:
        with pytest.raises(NotImplementedError):
            common.make_runner("torch_unfold_mm", w)


def test_asv_classes_are_parameterised_by_backend_workload_impl():
    from importlib import import_module

    mods = [
        import_module(f"{bench._SUITE_MODULE}.{m}")
        for m in ("bench_pacconv", "bench_pacpool", "bench_pacconv_transpose", "bench_packernel")
    ]
    seen = set()
    for mod in mods:
        for name, cls in vars(mod).items():
            if name.startswith("_") or not isinstance(cls, type):
                continue
            methods = [m for m in dir(cls) if m.startswith(("time_", "peakmem_", "track_"))]
            if not methods:
                continue
            assert cls.param_names[0] == "backend" and cls.params[0] == ["numpy", "cupy"], name
            seen.update(m.split("_")[0] for m in methods)
            for wl in cls.params[1] if cls.param_names[1] == "workload" else []:
                assert wl in common.WORKLOADS
    assert seen == {"time", "peakmem", "track"}


#: the memory probes measured in a fresh interpreter, as the ratio table runs them: in the
#: test process, memory freed by earlier tests (and glibc's dynamic mmap threshold) can serve a
#: 16 MiB buffer from pages already resident, and the probe would rightly see no growth
_PROBE = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from cases import load_ratio_table
common = load_ratio_table().load_suite()
common.fix_malloc_threshold()

def hold():
    a = np.ones(16 * 2**20 // 8)
    time.sleep(0.05)
    return a

if common.peak_rss_supported():
    print("peak", common.measure_extra_peak(hold)[0])
print("sampled", common.measure_extra_sampled(hold)[0])
extra, _, method = common.measure_extra(hold)
print(method, extra)
"""


def _probe():
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(Path(__file__).resolve().parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return {k: int(v) for k, v in (line.split() for line in proc.stdout.splitlines())}


def test_extra_peak_memory_sees_a_buffer():
    if not common.peak_rss_supported():
        pytest.skip("needs /proc/self/clear_refs")
    assert 15 * 2**20 <= _probe()["peak"] <= 40 * 2**20


def test_sampled_memory_probe_sees_a_buffer():
    """The fallback where VmHWM cannot be reset: RSS sampled while the call runs. The call holds
    its buffer long enough for the sampler to see it; ``measure_extra`` picks the method."""
    got = _probe()
    assert 15 * 2**20 <= got["sampled"] <= 40 * 2**20
    method = "VmHWM" if common.peak_rss_supported() else "sampled"
    assert 15 * 2**20 <= got[method] <= 40 * 2**20


# --------------------------------------------------------------------------- the table
TINY = {
    "W1": Workload("conv", 1, 2, 3, 2, 3, 8, padding=1),
    "W2": Workload("conv", 1, 3, 3, 2, 3, 8, padding=1),
    "W3": Workload("pool", 1, 2, 2, 2, 3, 8, stride=2, padding=1, normalize=True),
    "W4": Workload("transpose", 1, 2, 3, 2, 3, 4, stride=2, padding=1, output_padding=1),
}


def test_table_builder_on_tiny_workloads():
    cfg = bench.Config(
        repeats=1,
        min_time=0.0,
        memory=False,
        startup=False,
        dtype="float64",
        settle=0.0,
        workloads=TINY,
        pixel_sizes=(8, 16),
    )
    table = bench.build_table(cfg)
    rows = {r.metric: r for r in table.rows}
    assert "W1 fwd (two-step) / GEMM (64×18)@(18×3)" in rows
    sections = {r.section.split(":")[0].split(" (")[0] for r in table.rows}
    assert any(s.startswith("pacnp vs one NumPy GEMM") for s in sections)
    assert any(s.startswith("thread scaling") for s in sections)
    assert any(s.startswith("pixel scaling") for s in sections)
    for r in table.rows:
        assert r.status in ("PASS", "MISS", "info", "n/a"), r
        if r.status in ("PASS", "MISS", "info"):
            assert r.value > 0, r
    assert all(t > 0 for t in table.times.values())
    text, md = bench.format_text(table), bench.format_markdown(table)
    assert "machine:" in text and "threading layer" in text
    assert md.count("\n|") >= len(table.rows) + 1
    assert "PASS" in text or "MISS" in text


def test_time_interleaved_groups_families_and_counts_samples():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a1", "b1", "a2")}
    fam = {"a1": "A", "a2": "A", "b1": "B"}
    t = bench.time_interleaved(fns, repeats=3, min_time=0.0, warmup=1, families=fam, settle=0.0)
    assert set(t) == set(fns) and all(v >= 0 for v in t.values())
    rounds = calls[6:]  # after warm-up + calibration (2 calls each); settle=0: no extra call
    # visited family by family, each round starting a family at its next member
    assert rounds == ["a1", "a2", "b1", "a2", "a1", "b1"]
    assert len(calls) == 6 + 2 * 3  # calibration was the first sample (number == 1)


def test_row_status():
    assert bench.Row("s", "m", 1.5, "×", ("<=", 2.0)).status == "PASS"
    assert bench.Row("s", "m", 2.5, "×", ("<=", 2.0)).status == "MISS"
    assert bench.Row("s", "m", 7.0, "×", (">=", 6.0)).status == "PASS"
    assert bench.Row("s", "m", 3.0, "MiB", None).status == "info"
    assert bench.Row("s", "m", None, "×", (">=", 6.0)).status == "n/a"
    assert bench.Row("s", "m", 12.0, "MiB", ("<=", 32.0)).fmt_target() == "≤ 32 MiB"


@pytest.mark.parametrize("kind", ["memory", "startup"])
def test_probes_run_in_a_fresh_process(kind):
    """One memory and one (warm-cache) start-up probe on a tiny workload."""
    cfg = bench.Config()
    spec = {
        "suite": str(bench.find_suite_dir()),
        "workload": dataclasses.asdict(TINY["W2"]),
        "impl": "pacnp",
        "dtype": "float64",
        "threads": None,
        "pass": "backward" if kind == "memory" else "forward",
    }
    res, wall = bench._run_probe(kind, spec, cfg)
    json.dumps(res)
    assert res["t_import"] > 0 and wall > 0
    if kind == "memory":
        assert res["extra"] >= 0 and res["output_bytes"] > 0 and res["kernel_bytes"] > 0
    else:
        assert res["t_first"] > 0 and res["threading_layer"]


def test_ratio_table_script_runs_from_anywhere(tmp_path):
    """``python asv_benchmarks/ratio_table.py`` finds the suite beside it whatever the working
    folder (``make bench`` runs it from the repository root)."""
    proc = subprocess.run(
        [sys.executable, str(RATIO_TABLE), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "ratio_table.py" in proc.stdout
    assert bench.find_suite_dir() == RATIO_TABLE.parent / "benchmarks"


def test_bench_runs_without_torch():
    """The table needs only NumPy and numba: with torch unimportable the peer rows read n/a."""
    code = textwrap.dedent("""
        import importlib.util, sys
        sys.modules["torch"] = None  # import torch now raises ImportError
        spec = importlib.util.spec_from_file_location("_pacnp_ratio_table", sys.argv[1])
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench
        spec.loader.exec_module(bench)
        common = bench.load_suite()
        W = common.Workload
        tiny = {"W1": W("conv", 1, 2, 3, 2, 3, 8, padding=1),
                "W4": W("transpose", 1, 2, 3, 2, 3, 4, stride=2, padding=1, output_padding=1)}
        cfg = bench.Config(repeats=1, min_time=0.0, memory=False, startup=False,
                           dtype="float64", settle=0.0, workloads=tiny, pixel_sizes=None,
                           quick=True)
        t = bench.build_table(cfg)
        unfold = [r for r in t.rows if "unfold" in r.metric]
        assert unfold and all(r.status == "n/a" for r in unfold), unfold
        assert any(r.status in ("PASS", "MISS") for r in t.rows)
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print("ok")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(RATIO_TABLE)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_ab_trees_compares_a_tree_with_itself():
    """``asv_benchmarks/ab_trees.py`` (the before/after numbers of docs/performance.md) runs
    end to end: both trees, fresh processes, a row per measured call, ``--parts`` included."""
    root = RATIO_TABLE.parent.parent
    script = RATIO_TABLE.parent / "ab_trees.py"
    args = ["--workloads", "W4", "--impls", "two-step", "--rounds", "1", "--calls", "1"]
    proc = subprocess.run(
        [sys.executable, str(script), str(root), str(root), *args, "--parts"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("W4 two-step "):
            what, old, new, ratio = line[len("W4 two-step ") :].split()
            rows[what] = (float(old), float(new), float(ratio))
    assert set(rows) == {"fwd", "fwd+bwd", "kernel", "op"}, proc.stdout
    assert all(old > 0 and new > 0 for old, new, _ in rows.values()), rows
