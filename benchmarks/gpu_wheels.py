"""Gather the wheels a GPU machine without a package registry needs to run advbench.

The lent GPU machines have their own Python with torch and CUDA and reach no registry, so what
they lack travels with the working tree: this computes advbench's dependency closure from the
environment it runs in, leaves out what the target already has (``--have``: its ``pip freeze`` or
``pip list`` output, or one name per line), downloads the rest as wheels for the target's Python,
builds the few that only ship as source with that Python (``--build-python``), and builds
advbench's own wheel from this checkout.

    python benchmarks/gpu_wheels.py --have device-packages.txt --out .whl \\
        --python-version 3.12 --build-python ~/.pyenv/versions/3.12.1/bin/python

Then on the machine: ``pip install --no-index --no-deps --target /tmp/site .whl/*.whl`` and
``PYTHONPATH=/tmp/site`` (benchmarks/gpu_session.sh does both). ``--carry NAME==VERSION`` adds a
package (with what it needs) the target has in another version, or one ``--skip`` left out:
``--skip mlflow --carry mlflow-skinny==3.17.2 --carry mlflow-tracing==3.17.2 --carry
sqlalchemy==2.1.9 --carry alembic==1.20.1`` carries MLflow's client and its SQLite store without
its server, which is all advbench uses (the H200 runs of 2026-11-29 ran so; this made the same set
but prettytable and wcwidth) and saves ~14 MiB of the 64 a call takes.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Every distribution ``roots`` need here (with the extras advbench asks for), not entering ``skip``."""
    extras = {canonical(r.name): r.extras for r in map(Requirement, metadata.requires("advbench") or [])}
    found, todo = {}, list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in found or name in skip:
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        for requirement in map(Requirement, metadata.requires(name) or []):
            wanted = extras.get(name, set()) or {""}
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in wanted):
                todo.append(requirement.name)
    return found


def names(path: Path) -> set[str]:
    """Distribution names in ``pip freeze`` / ``pip list`` output or a plain list."""
    text = path.read_text()
    return {canonical(re.split(r"[ =<>@]", line.strip())[0]) for line in text.splitlines() if line.strip()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--have", type=Path, help="the target's package list")
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--build-python", help="a Python of the target's version, for source-only packages")
    parser.add_argument(
        "--skip", action="append", default=[], help="leave NAME and what only it needs out (repeatable)"
    )
    parser.add_argument("--carry", action="append", default=[], help="NAME==VERSION to carry anyway")
    args = parser.parse_args(argv)
    have = names(args.have) if args.have else set()
    carried = {canonical(Requirement(spec).name): spec for spec in args.carry}
    needed = closure(["advbench", *carried], frozenset(map(canonical, args.skip)))
    needed.pop("advbench")  # built from this checkout below
    wanted = [
        carried.get(name, f"{name}=={version}")
        for name, version in sorted(needed.items())
        if name in carried or name not in have
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    source_only = []
    for spec in wanted:
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        download += ["--python-version", args.python_version, "--implementation", "cp", *platforms]
        if subprocess.run([*download, "-d", str(args.out), spec], capture_output=True).returncode:
            source_only.append(spec)
    if source_only and args.build_python:
        command = [args.build_python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(args.out)]
        subprocess.run([*command, *source_only], check=True)
    elif source_only:
        print(f"no wheel for {', '.join(source_only)}: give --build-python", file=sys.stderr)
    for old in args.out.glob("advbench-*.whl"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(args.out), str(ROOT)], check=True
    )
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' leftovers would go stale
    size = sum(f.stat().st_size for f in args.out.glob("*.whl")) / 2**20
    print(
        f"{len(list(args.out.glob('*.whl')))} wheels, {size:.1f} MiB in {args.out} ({len(wanted)} asked for)"
    )


if __name__ == "__main__":
    main()
