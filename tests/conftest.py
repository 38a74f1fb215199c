"""Shared fixtures: tiny pipelines built once per session, and an environment with no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Wan2.1-1.3B-shaped pipeline folder, written once for the session."""
    from numina.models import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "wan2.1-1.3b", "wan2.1-1.3b")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_folder: Path):
    """The tiny pipeline loaded through `load_pipeline` (float32, CPU), as experiments load it."""
    import torch

    from numina.models import load_pipeline

    return load_pipeline(str(tiny_folder), dtype=torch.float32)


@pytest.fixture(scope="session")
def countbench_dir() -> Path:
    """CountBench's prompts: $NUMINA_COUNTBENCH or ../shared/countbench beside the repository."""
    folder = Path(os.environ.get("NUMINA_COUNTBENCH", REPO.parent / "shared" / "countbench"))
    if not (folder / "prompts.txt").exists():
        pytest.skip(f"CountBench not found at {folder}; set NUMINA_COUNTBENCH to its folder")
    return folder
