"""An in-memory sink for captured tensors, with the same `write` interface as the HDF5 store writer.

Useful where a capture is consumed at once (the method's phase 1 on a GPU, tests) and a file is not
wanted; tensors stay where they were computed (no host copy). May import torch only.
"""

from __future__ import annotations

from typing import Any

import torch


class MemorySink:
    """Keeps every written tensor, keyed by dataset name and index (step, branch, layer)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, tuple[tuple[str, Any], ...]], torch.Tensor] = {}

    def write(self, name: str, index: dict[str, Any], data: torch.Tensor) -> None:
        self.records[(name, tuple(sorted(index.items())))] = data.detach()

    def get(self, name: str, **index: Any) -> torch.Tensor:
        """The tensor written to `name` at exactly this index, e.g. get("x", step=3, branch="cond")."""
        key = (name, tuple(sorted(index.items())))
        if key not in self.records:
            available = sorted({dict(k[1]).__repr__() for k in self.records if k[0] == name})
            raise KeyError(f"Nothing written to {name!r} at {index}; written indices: {available}")
        return self.records[key]

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.records})


class TeeSink:
    """Writes every capture to several sinks, e.g. memory (read at once by the method) and the HDF5 store."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def write(self, name: str, index: dict[str, Any], data: torch.Tensor) -> None:
        for sink in self.sinks:
            sink.write(name, index, data)
