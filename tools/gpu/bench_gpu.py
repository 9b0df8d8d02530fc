"""GPU benchmarks of issue 13: pacnp's CUDA backend against cuDNN and the unfold formulation.

    python3 tools/gpu/bench_gpu.py --out bench.md --json bench.json          # on the GPU
    python3 tools/gpu/bench_gpu.py --dry-run --out /tmp/b.md                 # here, seconds

Workloads (float32):

* W1, W2 — the asv suite's layers (``asv_benchmarks/benchmarks/common.py``: W1 = B 2, 16→32,
  guide 8, 5×5, 64², padding 2; W2 = B 1, 64→64, guide 16, 3×3, 256², padding 1), forward and
  forward+backward (every gradient), through the suite's own runners: ``pacnp`` (packernel2d, then
  pacconv2d), ``pacnp_fused`` (pacconv2d_fused), ``cudnn`` (torch ``conv2d`` of the same shape, no
  adaptive kernel: the floor), ``unfold`` (the 2019 code's unfold + einsum, ``peers.py``) and
  ``unfold_mm`` (the same contraction as one batched matmul).
* W5 — ``pacnp.filters.joint_bilateral_filter`` of a 1024² RGB image guided by itself, 11×11
  (radius 5), σ_s 3, σ_c 25, border 'reflect'; peers: a depthwise 11×11 ``conv2d`` of the same
  shape (cudnn) and the joint bilateral filter written as unfold + sums (unfold).
* W7 — ``pacnp.filters.joint_bilateral_upsample`` ×8 of a 192×128 grey image to its 1536×1024 RGB
  guide (defaults: σ_s 4, radius 12, border 'renormalize'; σ_c 25); peers: a depthwise
  ``conv_transpose2d`` of the same geometry (cudnn) and the upsampling written as unfold + sums
  over the zero-inserted samples (unfold).

On the GPU, pacnp gets CuPy arrays and the peers torch CUDA tensors; cuDNN runs with
``cudnn.benchmark`` on and TF32 off (pacnp computes in float32; ``cudnn_tf32`` shows what TF32
gives). Each implementation is called ``--warmup`` times first (JIT compilation, cuDNN's
autotuning: the first call's time is reported apart), then ``--repeats`` times, each call between
two CUDA events on the current stream with the device synchronised after it; the table gives the
medians (and the minimum). ``rel err`` is ‖pacnp − unfold‖ / ‖unfold‖ of the forward output.

``--dry-run`` (= ``--device cpu --tiny --repeats 1 --warmup 1``) runs the same code on the CPU
(NumPy arrays for pacnp, CPU tensors for the peers) on tiny shapes in seconds, so that the script
cannot rot without a GPU (``tests/test_gpu_check.py``): its figures are not measurements.

The report is rewritten after every row, so a run stopped by its time budget (``--budget``)
leaves every row it finished.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "asv_benchmarks"):  # pacnp of this checkout, and the asv suite
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks import common  # noqa: E402  (asv_benchmarks/benchmarks/common.py)

# ---------------------------------------------------------------------------- targets (issue 13)
#: W1 and W2 forward: pacnp ≤ 3× cuDNN's time and ≥ 5× faster than unfold+einsum; W5 ≤ 2 ms
MAX_X_CUDNN = 3.0
MIN_X_FASTER_THAN_UNFOLD = 5.0
W5_MAX_MS = 2.0

# W5 / W7 parameters
W5_SIGMA_S, W5_SIGMA_C, W5_RADIUS = 3.0, 25.0, 5
W7_FACTOR, W7_SIGMA_C = 8, 25.0

PASSES = ("forward", "forward_backward")
CONV_IMPLS = ("pacnp", "pacnp_fused", "cudnn", "cudnn_tf32", "unfold", "unfold_mm")
FILTER_IMPLS = ("pacnp", "cudnn", "unfold")
#: asv runner of each conv implementation
RUNNER_IMPL = {
    "pacnp": "pacnp",
    "pacnp_fused": "pacnp_fused",
    "cudnn": "torch_dense",
    "cudnn_tf32": "torch_dense",
    "unfold": "torch_unfold",
    "unfold_mm": "torch_unfold_mm",
}


def expected_rows():
    """(workload, pass, impl) of every row a complete run writes, in the order it runs them:
    the rows of the targets first, so a run cut short by its budget still answers them."""
    rows = [(w, "forward", i) for w in ("W1", "W2") for i in CONV_IMPLS]
    rows += [("W5", "forward", i) for i in FILTER_IMPLS]
    rows += [(w, "forward_backward", i) for w in ("W1", "W2") for i in CONV_IMPLS]
    rows += [("W7", "forward", i) for i in FILTER_IMPLS]
    return rows


@dataclass
class Row:
    workload: str
    pass_: str
    impl: str
    shape: str = ""
    status: str = "ok"  # ok | skipped: … | error: …
    first_s: float = math.nan  # the first call (compilation, autotuning)
    median_ms: float = math.nan
    min_ms: float = math.nan
    wall_median_ms: float = math.nan
    repeats: int = 0
    rel_err: float = math.nan  # forward output vs the unfold peer


# ---------------------------------------------------------------------------- device
class Device:
    """Where the arrays live and how a call is timed."""

    def __init__(self, name):
        self.name = name
        import torch

        self.torch = torch
        self.cp = None
        if name == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit("--device cuda: torch sees no CUDA GPU (use --dry-run here)")
            import cupy

            self.cp = cupy
            torch.backends.cudnn.benchmark = True
            self.torch_device = torch.device("cuda")
            self.backend = "cupy"  # pacnp's CUDA backend on CuPy arrays (common.CupyBackend)
        else:
            self.torch_device = torch.device("cpu")
            self.backend = "numpy"
            torch.set_num_threads(1)  # tiny shapes: one thread is fastest, and the CPU is shared

    def describe(self):
        t = self.torch
        if self.name == "cuda":
            p = t.cuda.get_device_properties(0)
            return (
                f"{p.name}, {p.total_memory / 2**30:.0f} GiB, cc {p.major}.{p.minor}; torch "
                f"{t.__version__} (cuDNN {t.backends.cudnn.version()}), CuPy "
                f"{self.cp.__version__}"
            )
        return f"CPU ({platform.processor() or platform.machine()}), torch {t.__version__}"

    def array(self, a):
        """pacnp's input: CuPy on the GPU, NumPy on the CPU."""
        return self.cp.asarray(a) if self.cp is not None else a

    def tensor(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device)

    def sync(self):
        if self.name == "cuda":
            self.torch.cuda.synchronize()  # device-wide: CuPy's and torch's streams alike

    def time(self, fn, repeats, warmup, max_s=math.inf):
        """(first call s, [per-call ms by events or the host clock], [wall ms], the last
        call's result). The timed calls stop early (after at least 3) once they took ``max_s``:
        one slow implementation must not eat the whole budget."""
        t0 = time.perf_counter()
        fn()
        self.sync()
        first = time.perf_counter() - t0
        for _ in range(max(0, warmup - 1)):
            fn()
        self.sync()
        ev, wall, out = [], [], None
        cuda = self.name == "cuda"
        t_loop = time.perf_counter()
        for _ in range(repeats):
            if len(ev) >= 3 and time.perf_counter() - t_loop > max_s:
                break
            if cuda:
                start = self.torch.cuda.Event(enable_timing=True)
                end = self.torch.cuda.Event(enable_timing=True)
                start.record()
            out = None  # the previous result's memory goes back before the call
            t0 = time.perf_counter()
            out = fn()
            if cuda:
                end.record()
            self.sync()
            wall.append((time.perf_counter() - t0) * 1e3)
            ev.append(start.elapsed_time(end) if cuda else wall[-1])
        return first, ev, wall, out


