"""`make gpu-check`: everything issue 13 asks of a GPU machine, in one call of at most 8 minutes.

    python3 tools/gpu/gpu_check.py --out "$OUT"            # on the GPU machine (tools/gpu/README)
    python3 tools/gpu/gpu_check.py --dry-run --out /tmp/g  # here: the same steps, no GPU needed

Steps, each in a process of its own under a hard time limit (SIGINT first, so that pytest still
writes its summary, then SIGKILL), all inside one overall budget (``--budget``):

1. install — the carried wheels the machine lacks (``wheels.py install``: .whl → /tmp/site).
2. probe   — nvidia-smi, versions, where ``numba.cuda`` comes from, a numba.cuda kernel compiled
             and launched, one pacnp call on the device.
3. test_cuda — ``tests/test_cuda.py`` on the real GPU (NUMBA_ENABLE_CUDASIM removed).
4. interop — ``tests/test_device_interop.py`` (CuPy, torch, JAX in; streams).
5. bench   — ``bench_gpu.py``: W1, W2 forward and forward+backward, W5, W7 against cuDNN and
             unfold+einsum, with the issue's targets.

Writes ``gpu-report.md`` (summary, machine, test failures, the benchmark and target tables) and
the logs to ``--out``: env.txt, install.log, test_cuda.log, test_interop.log, bench.log,
bench.json — 7 files (the device tool brings back at most 8). ``--dry-run`` runs every step here:
the install only decides, the tests collect and skip (no GPU), the benchmarks run on the CPU on
tiny shapes. Standard library only (it runs before the install).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(__file__).resolve().parent
SITE = "/tmp/site"

# The CUDA tests: the `cuda` parameter of the backend fixture (tests/conftest.py) runs the
# op, fused and array test bodies on the GPU, at full size on the full grid there, plus the
# device-only tests of tests/test_cuda.py.
TEST_CUDA = [
    "-m",
    "cuda",
    "tests/test_ops.py",
    "tests/test_fused.py",
    "tests/test_arrays.py",
    "tests/test_cuda.py",
]
TEST_INTEROP = ["tests/test_device_interop.py"]

#: seconds per step; the sum stays under 8 minutes with the start-up and the report
BUDGETS = {"install": 25, "probe": 45, "test_cuda": 200, "interop": 70, "bench": 120}
TOTAL_BUDGET = 465
PER_TEST_TIMEOUT = 120  # pytest-timeout, where installed: one hung kernel must not eat the step
GRACE = 15  # seconds between SIGINT and SIGKILL

PROBE = r"""
import importlib.metadata as md, sys, time
print("python", sys.version.split()[0], sys.executable)
names = ("numpy numba numba-cuda llvmlite cuda-bindings cuda-core cuda-pathfinder cupy-cuda13x "
         "cupy-cuda12x torch jax jaxlib jax-cuda13-plugin scipy threadpoolctl pytest "
         "pytest-timeout pytest-xdist hypothesis").split()
for n in names:
    try:
        print(f"  {n:18s} {md.version(n)}")
    except md.PackageNotFoundError:
        pass
