"""The performance table of pacnp, target by target: ``python asv_benchmarks/ratio_table.py``
(``make bench``).

Runs, in one process (plus fresh subprocesses for memory and start-up), the measurements of the
performance targets on the workloads W1–W4 of the asv suite (``benchmarks/`` beside this script,
whose workloads, runners and memory probes it uses: the table and asv time exactly the same
calls), and prints one row per ratio with its target and PASS/MISS:

* pacnp vs one NumPy float32 GEMM of the equivalent im2col shape (forward ≤ 2×, forward+backward
  ≤ 6×; W1 and W2);
* pacnp vs the PyTorch unfold+einsum formulation of the 2019 reference code (≥ 6× W1 forward,
  ≥ 4× W1 forward+backward, ≥ 6× W4 forward), and — information — vs the same formulation with
  the einsum written as a matmul, and vs dense ``conv2d`` / ``conv_transpose2d`` / ``avg_pool2d``;
* thread scaling (2 threads vs 1, ≥ 1.6×) and pixel scaling (4× the pixels, ≤ 4.4× the time);
* extra peak memory of W2 forward and backward (≤ 32 MiB beyond inputs, outputs and one K);
* start-up: cold compile of a W1 forward+backward (fresh ``NUMBA_CACHE_DIR``), and the first W1
  forward of a fresh process with a warm cache;
* volumes and signals (``bench_filters``): W8, the 3-D bilateral filter of a 128³ volume with a
  9³ window, against SimpleITK's ``BilateralImageFilter`` (≥ 10×; n/a without SimpleITK), and
  W9, the 1-D joint bilateral filter of a 2²⁰-sample RGB signal (window 31): its time per tap
  against the 2-D filter's (W5, 1024² RGB, 11×11; information).

"forward" is from the guide (``packernel2d`` + op, or the fused op); "forward+backward" adds every
gradient (input, guide, weight, bias). Times are medians over interleaved rounds (each sample
batches calls up to ``min_time``), after a warm-up call, so JIT compilation is never timed. Rows
for the fused path (``pacnp.pacconv2d_fused`` …) appear when it exists.

Options: ``--quick`` (few repeats, target rows only, no start-up, no W8 / W9: the CI smoke),
``--no-volumes`` (no W8 / W9: SimpleITK takes seconds per call), ``--markdown`` (a
table to paste in the README), ``--threads N``, ``--strict`` (exit 1 on a MISS), ``--json FILE``.
Needs pacnp (installed or importable), NumPy and numba; torch (the peers) is optional — its rows
then read ``n/a``. A script of the source tree, not of the package: it needs the suite beside it,
which an installed pacnp does not have.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: the asv suite this table measures with
SUITE_DIR = Path(__file__).resolve().parent / "benchmarks"
#: the suite is imported under this private name (``benchmarks`` is too common a name to claim)
_SUITE_MODULE = "_pacnp_bench_suite"
MIB = 2**20

#: (op, impl label) pairs; "pacnp" is the two-step path
PACNP_IMPLS = ("pacnp", "pacnp_fused")
LABEL = {
    "pacnp": "two-step",
    "pacnp_fused": "fused",
    "torch_unfold": "unfold+einsum",
    "torch_unfold_mm": "unfold+matmul",
    "torch_dense": "dense torch",
    "gemm": "GEMM",
}
PASS_LABEL = {"forward": "fwd", "backward": "bwd", "forward_backward": "fwd+bwd"}


# --------------------------------------------------------------------------- the suite
def find_suite_dir(explicit=None) -> Path:
    """The asv suite: ``benchmarks/`` beside this script, or ``explicit``."""
    path = Path(explicit) if explicit else SUITE_DIR
    if not (path / "common.py").is_file():
        raise FileNotFoundError(f"no asv suite (common.py) in {path}")
    return path.resolve()


def load_suite(path=None):
    """Import the suite package under a private name; returns its ``common`` module."""
    path = Path(path) if path is not None else find_suite_dir()
    mod = sys.modules.get(_SUITE_MODULE)
    if mod is None or Path(mod.__path__[0]) != path:
        spec = importlib.util.spec_from_file_location(
            _SUITE_MODULE, path / "__init__.py", submodule_search_locations=[str(path)]
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_SUITE_MODULE] = mod
        for name in [n for n in sys.modules if n.startswith(_SUITE_MODULE + ".")]:
            del sys.modules[name]
        spec.loader.exec_module(mod)
    return importlib.import_module(_SUITE_MODULE + ".common")


def torch_available():
    return importlib.util.find_spec("torch") is not None


# --------------------------------------------------------------------------- rows
@dataclass
class Row:
    section: str
    metric: str
    value: float | None  # None: not measured (reason in detail)
    unit: str = "×"  # × | MiB | s
    target: tuple | None = None  # ("<=", 2.0) | (">=", 6.0) | None (information)
    detail: str = ""

    @property
    def status(self):
        if self.value is None:
            return "n/a"
        if self.target is None:
            return "info"
        op, bound = self.target
        ok = self.value <= bound if op == "<=" else self.value >= bound
        return "PASS" if ok else "MISS"

    def fmt_value(self):
        if self.value is None:
            return "n/a"
        if self.unit == "×":
            return f"{self.value:.2f}×"
        if self.unit == "MiB":
            return f"{self.value + 0.0 if abs(self.value) >= 0.05 else 0.0:.1f} MiB"
        return f"{self.value:.2f} {self.unit}"

    def fmt_target(self):
        if self.target is None:
            return "—"
        op, bound = self.target
        sym = "≤" if op == "<=" else "≥"
        b = f"{bound:g}"
        return f"{sym} {b}×" if self.unit == "×" else f"{sym} {b} {self.unit}"


@dataclass
class Config:
    repeats: int = 11
    min_time: float = 0.05  # a sample batches calls until it lasts this long
    warmup: int = 2  # untimed calls before calibration
    settle: float = 0.3  # pause when switching thread pools (see time_interleaved)
    threads: int | None = None  # None: numba's maximum
    quick: bool = False  # target rows only
    memory: bool = True
    startup: bool = True
    volumes: bool = True  # W8 / W9 (bench_filters)
    pixel_sizes: tuple = (128, 256)  # (a, b): W1 layer at a² and b²; target 1.1·(b/a)²
    dtype: str = "float32"
    suite: str | None = None
    workloads: dict | None = None  # name → Workload; default the suite's W1–W4
    subprocess_timeout: float = 600.0
    impls: tuple | None = None  # pacnp impls to measure; default the available ones
    log: object = field(default=None, repr=False)

    def say(self, msg):
        if self.log is not None:
            print(msg, file=self.log, flush=True)


# --------------------------------------------------------------------------- timing
def time_interleaved(fns, repeats, min_time, warmup=2, families=None, settle=0.3):
    """Median seconds per call of each callable.

    Each callable is called ``warmup`` times (compiled code loaded, allocator settled), then
    once more timed to calibrate ``number``, the calls per sample (a sample lasts ≥
    ``min_time``; with ``number == 1`` that call is the first sample), then sampled in rounds
    that visit every callable in turn, so that drifts of the machine hit all of them alike,
    until each has ``repeats`` samples. The cyclic GC is off while sampling (as in ``timeit``).

    ``families`` maps a callable to the thread pool it runs on (numba, torch, BLAS). Callables
    are visited family by family (each round starting a family at the next member), and before
    the first sample of a family the clock waits
    ``settle`` seconds, then makes one untimed call: the threads of the pool used last keep
    spinning after a call (OpenBLAS's for ~0.1 s), and on a 2-core machine a spinning thread
    takes a core from the next call; after the pause, the first call would pay for waking its
    own pool's threads.
    """
    families = families or {}
    order = sorted(
        fns, key=lambda k: list(dict.fromkeys(families.get(n) for n in fns)).index(families.get(k))
    )
    fns = {name: fns[name] for name in order}
    numbers = {}
    samples = {name: [] for name in fns}
    last = [None]

    def settle_if_switching(name):
        fam = families.get(name)
        if fam != last[0] and last[0] is not None and settle > 0:
            time.sleep(settle)
            fns[name]()  # untimed: wakes this pool's threads (and the cores) after the pause
        last[0] = fam

    for name, fn in fns.items():
        settle_if_switching(name)
        for _ in range(max(1, warmup)):
            fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        numbers[name] = max(1, int(min_time / max(dt, 1e-9)) + (0 if dt >= min_time else 1))
        if numbers[name] == 1:
            samples[name].append(dt)
    groups = {}
    for name in fns:
        groups.setdefault(families.get(name), []).append(name)
    gc.collect()
    gc.disable()
    try:
        r = 0
        while any(len(v) < max(1, repeats) for v in samples.values()):
            # each round starts each family at another member: none is always first after a pause
            round_order = [m for g in groups.values() for m in g[r % len(g) :] + g[: r % len(g)]]
            r += 1
            for name in round_order:
                fn = fns[name]
                if len(samples[name]) >= max(1, repeats):
                    continue
                settle_if_switching(name)
                n = numbers[name]
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[name].append((time.perf_counter() - t0) / n)
    finally:
        gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


class _Threads:
    """Callable wrapper that runs a pacnp call with numba on ``n`` threads (then back to
    ``back``). Only numba's count changes: torch's ``set_num_threads`` is not cheap, and the
    1-thread timings are of pacnp only."""

    def __init__(self, n, back, fn):
        self.n, self.back, self.fn = n, back, fn

    def __call__(self):
        import numba

        numba.set_num_threads(self.n)
        try:
            return self.fn()
        finally:
            numba.set_num_threads(self.back)


def _ms(t):
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.3f} s"


# --------------------------------------------------------------------------- subprocess probes
def _probe_env(common, extra=None):
    env = dict(os.environ)
    # glibc's mmap threshold from the start (freed buffers leave RSS), as the suite's
    # fix_malloc_threshold sets it once the probe runs
    env["MALLOC_MMAP_THRESHOLD_"] = str(common.MMAP_THRESHOLD)
    env.update(extra or {})
    return env


#: a probe process: ``import pacnp`` timed first, then this script loaded by its path
_PROBE_CODE = """\
import sys, time
t0 = time.perf_counter()
import pacnp
t_import = time.perf_counter() - t0
import importlib.util
spec = importlib.util.spec_from_file_location("_pacnp_ratio_table", sys.argv[3])
table = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = table
spec.loader.exec_module(table)
table._probe_main(sys.argv[1], sys.argv[2], t_import)
"""


def _run_probe(kind, spec, cfg, env_extra=None):
    """Run a probe in a fresh interpreter; returns (its JSON result, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE_CODE, kind, json.dumps(spec), str(Path(__file__).resolve())],
        capture_output=True,
        text=True,
        env=_probe_env(load_suite(spec["suite"]), env_extra),
        timeout=cfg.subprocess_timeout,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(last), wall


def _workload_spec(w):
    return dataclasses.asdict(w)


def _probe_main(kind, spec_json, t_import):
    """Entry point of the probe subprocesses (``_run_probe``)."""
    spec = json.loads(spec_json)
    common = load_suite(spec["suite"])
    w = common.Workload(**spec["workload"])
    if kind == "memory":
        common.fix_malloc_threshold()
    runner = common.make_runner(spec["impl"], w, "numpy", np.dtype(spec["dtype"]))
    common.set_threads(spec.get("threads"))
    which = spec["pass"]
    out = {"t_import": t_import}
    if kind == "startup":
        t0 = time.perf_counter()
        runner.run(which)
        out["t_first"] = time.perf_counter() - t0
        import numba

        out["threading_layer"] = numba.threading_layer()
    elif kind == "memory":
        runner.warm_up((which,))
        if which == "backward":
            runner.prepare_backward()
        extra, result, out["method"] = common.measure_extra(lambda: runner.run(which))
        del result
        out.update(
            extra=extra, output_bytes=runner.output_bytes[which], kernel_bytes=runner.kernel_bytes
        )
    else:
        raise ValueError(kind)
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- other load
class CpuWatch:
    """How busy the machine was with *other* processes during the run (Linux /proc/stat):
    busy CPU time of the whole machine minus this process's and its children's, as a share of
    wall time × cores; and the hypervisor's steal. Timings taken while another process competes
    for the cores (a test run, a build) are not worth much — the table says so."""

    def __init__(self):
        self.t0, self.stat0, self.own0 = time.perf_counter(), self._stat(), self._own()

    @staticmethod
    def _stat():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        steal = v[7] if len(v) > 7 else 0
        return sum(v[:8]) - idle - steal, steal

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def report(self):
        s1 = self._stat()
        if self.stat0 is None or s1 is None:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        wall = time.perf_counter() - self.t0
        cores = os.cpu_count() or 1
        busy = (s1[0] - self.stat0[0]) / tick
        steal = (s1[1] - self.stat0[1]) / tick
        other = max(0.0, busy - (self._own() - self.own0))
        return {"other": other / (wall * cores), "steal": steal / (wall * cores), "wall": wall}


# --------------------------------------------------------------------------- machine
def machine_info():
    info = {"cpu": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cores_usable"] = os.cpu_count()
    import numba

    info["numba"] = numba.__version__
    info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    try:
        info["threading_layer"] = numba.threading_layer()
    except ValueError:
        info["threading_layer"] = "(no parallel kernel has run yet)"
    info["numpy"] = np.__version__
    try:
        from threadpoolctl import threadpool_info

        blas = [
            f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')})"
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ]
        info["blas"] = "; ".join(sorted(set(blas))) or "?"
    except Exception:  # noqa: BLE001 - information only
        info["blas"] = "?"
    if sys.modules.get("torch") is not None:
        info["torch"] = sys.modules["torch"].__version__
    info["python"] = platform.python_version()
    return info


# --------------------------------------------------------------------------- the table
class Table:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rows: list[Row] = []
        self.times: dict = {}  # (workload, impl, pass, threads) → seconds
        self.info: dict = {}
        self.notes: list[str] = []

    def add(self, *a, **kw):
        self.rows.append(Row(*a, **kw))


def _pacnp_impls(common, cfg):
    if cfg.impls is not None:
        return tuple(cfg.impls)
    return tuple(i for i in PACNP_IMPLS if i == "pacnp" or common.fused_available("conv"))


def _runner(common, impl, w, cfg):
    try:
        return common.make_runner(impl, w, "numpy", np.dtype(cfg.dtype))
    except NotImplementedError as exc:
        cfg.say(f"  skip {impl} on {w.describe()}: {exc}")
        return None


def _measure_group(common, cfg, table, entries, impls, passes, gemm=False, one_thread=()):
    """Time every (workload, impl, pass) of ``entries`` — (name, Workload) pairs timed together,
    interleaved — and store the medians in ``table.times`` under (name, impl, pass, threads).
    ``gemm``: also the GEMM baseline of each workload; ``one_thread``: (impl, pass) pairs also
    timed on 1 thread."""
    n = common.set_threads(cfg.threads)
    fns = {}
    runners = []
    for wname, w in entries:
        for impl in impls:
            r = _runner(common, impl, w, cfg)
            if r is None:
                continue
            runners.append(r)
            for p in passes:
                fns[(wname, impl, p, n)] = lambda r=r, p=p: r.run(p)
                if (impl, p) in one_thread and n > 1:
                    fns[(wname, impl, p, 1)] = _Threads(1, n, lambda r=r, p=p: r.run(p))
        if gemm:
            g = common.Gemm(w, "numpy", np.dtype(cfg.dtype))
            fns[(wname, "gemm", "", n)] = g.run
        cfg.say(f"timing {wname}: {w.describe()}")
    cfg.say(f"  {len(fns)} callables × {cfg.repeats} rounds")
    families = {
        k: ("blas" if k[1] == "gemm" else "torch" if k[1].startswith("torch") else "numba")
        for k in fns
    }
    table.times.update(
        time_interleaved(fns, cfg.repeats, cfg.min_time, cfg.warmup, families, cfg.settle)
    )
    del runners, fns


def _ratio(table, num, den, names=None):
    """times[num] / times[den] and a detail 'name a / name b' (None, '' if either is missing)."""
    a, b = table.times.get(num), table.times.get(den)
    if a is None or b is None:
        return None, "not measured"
    na, nb = names or (LABEL.get(num[1], num[1]), LABEL.get(den[1], den[1]))
    return a / b, f"{na} {_ms(a)} / {nb} {_ms(b)}"


def build_table(cfg: Config | None = None) -> Table:
    """Measure everything and return the rows (the CLI prints them; tests call this on tiny
    workloads)."""
    cfg = cfg or Config()
    watch = CpuWatch()
    common = load_suite(cfg.suite)
    suite_dir = str(Path(common.__file__).parent)
    W = dict(cfg.workloads or common.WORKLOADS)
    table = Table(cfg)
    have_torch = torch_available()
    impls = _pacnp_impls(common, cfg)
    n = common.set_threads(cfg.threads)
    table.info["threads"] = n
    if not have_torch:
        table.notes.append("torch is not installed: peer rows read n/a")

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):  # the GEMM baseline on n threads too
        # ---- timings of W1–W4 (quick: only what the target rows need)
        fb = ("forward", "forward_backward")
        pairs = tuple((i, p) for i in impls for p in fb)
        peers_all = ("torch_unfold", "torch_unfold_mm", "torch_dense")
        plan = {  # workload → (peers, passes, gemm, thread pairs)
            "W1": (("torch_unfold",) if cfg.quick else peers_all, fb, True, pairs),
            "W2": (() if cfg.quick else peers_all, fb, True, pairs),
            "W3": (peers_all, fb, False, ()),
            "W4": (("torch_unfold",), ("forward",), False, ())
            if cfg.quick
            else (peers_all, fb, False, ()),
        }
        for wname, (peers, passes, gemm, thr) in plan.items():
            if wname not in W or (cfg.quick and wname == "W3"):
                continue
            peers = peers if have_torch else ()
            _measure_group(
                common,
                cfg,
                table,
                [(wname, W[wname])],
                impls + peers,
                passes,
                gemm=gemm,
                one_thread=thr,
            )
        # ---- pixel scaling of the W1 layer (both sizes interleaved)
        if "W1" in W and cfg.pixel_sizes:
            _measure_group(
                common,
                cfg,
                table,
                [(f"W1@{hw}", W["W1"].scaled(hw)) for hw in cfg.pixel_sizes],
                impls,
                fb,
            )

    # ---- rows: GEMM
    sec = "pacnp vs one NumPy GEMM of the im2col shape"
    for wname, (tf, tb) in (("W1", (2.0, 6.0)), ("W2", (2.0, 6.0))):
        if wname not in W:
            continue
        M, K, N = W[wname].gemm_shape
        for impl in impls:
            for p, bound in (("forward", tf), ("forward_backward", tb)):
                v, d = _ratio(table, (wname, impl, p, n), (wname, "gemm", "", n))
                table.add(
                    sec,
                    f"{wname} {PASS_LABEL[p]} ({LABEL[impl]}) / GEMM ({M}×{K})@({K}×{N})",
                    v,
                    "×",
                    ("<=", bound),
                    d,
                )
    # ---- rows: unfold formulation
    sec = "speed-up over the PyTorch unfold formulation"
    targets = [("W1", "forward", 6.0), ("W1", "forward_backward", 4.0), ("W4", "forward", 6.0)]
    for wname, p, bound in targets:
        if wname not in W:
            continue
        for impl in impls:
            for peer, tgt in (("torch_unfold", (">=", bound)), ("torch_unfold_mm", None)):
                if cfg.quick and peer != "torch_unfold":
                    continue
                v, d = _ratio(table, (wname, peer, p, n), (wname, impl, p, n))
                if v is None and not have_torch:
                    d = "torch is not installed"
                table.add(
                    sec, f"{wname} {PASS_LABEL[p]}: {LABEL[peer]} / {LABEL[impl]}", v, "×", tgt, d
                )
    if not cfg.quick:
        for wname in ("W2", "W3", "W4"):
            if wname not in W:
                continue
            for p in ("forward", "forward_backward"):
                if (wname, p) in {(t[0], t[1]) for t in targets}:
                    continue
                for impl in impls:
                    for peer in ("torch_unfold", "torch_unfold_mm"):
                        v, d = _ratio(table, (wname, peer, p, n), (wname, impl, p, n))
                        if v is None:
                            continue
                        table.add(
                            sec,
                            f"{wname} {PASS_LABEL[p]}: {LABEL[peer]} / {LABEL[impl]}",
                            v,
                            "×",
                            None,
                            d,
                        )
    # ---- rows: dense torch (information: the practical floor)
    sec = "pacnp vs dense torch of the same shape (no adaptive kernel; information)"
    for wname in ("W1", "W2", "W3", "W4"):
        for p in ("forward", "forward_backward"):
            for impl in impls:
                v, d = _ratio(table, (wname, impl, p, n), (wname, "torch_dense", p, n))
                if v is not None:
                    table.add(
                        sec, f"{wname} {PASS_LABEL[p]}: {LABEL[impl]} / dense", v, "×", None, d
                    )
    # ---- rows: threads
    sec = f"thread scaling: 1 thread / {n} threads"
    for wname in ("W1", "W2"):
        if wname not in W:
            continue
        for impl in impls:
            for p in ("forward", "forward_backward"):
                v, d = _ratio(
                    table, (wname, impl, p, 1), (wname, impl, p, n), ("1 thread", f"{n} threads")
                )
                if n == 1:
                    v, d = None, "1 thread available: nothing to compare"
                table.add(sec, f"{wname} {PASS_LABEL[p]} ({LABEL[impl]})", v, "×", (">=", 1.6), d)
    # ---- rows: pixels
    if "W1" in W and cfg.pixel_sizes:
        a, b = cfg.pixel_sizes
        sec = f"pixel scaling: W1 layer {a}² → {b}² ({(b / a) ** 2:g}× the pixels)"
        for impl in impls:
            for p in ("forward", "forward_backward"):
                v, d = _ratio(
                    table, (f"W1@{b}", impl, p, n), (f"W1@{a}", impl, p, n), (f"{b}²", f"{a}²")
                )
                table.add(
                    sec,
                    f"{PASS_LABEL[p]} ({LABEL[impl]}) time ratio",
                    v,
                    "×",
                    ("<=", round(1.1 * (b / a) ** 2, 3)),
                    d,
                )

    # ---- rows: volumes and signals
    if cfg.volumes and not cfg.quick and cfg.workloads is None:
        _volumes_and_signals(cfg, table, n)

    # ---- rows: memory
    if cfg.memory and "W2" in W:
        sec = "extra peak memory, W2 (beyond inputs, outputs and one K-sized array)"
        peers = () if cfg.quick or not have_torch else ("torch_unfold", "torch_unfold_mm")
        for impl in impls + peers:
            for p in ("forward", "backward"):
                spec = dict(
                    suite=suite_dir,
                    workload=_workload_spec(W["W2"]),
                    impl=impl,
                    pass_=p,
                    dtype=cfg.dtype,
                    threads=n,
                )
                spec["pass"] = spec.pop("pass_")
                cfg.say(f"memory probe: W2 {PASS_LABEL[p]} {LABEL[impl]}")
                try:
                    res, _ = _run_probe("memory", spec, cfg)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    table.add(
                        sec,
                        f"W2 {PASS_LABEL[p]} ({LABEL[impl]})",
                        None,
                        "MiB",
                        ("<=", 32.0),
                        f"probe failed: {str(exc)[:200]}",
                    )
                    continue
                extra = res["extra"] - res["output_bytes"] - res["kernel_bytes"]
                d = (
                    f"peak +{res['extra'] / MIB:.1f} MiB − outputs {res['output_bytes'] / MIB:.1f}"
                    f" − K {res['kernel_bytes'] / MIB:.1f} ({res['method']})"
                )
                table.add(
                    sec,
                    f"W2 {PASS_LABEL[p]} ({LABEL[impl]})",
                    extra / MIB,
                    "MiB",
                    ("<=", 32.0) if impl in impls else None,
                    d,
                )
        table.notes.append(
            "Memory: a fresh process per row; after a warm-up call (and, for bwd, the forward "
            "whose state the backward takes), the peak RSS (VmHWM, reset through "
            "/proc/self/clear_refs) "
            "minus the RSS just before the call; glibc's mmap threshold fixed at 64 KiB so freed "
            "buffers leave RSS. Subtracted: the call's outputs and one K-sized array (K of the "
            "two-step forward, dK of its backward)."
        )

    # ---- rows: start-up
    if cfg.startup and "W1" in W:
        sec = "start-up (W1, fresh processes)"
        for impl in impls:
            with tempfile.TemporaryDirectory(prefix="pacnp-numba-cache-") as cache:
                env = {"NUMBA_CACHE_DIR": cache}
                base = dict(
                    suite=suite_dir,
                    workload=_workload_spec(W["W1"]),
                    impl=impl,
                    dtype=cfg.dtype,
                    threads=n,
                )
                try:
                    cfg.say(f"start-up probe: cold compile, {LABEL[impl]}")
                    cold, cold_wall = _run_probe(
                        "startup", dict(base, **{"pass": "forward_backward"}), cfg, env
                    )
                    cfg.say(f"start-up probe: warm cache, {LABEL[impl]}")
                    warm, warm_wall = _run_probe(
                        "startup", dict(base, **{"pass": "forward"}), cfg, env
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    table.add(
                        sec,
                        f"start-up ({LABEL[impl]})",
                        None,
                        "s",
                        None,
                        f"probe failed: {str(exc)[:200]}",
                    )
                    continue
            table.add(
                sec,
                f"cold compile: first fwd+bwd, empty cache ({LABEL[impl]})",
                cold["t_first"],
                "s",
                None,
                f"process {cold_wall:.1f} s incl. import pacnp {cold['t_import']:.2f} s",
            )
            table.add(
                sec,
                f"warm cache: first fwd in a fresh process ({LABEL[impl]})",
                warm["t_first"],
                "s",
                None,
                f"process {warm_wall:.2f} s incl. import pacnp {warm['t_import']:.2f} s",
            )
            table.info.setdefault("threading_layer_probe", warm.get("threading_layer"))

    table.info.update(machine_info())
    load = watch.report()
    if load is not None:
        table.info["other_load"] = load
        if load["other"] > 0.05 or load["steal"] > 0.05:
            table.notes.insert(
                0,
                (
                    f"WARNING: other processes used {100 * load['other']:.0f}% and the hypervisor "
                    f"stole {100 * load['steal']:.0f}% of the machine's CPU time during this run: "
                    f"the timings are unreliable (numba's and torch's threads wait for each other "
                    f"at "
                    f"barriers when a core is taken); run again on a quiet machine."
                ),
            )
    if sys.modules.get("torch") is not None:
        table.info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return table


#: the filter rows' implementation names (LABEL's "pacnp" is the two-step PAC path)
FILTER_IMPL = {"pacnp": "pacnp.filters"}


def _volumes_and_signals(cfg, table, n):
    """W8 (pacnp vs SimpleITK, interleaved rounds: seconds per call, so few) and W9 against
    W5's pacnp (interleaved), as rows of their own section."""
    bf = importlib.import_module(_SUITE_MODULE + ".bench_filters")
    sec = "volumes and signals (bench_filters: W8 3-D, W9 1-D)"
    vol = bf.w8_volume()
    fns, families = {}, {}
    for impl in bf.IMPLS_W8:
        try:
            key = ("W8", FILTER_IMPL.get(impl, impl), "forward", n)
            fns[key] = bf.w8_runner(impl, vol)
            families[key] = "numba" if impl == "pacnp" else impl
        except NotImplementedError as exc:
            cfg.say(f"  skip W8 {impl}: {exc}")
    cfg.say(f"timing W8: 3-D bilateral {bf.W8_SIZE}³, 9³ window ({', '.join(k[1] for k in fns)})")
    table.times.update(time_interleaved(fns, min(cfg.repeats, 3), 0.0, 1, families, cfg.settle))
    v, d = _ratio(
        table,
        ("W8", "simpleitk", "forward", n),
        ("W8", "pacnp.filters", "forward", n),
        ("SimpleITK", "pacnp"),
    )
    if v is None and ("W8", "simpleitk", "forward", n) not in fns:
        d = "SimpleITK is not installed"
    table.add(
        sec, f"W8 3-D bilateral {bf.W8_SIZE}³, 9³: SimpleITK / pacnp", v, "×", (">=", 10.0), d
    )
    cfg.say("timing W9: 1-D joint bilateral 2^20 × 3, window 31, and W5 (2-D)")
    fns = {
        ("W9", "pacnp.filters", "forward", n): bf.w9_runner(bf.w9_signal()),
        ("W5", "pacnp.filters", "forward", n): bf.w5_runner("pacnp", bf.w5_image(1024)),
    }
    table.times.update(time_interleaved(fns, min(cfg.repeats, 5), 0.0, 1, None, cfg.settle))
    t1, t2 = (
        table.times[("W9", "pacnp.filters", "forward", n)],
        table.times[("W5", "pacnp.filters", "forward", n)],
    )
    taps1, taps2 = 2 * bf.W9_RADIUS + 1, (2 * bf.RADIUS + 1) ** 2
    ns1 = t1 / (bf.W9_SAMPLES * taps1) * 1e9
    ns2 = t2 / (1024 * 1024 * taps2) * 1e9
    table.add(
        sec,
        "W9 1-D joint bilateral 2²⁰×3, 31 taps: time per tap / W5 2-D's",
        ns1 / ns2,
        "×",
        None,
        f"1-D {_ms(t1)} = {t1 / bf.W9_SAMPLES * 1e9:.1f} ns/sample, {ns1:.3f} ns/tap; "
        f"2-D (W5, 11×11) {_ms(t2)} = {ns2:.3f} ns/tap",
    )


# --------------------------------------------------------------------------- output
def _machine_lines(table):
    i = table.info
    lines = [
        f"machine: {i.get('cpu')}, {i.get('cores')} cores ({i.get('cores_usable')} usable), "
        f"Python {i.get('python')}",
        f"numba {i.get('numba')}: threading layer {i.get('threading_layer')}, "
        f"{i.get('threads')} threads (NUMBA_NUM_THREADS={i.get('numba_threads')}); "
        f"numpy {i.get('numpy')}, BLAS {i.get('blas')}"
        + (f"; torch {i['torch']} on {i.get('torch_threads')} threads" if "torch" in i else ""),
    ]
    if "other_load" in i:
        ld = i["other_load"]
        lines.append(
            f"other processes during the run: {100 * ld['other']:.1f}% of the CPU time "
            f"(steal {100 * ld['steal']:.1f}%), over {ld['wall']:.0f} s"
        )
    return lines


def format_text(table):
    out = _machine_lines(table) + [""]
    widths = [max([len(r.metric) for r in table.rows] + [6]), 11, 9, 6]
    sec = None
    for r in table.rows:
        if r.section != sec:
            sec = r.section
            out += ["", f"== {sec}"]
        out.append(
            f"  {r.metric:<{widths[0]}}  {r.fmt_value():>{widths[1]}}  "
            f"{r.fmt_target():>{widths[2]}}  {r.status:<{widths[3]}}  {r.detail}"
        )
    out += [""] + [f"* {n}" for n in table.notes]
    return "\n".join(out)


def format_markdown(table):
    out = [f"{ln}  " for ln in _machine_lines(table)] + [""]
    out += [
        "| section | metric | measured | target | status | detail |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in table.rows:
        out.append(
            f"| {r.section} | {r.metric} | {r.fmt_value()} | {r.fmt_target()} | "
            f"{r.status} | {r.detail} |"
        )
    out += [""] + [f"* {n}" for n in table.notes]
    return "\n".join(out)


def format_times(table):
    lines = ["", "median times per call:"]
    for (wname, impl, p, thr), t in sorted(table.times.items(), key=lambda kv: str(kv[0])):
        what = "GEMM" if impl == "gemm" else f"{LABEL.get(impl, impl)} {PASS_LABEL.get(p, p)}"
        lines.append(f"  {wname:<8} {what:<24} {thr} thr  {_ms(t):>11}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python asv_benchmarks/ratio_table.py",
        description="The performance table of pacnp, target by target, with PASS/MISS per row "
        "(what each row measures: the docstring of this script).",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="few repeats, target rows only, no start-up probes (CI smoke)",
    )
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: numba's max)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per measurement")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up probes")
    ap.add_argument("--no-volumes", action="store_true", help="skip W8 / W9 (SimpleITK: slow)")
    ap.add_argument("--suite", default=None, help="the asv suite dir (asv_benchmarks/benchmarks)")
    ap.add_argument("--json", default=None, help="also write the rows and times as JSON here")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target row is a MISS")
    ap.add_argument("--times", action="store_true", help="also list every median time")
    args = ap.parse_args(argv)
    cfg = Config(threads=args.threads, suite=args.suite, log=sys.stderr)
    if args.quick:
        cfg.quick, cfg.repeats, cfg.min_time, cfg.startup = True, 3, 0.01, False
        cfg.warmup = 1
        cfg.pixel_sizes = (64, 128)
    if args.repeats is not None:
        cfg.repeats = args.repeats
    if args.no_memory:
        cfg.memory = False
    if args.no_startup:
        cfg.startup = False
    if args.no_volumes:
        cfg.volumes = False
    t0 = time.perf_counter()
    table = build_table(cfg)
    text = format_markdown(table) if args.markdown else format_text(table)
    if args.times:
        text += "\n" + format_times(table)
    print(text)
    print(
        f"\n(measured in {time.perf_counter() - t0:.0f} s: python asv_benchmarks/ratio_table.py"
        f"{' ' + ' '.join(argv if argv is not None else sys.argv[1:])})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "info": table.info,
                    "notes": table.notes,
                    "rows": [dict(dataclasses.asdict(r), status=r.status) for r in table.rows],
                    "times": {"|".join(map(str, k)): v for k, v in table.times.items()},
                },
                f,
                indent=1,
            )
    if args.strict and any(r.status == "MISS" for r in table.rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
