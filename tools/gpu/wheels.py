"""The wheels of tools/gpu/wheels.txt: download them here, install them on the GPU machine.

    python3 tools/gpu/wheels.py download [--dest .whl]     # here (network to PyPI)
    python3 tools/gpu/wheels.py install  [--dest .whl] [--target /tmp/site] [--dry-run]

``download`` fetches each listed wheel for CPython 3.12 on manylinux x86_64 (the GPU machine's
python, whatever runs this script), ``--no-deps`` (wheels.txt names every dependency), removes
wheels in ``--dest`` that the list no longer names (two versions of one name stop the install
there) and prints the sizes. ``install`` picks, line by line, the wheels the running python
lacks or has too old (``min=``), installs them with pip ``--no-index --no-deps --target`` and,
when one of them brings a ``.pth`` file, writes a ``sitecustomize.py`` so that the target
directory's ``.pth`` files run (``--target`` directories on PYTHONPATH are not site directories;
numba-cuda's ``.pth`` is what redirects ``numba.cuda`` to it). Standard library only: it runs
before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIST = HERE / "wheels.txt"
PYTHON_VERSION = "3.12"
# manylinux tags pip must match exactly (device README: add others when a wheel is not found)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# the carry limit of the device tool is 64 MiB for the whole working tree
SIZE_LIMIT = 24 * 2**20

SITECUSTOMIZE = '''\
"""Written by tools/gpu/wheels.py: run the .pth files of this --target directory (a PYTHONPATH
entry is not a site directory), then the sitecustomize this file shadows, if any."""
import importlib.util
import os
import site
import sys

_here = os.path.dirname(os.path.abspath(__file__))
site.addsitedir(_here)
for _p in sys.path:
    _f = os.path.join(os.path.abspath(_p or "."), "sitecustomize.py")
    if os.path.dirname(_f) != _here and os.path.isfile(_f):
        _spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", _f)
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
'''


class Entry:
    def __init__(self, name, version, minimum, line):
        self.name, self.version, self.minimum, self.line = name, version, minimum, line

    @property
    def stem(self):
        """The wheel file name's first part: the name normalised as wheel file names spell it."""
        return re.sub(r"[-_.]+", "_", self.name).lower() + "-" + self.version + "-"


def read_list(path=LIST):
    entries, seen = [], set()
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(
            r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)"
            r"(?:\s+min=([0-9][A-Za-z0-9.]*))?",
            line,
        )
        if m is None:
            raise SystemExit(f"{path}:{n}: expected 'NAME==VERSION [min=VERSION]', got {raw!r}")
        key = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        if key in seen:
            raise SystemExit(f"{path}:{n}: {m.group(1)} is listed twice (one version each)")
        seen.add(key)
        entries.append(Entry(m.group(1), m.group(2), m.group(3), n))
    return entries


def version_key(v):
    """A comparable key of a version string (packaging's Version where installed)."""
    try:
        from packaging.version import Version

        return Version(v)
    except Exception:  # noqa: BLE001 - no packaging, or a version it cannot parse
        return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:4])


def installed_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wheel_file(entry, dest):
    hits = sorted(p for p in Path(dest).glob("*.whl") if p.name.lower().startswith(entry.stem))
    return hits[0] if hits else None


def check_tags(path):
    """Why the wheel cannot install on CPython 3.12 manylinux x86_64, or None."""
    tags = path.name[:-4].split("-")[-3:]  # python, abi, platform
    py, abi, plat = tags
    pys = py.split(".")
    if not ({"cp312", "py3", "py312"} & set(pys)) or (abi not in ("none", "abi3", "cp312")):
        return f"{path.name}: not for CPython 3.12 ({py}-{abi})"
    if plat != "any" and not any(
        p.endswith("x86_64") and p.startswith("manylinux") for p in plat.split(".")
    ):
        return f"{path.name}: not a manylinux x86_64 wheel ({plat})"
    return None


def download(args):
    entries = read_list(args.list)
    dest = Path(args.dest)
    dest.mkdir(exist_ok=True)
    keep = set()
    for e in entries:
        have = wheel_file(e, dest)
        if have is None:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                PYTHON_VERSION,
                "--implementation",
                "cp",
                "-d",
                str(dest),
            ]
            for p in PLATFORMS:
                cmd += ["--platform", p]
            subprocess.run(cmd + [f"{e.name}=={e.version}"], check=True)
            have = wheel_file(e, dest)
            if have is None:
                raise SystemExit(f"pip saved no wheel named {e.stem}*.whl for {e.name}")
        problem = check_tags(have)
        if problem:
            raise SystemExit(problem)
        keep.add(have.name)
    for p in dest.glob("*.whl"):
        if p.name not in keep:
            print(f"removing {p.name} (not in {args.list})")
            p.unlink()
    total = 0
    for name in sorted(keep):
        size = (dest / name).stat().st_size
        total += size
        print(f"{size / 2**20:7.2f} MiB  {name}")
    print(f"{total / 2**20:7.2f} MiB  in all ({len(keep)} wheels in {dest}/)")
    if total > SIZE_LIMIT:
        raise SystemExit(
            f"{total / 2**20:.1f} MiB of wheels: over {SIZE_LIMIT / 2**20:.0f} MiB; "
            f"the device tool carries 64 MiB with the whole working tree"
        )


def plan(entries, dest):
    """[(entry, wheel path or None, installed version, install?)]."""
    rows = []
    for e in entries:
        have = installed_version(e.name)
        need = e.minimum is None or have is None or version_key(have) < version_key(e.minimum)
        rows.append((e, wheel_file(e, dest), have, need))
    return rows


def install(args):
    rows = plan(read_list(args.list), args.dest)
    chosen, missing = [], []
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    for e, whl, have, need in rows:
        why = (
            "always"
            if e.minimum is None
            else f"missing (need >= {e.minimum})"
            if have is None
            else f"has {have} < {e.minimum}"
            if need
            else f"has {have} >= {e.minimum}: kept"
        )
        print(f"  {e.name:18s} {'INSTALL ' + e.version if need else 'skip':18s} {why}")
        if need:
            if whl is None:
                missing.append(e.name)
            else:
                chosen.append(whl)
    if missing:
        print(
            f"wheels missing from {args.dest}/: {', '.join(missing)} (run `make gpu-wheels` "
            f"and carry .whl)"
        )
        return 2
    if not chosen:
        print("nothing to install")
        return 0
    bad = [p for p in (check_tags(w) for w in chosen) if p]
    if bad:
        print("\n".join(bad))
        return 2
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        args.target,
        *map(str, chosen),
    ]
    print(" ".join(cmd))
    if args.dry_run:
        print("dry run: nothing installed")
        return 0
    rc = subprocess.run(cmd).returncode
    if rc == 0 and any(Path(args.target).glob("*.pth")):
        (Path(args.target) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        print(f"wrote {args.target}/sitecustomize.py (runs its .pth files)")
    return rc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("download", "install", "list"))
    ap.add_argument("--list", default=str(LIST), help="the wheel list (default: %(default)s)")
    ap.add_argument("--dest", default=".whl", help="the wheel folder (default: %(default)s)")
    ap.add_argument("--target", default="/tmp/site", help="install: pip --target directory")
    ap.add_argument("--dry-run", action="store_true", help="install: decide, install nothing")
    args = ap.parse_args(argv)
    if args.command == "download":
        return download(args)
    if args.command == "list":
        for e in read_list(args.list):
            print(f"{e.name}=={e.version}" + (f"  min={e.minimum}" if e.minimum else ""))
        return 0
    return install(args)


if __name__ == "__main__":
    sys.exit(main())
