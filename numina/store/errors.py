"""Exceptions of the attention store, each one saying what happened and what to do.

May import only the standard library.
"""

from __future__ import annotations

import os
import re


class StoreError(Exception):
    """Base class: a store file or a call on it is not usable as asked."""


class IncompleteStoreError(StoreError):
    """The file was not closed properly: its writer is still running, was killed, or failed."""


class TruncatedStoreError(StoreError):
    """The file is shorter than its HDF5 header says: it was cut off (interrupted copy, full disk)."""


class DamagedStoreError(StoreError):
    """Bytes of the file changed after it was written: a chunk failed its checksum (fletcher32) or the
    store's metadata (attributes, coordinates) no longer decodes."""


class StoreWriteError(StoreError):
    """A write failed in the background writer thread; the original exception is its ``__cause__``."""


class CoordinateError(KeyError):
    """A dimension, coordinate value or dataset name that the store does not have.

    A ``KeyError`` (so ``except KeyError`` works) whose message is printed as written, not quoted.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_C_ERRNO = re.compile(r"errno = (\d+)")


def os_error_of(error: BaseException) -> BaseException:
    """The error as an OSError with its errno where h5py wraps a failed system call in a RuntimeError
    (a flush on a full disk: "Unable to synchronously flush file (... errno = 28 ...)"), so that callers
    can tell a full disk by `errno` alone; the original stays its `__cause__`. Any other error as is."""
    found = _C_ERRNO.search(str(error)) if isinstance(error, RuntimeError) else None
    if found is None or int(found.group(1)) == 0:
        return error
    number = int(found.group(1))
    translated = OSError(number, f"{os.strerror(number)} ({error})")
    translated.__cause__ = error
    return translated
