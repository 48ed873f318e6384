"""DDP: one workspace for all ranks, and every validation image scored once (2 gloo processes).

Both launch styles: Lightning's launcher (rank 1 started by rank 0, after rank 0's workspace exists) and two
processes started together with the rank variables set (torchrun, SLURM), where anomalib's Engine used to
race for the same versioned folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKER = Path(__file__).with_name("ddp_workspace_worker.py")
NUM_VALIDATION = 5  # odd: a padding sampler would score one image twice


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder layout: 6 training images, 3 good and 2 defective test (= validation) images of 32 px."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for folder, count in (("train/good", 6), ("test/good", 3), ("test/defect", NUM_VALIDATION - 3)):
        (root / folder).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / folder / f"{index}.png")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in {"LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"}}
    environment.pop("ANOMALIB_SURFACE_WORKSPACE", None)
    return {**environment, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def _check(out: Path) -> None:
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["default_root_dir"] == ranks[1]["default_root_dir"]
    versions = [path.name for path in (out / "results" / "Dmp" / "demo").iterdir() if path.name.startswith("v")]
    assert versions == ["v0"]
    validated = ranks[0]["validation_paths"] + ranks[1]["validation_paths"]
    assert len(validated) == len(set(validated)) == NUM_VALIDATION


@pytest.mark.ddp
def test_ranks_started_apart_by_lightning_share_one_workspace(root: Path, tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(WORKER), str(root), str(tmp_path)], capture_output=True, text=True, timeout=600,
        env=_environment(MASTER_PORT=str(_free_port())), check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for _ in range(100):  # Lightning's launcher does not wait for rank 1 to finish the script
        if (tmp_path / "rank1.json").exists():
            break
        time.sleep(0.5)
    _check(tmp_path)


@pytest.mark.ddp
@pytest.mark.parametrize("delay", [0.0, 3.0], ids=["together", "rank1-3s-later"])
def test_ranks_started_externally_share_one_workspace(root: Path, tmp_path: Path, delay: float) -> None:
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "NODE_RANK": "0"}
    processes = []
    for rank in (0, 1):
        if rank and delay:
            time.sleep(delay)
        processes.append(subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(WORKER), str(root), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=_environment(**common, LOCAL_RANK=str(rank), RANK=str(rank)),
        ))
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-5000:]
    _check(tmp_path)
