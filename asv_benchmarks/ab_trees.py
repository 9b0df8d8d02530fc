"""A/B timing of two pacnp trees, alternated in fresh processes: the before/after numbers of
``docs/performance.md``.

    python asv_benchmarks/ab_trees.py OLD_ROOT NEW_ROOT [--workloads W1 W2 W4b] [--rounds 3]
                                      [--calls 9] [--threads 1] [--clock cpu|wall] [--parts]

Each round runs, for each workload, implementation (two-step, fused) and tree, one fresh
process that imports ``pacnp`` from that tree and the workload runners of *this* tree's
``asv_benchmarks/benchmarks/common.py`` (so both trees run the same calls), warms up, and takes
the median of ``--calls`` forward and forward+backward calls. Trees alternate A/B/A/B, so load
from other processes hits both; the table gives the median over the rounds. ``--clock cpu``
(process CPU time, for one thread) is what to use on a shared machine: two-thread wall times
there move by 2–5× between identical runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

_CHILD = r"""
import json, sys, time
root, suite, workload, impl, calls, clock, parts = sys.argv[1:8]
sys.path.insert(0, suite)
sys.path.insert(0, root)
from benchmarks import common
import pacnp
assert pacnp.__file__.startswith(root), (pacnp.__file__, root)
tick = time.process_time if clock == "cpu" else time.perf_counter
cls = common.PacnpFusedRunner if impl == "fused" else common.PacnpRunner
r = cls(common.WORKLOADS[workload])

def med(f):
    for _ in range(2):
        f()
    ts = []
    for _ in range(int(calls)):
        a = tick()
        f()
        ts.append(tick() - a)
    return sorted(ts)[len(ts) // 2] * 1e3

def fwd_bwd():
    r.saved = r.forward()
    r.backward()

got = {"fwd": med(r.forward), "fwd+bwd": med(fwd_bwd)}
if parts == "1" and impl != "fused":
    K = r.kernel()
    got["kernel"] = med(r.kernel)
    got["op"] = med(lambda: r.op(*r._op_args(K), **r.okw))
print(json.dumps(got))
"""


def _one(root, workload, impl, calls, clock, threads, parts=False):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            root,
            HERE,
            workload,
            impl,
            str(calls),
            clock,
            str(int(parts)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--workloads", nargs="+", default=["W1", "W2", "W4"])
    ap.add_argument("--impls", nargs="+", default=["two-step", "fused"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--parts", action="store_true", help="two-step: also packernel2d, op alone")
    a = ap.parse_args(argv)
    roots = [os.path.abspath(a.old), os.path.abspath(a.new)]
    res = {}
    for _ in range(a.rounds):
        for w in a.workloads:
            for impl in a.impls:
                for root in roots:
                    got = _one(root, w, impl, a.calls, a.clock, a.threads, a.parts)
                    for what, ms in got.items():
                        res.setdefault((w, impl, what, root), []).append(ms)
    print(f"{a.clock} time, {a.threads} thread(s), ms: median over {a.rounds} rounds")
    print(f"{'row':28s} {'old':>10s} {'new':>10s} {'new/old':>8s}")
    for w in a.workloads:
        for impl in a.impls:
            for what in ("fwd", "fwd+bwd", "kernel", "op"):
                if (w, impl, what, roots[0]) not in res:
                    continue
                old, new = (statistics.median(res[(w, impl, what, r)]) for r in roots)
                print(f"{w + ' ' + impl + ' ' + what:28s} {old:10.2f} {new:10.2f} {new / old:8.2f}")


if __name__ == "__main__":
    main()