def host(a):
    """A result (array, tensor, or a tuple whose first item is the output) as NumPy float64."""
    while isinstance(a, (tuple, list)):
        a = a[0]
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    elif hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def rel_err(a, b):
    a, b = host(a), host(b)
    if a.shape != b.shape:
        return math.inf
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ---------------------------------------------------------------------------- W1 / W2
def conv_workload(name, tiny):
    w = common.WORKLOADS[name]
    return w.scaled(12) if tiny else w


def conv_callable(dev, impl, w, pass_):
    """(call, label of the shape) for impl on workload w, or raise NotImplementedError."""
    backend = dev.backend
    runner = common.make_runner(RUNNER_IMPL[impl], w, backend)
    if impl.startswith("cudnn"):
        tf32 = impl == "cudnn_tf32"
        cudnn = dev.torch.backends.cudnn
        method = getattr(runner, pass_)

        def call():
            old = cudnn.allow_tf32
            cudnn.allow_tf32 = tf32
            try:
                return method()
            finally:
                cudnn.allow_tf32 = old

        return call
    return getattr(runner, pass_)


# ---------------------------------------------------------------------------- W5
def w5_inputs(tiny, seed=0):
    n = 24 if tiny else 1024
    rng = np.random.default_rng(seed)
    # a smooth image with edges (so the colour term matters), 0–255 like W5's photograph
    yy, xx = np.mgrid[0:n, 0:n] / n
    base = np.stack([np.sin(6 * xx + c) * 60 + 120 * (yy > 0.5 + 0.1 * c) for c in range(3)], -1)
    return (base + rng.normal(0, 10, base.shape)).astype(np.float32)


