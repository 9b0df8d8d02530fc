"""The example scripts of ``examples/`` run as the README shows them, on small sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("source", ["zarr", "npy"])
def test_dask_ooc_matches_the_in_memory_filter(tmp_path, source):
    """The out-of-core script on a 256² image in 64² chunks (threaded scheduler: no cluster to
    start): it exits 0 only when its seam tiles equal the in-memory filter."""
    pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    pytest.importorskip("psutil")
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "dask_ooc.py"),
            "--size",
            "256",
            "--chunk",
            "64",
            "--source",
            source,
            "--scheduler",
            "threads",
            "--workers",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--check",
            "4",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "seam tiles vs in-memory filter: max |difference|" in proc.stdout
    assert not any((tmp_path / "work").iterdir())  # the stores are removed without --keep
