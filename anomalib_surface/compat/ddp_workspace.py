"""One workspace for all DDP processes of a training run.

anomalib's ``Engine.fit`` puts each run in a new versioned folder (``<root>/<model>/<data>/<category>/vN``)
made by ``create_versioned_dir`` in *every* process. DDP processes that start together race for the same
``vN`` (``FileExistsError``); processes that start apart (Lightning's launcher re-runs the script for ranks
1..N after rank 0 has created its folder) each make their own folder, so logs, images and checkpoints of one
run are scattered over several versions.

With this workaround rank 0 alone creates the versioned folder; the other ranks use it:

- rank 0 records the folder in the environment variable :data:`WORKSPACE_ENV` (which processes it launches
  inherit) and, when the run has more than one process (``WORLD_SIZE``), in a marker file
  ``<root>/.ddp-workspace-<run>`` (``<run>`` from ``MASTER_ADDR``/``MASTER_PORT`` and the launcher's job id),
  removed when rank 0 exits;
- a rank other than 0 uses :data:`WORKSPACE_ENV` if set, else waits for the marker (written at most
  :data:`WAIT_ENV` seconds, default 300, before this process started, so a marker left by a crashed earlier
  run is not taken). After that wait it warns and makes its own folder, as anomalib does (e.g. nodes without
  a shared file system).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["WAIT_ENV", "WORKSPACE_ENV", "applies", "install", "is_rank_zero", "shared_versioned_dir"]

WORKSPACE_ENV = "ANOMALIB_SURFACE_WORKSPACE"
"""Versioned folder chosen by rank 0 (set by rank 0; may be set by the user for every rank)."""
WAIT_ENV = "ANOMALIB_SURFACE_WORKSPACE_WAIT"
"""Seconds a rank other than 0 waits for rank 0's folder (default 300)."""
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "LOCAL_RANK")
RUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "LSB_JOBID")
POLL_SECONDS = 0.2
_STARTED = time.time()


def is_rank_zero() -> bool:
    """Whether this process is the global rank 0 (every rank variable the launchers set is 0 or absent)."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in RANK_VARIABLES)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _marker(root_dir: Path) -> Path:
    run = "|".join(os.environ.get(name, "") for name in RUN_VARIABLES)
    return root_dir / f".ddp-workspace-{hashlib.sha256(run.encode()).hexdigest()[:16]}"


def _write_marker(marker: Path, workspace: Path) -> None:
    """Write ``workspace`` into ``marker`` atomically, removed when this process exits."""
    with tempfile.NamedTemporaryFile("w", dir=marker.parent, delete=False, prefix=".tmp-ddp-workspace-") as file:
        file.write(str(workspace))
    Path(file.name).replace(marker)
    atexit.register(functools.partial(_remove, marker, str(workspace)))


def _remove(marker: Path, content: str) -> None:
    with contextlib.suppress(OSError):
        if marker.read_text() == content:
            marker.unlink()


def _wait_for_marker(marker: Path, wait: float) -> Path | None:
    """The folder named in ``marker`` once a fresh one exists, ``None`` after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError, ValueError):
            if marker.stat().st_mtime >= _STARTED - wait:
                workspace = Path(marker.read_text())
                if workspace.is_dir():
                    return workspace
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def shared_versioned_dir(root_dir: str | Path, create: Any) -> Path:  # noqa: ANN401 - anomalib's function
    """The run's versioned folder under ``root_dir``: made by ``create(root_dir)`` on rank 0, shared by the rest."""
    root_dir = Path(root_dir).resolve()
    if is_rank_zero():
        workspace = Path(create(root_dir))
        os.environ[WORKSPACE_ENV] = str(workspace)
        if _world_size() > 1:
            _write_marker(_marker(root_dir), workspace)
        return workspace
    if os.environ.get(WORKSPACE_ENV):
        workspace = Path(os.environ[WORKSPACE_ENV])
        workspace.mkdir(parents=True, exist_ok=True)
        return workspace
    root_dir.mkdir(parents=True, exist_ok=True)
    wait = float(os.environ.get(WAIT_ENV, "300"))
    workspace = _wait_for_marker(_marker(root_dir), wait)
    if workspace is None:
        warnings.warn(
            f"DDP rank {os.environ.get('RANK', os.environ.get('LOCAL_RANK'))}: rank 0 announced no workspace under "
            f"'{root_dir}' within {wait:g} s ({WAIT_ENV}); using a folder of its own. Use a file system shared by "
            f"all nodes or set {WORKSPACE_ENV} to the same folder for every process.",
            stacklevel=2,
        )
        return Path(create(root_dir))
    return workspace


def applies() -> bool:
    """Whether anomalib's ``create_versioned_dir`` creates a new folder in a process that is not rank 0.

    Probed in a temporary folder with the variables of a rank-1 process.
    """
    from anomalib.utils import path

    create = path.create_versioned_dir
    if getattr(create, "_anomalib_surface_patched", False):
        return False
    saved = {name: os.environ.get(name) for name in ("RANK", "WORLD_SIZE", WORKSPACE_ENV)}
    os.environ.update({"RANK": "1", "WORLD_SIZE": "2"})
    os.environ.pop(WORKSPACE_ENV, None)
    try:
        with tempfile.TemporaryDirectory() as root:
            create(root)
            return any(Path(root).iterdir())
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def install() -> None:
    """Route ``create_versioned_dir`` (anomalib's and the Engine's copy) through :func:`shared_versioned_dir`.

    ``anomalib.engine.engine`` imports the function by name; if it is still being imported (it imports
    ``anomalib.models``, which runs this hook) and has not bound the name yet, it binds the wrapped one.
    """
    import sys

    from anomalib.utils import path

    create = path.create_versioned_dir
    if getattr(create, "_anomalib_surface_patched", False):
        return

    @functools.wraps(create)
    def create_versioned_dir(root_dir: str | Path) -> Path:
        return shared_versioned_dir(root_dir, create)

    create_versioned_dir._anomalib_surface_patched = True  # type: ignore[attr-defined]
    path.create_versioned_dir = create_versioned_dir
    engine = sys.modules.get("anomalib.engine.engine")
    if getattr(engine, "create_versioned_dir", None) is create:
        engine.create_versioned_dir = create_versioned_dir
