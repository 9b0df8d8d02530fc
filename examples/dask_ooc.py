"""Out-of-core proof: a joint bilateral filter of an RGB image larger than a worker's memory.

``python examples/dask_ooc.py --size 16384`` (needs ``pip install 'pacnp[dask]'``) writes a
synthetic 16384×16384 RGB float32 image (3 GiB) to a chunked Zarr store (``--source zarr``) or a
``.npy`` file read through a memory map (``--source npy``), filters it with
:func:`pacnp.dask.joint_bilateral_filter` guided by its own luminance (computed chunk by chunk on
the fly), and writes the result to a chunked Zarr store, on a ``distributed.LocalCluster`` of
single-threaded worker processes (``--scheduler distributed``, the default) or on the threaded
scheduler of this process (``--scheduler threads``). It shows a progress bar
(``distributed.progress``, or ``dask.diagnostics.ProgressBar`` for the threaded scheduler) and
prints the wall time and the peak resident memory (RSS) of every worker process, sampled from
outside every 50 ms with psutil. Finally it checks tiles of the output that straddle chunk seams
against the in-memory filter (``--check`` tiles), so the run also proves that the chunked result
is the in-memory one.

Nothing here holds the image: the source is generated block by block, read block by block and
the output written block by block; the memory a worker needs is a few chunks with their halos.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time

import numpy as np

GiB = 1 << 30


def _synthetic_block(block_info=None, *, seed):
    """One block of the synthetic RGB image: flat colour cells (edges for the filter to keep)
    plus a gradient and noise (for it to smooth), a function of the global pixel position only,
    so that every block is the same whichever worker draws it."""
    (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    cell = (yy // 97) * 7919 + (xx // 131) * 104729
    base = np.stack([(cell * f) % 1000 / 1000.0 for f in (3, 5, 11)], axis=-1)
    ramp = ((yy + xx) % 512 / 512.0)[..., None] * 0.2
    rng = np.random.default_rng([seed, y0, x0])
    noise = rng.normal(0.0, 0.05, (y1 - y0, x1 - x0, 3))
    return (0.8 * base + ramp + noise).astype(np.float32)


def _npy_read_block(path, block_info=None):
    (y0, y1), (x0, x1), (c0, c1) = block_info[None]["array-location"]
    return np.array(np.load(path, mmap_mode="r")[y0:y1, x0:x1, c0:c1])


def _npy_write_block(block, path, block_info=None):
    (y0, y1), (x0, x1), (c0, c1) = block_info[0]["array-location"]
    m = np.load(path, mmap_mode="r+")
    m[y0:y1, x0:x1, c0:c1] = block
    m.flush()
    return np.zeros((1, 1, 1), np.int8)


class _PeakRSS:
    """Samples the RSS of some processes from a thread; ``peak`` maps pid → bytes."""

    def __init__(self, pids, interval=0.05):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, p in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], p.memory_info().rss)
                except Exception:  # noqa: BLE001 - a process that went away keeps its peak
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python examples/dask_ooc.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--size", type=int, default=16384, help="image side in pixels (16384)")
    ap.add_argument("--chunk", type=int, default=1024, help="chunk side in pixels (1024)")
    ap.add_argument("--source", choices=["zarr", "npy"], default="zarr")
    ap.add_argument("--scheduler", choices=["distributed", "threads"], default="distributed")
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (distributed) or threads (threads); default: cores",
    )
    ap.add_argument(
        "--memory-limit",
        default="auto",
        help="distributed worker memory limit (default: total / workers)",
    )
    ap.add_argument(
        "--mmap-threshold",
        type=int,
        default=64 << 20,
        help="glibc MALLOC_MMAP_THRESHOLD_ of the worker processes in bytes "
        "(64 MiB; 0: leave distributed's default)",
    )
    ap.add_argument("--sigma-spatial", type=float, default=2.0)
    ap.add_argument("--sigma-color", type=float, default=0.1)
    ap.add_argument("--workdir", default="/tmp/pacnp-ooc", help="where the stores go")
    ap.add_argument("--check", type=int, default=3, help="seam tiles checked in memory (3)")
    ap.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    args = ap.parse_args(argv)

    import dask
    import dask.array as da
    import zarr

    from pacnp import dask as pdask
    from pacnp import filters

    n, c = args.size, args.chunk
    os.makedirs(args.workdir, exist_ok=True)
    src_path = os.path.join(args.workdir, "input." + ("zarr" if args.source == "zarr" else "npy"))
    out_path = os.path.join(args.workdir, "output.zarr")
    for p in (src_path, out_path):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    print(
        f"image {n}x{n}x3 float32 = {n * n * 3 * 4 / GiB:.2f} GiB, chunks {c}x{c}x3, "
        f"source {args.source}, scheduler {args.scheduler}, {args.workers} workers, "
        f"sigma_spatial {args.sigma_spatial}, sigma_color {args.sigma_color}",
        flush=True,
    )

    client = cluster = None
    if args.scheduler == "distributed":
        import distributed

        if args.mmap_threshold:
            # distributed starts workers with MALLOC_TRIM_THRESHOLD_ set, which freezes glibc's
            # mmap threshold at 128 KiB: every chunk-sized temporary is then a fresh mmap whose
            # pages fault in again (measured: half the filter's wall time at 4096², in the
            # kernel). A fixed threshold above the chunk temporaries lets freed blocks be reused.
            dask.config.set(
                {
                    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(
                        args.mmap_threshold
                    )
                }
            )
        cluster = distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=args.memory_limit,
        )
        client = distributed.Client(cluster)
        pids = list(client.run(os.getpid).values())
    else:
        pids = [os.getpid()]

    def run(what, target):
        """Compute ``target`` with a progress bar; return the wall time."""
        print(what, flush=True)
        t = time.perf_counter()
        if client is not None:
            import distributed

            fut = client.compute(target)
            distributed.progress(fut)
            fut.result()
        else:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                dask.compute(target, scheduler="threads", num_workers=args.workers)
        print(flush=True)
        return time.perf_counter() - t

    # 1. the source, written block by block
    chunks = ((c,) * (n // c) + ((n % c,) if n % c else ()),) * 2 + ((3,),)
    synth = da.map_blocks(
        _synthetic_block,
        seed=0,
        chunks=chunks,
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    if args.source == "zarr":
        write = da.to_zarr(synth, src_path, compute=False)
    else:
        np.lib.format.open_memmap(src_path, mode="w+", dtype=np.float32, shape=(n, n, 3))
        write = synth.map_blocks(_npy_write_block, src_path, chunks=(1, 1, 1), dtype=np.int8)
    t_gen = run("writing the source", write)

    # 2. the filter: source → luminance guide → joint bilateral → chunked Zarr output
    if args.source == "zarr":
        img = da.from_zarr(src_path)
    else:
        img = da.map_blocks(
            _npy_read_block,
            src_path,
            chunks=chunks,
            dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32),
        )
    guide = img.mean(axis=-1)
    out = pdask.joint_bilateral_filter(
        img, guide, sigma_spatial=args.sigma_spatial, sigma_color=args.sigma_color, channel_axis=-1
    )
    store = da.to_zarr(out.rechunk(img.chunks), out_path, compute=False)
    with _PeakRSS(pids) as rss:
        t_filter = run("filtering", store)
    peaks = sorted(rss.peak.values())

    # 3. seam tiles against the in-memory filter (interior of a crop: the crop's own border
    #    handling cannot reach it)
    r = filters.default_radius(args.sigma_spatial)
    src = (
        zarr.open(src_path, mode="r") if args.source == "zarr" else np.load(src_path, mmap_mode="r")
    )
    res = zarr.open(out_path, mode="r")
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(args.check):
        seam = [int(rng.integers(1, max(2, n // c))) * c if n > c else n // 2 for _ in range(2)]
        y0, x0 = (max(0, min(n - 64, s - 32)) for s in seam)
        ya, xa = max(0, y0 - r), max(0, x0 - r)
        crop = np.asarray(src[ya : min(n, y0 + 64 + r), xa : min(n, x0 + 64 + r)])
        ref = filters.joint_bilateral_filter(
            crop,
            crop.mean(axis=-1),
            sigma_spatial=args.sigma_spatial,
            sigma_color=args.sigma_color,
            channel_axis=-1,
        )
        ref = ref[y0 - ya : y0 - ya + 64, x0 - xa : x0 - xa + 64]
        got = np.asarray(res[y0 : y0 + 64, x0 : x0 + 64])
        worst = max(worst, float(np.abs(got - ref).max()))

    if client is not None:
        client.close()
        cluster.close()
    print(
        f"source written in {t_gen:.1f} s; filtered {n}x{n}x3 in {t_filter:.1f} s "
        f"({n * n / t_filter / 1e6:.2f} Mpixel/s)"
    )
    print(
        "peak RSS per worker process: "
        + ", ".join(f"{p / GiB:.2f} GiB" for p in peaks)
        + f" (max {max(peaks) / GiB:.2f} GiB)"
    )
    print(f"seam tiles vs in-memory filter: max |difference| {worst:.3g} (float32)")
    if not args.keep:
        shutil.rmtree(out_path)
        shutil.rmtree(src_path) if os.path.isdir(src_path) else os.remove(src_path)
    ok = worst <= 1e-5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
