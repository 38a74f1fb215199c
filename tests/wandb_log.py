"""Test support: read an offline W&B run's transaction log back as wandb's protobuf records.

This is what `wandb sync` would upload (run with the initial config, config, history, summary, files,
artifact, exit... records), so the tests check what a run wrote without syncing it. The log's framing
is read by `numina.wandb_mirror.run_log`, which `Tracker.finish` uses to wait for the run's end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from numina.wandb_mirror.run_log import LOG_HEADER, complete_records


def _transaction_log(path: str | os.PathLike[str]) -> Path:
    """The `.wandb` file itself, given it or the run folder wandb wrote it into."""
    path = Path(path)
    if path.is_dir():
        logs = sorted(path.glob("run-*.wandb"))
        if len(logs) != 1:
            raise FileNotFoundError(f"Expected one run-*.wandb file in {path}; found {len(logs)}.")
        return logs[0]
    return path


def read_transaction_log(path: str | os.PathLike[str]) -> list[Any]:
    """Every record of a run's `.wandb` log (the file, or its run folder) as wandb `Record`s.

    `Record.WhichOneof("record_type")` names each record.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    log = _transaction_log(path)
    raw = log.read_bytes()
    if not raw.startswith(LOG_HEADER):
        raise ValueError(f"{log} is not a W&B transaction log (it does not start with {LOG_HEADER!r}).")
    payloads, _ = complete_records(raw, len(LOG_HEADER))
    records = []
    for payload in payloads:
        record = Record()
        record.ParseFromString(payload)
        records.append(record)
    return records
