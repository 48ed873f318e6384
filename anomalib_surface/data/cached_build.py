"""Build a generated dataset folder once, atomically, and reuse it while its manifest matches.

Both built datasets (SurfaceDemo's categories and MadRto's variants) go through
:func:`build_cached`: the folder is written into a hidden staging sibling, its JSON manifest last,
then renamed into place, so a reader never sees a half-written dataset. A build killed midway (power
loss, ``kill -9``) leaves its staging sibling behind; the next build of the same folder removes every
such leftover older than :data:`STALE_AFTER_SECONDS` before it starts (a younger one may belong to a
build still running in another process).

:func:`check_dataset_path` refuses, before anything is written, a path that anomalib's own readers
would reject later (anomalib's path validator accepts printable ASCII only, so letters such as ``é``
fail while spaces work).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from anomalib.data.utils.path import contains_non_printable_characters, is_path_too_long

__all__ = ["STALE_AFTER_SECONDS", "build_cached", "check_dataset_path", "read_manifest", "remove_stale_staging"]

logger = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 3600.0
"""Age after which a staging folder is taken to be left by an interrupted build (no build runs this long)."""
_STAGING_MARK = ".tmp-"
_STALE_MARK = ".stale-"


def check_dataset_path(path: str | Path, argument: str) -> Path:
    """``path`` as a Path, or a ValueError naming ``argument`` when anomalib's readers would refuse it.

    anomalib validates every image path it reads (``anomalib.data.utils.path.validate_path``): only
    printable ASCII, at most 512 characters. Checked up front, so nothing is written to such a path.
    """
    path = Path(path).absolute()
    if contains_non_printable_characters(path):
        bad = sorted({char for char in str(path) if not 0x20 <= ord(char) <= 0x7E})  # noqa: PLR2004
        msg = (
            f"{argument}='{path}' contains {bad}: anomalib reads only paths of printable ASCII characters "
            f"(spaces are fine), so no dataset was written there; pass {argument}=<a folder with an ASCII path>."
        )
        raise ValueError(msg)
    if is_path_too_long(path / "category" / "ground_truth" / "defect" / "000_mask.png"):
        msg = f"{argument}='{path}' is too long: anomalib refuses image paths over 512 characters."
        raise ValueError(msg)
    return path


def read_manifest(folder: Path, name: str) -> dict | None:
    """The JSON manifest ``folder/name``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def _leftovers(target: Path) -> list[Path]:
    """Staging and stale siblings of ``target`` left by earlier builds."""
    prefixes = (f".{target.name}{_STAGING_MARK}", f".{target.name}{_STALE_MARK}")
    if not target.parent.is_dir():
        return []
    return [path for path in target.parent.iterdir() if path.name.startswith(prefixes)]


def remove_stale_staging(target: Path, older_than: float = STALE_AFTER_SECONDS) -> list[Path]:
    """Delete the staging/stale siblings of ``target`` not modified for ``older_than`` seconds; return them."""
    now = time.time()
    removed = []
    for leftover in _leftovers(target):
        try:
            age = now - leftover.stat().st_mtime
        except FileNotFoundError:
            continue  # removed by a concurrent build
        if age >= older_than:
            logger.info("Removing %s left by an interrupted build", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def build_cached(target: Path, manifest: dict, manifest_name: str, write: Callable[[Path], None]) -> bool:
    """Make ``target`` hold the dataset described by ``manifest``, building it only when needed.

    Args:
        target (Path): Dataset folder to create or reuse.
        manifest (dict): JSON description of the content; a folder whose manifest equals it is reused.
        manifest_name (str): File name of the manifest inside ``target``.
        write (Callable[[Path], None]): Writes the dataset (without manifest) into the given empty folder.

    Returns:
        bool: ``True`` if the folder was built, ``False`` if it was reused.

    Raises:
        FileExistsError: If ``target`` exists without a manifest (a folder this package did not write).
    """
    existing = read_manifest(target, manifest_name)
    if existing == manifest:
        logger.info("Reusing %s", target)
        return False
    if target.exists() and existing is None:
        msg = f"'{target}' exists but holds no {manifest_name}; refusing to overwrite it, pass another root."
        raise FileExistsError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    logger.info("Building %s", target)
    staging = target.with_name(f".{target.name}{_STAGING_MARK}{uuid.uuid4().hex}")
    stale = target.with_name(f".{target.name}{_STALE_MARK}{uuid.uuid4().hex}")
    try:
        staging.mkdir()
        write(staging)
        (staging / manifest_name).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if existing is not None:
            target.rename(stale)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same build first: fine if it holds this manifest.
            if read_manifest(target, manifest_name) != manifest:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return True
