"""Start-up cost of the autoload hook for processes that never import anomalib (A/B, interleaved runs).

    python benchmarks/startup_cost.py --runs 30

Each run is ``python -S -c "import site; site.addsitedir(D)"``: ``D`` holds only this repository's
``anomalib_surface_autoload.pth`` (arm "hook"), the same with ``ANOMALIB_DISABLE_PLUGIN_AUTOLOAD=1`` (arm
"switched off"), or nothing (arm "no plugin"). ``-S`` keeps the environment's other ``.pth`` files (and an
installed copy of this hook) out, so the arms differ only by the hook. Prints mean and standard deviation of the
wall time per arm, the number of modules imported, and each arm's difference to "no plugin" with twice its
standard error (a difference inside that band is noise).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PTH = REPO_ROOT / "anomalib_surface" / "anomalib_surface_autoload.pth"


def one_run(site_dir: Path, env: dict[str, str], code: str = "") -> tuple[float, str]:
    """Wall time of one interpreter start and what ``code`` printed."""
    command = [sys.executable, "-S", "-c", f"import site; site.addsitedir({str(site_dir)!r}){code}"]
    start = time.perf_counter()
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout  # noqa: S603
    return time.perf_counter() - start, output.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    root = Path(tempfile.mkdtemp(prefix="startup-cost-"))
    try:
        with_hook, without = root / "hook" / "site-packages", root / "none" / "site-packages"
        with_hook.mkdir(parents=True)
        without.mkdir(parents=True)
        shutil.copy(PTH, with_hook / PTH.name)
        base = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        base.pop("ANOMALIB_DISABLE_PLUGIN_AUTOLOAD", None)
        arms = {
            "no plugin": (without, base),
            "hook": (with_hook, base),
            "switched off": (with_hook, {**base, "ANOMALIB_DISABLE_PLUGIN_AUTOLOAD": "1"}),
        }
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(runs):  # interleaved, so that load changes on the machine hit every arm alike
            for name, (site_dir, env) in arms.items():
                times[name].append(one_run(site_dir, env)[0])
        reference = times["no plugin"]
        for name, (site_dir, env) in arms.items():
            modules = one_run(site_dir, env, "; import sys; print(len(sys.modules))")[1]
            mean, spread = statistics.mean(times[name]), statistics.stdev(times[name])
            line = f"{name:>12}: {1000 * mean:6.2f} ms ± {1000 * spread:5.2f} (n={runs}), {modules} modules"
            if name != "no plugin":
                difference = mean - statistics.mean(reference)
                noise = 2 * (statistics.variance(times[name]) / runs + statistics.variance(reference) / runs) ** 0.5
                line += f"; vs no plugin {1000 * difference:+.2f} ms (noise band ±{1000 * noise:.2f} ms)"
            print(line)  # noqa: T201 - the benchmark's report
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
