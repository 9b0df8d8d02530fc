"""A read-only install: pacnp installed non-editable into a site-packages that its user cannot
write, run with a home that is not writable either, so numba finds no directory for its cache.
pacnp must still run there (its kernels compiled in memory), say so once and name the remedy
(NUMBA_CACHE_DIR), and honour a NUMBA_CACHE_DIR that the user sets.

The end-to-end test builds a wheel of this checkout, installs it with ``pip --target`` into a
temporary directory, takes the write permission away and runs a fresh interpreter there. Root
ignores write permissions, so as root the interpreter runs without capabilities (its bounding
set emptied before exec): still uid 0, the owner of the venv under /root, but bound by the
permission bits like any user.
"""

from __future__ import annotations

import base64
import ctypes
import io
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

import pacnp
from pacnp import _jit, filters

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="permission bits of POSIX")

# what the interpreter runs: a bilateral filter and one PAC op (packernel2d), float32 and small:
# compiling their kernels in memory costs ~15 s of CPU (the cheapest PAC op, ~5 s, of those
# measured); the results come back as an .npz on stdout, the checks of the environment as exit
# codes
CHILD = r"""
import base64, io, os, sys, tempfile, warnings
site, probe_dirs = sys.argv[1], sys.argv[2:]
for d in probe_dirs:
    try:
        tempfile.TemporaryFile(dir=d).close()
    except OSError:
        continue
    sys.exit(3)                                  # a directory meant read-only is writable
warnings.simplefilter("always")                  # a second warning would show
import numpy as np
import pacnp
from pacnp import filters
if not pacnp.__file__.startswith(site):
    sys.exit(4)                                  # another pacnp than the installed one
rng = np.random.default_rng(7)
img = rng.random((9, 8), dtype=np.float32)
g = rng.standard_normal((1, 3, 6, 5), dtype=np.float32)
out = {"bilateral": filters.bilateral_filter(img, sigma_spatial=1.0),
       "packernel": pacnp.packernel2d(g, 3, padding=1)[0]}
buf = io.BytesIO()
np.savez(buf, **out)
print(base64.b64encode(buf.getvalue()).decode())
"""


def _expected():
    """What CHILD computes, here with this checkout's pacnp."""
    rng = np.random.default_rng(7)
    img = rng.random((9, 8), dtype=np.float32)
    g = rng.standard_normal((1, 3, 6, 5), dtype=np.float32)
    return {
        "bilateral": filters.bilateral_filter(img, sigma_spatial=1.0),
        "packernel": pacnp.packernel2d(g, 3, padding=1)[0],
    }


def _drop_capabilities():
    """preexec_fn as root: empty the capability bounding set, so that the interpreter exec'd
    next has no CAP_DAC_OVERRIDE and meets the permission bits (PR_CAPBSET_DROP = 24; numbers
    past the kernel's last capability answer EINVAL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def _check(cmd):
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def readonly_install(tmp_path_factory):
    """(site, home): this checkout installed as a wheel into ``site``, then both made
    read-only."""
    base = tmp_path_factory.mktemp("readonly")
    src = base / "src"
    src.mkdir()
    # build from a copy: pip builds a setuptools project in place (build/, *.egg-info), which
    # must not land in the checkout
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "pacnp", src / "pacnp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    # --no-build-isolation: the build uses this environment's setuptools instead of fetching
    # one (tests run offline)
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheel = base / "wheel"
    _check(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel), str(src)])
    _check(
        pip
        + [
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(base / "site"),
            *map(str, wheel.glob("*.whl")),
        ]
    )
    site, home = base / "site", base / "home"
    home.mkdir()
    for path in [site, *site.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    home.chmod(0o555)
    yield site, home
    # writable again, so that pytest can remove its temporary directories
    for path in [site, *site.rglob("*"), home]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _run(site, home, **env):
    """Run CHILD from a fresh interpreter on the read-only install, as a user who cannot write
    there (as root: without capabilities); returns (results, stderr)."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NUMBA_CACHE") and k not in ("XDG_CACHE_HOME", "PYTHONPATH")
    }
    full_env.update(PYTHONPATH=str(site), HOME=str(home), **env)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(site),
            str(site / "pacnp"),
            str(site / "pacnp" / "cpu"),
            str(home),
        ],
        check=False,
        cwd=home,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_drop_capabilities if os.geteuid() == 0 else None,
    )
    if proc.returncode == 3:
        pytest.skip(
            "cannot make a directory read-only for the interpreter (a privileged user "
            "that keeps its capabilities)"
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(io.BytesIO(base64.b64decode(proc.stdout.strip()))) as npz:
        return {k: npz[k] for k in npz.files}, proc.stderr


def _assert_results(got):
    for name, want in _expected().items():
        assert got[name].dtype == want.dtype == np.float32, name
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6, err_msg=name)