def w5_unfold(torch, img):
    """The joint bilateral filter of an (H, W, 3) tensor guided by itself as unfold + sums:
    every window materialised (3·121 columns per pixel), as a PyTorch user writes it."""
    F = torch.nn.functional
    r, k = W5_RADIUS, 2 * W5_RADIUS + 1
    x = img.permute(2, 0, 1)[None]
    H, W = x.shape[2:]
    xp = F.pad(x, (r, r, r, r), mode="reflect")  # = pacnp's 'reflect' (no edge repeat)
    cols = F.unfold(xp, k).view(1, 3, k * k, H * W)
    centre = x.reshape(1, 3, 1, H * W)
    d2 = ((cols - centre) ** 2).sum(1) / (W5_SIGMA_C**2)
    ax = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    ws = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * W5_SIGMA_S**2)).reshape(1, -1, 1)
    wgt = torch.exp(-0.5 * d2) * ws
    out = (cols * wgt[:, None]).sum(2) / wgt.sum(1, keepdim=True)
    return out.view(3, H, W).permute(1, 2, 0)


def w5_cudnn_inputs(dev, img):
    x = dev.tensor(img.transpose(2, 0, 1)[None])
    w = dev.tensor(
        np.full(
            (3, 1, 2 * W5_RADIUS + 1, 2 * W5_RADIUS + 1), 1 / (2 * W5_RADIUS + 1) ** 2, np.float32
        )
    )
    return x, w


def w5_callable(dev, impl, img):
    torch = dev.torch
    if impl == "pacnp":
        from pacnp import filters

        a = dev.array(img)
        return lambda: filters.joint_bilateral_filter(
            a,
            a,
            sigma_spatial=W5_SIGMA_S,
            sigma_color=W5_SIGMA_C,
            radius=W5_RADIUS,
            border="reflect",
            channel_axis=-1,
        )
    if impl == "cudnn":
        x, w = w5_cudnn_inputs(dev, img)
        return no_grad(torch, lambda: torch.nn.functional.conv2d(x, w, padding=W5_RADIUS, groups=3))
    if impl == "unfold":
        t = dev.tensor(img)
        return no_grad(torch, lambda: w5_unfold(torch, t))
    raise ValueError(impl)


# ---------------------------------------------------------------------------- W7
def w7_inputs(tiny, seed=0):
    h, w = (4, 6) if tiny else (128, 192)
    f = W7_FACTOR
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : h * f, 0 : w * f] / (h * f)
    guide = np.stack(
        [np.cos(5 * xx + c) * 60 + 100 * (xx + yy > 0.8 + 0.2 * c) for c in range(3)], -1
    )
    guide = (guide + rng.normal(0, 5, guide.shape)).astype(np.float32)
    o = (f - 1) // 2
    low = (guide[o::f, o::f].mean(-1) + rng.normal(0, 2, (h, w))).astype(np.float32)
    return low, guide


def w7_geometry():
    f = W7_FACTOR
    r = 3 * f // 2  # joint_bilateral_upsample's default radius
    o = (f - 1) // 2  # low-res sample n sits at high-res pixel n·f + o
    return f, r, o, f / 2  # σ_s default: half the sample spacing


