"""Loading the evaluation's pretrained models (CLIP, OWLv2, GroundingDINO) from a hub id or a local
folder, with errors that say what to do offline (`numina.testing` writes tiny random copies).

One place for what the CLIP scorer and the detectors share. May import torch only.
"""

from __future__ import annotations

from pathlib import Path

import torch


def resolve_source(model: str | Path, what: str, default: str) -> tuple[str, str]:
    """(model id as given, source for from_pretrained); a path-like id that is no folder: OSError."""
    model_id = str(model)
    looks_like_path = isinstance(model, Path) or model_id.startswith((".", "/", "~"))
    if looks_like_path and not Path(model_id).expanduser().is_dir():
        raise OSError(
            f"{what} model folder '{model_id}' does not exist. Pass a local folder written by "
            f"save_pretrained (model + processor), or a hub id such as '{default}' when the hub is reachable."
        )
    return model_id, str(Path(model_id).expanduser()) if looks_like_path else model_id


def load_error(what: str, model_id: str, default: str, err: Exception, builder: str) -> OSError:
    """The error for a model that from_pretrained could not load (offline, missing files, bad id)."""
    return OSError(
        f"Could not load the {what} model '{model_id}' with from_pretrained ({err}). Without a network "
        "(or if the id is wrong), pass a local folder holding the model and processor (save_pretrained "
        f"output, e.g. a downloaded copy of '{default}'; numina.testing.{builder} writes a tiny random one "
        "for tests)."
    )


def default_device(device: str | torch.device | None) -> torch.device:
    """`device`, else cuda when available, else cpu."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