import numba.cuda as cuda
print("numba.cuda from", cuda.__file__)
ok = cuda.is_available()
print("numba.cuda.is_available():", ok)
if ok:
    cuda.detect()
    try:
        from numba.cuda.cudadrv import driver
        print("CUDA runtime", cuda.runtime.get_version(), "driver", driver.driver.get_version())
    except Exception as exc:
        print("versions:", type(exc).__name__, exc)
    import numpy as np
    t0 = time.perf_counter()
    @cuda.jit
    def axpy(a, x, y):
        i = cuda.grid(1)
        if i < x.size:
            y[i] = a * x[i] + y[i]
    x = cuda.to_device(np.arange(1000, dtype=np.float32))
    y = cuda.to_device(np.ones(1000, dtype=np.float32))
    axpy[8, 128](np.float32(2), x, y)
    r = y.copy_to_host()
    assert r[999] == 1999, r[999]
    print(f"numba.cuda kernel: compiled and ran in {time.perf_counter() - t0:.2f} s, result right")
    import pacnp
    g = cuda.to_device(np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    t0 = time.perf_counter()
    K, _ = pacnp.packernel2d(g, 5, padding=2)
    print(f"pacnp.packernel2d on a numba device array: {type(K).__name__} {K.shape}, "
          f"first call {time.perf_counter() - t0:.2f} s")
"""


@dataclass
class Step:
    name: str
    cmd: list
    log: str | None  # file name under --out (None: appended to env.txt)
    budget: float
    junit: str | None = None
    status: str = "not run"
    seconds: float = 0.0
    rc: int | None = None


def has_module(python, env, name):
    return (
        subprocess.run(
            [python, "-c", f"import {name}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )


def shown(cmd):
    """The command line as logged (the probe's script by name)."""
    return " ".join("<PROBE script>" if a == PROBE else a for a in cmd)


def run_step(step, out, env, timeout):
    """Run one step under its hard limit; its output to its log."""
    path = out / (step.log or "env.txt")
    print(f"--- {step.name}: up to {timeout:.0f} s: {shown(step.cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(path, "a") as log:
        log.write(f"$ {shown(step.cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            step.cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            step.rc = proc.wait(timeout=timeout)
            step.status = (
                "ok"
                if step.rc == 0
                else "NO TESTS RAN (exit 5)"
                if step.rc == 5 and step.junit
                else f"FAILED (exit {step.rc})"
            )
        except subprocess.TimeoutExpired:
            # SIGINT first: pytest stops, prints its summary and writes the JUnit file
            os.killpg(proc.pid, signal.SIGINT)
            try:
                step.rc = proc.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                step.rc = proc.wait()
            step.status = f"TIMED OUT after {timeout:.0f} s"
    step.seconds = time.perf_counter() - t0
    print(f"--- {step.name}: {step.status} in {step.seconds:.1f} s", flush=True)


# ---------------------------------------------------------------------------- test results
def junit_summary(path, log_path):
    """(counts line, [failure lines]) from the JUnit file, else from pytest's last line."""
    if path and Path(path).is_file():
        try:
            root = ET.parse(path).getroot()
            suites = [root] if root.tag == "testsuite" else list(root)
            n = {
                k: sum(int(s.get(k, 0)) for s in suites)
                for k in ("tests", "failures", "errors", "skipped")
            }
            passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
            fails = []
            for case in root.iter("testcase"):
                for tag in ("failure", "error"):
                    el = case.find(tag)
                    if el is not None:
                        msg = (el.get("message") or "").strip().splitlines()
                        fails.append(
                            f"{case.get('classname')}::{case.get('name')} — {tag}: "
                            f"{msg[0][:300] if msg else ''}"
                        )
            # pytest's -rs lines name the reason (JUnit says "collection skipped" for a module)
            text = Path(log_path).read_text(errors="replace") if Path(log_path).is_file() else ""
            skips = sorted(set(re.findall(r"^SKIPPED \[\d+\] (.*)$", text, re.M)))[:200]
            line = (
                f"{n['tests']} tests: {passed} passed, {n['failures']} failed, "
                f"{n['errors']} errors, {n['skipped']} skipped"
            )
            if skips:
                line += "; skip reasons: " + " | ".join(skips[:5])
            return line, fails
        except ET.ParseError:
            pass
    text = Path(log_path).read_text(errors="replace") if Path(log_path).is_file() else ""
    m = re.findall(r"^=+ (.*(?:passed|failed|skipped|error|no tests ran).*) =+$", text, re.M)
    return (m[-1] if m else "no pytest summary (see the log)"), re.findall(
        r"^(?:FAILED|ERROR) (.*)$", text, re.M
    )


# ---------------------------------------------------------------------------- the report
def report(args, out, steps, started):
    lines = [
        f"# pacnp on the GPU: `make gpu-check`{' (DRY RUN, no GPU)' if args.dry_run else ''}",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC; commit {git_commit()}; budget {args.budget:.0f} s, "
        f"used {sum(s.seconds for s in steps):.0f} s.",
        "",
        "| step | status | seconds (limit) | result | log |",
        "|---|---|---:|---|---|",
    ]
    results = {}
    for s in steps:
        res = ""
        if s.junit is not None and s.rc is not None:
            res, fails = junit_summary(s.junit, out / s.log)
            results[s.name] = (res, fails)
        lines.append(
            f"| {s.name} | {s.status} | {s.seconds:.0f} ({s.budget:.0f}) | {res} | "
            f"{s.log or 'env.txt'} |"
        )
    env = out / "env.txt"
    lines += [
        "",
        "## Machine",
        "",
        "```",
        *(env.read_text(errors="replace").splitlines()[:60] if env.is_file() else []),
        "```",
    ]
    for name, title in (
        ("test_cuda", " ".join(TEST_CUDA) + " on the GPU"),
        ("interop", " ".join(TEST_INTEROP)),
    ):
        if name in results:
            res, fails = results[name]
            lines += ["", f"## {title}", "", res, ""]
            lines += [f"- {f}" for f in fails[:40]]
            if len(fails) > 40:
                lines.append(f"- … and {len(fails) - 40} more (see the log)")
    for s in steps:  # what a failed step said last, so the report alone shows why
        log = out / (s.log or "env.txt")
        if (
            s.status not in ("ok", "not run")
            and not s.status.startswith(("not asked", "skipped"))
            and log.is_file()
        ):
            tail = log.read_text(errors="replace").splitlines()[-25:]
            lines += ["", f"## {s.name}: the end of {log.name}", "", "```", *tail, "```"]
    bench_md = Path(args.tmp) / "bench.md"
    lines += ["", "## Benchmarks", ""]
    lines.append(
        bench_md.read_text() if bench_md.is_file() else "no benchmark table (see bench.log)"
    )
    (out / "gpu-report.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def git_commit():
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return (r.stdout.strip() + (" + local changes" if dirty.strip() else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git here)"


# ---------------------------------------------------------------------------- main
def first_steps(args, py):
    install = [
        py,
        str(TOOLS / "wheels.py"),
        "install",
        "--dest",
        str(ROOT / ".whl"),
        "--target",
        SITE,
    ] + (["--dry-run"] if args.dry_run else [])
    return [
        Step("install", install, "install.log", BUDGETS["install"]),
        Step("probe", [py, "-c", PROBE], None, BUDGETS["probe"]),
    ]


def later_steps(args, py, env):
    """The tests and benchmarks, built after the install (pytest's plugins may come with it)."""
    tmp = Path(args.tmp)
    pytest_common = [py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider"]
    if has_module(py, env, "pytest_timeout"):
        pytest_common += ["--timeout", str(PER_TEST_TIMEOUT)]
    xdist = []
    if has_module(py, env, "xdist") and not args.dry_run:
        # numba compiles every kernel specialisation in each process (NVVM, CPU-bound): a few
        # workers share the compile time; the GPU is shared by their contexts
        xdist = ["-n", str(max(1, min(8, (os.cpu_count() or 2) // 2)))]
    bench = [
        py,
        str(TOOLS / "bench_gpu.py"),
        "--out",
        str(tmp / "bench.md"),
        "--json",
        str(Path(args.out) / "bench.json"),
        "--budget",
        str(BUDGETS["bench"] - 25),
    ] + (["--dry-run"] if args.dry_run else [])
    return [
        Step(
            "test_cuda",
            pytest_common + xdist + ["--junitxml", str(tmp / "test_cuda.xml")] + TEST_CUDA,
            "test_cuda.log",
            BUDGETS["test_cuda"],
            junit=str(tmp / "test_cuda.xml"),
        ),
        Step(
            "interop",
            pytest_common + ["--junitxml", str(tmp / "interop.xml")] + TEST_INTEROP,
            "test_interop.log",
            BUDGETS["interop"],
            junit=str(tmp / "interop.xml"),
        ),
        Step("bench", bench, "bench.log", BUDGETS["bench"]),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        default=os.environ.get("OUT") or "/tmp/gpu-check-out",
        help="report and logs (default: $OUT, else /tmp/gpu-check-out)",
    )
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: install only decides, tests skip, benchmarks on the CPU",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=TOTAL_BUDGET,
        help="seconds for all steps together (default %(default)s)",
    )
    ap.add_argument(
        "--only",
        nargs="*",
        choices=list(BUDGETS),
        help="run only these steps (install and probe always run)",
    )
    ap.add_argument("--tmp", default="/tmp/gpu-check", help="scratch (JUnit files, bench.md)")
    args = ap.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_end = time.perf_counter() + args.budget
    out, tmp = Path(args.out), Path(args.tmp)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("env.txt", "install.log", "test_cuda.log", "test_interop.log", "bench.log"):
        (out / f).unlink(missing_ok=True)

    py = sys.executable
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the real GPU, never the simulator
    env["PYTHONUNBUFFERED"] = "1"
    # JAX takes 75 % of the GPU's memory when it starts, in every process (xdist workers too)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    paths = ([] if args.dry_run else [SITE]) + [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])

    with open(out / "env.txt", "w") as f:
        f.write(
            f"started {started:%Y-%m-%d %H:%M:%S} UTC on {os.uname().nodename}, "
            f"{os.cpu_count()} CPUs\n"
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            r = subprocess.run(
                [
                    smi,
                    "--query-gpu=name,memory.total,driver_version,clocks.sm,"
                    "clocks.max.sm,temperature.gpu,utilization.gpu",
                    "--format=csv",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            f.write(r.stdout + r.stderr)
        else:
            f.write("nvidia-smi: not found\n")

    steps = first_steps(args, py)
    for step in steps:
        run_one(args, step, out, env, t_end)
    later = later_steps(args, py, env)  # after the install: pytest's plugins may come with it
    for step in later:
        run_one(args, step, out, env, t_end)

    text = report(args, out, steps + later, started)
    print("\n" + text)
    # exit 0 whenever the report was written: its table says what failed
    return 0


def run_one(args, step, out, env, t_end):
    """Run ``step`` within what is left of the overall budget (or say why not)."""
    if args.only and step.name not in args.only + ["install", "probe"]:
        step.status = "not asked for (--only)"
        return
    left = t_end - time.perf_counter() - 5
    if left < 10:
        step.status = "skipped: overall budget spent"
        return
    if step.name == "bench":  # its own budget follows what is left
        i = step.cmd.index("--budget")
        step.cmd[i + 1] = f"{max(5.0, min(step.budget, left) - 25):.0f}"
    run_step(step, out, env, min(step.budget, left))
    if step.name == "install" and step.rc != 0:
        print("install failed: the steps after it use the machine's own packages", flush=True)


if __name__ == "__main__":
    sys.exit(main())