def w7_unfold(torch, low, guide):
    """Joint bilateral upsampling as unfold + sums on the high-res grid: the samples zero-inserted
    at n·f + o, every (2r+1)² window materialised (guide colours of the samples, the samples,
    their presence), weights w_s · w_c, renormalised over the samples present."""
    F = torch.nn.functional
    f, r, o, sigma_s = w7_geometry()
    k = 2 * r + 1
    h, w = low.shape
    H, W = h * f, w * f
    g = guide.permute(2, 0, 1)[None] / W7_SIGMA_C  # [1, 3, H, W]
    z = torch.zeros((1, 5, H, W), dtype=g.dtype, device=g.device)
    z[0, 0, o::f, o::f] = low  # the samples
    z[0, 1, o::f, o::f] = 1  # their presence
    z[:, 2:, o::f, o::f] = g[:, :, o::f, o::f]  # the guide at the samples
    cols = F.unfold(z, k, padding=r).view(1, 5, k * k, H * W)
    d2 = ((cols[:, 2:] - g.reshape(1, 3, 1, H * W)) ** 2).sum(1)
    ax = torch.arange(-r, r + 1, dtype=g.dtype, device=g.device)
    ws = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma_s**2)).reshape(1, -1, 1)
    wgt = torch.exp(-0.5 * d2) * ws * cols[:, 1]
    return ((cols[:, 0] * wgt).sum(1) / wgt.sum(1)).view(H, W)


def w7_callable(dev, impl, low, guide):
    torch = dev.torch
    f, r, o, sigma_s = w7_geometry()
    if impl == "pacnp":
        from pacnp import filters

        lo, g = dev.array(low), dev.array(guide)
        return lambda: filters.joint_bilateral_upsample(
            lo, g, f, sigma_color=W7_SIGMA_C, channel_axis=None, guide_channel_axis=-1
        )
    if impl == "cudnn":
        # the same transposed geometry as pacnp's (filters.py): k = 2r+1, padding r − o,
        # output_padding (f−1) % 2, on [value, confidence]
        x = dev.tensor(np.stack([low, np.ones_like(low)])[None])
        k = 2 * r + 1
        wt = dev.tensor(np.full((2, 1, k, k), 1 / k**2, np.float32))
        return no_grad(
            torch,
            lambda: torch.nn.functional.conv_transpose2d(
                x, wt, stride=f, padding=r - o, output_padding=(f - 1) % 2, groups=2
            ),
        )
    if impl == "unfold":
        lo, g = dev.tensor(low), dev.tensor(guide)
        return no_grad(torch, lambda: w7_unfold(torch, lo, g))
    raise ValueError(impl)


def no_grad(torch, fn):
    def call():
        with torch.no_grad():
            return fn()

    return call


