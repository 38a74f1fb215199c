"""The hook layer: capture per-head, per-step attention reductions from a Wan transformer."""

from numina.capture.hooks import AttentionCapture
from numina.capture.names import quantity_name, read
from numina.capture.sinks import MemoryStore, Sink, TeeSink
from numina.capture.spec import (
    CaptureSpec,
    CrossAttentionCapture,
    SelfAttentionCapture,
    numina_spec,
    release_reference_layer,
    release_reference_step,
    store_layout,
)
from numina.capture.storage import open_capture_store

__all__ = [
    "AttentionCapture",
    "CaptureSpec",
    "CrossAttentionCapture",
    "MemoryStore",
    "SelfAttentionCapture",
    "Sink",
    "TeeSink",
    "numina_spec",
    "open_capture_store",
    "quantity_name",
    "read",
    "release_reference_layer",
    "release_reference_step",
    "store_layout",
]
