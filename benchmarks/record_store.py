"""The runs of :mod:`benchmarks.results`' protocol kept in the repository, one JSON file per kind of data.

The protocol is about 50 core-hours on this project's 2-core machine, more than one session, and a session's
machine does not keep its files. Its finished runs therefore live in ``benchmarks/records/<kind>.json`` (figures,
seed, wall time and the machine that trained and timed each run, no arrays or checkpoints): any machine runs the
missing ones (in slices, in parallel processes, on other hardware), adds them, and RESULTS.md is written from the
store. A store holds one protocol (epochs, image size, batch size); runs of another go to another folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .report import machine, read_results
from .runner import Record

RECORDS = Path("benchmarks/records")
"""The default store, relative to the repository root like the other defaults of :mod:`benchmarks.results`."""


def run_key(record: Record) -> tuple[str, str, int]:
    """A run's identity in the protocol: (entry, category, seed)."""
    return record.entry, record.category, record.seed


@dataclasses.dataclass(frozen=True)
class RecordStore:
    """``folder/<kind>.json``: the finished runs of one protocol (``protocol``: epochs, image size, batch size)."""

    folder: Path
    protocol: dict[str, int]

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}.json"

    def load(self, kind: str) -> list[Record]:
        """The stored runs of ``kind`` (none if the file does not exist); an error if it holds another protocol."""
        path = self.path(kind)
        if not path.is_file():
            return []
        data = json.loads(path.read_text())
        if data.get("protocol") != self.protocol:
            msg = (f"{path} holds runs of the protocol {data.get('protocol')}, not {self.protocol}; "
                   "give another --records folder for other epochs, image size or batch size.")
            raise ValueError(msg)
        return [Record(**record) for record in data["records"]]

    def add(self, kind: str, results_json: Path) -> tuple[int, int]:
        """Add the finished runs of a run's ``results.json`` (:mod:`benchmarks.run`) to ``kind``'s file.

        A record without a machine gets its file's environment's. A run already stored with the same figures is
        skipped; with other figures it is an error naming both files. Returns (runs added, failed runs left out:
        they stay missing, so the next run of the protocol tries them again).
        """
        environment, records = read_results(results_json)
        default_machine = machine(environment)
        with self._locked():
            stored = {run_key(record): record for record in self.load(kind)}
            added = failed = 0
            for record in records:
                if record.status != "ok":
                    failed += 1
                    continue
                record = dataclasses.replace(record, machine=record.machine or default_machine)
                key = run_key(record)
                if key in stored and stored[key] != record:
                    msg = (f"{results_json}: run {key} is already in {self.path(kind)} with other figures; "
                           "remove it from one of the two files.")
                    raise ValueError(msg)
                added += key not in stored
                stored[key] = record
            self._write(kind, sorted(stored.values(), key=run_key))
        return added, failed

    def _write(self, kind: str, records: list[Record]) -> None:
        lines = ",\n".join(json.dumps(dataclasses.asdict(record)) for record in records)  # one run per line
        temporary = self.path(kind).with_suffix(".json.tmp")
        temporary.write_text(f'{{"protocol": {json.dumps(self.protocol)},\n"records": [\n{lines}\n]}}\n')
        temporary.replace(self.path(kind))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (slices of the protocol in parallel processes add to the same files)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)