# ---------------------------------------------------------------------------- the run
class Bench:
    def __init__(self, args):
        self.args = args
        self.dev = Device(args.device)
        self.rows: list[Row] = []
        self.t_start = time.perf_counter()
        self.outputs = {}  # (workload, impl) -> forward output, for rel err
        self._filter_inputs = {}

    def left_s(self):
        return self.args.budget - (time.perf_counter() - self.t_start)

    def shape_of(self, wl):
        if wl in ("W1", "W2"):
            return conv_workload(wl, self.args.tiny).describe()
        if wl == "W5":
            n = w5_inputs(self.args.tiny).shape[0]
            return f"joint bilateral {n}×{n} RGB, 11×11, σ_s 3, σ_c 25, reflect"
        low, guide = self.filter_inputs("W7")
        return (
            f"joint upsampling ×{W7_FACTOR}: {low.shape[1]}×{low.shape[0]} grey → "
            f"{guide.shape[1]}×{guide.shape[0]} RGB guide, radius 12, σ_s 4, σ_c 25"
        )

    def filter_inputs(self, wl):
        if wl not in self._filter_inputs:
            self._filter_inputs[wl] = (
                (w5_inputs(self.args.tiny),) if wl == "W5" else w7_inputs(self.args.tiny)
            )
        return self._filter_inputs[wl]

    def callable(self, wl, pass_, impl):
        if wl in ("W1", "W2"):
            return conv_callable(self.dev, impl, conv_workload(wl, self.args.tiny), pass_)
        if wl == "W5":
            return w5_callable(self.dev, impl, *self.filter_inputs(wl))
        return w7_callable(self.dev, impl, *self.filter_inputs(wl))

    def run_row(self, wl, pass_, impl):
        row = Row(wl, pass_, impl, shape=self.shape_of(wl))
        self.rows.append(row)
        if self.left_s() <= 0:
            row.status = "skipped: time budget spent"
            return row
        try:
            fn = self.callable(wl, pass_, impl)
            first, ev, wall, out = self.dev.time(
                fn, self.args.repeats, self.args.warmup, self.args.row_seconds
            )
            row.first_s = first
            row.median_ms, row.min_ms = statistics.median(ev), min(ev)
            row.wall_median_ms = statistics.median(wall)
            row.repeats = len(ev)
            if pass_ == "forward" and impl in ("pacnp", "pacnp_fused", "unfold"):
                self.outputs[(wl, impl)] = host(out)
        except NotImplementedError as exc:  # a runner that cannot run here (asv's convention)
            row.status = f"skipped: {exc}"
        except Exception as exc:  # noqa: BLE001 - one failing row must not end the run
            row.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            print(f"[{wl} {pass_} {impl}] {row.status}", file=sys.stderr)
            if self.dev.name == "cuda":
                self.dev.torch.cuda.empty_cache()
        return row

    def run(self, only=None):
        for wl, pass_, impl in expected_rows():
            if only and wl not in only:
                continue
            row = self.run_row(wl, pass_, impl)
            print(
                f"{wl:3s} {pass_:16s} {impl:11s} {row.median_ms:10.3f} ms  {row.status}", flush=True
            )
            self.fill_errors()
            self.write()

    def fill_errors(self):
        for r in self.rows:
            ref = self.outputs.get((r.workload, "unfold"))
            out = self.outputs.get((r.workload, r.impl))
            if r.pass_ == "forward" and r.impl != "unfold" and ref is not None and out is not None:
                r.rel_err = rel_err(out, ref)

    # ------------------------------------------------------------------------ report
    def find(self, wl, pass_, impl):
        for r in self.rows:
            if (r.workload, r.pass_, r.impl) == (wl, pass_, impl) and r.status == "ok":
                return r
        return None

    def best_pacnp(self, wl, pass_):
        rows = [
            r
            for r in (self.find(wl, pass_, "pacnp"), self.find(wl, pass_, "pacnp_fused"))
            if r is not None
        ]
        return min(rows, key=lambda r: r.median_ms) if rows else None

    def targets(self):
        """[(target, measured, PASS/FAIL/n/a)]."""
        out = []
        for wl in ("W1", "W2"):
            best = self.best_pacnp(wl, "forward")
            cudnn = self.find(wl, "forward", "cudnn")
            unfold = self.find(wl, "forward", "unfold")
            which = f"pacnp ({best.impl}) {best.median_ms:.3f} ms" if best else "pacnp: no row"
            if best and cudnn:
                x = best.median_ms / cudnn.median_ms
                out.append(
                    (
                        f"{wl} forward ≤ {MAX_X_CUDNN:g}× cuDNN conv2d",
                        f"{which} / cuDNN {cudnn.median_ms:.3f} ms = {x:.2f}×",
                        "PASS" if x <= MAX_X_CUDNN else "FAIL",
                    )
                )
            else:
                out.append((f"{wl} forward ≤ {MAX_X_CUDNN:g}× cuDNN conv2d", "missing rows", "n/a"))
            if best and unfold:
                x = unfold.median_ms / best.median_ms
                out.append(
                    (
                        f"{wl} forward ≥ {MIN_X_FASTER_THAN_UNFOLD:g}× faster than unfold+einsum",
                        f"unfold {unfold.median_ms:.3f} ms / {which} = {x:.2f}×",
                        "PASS" if x >= MIN_X_FASTER_THAN_UNFOLD else "FAIL",
                    )
                )
            else:
                out.append(
                    (
                        f"{wl} forward ≥ {MIN_X_FASTER_THAN_UNFOLD:g}× faster than unfold+einsum",
                        "missing rows",
                        "n/a",
                    )
                )
        w5 = self.find("W5", "forward", "pacnp")
        out.append(
            (
                f"W5 ≤ {W5_MAX_MS:g} ms",
                f"{w5.median_ms:.3f} ms" if w5 else "missing row",
                ("PASS" if w5.median_ms <= W5_MAX_MS else "FAIL") if w5 else "n/a",
            )
        )
        return out

    def markdown(self):
        a = self.args
        lines = [
            "### GPU benchmarks ("
            f"{'DRY RUN: CPU, tiny shapes, not a measurement' if a.tiny else a.device})",
            "",
            f"{self.dev.describe()}; pacnp from {ROOT}; float32; {a.repeats} timed calls "
            f"after {a.warmup} warm-up call(s), medians"
            + (
                " of CUDA events (device synchronised after each call)"
                if self.dev.name == "cuda"
                else " of the host clock"
            )
            + ".",
            "",
            "| workload | pass | impl | median ms | min ms | wall median ms | first call s "
            "| × cuDNN | unfold ÷ this | rel err vs unfold | status |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            cudnn = self.find(r.workload, r.pass_, "cudnn")
            unfold = self.find(r.workload, r.pass_, "unfold")
            ok = r.status == "ok"
            x_cudnn = f"{r.median_ms / cudnn.median_ms:.2f}" if ok and cudnn else "—"
            x_unf = f"{unfold.median_ms / r.median_ms:.2f}" if ok and unfold else "—"
            err = f"{r.rel_err:.1e}" if not math.isnan(r.rel_err) else "—"
            num = lambda v, ok=ok: f"{v:.3f}" if ok else "—"
            lines.append(
                f"| {r.workload} | {r.pass_} | {r.impl} | {num(r.median_ms)} | "
                f"{num(r.min_ms)} | {num(r.wall_median_ms)} | "
                f"{f'{r.first_s:.2f}' if ok else '—'} | {x_cudnn} | {x_unf} | {err} | "
                f"{r.status} |"
            )
        lines += [
            "",
            "Shapes: "
            + "; ".join(
                f"{wl} {self.shape_of(wl)}" for wl in dict.fromkeys(r.workload for r in self.rows)
            ),
            "",
            "### Targets (issue 13)",
            "",
            "| target | measured | status |",
            "|---|---|---|",
        ]
        lines += [f"| {t} | {m} | {s} |" for t, m, s in self.targets()]
        return "\n".join(lines) + "\n"

    def write(self):
        a = self.args
        if a.out:
            Path(a.out).write_text(self.markdown())
        if a.json:
            rows = []
            for r in self.rows:
                d = {
                    k: None if isinstance(v, float) and math.isnan(v) else v  # strict JSON
                    for k, v in r.__dict__.items()
                }
                d["pass"] = d.pop("pass_")
                rows.append(d)
            Path(a.json).write_text(
                json.dumps(
                    {
                        "device": self.dev.describe(),
                        "dry_run": a.tiny,
                        "repeats": a.repeats,
                        "warmup": a.warmup,
                        "rows": rows,
                        "targets": [
                            dict(zip(("target", "measured", "status"), t)) for t in self.targets()
                        ],
                    },
                    indent=1,
                    default=lambda v: None,
                )
            )


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="GPU benchmarks of issue 13 (W1, W2, W5, W7) against cuDNN and unfold; "
        "see the module docstring."
    )
    ap.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda: pacnp on CuPy arrays, peers on torch CUDA tensors (default); "
        "cpu: NumPy arrays and CPU tensors",
    )
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (seconds on a CPU)")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="--device cpu --tiny --repeats 1 --warmup 1: the same code on the CPU",
    )
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per row (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    ap.add_argument(
        "--row-seconds",
        type=float,
        default=4.0,
        help="stop a row's timed calls after this long (at least 3 calls; 4)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=150.0,
        help="seconds; rows not started by then are reported as skipped (150)",
    )
    ap.add_argument(
        "--only", nargs="*", choices=("W1", "W2", "W5", "W7"), help="only these workloads"
    )
    ap.add_argument("--out", help="write the Markdown table here")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny, args.repeats, args.warmup = "cpu", True, 1, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu":
        common.set_threads(1)  # tiny shapes: one thread is fastest, and the CPU is shared
    bench = Bench(args)
    print(bench.dev.describe(), flush=True)
    bench.run(args.only)
    bench.write()
    print(bench.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
