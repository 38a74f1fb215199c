"""Opening a store file for reading, refusing incomplete and cut-off files with clear errors.

A store is complete when its writer closed it properly: the file then carries its final name (no
``.partial`` suffix) and ``/_numina/status`` reads ``complete``. A cut-off file (bytes missing at the
end) is detected before HDF5 sees it by comparing the file size with the end-of-file address that
the HDF5 superblock records. May import h5py, numina.store.errors and
numina.store.schema.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import h5py

from numina.store.errors import IncompleteStoreError, StoreError, TruncatedStoreError
from numina.store.schema import (
    FORMAT_ATTR,
    FORMAT_NAME,
    FORMAT_VERSION,
    STATUS_COMPLETE,
    STATUS_PATH,
    VERSION_ATTR,
    final_path,
    partial_path,
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_UNDEFINED = {4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


@dataclass
class OpenedFile:
    file: h5py.File
    path: Path
    partial: bool


def superblock_end(path: Path) -> int | None:
    """Size in bytes the file must have according to its HDF5 superblock (None if not readable).

    Raises TruncatedStoreError when the file is too short to even hold its superblock.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset < size:
            handle.seek(offset)
            if handle.read(8) == HDF5_SIGNATURE:
                break
            offset = 512 if offset == 0 else offset * 2
        else:
            return None
        head = handle.read(64)
    if len(head) < 8:
        raise TruncatedStoreError(_cut_off_message(path, size, None))
    version = head[0]
    if version in (2, 3):
        offset_size, fields_at = head[1], 4
    elif version in (0, 1):
        offset_size, fields_at = head[5], 16 if version == 0 else 20
    else:
        return None
    if offset_size not in _UNDEFINED:
        return None
    code = "<I" if offset_size == 4 else "<Q"
    # v2/3: base, extension, end-of-file; v0/1: base, free-space, end-of-file
    needed = fields_at + 3 * offset_size
    if len(head) < needed:
        raise TruncatedStoreError(_cut_off_message(path, size, None))
    base = struct.unpack_from(code, head, fields_at)[0]
    end = struct.unpack_from(code, head, fields_at + 2 * offset_size)[0]
    if _UNDEFINED[offset_size] in (base, end):
        return None
    return base + end


def _cut_off_message(path: Path, size: int, expected: int | None) -> str:
    detail = (
        f"it has {size:,} bytes but its HDF5 header says {expected:,} ({expected - size:,} missing)"
        if expected is not None
        else f"it has only {size:,} bytes, not even a whole HDF5 header"
    )
    return (
        f"attention store {path} is cut off: {detail}. This happens when a copy, sync or download was "
        f"interrupted or the disk filled up. Copy the file again from where it was written, or re-run the "
        f"capture; a cut-off HDF5 file cannot be opened, not even with allow_incomplete=True."
    )


def check_not_truncated(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(len(HDF5_SIGNATURE))
    if size < len(HDF5_SIGNATURE) and HDF5_SIGNATURE.startswith(start):
        raise TruncatedStoreError(_cut_off_message(path, size, None))
    expected = superblock_end(path)
    if expected is not None and size < expected:
        raise TruncatedStoreError(_cut_off_message(path, size, expected))


def _incomplete_message(final: Path, partial: Path) -> str:
    return (
        f"attention store {final} is incomplete: only {partial.name} exists, so its writer has not closed it "
        f"properly: it is still running, or it was killed or crashed before close(). If the run has ended, "
        f"re-run it to get a complete store. To inspect what was flushed before it stopped, open it with "
        f"allow_incomplete=True (or live=True to follow a writer that is still running)."
    )


def _open_h5(target: Path, swmr: bool) -> h5py.File:
    return h5py.File(target, "r", swmr=swmr, locking="best-effort")


def open_store_file(path: str | Path, *, allow_incomplete: bool = False, live: bool = False) -> OpenedFile:
    """Open a store for reading; see the module docstring for what counts as complete."""
    final = final_path(path)
    partial = partial_path(final)
    for attempt in range(2):  # a writer may rename .partial -> final between our check and the open
        if final.exists():
            target, is_partial = final, False
            check_not_truncated(final)
        elif partial.exists():
            target, is_partial = partial, True
            if not (allow_incomplete or live):
                raise IncompleteStoreError(_incomplete_message(final, partial))
        else:
            raise FileNotFoundError(
                f"no attention store at {final} (nor {partial.name}, the name it has while being written)"
            )
        try:
            handle = _open_h5(target, swmr=is_partial or live)
            break
        except FileNotFoundError:
            if attempt:
                raise
        except OSError as error:
            handle = _open_after_error(target, is_partial, allow_incomplete or live, error)
            break
    opened = OpenedFile(handle, target, is_partial)
    try:
        _check_format(opened)
        if not (allow_incomplete or live) and not read_complete(handle):
            raise IncompleteStoreError(
                f"attention store {target} is marked as still being written although it has its final name "
                f"(renamed by hand?), so its writer never closed it properly. Re-run the capture, or pass "
                f"allow_incomplete=True to inspect what it holds."
            )
    except BaseException:
        handle.close()
        raise
    return opened


def _open_after_error(target: Path, is_partial: bool, allow_incomplete: bool, error: OSError) -> h5py.File:
    text = str(error)
    if "truncated" in text:
        raise TruncatedStoreError(
            _cut_off_message(target, target.stat().st_size, superblock_end(target))
        ) from error
    if "signature" in text:
        raise StoreError(f"{target} is not an HDF5 file, so not an attention store ({text})") from error
    if "already open for write" in text or "not already open for SWMR writing" in text:
        if is_partial:
            raise IncompleteStoreError(
                f"attention store {target} cannot be inspected: its writer was killed (or is still "
                f"starting) before the first write switched the file to SWMR mode, so HDF5 cannot open it. "
                f"Nothing was written yet; re-run the capture."
            ) from error
        if not allow_incomplete:
            raise IncompleteStoreError(
                f"attention store {target} was never closed properly (HDF5 still marks it as open by a "
                f"writer): the writer was killed, or the file was renamed by hand while it was written. "
                f"Re-run the capture, or pass allow_incomplete=True to inspect what was flushed."
            ) from error
        try:
            return _open_h5(target, swmr=True)
        except OSError as again:
            raise IncompleteStoreError(
                f"attention store {target} was never closed properly and HDF5 cannot open it ({again}); "
                f"re-run the capture."
            ) from again
    raise StoreError(f"cannot open attention store {target}: {text}") from error


def _check_format(opened: OpenedFile) -> None:
    handle = opened.file
    name = handle.attrs.get(FORMAT_ATTR)
    if isinstance(name, bytes):
        name = name.decode()
    if name != FORMAT_NAME:
        raise StoreError(
            f"{opened.path} is an HDF5 file but not an attention store written by numina.store "
            f"(its root attribute {FORMAT_ATTR!r} is {name!r}, expected {FORMAT_NAME!r})"
        )
    version = int(handle.attrs.get(VERSION_ATTR, 0))
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{opened.path} uses store format version {version}, newer than this code reads "
            f"({FORMAT_VERSION}); update numina"
        )


def read_complete(handle: h5py.File) -> bool:
    status = handle[STATUS_PATH]
    if handle.swmr_mode:
        status.refresh()
    return bytes(status[0]) == STATUS_COMPLETE


def fsync_path(path: Path, directory: bool = False) -> None:
    """Push a file's (or a directory entry's) bytes to stable storage; best effort on directories."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(descriptor)
