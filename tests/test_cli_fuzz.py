"""Generated bad input for the ``pacnp`` command line (issue 14, the command-line side of the
bad-input suite).

Hypothesis draws whole argument vectors over every computing subcommand (filter, upsample,
crf): numbers that are not numbers, negative, zero, huge, infinite or NaN; missing files,
directories, wrong extensions, an output that is an input; images of mismatched shapes and
dtypes; and files damaged by flipping bytes of valid PNG, TIFF, .npy and .npz files. Every
run must end with status 0, 1 or 2, with exactly one ``pacnp: error:`` line when it fails and
none when it succeeds (other stderr lines only ``pacnp: warning:``), never a traceback, never
a modified input, never a ``.part`` file or a partial output.

The generated runs call ``pacnp.cli.main(argv)`` in process (a subprocess each would cost a
second of imports); a few fixed subprocess runs cover what only a process shows: the exit
status through ``python -m pacnp``, and the peak memory of decompression bombs.

Values known to take unbounded time in the library (not in the command line: a radius of
thousands with ``--border nearest``, r³ in ``pacnp.filters``; ``--blur`` near 2**31 or
millions of ``--num-steps`` in ``pacnp.crf``) stay out of the drawn numbers; their fixes
belong to those modules (issue 14, "Slow or unbounded").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pacnp import _imageio, cli

numba = pytest.importorskip("numba")
tifffile = pytest.importorskip("tifffile")
imagecodecs = pytest.importorskip("imagecodecs")

REPO = Path(__file__).resolve().parents[1]

#: drawn integer texts: valid small ones, and every way an integer option can be wrong
INTS = [
    "0",
    "1",
    "2",
    "3",
    "5",
    "-1",
    "-7",
    "2.5",
    "1e3",
    "abc",
    "",
    " 4",
    "+2",
    "0x3",
    "1_0",
    "99999999999999999999",
    "2147483648",
    "1" * 5000,
]
#: integers that are valid and large: cheap where the library refuses or bounds them (an
#: allocation it cannot make, a size mismatch); kept from the options whose cost grows
#: without bound (radius with border nearest, blur, num-steps)
BIG_INTS = ["1000000", "2147483647"]
#: drawn float texts
FLOATS = [
    "0.5",
    "1",
    "3",
    "12",
    "0",
    "-0",
    "-1",
    "1e-300",
    "5e-324",
    "1e-30",
    "1e300",
    "1e999",
    "inf",
    "-inf",
    "nan",
    "abc",
    "",
    "0x1p3",
]
AXES = ["auto", "none", "0", "1", "2", "-1", "-2", "-3", "3", "7", "x", "99999999999999999999"]

_PART = ".part"


# --------------------------------------------------------------------------- files
def _png_bomb():
    """A valid PNG header (CRC included) claiming 100000 × 100000 16-bit RGB."""

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (1 << 20)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The files a run may name: valid images of fitting and mismatched sizes, wrong dtypes
    and kinds, plus a directory and files of unknown extension."""
    d = tmp_path_factory.mktemp("fuzz_inputs")
    rng = np.random.default_rng(14)
    rgb8 = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    probs = rng.random((8, 6, 3)).astype(np.float32)
    _imageio.write_array(d / "rgb8.png", rgb8)
    _imageio.write_array(d / "grey16.png", rng.integers(0, 65536, (8, 6)).astype(np.uint16))
    tifffile.imwrite(d / "grey16.tif", rng.integers(0, 65536, (8, 6)).astype(np.uint16))
    np.save(d / "rgbf32.npy", rgb8.astype(np.float32) / 255)
    np.save(d / "probs.npy", probs / probs.sum(-1, keepdims=True))
    np.savez(d / "stack.npz", images=np.stack([rgb8, rgb8[::-1]]), probs=probs)
    _imageio.write_array(d / "low.png", rgb8[::2, ::2])  # 4×3: upsample by 2 with rgb8
    np.save(d / "low.npy", rng.random((4, 3)).astype(np.float32))
    np.save(d / "conf.npy", rng.random((4, 3)).astype(np.float32))
    np.save(d / "bools.npy", rng.random((4, 3)) > 0.5)
    np.save(d / "complex.npy", np.ones((8, 6), np.complex64))
    np.save(d / "empty.npy", np.zeros((0, 6), np.float32))
    np.save(d / "line.npy", np.zeros(6, np.float32))
    np.save(d / "big5d.npy", np.zeros((1, 1, 2, 8, 6), np.uint8))
    # volumes (--dims 3): grey D×H×W (ambiguous without --dims), RGB D×H×W×3, a low-res one
    # for upsampling by 2, a multi-page TIFF stack, an object array
    np.save(d / "vol.npy", rng.random((4, 8, 6)).astype(np.float32))
    np.save(d / "volrgb.npy", rng.integers(0, 256, (4, 8, 6, 3), dtype=np.uint8))
    np.save(d / "vollow.npy", rng.random((2, 4, 3)).astype(np.float32))
    _imageio.write_array(d / "vol.tif", rng.integers(0, 65536, (4, 8, 6)).astype(np.uint16))
    np.save(d / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    (d / "bomb.png").write_bytes(_png_bomb())
    (d / "photo.bmp").write_bytes(b"BM not really")
    (d / "notes.txt").write_text("hello")
    (d / "dir.png").mkdir()
    return d


#: the valid files whose damaged copies a run may read
DAMAGEABLE = ["rgb8.png", "grey16.png", "grey16.tif", "rgbf32.npy", "stack.npz", "vol.tif"]
POOL = [
    "rgb8.png",
    "grey16.png",
    "grey16.tif",
    "rgbf32.npy",
    "probs.npy",
    "stack.npz",
    "low.png",
    "low.npy",
    "conf.npy",
    "bools.npy",
    "complex.npy",
    "empty.npy",
    "line.npy",
    "big5d.npy",
    "vol.npy",
    "volrgb.npy",
    "vollow.npy",
    "vol.tif",
    "obj.npy",
    "bomb.png",
    "photo.bmp",
    "notes.txt",
    "dir.png",
    "missing.png",
    "missing.npy",
]
OUTPUTS = [
    "out.png",
    "out.tif",
    "out.npy",
    "out.npz",
    "out.jpg",
    "out",
    "nodir/out.png",
    "OUT.PNG",
    "dir.png",
]


def _digest(folder):
    return {
        p.name: (p.is_dir() or hashlib.sha256(p.read_bytes()).hexdigest()) for p in folder.iterdir()
    }


# --------------------------------------------------------------------------- strategies
@st.composite
def damaged(draw, pool, work):
    """A damaged copy of a valid file, in the run's own folder: 1 to 8 bytes flipped, or cut."""
    name = draw(st.sampled_from(DAMAGEABLE))
    data = bytearray((pool / name).read_bytes())
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 8))):
            # the headers are where the damage is most interesting: favour the first bytes
            limit = draw(st.sampled_from([min(64, len(data)), len(data)]))
            i = draw(st.integers(0, limit - 1))
            data[i] ^= draw(st.integers(1, 255))
    else:
        data = data[: draw(st.integers(0, len(data) - 1))]
    path = work / ("damaged_" + name)
    path.write_bytes(bytes(data))
    return str(path)


