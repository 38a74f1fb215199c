"""A W&B run's transaction log (`run-<id>.wandb`): its records, and waiting for the run's end in it.

`wandb.Run.finish` returns once the service has handled the exit, but the service writes and closes
the log a moment later; `wait_for_exit_record` waits for the log's exit record, so that a copy or
`wandb sync` started after `Tracker.finish` never sees a cut-off file. The tests decode the same
records (`tests/wandb_log.py`) to check what an offline run wrote.

May import the standard library and wandb (lazily).
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

LOG_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # identifier, magic, version
_LOG_BLOCK = 32768
_CHUNK_HEADER = 7  # crc32 (uint32), length (uint16), kind (uint8)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def complete_records(raw: bytes, pos: int) -> tuple[list[bytes], int]:
    """The whole records in `raw` from `pos` on, and the position just after the last one.

    The log is LevelDB-style: 32 KiB blocks of chunks, each chunk a header (crc32 of kind and
    data, data length, kind: full/first/middle/last) and its data; a block tail too short for
    a header is padding. A tail still being written (short, or zero-filled) is left out.
    """
    records: list[bytes] = []
    parts: list[bytes] = []
    done = pos
    while pos + _CHUNK_HEADER <= len(raw):
        left_in_block = _LOG_BLOCK - pos % _LOG_BLOCK
        if left_in_block < _CHUNK_HEADER:
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", raw, pos)
        end = pos + _CHUNK_HEADER + length
        if kind == 0 or end > len(raw):
            break
        data = raw[pos + _CHUNK_HEADER : end]
        if zlib.crc32(bytes([kind]) + data) != crc:
            raise ValueError(f"Corrupt W&B transaction log: bad checksum at byte {pos}.")
        pos = end
        parts.append(data)
        if kind in (_FULL, _LAST):
            records.append(b"".join(parts))
            parts = []
            done = pos
    return records, done


def wait_for_exit_record(log: Path, timeout: float) -> bool:
    """Wait until the run's log ends with its exit record; False on timeout or unknown format.

    `wandb.Run.finish` returns once the service has handled the exit, but the service writes
    and closes the log a moment later; without this wait a copy or `wandb sync` started right
    after `finish` can see a cut-off file.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    deadline = time.monotonic() + timeout
    pos, last = len(LOG_HEADER), None
    while True:
        raw = log.read_bytes() if log.is_file() else b""
        if len(raw) >= len(LOG_HEADER):
            if not raw.startswith(LOG_HEADER):
                return False
            try:
                payloads, pos = complete_records(raw, pos)
            except ValueError:
                return False
            last = payloads[-1] if payloads else last
            if last is not None:
                record = Record()
                record.ParseFromString(last)
                if record.WhichOneof("record_type") == "exit":
                    return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
