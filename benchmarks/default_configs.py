"""Wall time and peak memory of ``anomalib train --model X --data SurfaceDemo --trainer.max_epochs 1`` per model.

Every plugin model's default configuration must train on a 2-core, 24 GB machine. This runs the command as a
user would type it, one model at a time in its own process tree (the CLI and its data-loader workers), samples
the tree's memory every ``--interval`` seconds and prints (and writes with ``--output``) a Markdown table.
Peak memory is the sum of the processes' proportional set sizes (PSS: pages shared by a forked worker and its
parent are counted once), so it is what the tree takes from the machine. A tree that passes ``--cap-gib`` is
killed and reported as such: on a shared machine a runaway default must not take the others down with it.

``--extra`` appends options to every command (e.g. ``--model.pre_trained false`` on a machine without network
access: the weights do not change the memory). ``--model-options NAME=OPTIONS`` appends options to one model's
command.

Usage:
    python -m benchmarks.default_configs [--models Clgan Dmp] [--cap-gib 16] [--output table.md]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MODELS = ("Clgan", "Dmp", "Locc", "Pgcn", "Tocoad")
GIB = 2**30


@dataclass
class Measurement:
    """One command's outcome."""

    model: str
    command: str
    seconds: float
    peak_gib: float
    outcome: str


def tree_memory(root_pid: int) -> int:
    """Summed PSS (RSS where PSS is unavailable) in bytes of ``root_pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def kill_tree(root_pid: int) -> None:
    """Kill ``root_pid`` and its descendants."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


def measure(model: str, options: list[str], workdir: Path, cap_bytes: int, interval: float, timeout: float) -> Measurement:
    """Run the train command for ``model`` in ``workdir`` and sample its memory until it ends."""
    command = ["anomalib", "train", "--model", model, "--data", "SurfaceDemo", "--trainer.max_epochs", "1", *options]
    log = workdir / f"{model}.log"
    start = time.perf_counter()
    peak = 0
    outcome = None
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
        while process.poll() is None:
            peak = max(peak, tree_memory(process.pid))
            if peak > cap_bytes:
                kill_tree(process.pid)
                outcome = f"killed above {cap_bytes / GIB:.0f} GiB"
            elif time.perf_counter() - start > timeout:
                kill_tree(process.pid)
                outcome = f"killed after {timeout:.0f} s"
            time.sleep(interval)
        process.wait()
    seconds = time.perf_counter() - start
    if outcome is None:
        outcome = "finished" if process.returncode == 0 else f"exit {process.returncode}: {last_error(log)}"
    return Measurement(model, shlex.join(command), seconds, peak / GIB, outcome)


def last_error(log: Path) -> str:
    """The last line of ``log`` that names an error (the message a user sees)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if "Error" in line]
    return lines[-1][:200] if lines else "see log"


def table(measurements: list[Measurement]) -> str:
    """Markdown table: one row per model."""
    rows = ["| model | wall time (s) | peak memory (GiB, PSS) | outcome |", "|---|---:|---:|---|"]
    rows += [f"| {m.model} | {m.seconds:.0f} | {m.peak_gib:.2f} | {m.outcome} |" for m in measurements]
    return "\n".join(rows)


def main() -> None:
    """Parse the arguments, run every model, print the table and the exact commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--extra", default="", help="options appended to every command")
    parser.add_argument("--model-options", nargs="*", default=[], metavar="NAME=OPTIONS")
    parser.add_argument("--cap-gib", type=float, default=16.0, help="kill a command whose tree passes this")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a command is killed")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling period in seconds")
    parser.add_argument("--output", type=Path, help="also write the table (and commands) to this file")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, results)")
    args = parser.parse_args()

    per_model = dict(item.split("=", 1) for item in args.model_options)
    workdir = Path(tempfile.mkdtemp(prefix="default-configs-"))
    measurements = []
    for model in args.models:
        options = shlex.split(args.extra) + shlex.split(per_model.get(model, ""))
        measurements.append(measure(model, options, workdir, int(args.cap_gib * GIB), args.interval, args.timeout))
        print(f"{measurements[-1]}", file=sys.stderr, flush=True)
    report = table(measurements) + "\n\nCommands:\n\n" + "\n".join(f"- `{m.command}`" for m in measurements) + "\n"
    report += f"\n{os.cpu_count()} CPUs; logs in {workdir}\n" if args.keep else f"\n{os.cpu_count()} CPUs\n"
    print(report)
    if args.output:
        args.output.write_text(report)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