@st.composite
def argv(draw, pool, work):
    """One argument vector: a subcommand, its files and options, each good most of the time
    and bad now and then (so that runs get past the first check as often as they stop at
    it), the options in any order, now and then one without its value."""
    command = draw(st.sampled_from(["filter", "upsample", "crf"]))
    groups = []  # [flag, value] pairs and the positional input, shuffled at the end

    def rarely(n):
        """True in one draw out of ``n`` (sampled_from: integers() favours its bounds)."""
        return draw(st.sampled_from([False] * (n - 1) + [True]))

    def value(good, bad):
        return draw(st.sampled_from(bad if rarely(8) else good))

    def maybe(flag, good, bad, p=2):
        """``flag`` with a good or bad value, in one run out of ``p``."""
        if rarely(p):
            groups.append([flag, value(good, bad)])

    def file(preferred):
        if rarely(6):
            return draw(damaged(pool, work))
        return str(pool / draw(st.sampled_from(POOL if rarely(5) else preferred)))

    floats = ["0.5", "1", "3", "12"]
    if command != "crf":  # 2-D or 3-D (volumes) and the voxel size
        maybe("--dims", ["2", "3"], ["0", "4", "x", "1"], 3)
        maybe("--spacing", ["1,1", "2,1,1", "1"], ["0,1,1", "a", "1,,2", "inf,1", "-1,1,1"], 4)
    if command == "filter":
        images = ["rgb8.png", "grey16.png", "grey16.tif", "rgbf32.npy", "stack.npz"]
        groups.append([file(images + ["vol.npy", "volrgb.npy", "vol.tif"])])
        if draw(st.booleans()):
            guides = ["rgb8.png", "grey16.png", "grey16.tif", "vol.npy", "vol.tif"]
            groups.append(["--guide", file(guides)])
            maybe("--guide-key", ["images"], ["probs", "x"], 4)
            maybe("--guide-channel-axis", ["auto"], AXES, 3)
        maybe("--sigma-spatial", floats, FLOATS)
        maybe("--sigma-color", floats, FLOATS)
        border = value(["reflect", "nearest", "constant", "renormalize"], ["wrap", ""])
        if draw(st.booleans()):
            groups.append(["--border", border])
        # thousands of pixels of radius cost r³ with border nearest (a library matter)
        maybe("--radius", ["0", "1", "2", "4"], INTS + ([] if border == "nearest" else BIG_INTS))
    elif command == "upsample":
        groups.append([file(["low.png", "low.npy", "vollow.npy"])])
        if not rarely(6):
            groups.append(["--guide", file(["rgb8.png", "rgbf32.npy", "vol.npy"])])
        if not rarely(6):
            groups.append(["--factor", value(["2"], INTS + BIG_INTS)])
        if draw(st.booleans()):
            groups.append(["--confidence", file(["conf.npy", "bools.npy"])])
            maybe("--confidence-key", ["x"], ["x"], 4)
        maybe("--sigma-spatial", floats, FLOATS)
        maybe("--sigma-color", floats, FLOATS)
        maybe("--radius", ["0", "1", "3"], INTS + BIG_INTS)
    else:
        groups.append([file(["probs.npy", "stack.npz"])])
        if not rarely(6):
            groups.append(["--image", file(["rgb8.png"])])
        maybe("--image-key", ["images"], ["x"], 4)
        if rarely(4):  # a new file, or one of the inputs (refused)
            groups.append(
                [
                    "--probabilities-out",
                    str(work / draw(st.sampled_from(OUTPUTS))) if not rarely(4) else groups[0][0],
                ]
            )
        for flag in ("--num-steps", "--blur"):  # their cost grows with the value
            maybe(flag, ["1", "2"], INTS, 3)
        for flag in ("--kernel-size", "--smoothness-kernel-size"):
            maybe(flag, ["3", "5"], INTS + BIG_INTS, 3)
        maybe("--dilation", ["1", "2"], INTS + BIG_INTS, 3)
        for flag in (
            "--sigma-xy",
            "--sigma-color",
            "--weight",
            "--smoothness-weight",
            "--unary-weight",
        ):
            maybe(flag, ["0.1", "1", "3"], FLOATS, 3)
    maybe("--key", ["images", "probs"], ["nope", ""], 4)
    maybe("--channel-axis", ["auto", "-1"], AXES, 3)
    if command != "crf":
        maybe("--tile-rows", ["0", "1", "3", "100"], INTS + BIG_INTS, 3)
    maybe("--threads", ["1"], ["0", "-1", "x", "99999"], 5)
    maybe("--backend", ["cpu"], ["cuda", "tpu"], 5)
    if rarely(10):
        groups.append([draw(st.sampled_from(["--bogus", "-z", "stray", "--radius"]))])
    if not rarely(10):
        out = value(["out.npy", "out.npz", "out.tif", "out.png"], OUTPUTS)
        target = str(pool / out) if out == "dir.png" else str(work / out)
        if rarely(13):  # an output that is an input
            target = groups[0][0]
        groups.append(["-o", target])
    groups.append(["-q"])
    groups = draw(st.permutations(groups))
    args = [command] + [a for g in groups for a in g]
    if rarely(15):  # a value lost: the next flag or nothing takes its place
        del args[draw(st.integers(1, len(args) - 1))]
    return args