def test_runs_on_a_readonly_install_with_one_warning_naming_numba_cache_dir(readonly_install):
    site, home = readonly_install
    got, err = _run(site, home)
    _assert_results(got)
    assert "Traceback" not in err, err
    # one warning, whatever the filters say (the child shows every warning, always)
    assert err.count("KernelCacheWarning") == 1, err
    line = next(ln for ln in err.splitlines() if "KernelCacheWarning" in ln)
    assert "NUMBA_CACHE_DIR" in line and "in memory" in line, line
    # attributed to the caller's line (CHILD's first pacnp call), not to pacnp's internals
    assert line.startswith("<string>:"), line
    assert not list(site.rglob("*.nbi")) and not list(home.iterdir())


# --------------------------------------------------------------------------- in process
@pytest.fixture
def no_cache_dir(monkeypatch):
    """numba finds no cache directory (every locator declines), and pacnp has not warned yet."""
    from numba.core import caching

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    monkeypatch.setattr(_jit, "_warned", False)
    monkeypatch.setattr(_jit, "_env_read", True)  # test_honours_... covers that reload
    monkeypatch.delenv("NUMBA_CACHE_LOCATOR_CLASSES", raising=False)


def _double(a):
    return a * 2.0


def test_without_a_cache_directory_kernels_compile_in_memory_after_one_warning(no_cache_dir):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        kernels = [_jit.njit()(_double) for _ in range(3)]
        outs = [k(np.float32(1.5)) for k in kernels]
    assert outs == [3.0, 3.0, 3.0]
    assert all(type(k._cache).__name__ == "NullCache" for k in kernels)
    cache_warnings = [w for w in seen if issubclass(w.category, _jit.KernelCacheWarning)]
    assert len(cache_warnings) == 1, [str(w.message) for w in seen]
    message = str(cache_warnings[0].message)
    assert "NUMBA_CACHE_DIR" in message and "in memory" in message
    # the warning points at this file's line, not at pacnp's internals
    assert cache_warnings[0].filename == __file__


def test_honours_numba_cache_dir_set_after_importing_numba(monkeypatch, tmp_path):
    """numba read the environment when it was imported (by now it has been); a NUMBA_CACHE_DIR
    set later, before pacnp's first kernel, is where the kernels go."""
    from numba.core import config as nconfig

    monkeypatch.setattr(_jit, "_warned", False)
    monkeypatch.setattr(_jit, "_env_read", False)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _jit.KernelCacheWarning)
            kernel = _jit.njit()(_double)
            assert kernel(np.float32(1.0)) == 2.0
        assert pathlib.Path(kernel._cache.cache_path).is_relative_to(tmp_path)
        assert list(tmp_path.rglob("*.nbi")) and list(tmp_path.rglob("*.nbc"))
    finally:
        # numba's config back to this session's environment
        monkeypatch.undo()
        nconfig.reload_config()
    assert nconfig.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")


def test_an_unusable_numba_cache_dir_is_named(monkeypatch, tmp_path):
    """numba passes over a NUMBA_CACHE_DIR it cannot write (here a file) for the next
    directory: one warning says so, and the kernel still runs."""
    from numba.core import config as nconfig

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setattr(_jit, "_warned", False)
    monkeypatch.setattr(_jit, "_env_read", True)
    monkeypatch.setattr(nconfig, "CACHE_DIR", str(not_a_dir))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        kernel = _jit.njit()(_double)
        assert kernel(np.float32(1.0)) == 2.0
    messages = [str(w.message) for w in seen if issubclass(w.category, _jit.KernelCacheWarning)]
    assert len(messages) == 1 and f"NUMBA_CACHE_DIR={not_a_dir}" in messages[0], messages


def test_a_failed_cache_write_leaves_the_kernel_in_memory(monkeypatch, tmp_path):
    """A cache directory that accepts the locator but fails the write (a full disk, a quota):
    the call still returns its result, with one warning."""
    monkeypatch.setattr(_jit, "_warned", False)
    monkeypatch.setattr(_jit, "_env_read", True)
    from numba.core import config as nconfig

    monkeypatch.setattr(nconfig, "CACHE_DIR", str(tmp_path))
    kernel = _jit.njit()(_double)
    assert type(kernel._cache).__name__ == "FrozenKeyedCache"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kernel._cache._cache_file, "save", full_disk)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert kernel(np.float64(2.0)) == 4.0
        assert kernel(np.float32(2.0)) == 4.0
    messages = [str(w.message) for w in seen if issubclass(w.category, _jit.KernelCacheWarning)]
    assert len(messages) == 1 and "No space left" in messages[0], messages
