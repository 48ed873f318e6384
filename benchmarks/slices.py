"""Run the missing runs of :mod:`benchmarks.results`' protocol in parallel processes, one slice per process.

    python -m benchmarks.slices --jobs 2                                   # every missing run, two processes at a time
    python -m benchmarks.slices --jobs 4 --models Draem --stop-after-minutes 50

A slice is one (kind, model class, seed) with runs missing from the record store: ``python -m benchmarks.results
--kinds K --models M --seeds S`` with this command's protocol options and store, run as its own process with
``--threads`` torch threads (default: the cores shared out between the jobs), its output and log in
``--output/K__M__seedS``. Slices of a model with no stored run start first (their cost is unknown), then the others
by their missing runs times the model's mean stored fit seconds, longest first, so that the last ones to finish are
short. Each slice adds its finished runs to the store as it ends.

``--stop-after-minutes`` limits this command, never a model's training: at that time no slice starts, the running
ones are killed and the runs they finished are collected; a run killed midway is not recorded (its checkpoints are
deleted), and the next command runs it again. At the end RESULTS.md (``--results``) is written from the store, as
``benchmarks.results --report-only`` writes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import results
from .record_store import RecordStore
from .run import remove_checkpoints


@dataclasses.dataclass(frozen=True)
class Slice:
    """The runs of one model class on one kind of data with one seed that are not in the store yet."""

    kind: str
    model: str
    seed: int
    runs: int
    cost: float
    """Estimated seconds: missing runs times the model's mean stored fit seconds (``inf`` when none is stored)."""

    @property
    def name(self) -> str:
        return f"{self.kind}__{self.model}__seed{self.seed}"


def missing_slices(store: RecordStore, kinds: list[str], models: list[str] | None, seeds: list[int]) -> list[Slice]:
    """The slices of ``kinds`` (``models`` only, if given) with missing runs, longest (or unknown) first."""
    slices = []
    stored = {kind: store.load(kind) for kind in kinds}
    for kind in kinds:
        suite = results.kind_suite(kind, results.KINDS[kind], True, models, None)
        entries = suite.entries(True)
        for model in dict.fromkeys(entry.model for entry in entries):
            names = [entry.name for entry in entries if entry.model == model]
            fits = [run.fit_seconds for runs in stored.values() for run in runs if run.model == model and run.fit_seconds]
            for seed in seeds:
                missing = sum(results.missing_runs(names, suite.categories, [seed], stored[kind]).values())
                if missing:
                    slices.append(Slice(kind, model, seed, missing, missing * statistics.mean(fits) if fits else math.inf))
    return sorted(slices, key=lambda piece: -piece.cost)


def slice_command(piece: Slice, args: argparse.Namespace) -> list[str]:
    """The ``benchmarks.results`` command line of one slice."""
    output = Path(args.output) / piece.name
    command = [
        sys.executable, "-m", "benchmarks.results", "--kinds", piece.kind, "--models", piece.model, "--seeds", str(piece.seed),
        "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--accelerator", args.accelerator, "--records", args.records, "--output", str(output),
        "--results", str(output / "RESULTS.md"), "--no-progress",
    ]
    return command + ([] if args.timing else ["--no-timing"])


def run_slices(slices: list[Slice], args: argparse.Namespace, store: RecordStore) -> list[str]:
    """Run ``slices``, ``args.jobs`` at a time, until all end or the deadline; returns a line per slice."""
    deadline = time.monotonic() + 60 * args.stop_after_minutes if args.stop_after_minutes else math.inf
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    pending, running, lines = list(slices), {}, []

    def finish(piece: Slice, outcome: str) -> None:
        """A slice that ended normally has added its runs to the store; one killed or failed may have finished some,
        which are collected here, and its unrecorded runs' checkpoints are of no use (they run again from scratch)."""
        process, log = running.pop(piece)
        log.close()
        if process.returncode != 0:
            results.collect(store, piece.kind, [Path(args.output) / piece.name / piece.kind / "results.json"])
            remove_checkpoints(Path(args.output) / piece.name)
        lines.append(f"{piece.name}: {outcome} ({piece.runs} runs were missing; log {log.name})")

    while pending or running:
        while pending and len(running) < args.jobs and time.monotonic() < deadline:
            piece = pending.pop(0)
            (Path(args.output) / piece.name).mkdir(parents=True, exist_ok=True)
            log = (Path(args.output) / piece.name / "log.txt").open("w")
            process = subprocess.Popen(slice_command(piece, args), stdout=log, stderr=subprocess.STDOUT, env=environment,
                                       start_new_session=True)
            running[piece] = (process, log)
        if time.monotonic() >= deadline:
            for piece, (process, _) in list(running.items()):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                finish(piece, "killed at --stop-after-minutes")
            lines += [f"{piece.name}: not started ({piece.runs} runs missing)" for piece in pending]
            break
        for piece, (process, _) in list(running.items()):
            if process.poll() is not None:
                finish(piece, "finished" if process.returncode == 0 else f"exited with status {process.returncode}")
        time.sleep(args.poll_seconds)
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the protocol's missing runs in parallel slices, then write RESULTS.md")
    parser.add_argument("--jobs", type=int, default=2, help="slices run at once")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per slice (default: cores // jobs)")
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="stop this command then (kill running slices, keep their finished runs); never a training cap")
    results.add_protocol_options(parser)
    parser.add_argument("--output", default="benchmarks/output/slices")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--jobs and --threads must be at least 1, got {args.jobs} and {args.threads}")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    return args


def main(argv: list[str] | None = None) -> list[str]:
    """Run the missing slices, then write RESULTS.md from the store; returns the line of each slice."""
    args = parse_args(argv)
    store = results.record_store(args)
    slices = missing_slices(store, args.kinds, args.models, args.seeds)
    print(f"{len(slices)} slices, {sum(piece.runs for piece in slices)} runs missing; {args.jobs} at a time, "
          f"{args.threads} thread(s) each", flush=True)
    lines = run_slices(slices, args, store)
    print("\n".join(lines), flush=True)
    results.main(["--report-only", "--records", args.records, "--results", args.results, "--seeds", *map(str, args.seeds),
                  "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)])
    return lines


if __name__ == "__main__":
    main()