# --------------------------------------------------------------------------- the run
def _run_in_process(args):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(args)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # --threads is process-wide
    return code, out.getvalue(), err.getvalue()


def _kind(stderr):
    line = next(x for x in stderr.splitlines() if ": error: " in x).split(": error: ", 1)[1]
    for words in (
        "argument",
        "cannot read",
        "shape mismatch",
        "unknown extension",
        "has dtype",
        "have dtype",
        "never overwrites",
        "no such file",
        "decompression",
        "threads",
        "cuda",
        "Unable to allocate",
        "unrecognized",
        "required",
        "is a directory",
        "PNG holds",
        "does not exist",
        "has shape",
        "have shape",
        "no array",
    ):
        if words in line:
            return words + (" " + line.split(":")[0].split()[-1] if words == "argument" else "")
    return line[:60]


def check_outcome(code, stdout, stderr, args):
    """The contract of every run, whatever its arguments."""
    where = f"pacnp {' '.join(args)}\nexit {code}\nstderr:\n{stderr}"
    assert code in (0, 1, 2), where
    assert "Traceback" not in stderr, where
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("pacnp") and ": error: " in line]
    others = [line for line in lines if line not in errors]
    assert len(errors) == (0 if code == 0 else 1), where
    assert all(line.startswith("pacnp: warning: ") for line in others), where
    assert "unexpected" not in stderr, where  # an exception no check named
    assert stdout == "", where


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_generated_command_lines_fail_cleanly(pool, data):
    before = _digest(pool)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args = data.draw(argv(pool, work), label="argv")
        work_before = {p.name for p in work.iterdir()}  # the damaged inputs, if any
        code, stdout, stderr = _run_in_process(args)
        check_outcome(code, stdout, stderr, args)
        # how far runs get (pytest --hypothesis-show-statistics): usage errors, failures while
        # reading or computing, and successes must all be well represented
        event(f"exit {code}" + ("" if code == 0 else ": " + _kind(stderr)))
        left = {p.name for p in work.iterdir()} - work_before
        assert not any(name.endswith(_PART) for name in left), (args, left)
        if code != 0:
            assert left == set(), (args, left, stderr)  # no output, not even half of one
        else:
            assert left and all(not name.endswith(_PART) for name in left), (args, left)
    assert _digest(pool) == before, args  # inputs untouched
    assert not any(p.name.endswith(_PART) for p in pool.iterdir())


