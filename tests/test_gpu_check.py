"""`make gpu-check` cannot rot without a GPU: the benchmark script's dry run (the same code on the
CPU, tiny shapes) writes every row and every target; the wheel list parses; the report reads
pytest's results. The GPU run itself is tools/gpu/README.md's."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "tools" / "gpu"


def load(name):
    spec = importlib.util.spec_from_file_location(f"_gpu_{name}", GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_bench_dry_run_writes_every_row_and_target(tmp_path):
    pytest.importorskip("torch", reason="the benchmarks' peers (cuDNN, unfold) are torch")
    md, js = tmp_path / "bench.md", tmp_path / "bench.json"
    r = subprocess.run(
        [
            sys.executable,
            str(GPU / "bench_gpu.py"),
            "--dry-run",
            "--out",
            str(md),
            "--json",
            str(js),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(js.read_text())
    assert report["dry_run"] is True
    rows = {(x["workload"], x["pass"], x["impl"]): x for x in report["rows"]}
    expected = load("bench_gpu").expected_rows()
    assert list(rows) == expected
    assert {w for w, _, _ in expected} == {"W1", "W2", "W5", "W7"}
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row["status"])
        assert row["median_ms"] > 0 and row["repeats"] == 1, key
    # pacnp computes what the unfold formulation computes (float32), on every forward
    for wl in ("W1", "W2", "W5", "W7"):
        for impl in ("pacnp",) + (("pacnp_fused",) if wl in ("W1", "W2") else ()):
            assert rows[(wl, "forward", impl)]["rel_err"] < 1e-5, (wl, impl)
    targets = [t["target"] for t in report["targets"]]
    assert targets == [
        "W1 forward ≤ 3× cuDNN conv2d",
        "W1 forward ≥ 5× faster than unfold+einsum",
        "W2 forward ≤ 3× cuDNN conv2d",
        "W2 forward ≥ 5× faster than unfold+einsum",
        "W5 ≤ 2 ms",
    ]
    assert all(t["status"] in ("PASS", "FAIL") for t in report["targets"])
    text = md.read_text()
    assert "DRY RUN" in text
    for wl, pass_, impl in expected:
        assert f"| {wl} | {pass_} | {impl} |" in text
    for t in targets:
        assert f"| {t} |" in text


def test_wheel_list_parses_one_version_each():
    wheels = load("wheels")
    entries = wheels.read_list()
    names = [e.name for e in entries]
    assert "numba-cuda" in names and len(set(names)) == len(names)
    for e in entries:
        assert e.stem.endswith(f"-{e.version}-") and "-" not in e.stem[: -len(e.version) - 2]
    ok = "numba_cuda-0.30.4-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
    assert wheels.check_tags(Path(ok)) is None
    assert wheels.check_tags(Path("pytest_timeout-2.4.0-py3-none-any.whl")) is None
    assert "CPython 3.12" in wheels.check_tags(
        Path("numba_cuda-0.30.4-cp311-cp311-manylinux_2_28_x86_64.whl")
    )
    assert "x86_64" in wheels.check_tags(
        Path("numba_cuda-0.30.4-cp312-cp312-manylinux_2_28_aarch64.whl")
    )


def test_wheel_list_rejects_two_versions_of_one_name(tmp_path):
    wheels = load("wheels")
    p = tmp_path / "w.txt"
    p.write_text("numba-cuda==0.30.4 min=0.30\nnumba_cuda==0.31.0\n")
    with pytest.raises(SystemExit, match="listed twice"):
        wheels.read_list(p)


def test_report_reads_pytest_results(tmp_path):
    check = load("gpu_check")
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_cuda" name="test_a"/>'
        '<testcase classname="tests.test_cuda" name="test_b">'
        '<failure message="AssertionError: K differs&#10;more">x</failure></testcase>'
        '<testcase classname="tests.test_cuda" name="test_c"><skipped/></testcase>'
        '<testcase classname="tests.test_cuda" name="test_d"/>'
        "</testsuite></testsuites>"
    )
    log = tmp_path / "r.log"
    log.write_text("SKIPPED [1] tests/test_cuda.py:9: no cupy\n")
    line, fails = check.junit_summary(xml, log)
    assert line.startswith("4 tests: 2 passed, 1 failed, 0 errors, 1 skipped")
    assert "no cupy" in line
    assert fails == ["tests.test_cuda::test_b — failure: AssertionError: K differs"]
    # no JUnit file (the step was killed): pytest's last summary line
    log.write_text(
        "...\n=========== 3 failed, 10 passed in 99.0s ===========\n"
        "FAILED tests/test_cuda.py::test_x - boom\n"
    )
    line, fails = check.junit_summary(tmp_path / "missing.xml", log)
    assert line == "3 failed, 10 passed in 99.0s" and fails == ["tests/test_cuda.py::test_x - boom"]


def test_a_step_past_its_limit_is_stopped_and_its_log_kept(tmp_path):
    check = load("gpu_check")
    step = check.Step(
        "slow",
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
        "slow.log",
        budget=1,
    )
    check.run_step(step, tmp_path, None, timeout=1.0)
    assert step.status == "TIMED OUT after 1 s" and step.seconds < 10
    assert "started" in (tmp_path / "slow.log").read_text()
