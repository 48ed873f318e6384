"""Build one virtual environment per supported anomalib minor version and run the plugin's tests in each.

    python scripts/anomalib_matrix.py                       # every minor in compat.TESTED_MINORS
    python scripts/anomalib_matrix.py --ends                # CI: the oldest and the newest tested minor
    python scripts/anomalib_matrix.py --minors 2.3 --keep   # keep the venv to look around

No venv downloads its own PyTorch: each one sees the running interpreter's site-packages (which must hold torch,
as the project's own venv does) behind its own, through a ``.pth`` line, and pip is constrained to the torch and
torchvision found there. pip then installs into the venv only what the anomalib version needs differently
(anomalib itself, older pins) and this repository (editable). Each venv takes a few hundred MB and is deleted after
its run unless ``--keep``. The tests run are the registration tests and the conformance kit (without its slow and
multi-process cases); pass other pytest arguments after ``--``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = ["tests/integration/test_registration.py", "tests/conformance/test_model_conformance.py"]
DEFAULT_PYTEST_ARGS = ["-q", "-x", "-p", "no:cacheprovider", "-m", "not slow and not ddp"]


def tested_minors() -> list[str]:
    """The minors listed in ``anomalib_surface.compat.TESTED_MINORS`` (read without importing anomalib)."""
    sys.path.insert(0, str(REPO_ROOT))
    from anomalib_surface.compat import TESTED_MINORS

    return [f"{major}.{minor}" for major, minor in TESTED_MINORS]


def run(command: list[str], **kwargs: object) -> None:
    """Run ``command``, echoing it; raise on failure."""
    print("+", " ".join(command), flush=True)  # noqa: T201 - progress of a command-line tool
    subprocess.run(command, check=True, **kwargs)  # noqa: S603 - our own command lines


def build_venv(minor: str, root: Path, extra: list[str]) -> Path:
    """A venv at ``root/anomalib-<minor>`` holding the newest anomalib ``<minor>.x`` and this repository (editable).

    Returns:
        The venv's python.
    """
    venv = root / f"anomalib-{minor}"
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    shared_site = sysconfig.get_paths()["purelib"]
    # Appended after the venv's own site-packages: what pip installs here shadows the shared copy.
    Path(own_site, "_shared_torch_site.pth").write_text(shared_site + "\n")
    constraints = root / f"constraints-{minor}.txt"
    constraints.write_text(f"torch=={version('torch')}\ntorchvision=={version('torchvision')}\n")
    run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    # anomalib itself first, into the venv's own site-packages even when the shared one holds the same version
    # (pip would call it satisfied there and leave the venv without its own `anomalib` command).
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", f"anomalib~={minor}.0"])
    run([
        str(python), "-m", "pip", "install", "-q", "-c", str(constraints),
        f"anomalib~={minor}.0", "-e", f"{REPO_ROOT}[test]", *extra,
    ])
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minors", nargs="+", default=None, help="anomalib minors, e.g. 2.4 2.7 (default: all tested)")
    parser.add_argument("--ends", action="store_true", help="only the oldest and the newest tested minor")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "anomalib-matrix")
    parser.add_argument("--with", dest="extra", nargs="*", default=[], help="extra packages to install in each venv")
    parser.add_argument("--keep", action="store_true", help="keep each venv after its run")
    parser.add_argument("pytest_args", nargs="*", help="after --: tests and pytest options (default: see module doc)")
    args = parser.parse_args()
    pytest_args = args.pytest_args or [*DEFAULT_TESTS, *DEFAULT_PYTEST_ARGS]
    args.root.mkdir(parents=True, exist_ok=True)
    results = {}
    minors = args.minors or tested_minors()
    if args.ends:
        minors = sorted({minors[0], minors[-1]}, key=minors.index)
    for minor in minors:
        start = time.monotonic()
        try:
            python = build_venv(minor, args.root, args.extra)
            installed = subprocess.run(
                [str(python), "-c", "import anomalib; print(anomalib.__version__)"],
                check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
            ).stdout.strip().splitlines()[-1]
            path = os.pathsep.join([str(python.parent), os.environ.get("PATH", "")])
            env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "PATH": path}
            passed = subprocess.run([str(python), "-m", "pytest", *pytest_args], cwd=REPO_ROOT, env=env).returncode == 0  # noqa: S603
            results[minor] = f"anomalib {installed}: {'passed' if passed else 'FAILED'}"
        except subprocess.CalledProcessError as error:
            results[minor] = f"set-up FAILED ({' '.join(map(str, error.cmd))[:200]})"
        finally:
            if not args.keep:
                shutil.rmtree(args.root / f"anomalib-{minor}", ignore_errors=True)
        results[minor] += f" in {time.monotonic() - start:.0f} s"
    for minor, result in results.items():
        print(f"anomalib {minor}.x -> {result}")  # noqa: T201
    return 0 if all("passed" in result for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
