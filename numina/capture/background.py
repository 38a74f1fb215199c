"""Capture work off the model's path: one thread that runs the reductions on a side CUDA stream.

The capture's reductions at the reference step are memory-bound (the self-attention maps' subspace
iterations read gigabytes of float32 maps ~16 times) and its cross-attention ones are many small
kernels, while the model's own blocks that follow are compute-bound attention. Queued on a side stream
they can run beside those blocks instead of before them. A thread (not only a stream) is needed
because the reductions synchronise with the host (a batched eigen-decomposition checks its result):
in the thread that runs the model, each such wait would let the model's queue run dry.

The model's output is untouched either way (the work only reads the block's query and key), and each
reduction runs the same kernels on the same inputs, so the captured numbers are the inline ones.
Without CUDA the thread alone runs the jobs, in order. May import torch only.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable

import torch

_STOP = object()
HIGHEST_PRIORITY = -100  # CUDA stream priorities: lower is higher


class SideStreamWorker:
    """Runs submitted jobs, in order, in one thread on one side stream of `device`.

    `submit(job, tensors)` queues `job` after the work already queued on the caller's current stream
    (an event orders them), and tells the allocator that `tensors` are in use on the side stream until
    it gets there. `wait()` returns when every job has run and makes the caller's stream wait for the
    side stream, so what the jobs wrote can be read; it raises the first job's error, if one failed
    (the jobs after it are skipped). `close()` waits and stops the thread.

    What the jobs allocate comes from the side stream's pool and is reused only by later jobs, each
    ordered after everything the caller's stream had queued when it was submitted; so the caller may
    use and free what the jobs wrote, after `wait()`, without telling the allocator.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = None
        if device.type == "cuda":
            # The device's highest priority (torch maps any lower number to it), so the model's big
            # kernels do not hold the side stream back: at the 14B shape the HDF5 capture step went
            # from x1.082 to x1.032 of a plain step (benchmarks/RESULTS.md).
            self.stream = torch.cuda.Stream(device, priority=HIGHEST_PRIORITY)
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="numina-capture", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None], tensors: Iterable[torch.Tensor] = ()) -> None:
        event = None
        if self.stream is not None:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            for tensor in tensors:
                if tensor.device == self.device:
                    tensor.record_stream(self.stream)
        self._jobs.put((job, event))

    def wait(self) -> None:
        self._jobs.join()
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put((_STOP, None))
            self._thread.join()
        self.wait()

    def _run(self) -> None:
        stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with stream, torch.no_grad():
            while True:
                job, event = self._jobs.get()
                try:
                    if job is _STOP:
                        return
                    if self._error is None:
                        if event is not None:
                            self.stream.wait_event(event)
                        job()
                except BaseException as error:  # handed to the caller by wait()
                    self._error = error
                finally:
                    self._jobs.task_done()
