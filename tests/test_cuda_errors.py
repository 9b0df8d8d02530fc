"""Dispatch to the CUDA backend that needs no GPU and no simulator (runs in the main test
process): ``import pacnp`` stays CUDA-free, device arrays are recognised without importing
their library, mixing host and device arrays is a TypeError naming them, and a device array
without numba-cuda installed is an ImportError that says what to install."""

import subprocess
import sys

import numpy as np
import pytest

import pacnp
from pacnp import _namespace


class FakeDeviceArray:
    """Looks like a foreign library's CUDA array to DLPack-speaking code (device type 2)."""

    def __init__(self, shape, index=0):
        self.shape, self.ndim, self.dtype = shape, len(shape), np.dtype(np.float64)
        self.index = index

    def __dlpack__(self, stream=None):
        raise AssertionError("pacnp must not read a device array through host DLPack")

    def __dlpack_device__(self):
        return (2, self.index)


def test_import_pacnp_does_not_import_numba_cuda():
    code = (
        "import sys, numpy as np, pacnp; "
        "pacnp.pacpool2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3, 3, 3)), 3, padding=1); "
        "bad = [m for m in sys.modules if m.startswith(('numba.cuda', 'pacnp.cuda', 'cupy'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_device_of_recognises_cuda_and_host_arrays():
    assert _namespace.device_of(FakeDeviceArray((1,), 3), "f", "x") == 3
    assert _namespace.device_of(np.zeros(2), "f", "x") is None
    torch = pytest.importorskip("torch")
    assert _namespace.device_of(torch.zeros(2), "f", "x") is None


def test_other_devices_are_a_type_error():
    class Rocm(FakeDeviceArray):
        def __dlpack_device__(self):
            return (10, 0)

    with pytest.raises(TypeError, match=r"pacpool2d: input lives on DLPack device type 10"):
        pacnp.pacpool2d(Rocm((1, 1, 3, 3)), Rocm((1, 1, 3, 3, 3, 3)), 3, padding=1)


def test_mixing_host_and_device_arrays_is_a_type_error_naming_them():
    K = np.ones((1, 1, 3, 3, 3, 3))
    with pytest.raises(
        TypeError,
        match=r"pacpool2d: arrays on a CUDA device and on the host "
        r"cannot be mixed \(on the device: input; on the host: "
        r"kernel\)",
    ):
        pacnp.pacpool2d(FakeDeviceArray((1, 1, 3, 3)), K, 3, padding=1)


def test_arrays_on_two_devices_are_a_type_error(monkeypatch):
    monkeypatch.setattr(_namespace, "_cuda_backend", lambda fn, name: pytest.fail("backend loaded"))
    with pytest.raises(
        TypeError,
        match=r"pacpool2d: arrays on different CUDA devices cannot be "
        r"mixed \(input: cuda:0, kernel: cuda:1\)",
    ):
        pacnp.pacpool2d(
            FakeDeviceArray((1, 1, 3, 3), 0), FakeDeviceArray((1, 1, 3, 3, 3, 3), 1), 3, padding=1
        )


def test_device_array_without_numba_cuda_says_what_to_install(monkeypatch):
    real = _namespace.importlib.util.find_spec
    monkeypatch.setattr(
        _namespace.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "numba_cuda" else real(name, *a),
    )
    with pytest.raises(
        ImportError,
        match=r"pacpool2d: input lives on a CUDA device; pacnp's "
        r"CUDA backend needs the numba-cuda package: "
        r"pip install numba-cuda",
    ):
        pacnp.pacpool2d(
            FakeDeviceArray((1, 1, 3, 3)), FakeDeviceArray((1, 1, 3, 3, 3, 3)), 3, padding=1
        )