# --------------------------------------------------------------------------- in a process
def _run_process(args, cwd):
    """``python -m pacnp ARGS``: (exit status, stdout, stderr, peak resident set in bytes)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop(_imageio.MAX_BYTES_ENV, None)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pacnp", *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
        )
        try:
            proc.wait(timeout=300)  # never a hang
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode()


def _peak_rss(args, cwd):
    """Run ``python -m pacnp ARGS`` and return (exit status, stderr, its peak RSS in bytes)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop(_imageio.MAX_BYTES_ENV, None)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pacnp", *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read().decode(), usage.ru_maxrss * 1024  # KiB on Linux


PROCESS_CASES = [
    ("no arguments", []),
    ("unknown command", ["sharpen", "x.png"]),
    ("bad radius", ["filter", "{d}/rgb8.png", "-o", "o.png", "--radius", "-3"]),
    ("missing input", ["filter", "{d}/missing.png", "-o", "o.png"]),
    ("damaged tiff", ["filter", "{w}/damaged.tif", "-o", "o.tif"]),
    ("no cuda", ["--backend", "cuda", "filter", "{d}/rgb8.png", "-o", "o.png"]),
]


@pytest.mark.parametrize("name, args", PROCESS_CASES, ids=[c[0] for c in PROCESS_CASES])
def test_process_exit_status_and_one_line(pool, tmp_path, name, args):
    data = bytearray((pool / "grey16.tif").read_bytes())
    data[10:40] = bytes(30)  # the first IFD's entries zeroed
    (tmp_path / "damaged.tif").write_bytes(bytes(data))
    before = _digest(pool)
    argv_ = [a.format(d=pool, w=tmp_path) for a in args]
    code, stdout, stderr = _run_process(argv_, tmp_path)
    check_outcome(code, stdout, stderr, argv_)
    assert code in (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.tif"]
    assert _digest(pool) == before


def test_decompression_bomb_through_the_command_line_stays_small(pool, tmp_path):
    """The 1 MB PNG claiming 100000 × 100000 16-bit RGB that took the command line to 2.1 GiB:
    refused from its header, the process's peak resident set no more than its imports'."""
    code, stderr, peak = _peak_rss(["filter", pool / "bomb.png", "-o", "o.png"], tmp_path)
    assert code == 1, stderr
    assert stderr.startswith("pacnp: error: input ") and len(stderr.splitlines()) == 1
    assert "100000x100000 = 10000000000 pixels of 3 × uint16" in stderr
    assert "PACNP_MAX_IMAGE_BYTES=60000000000" in stderr
    _, _, baseline = _peak_rss(["filter", pool / "missing.png", "-o", "o.png"], tmp_path)
    assert peak < baseline + (32 << 20), (peak, baseline)
    assert list(tmp_path.iterdir()) == []


DEMO_CASES = [
    ["--bogus"],
    ["--factors", "1"],
    ["--factors", "abc"],
    ["--downsample", "cubic"],
    ["--only", "x"],
    ["--factors", "99999999999999999999"],
]


@pytest.mark.parametrize("extra", DEMO_CASES, ids=[" ".join(c) for c in DEMO_CASES])
def test_demo_refuses_bad_options_before_any_work(extra):
    """``pacnp demo`` hands its options to pacnp.demo, whose own parser reports them (its
    usage text included: that module's format, not the one-line errors of the commands
    above): status 2, no traceback, nothing on stdout."""
    code, stdout, stderr = _run_in_process(["demo", *extra])
    assert code == 2, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert "error" in stderr.splitlines()[-1] or "pacnp.demo:" in stderr.splitlines()[-1]
