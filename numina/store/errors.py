"""Exceptions of the attention store, each one saying what happened and what to do.

May import only the standard library.
"""

from __future__ import annotations


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
