"""`Tracker`: one W&B run mirroring one run folder (config, scalars, attention maps, tables, stores,
videos), and the markers that keep a rerun with nothing new from opening a second run.

It is a thin layer over `wandb.init` that keeps wandb's files inside the run folder
(`<run_dir>/wandb/offline-run-.../`), its console output off, and an offline start free of network
calls, and is a cheap no-op when disabled, so experiments call it unconditionally.

Network: an offline `wandb.init` skips the login and the user-settings query, so nothing goes to
W&B. wandb 0.31 starts a `wandb-core` service process which, unless `WANDB_ERROR_REPORTING` is
false, reports to W&B's telemetry endpoint (a DNS lookup shows it, even offline); `Tracker` sets it
to "false" when the user has not set it (the service reads it once, when the process's first
run starts). With that, an offline run opens only local sockets (checked with strace).

On disk: `finish` returns once the run's `.wandb` transaction log ends with its exit record
(`run_log`). Artifacts refer to their files in place, by absolute path, until the run is synced.

Videos: a video file (mp4, gif, webm, ogg) is logged as is. Encoding an array needs moviepy
(wandb's encoder); without it the array is skipped with a logged warning, because the video
file in the run folder is the product and can be logged instead.

May import the standard library, then wandb and numpy (lazily, so that a disabled tracker stays
cheap), matplotlib and pandas (type hints only) and numina.wandb_mirror (media, mode, run_log).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from numina.wandb_mirror.media import (
    colorize,
    figure_to_array,
    python_number,
    records_frame,
    rgb_uint8,
    to_plain,
)
from numina.wandb_mirror.mode import Mode, resolve_mode
from numina.wandb_mirror.run_log import wait_for_exit_record

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".ogg")

LOGGED_FILE = ".wandb-logged"


def logged_already(folder: str | os.PathLike[str], content: str, mode: str | None = None) -> bool:
    """Whether the folder's last W&B run logged this `content` (the text of what a run would log) in
    this mode: a rerun with nothing new then opens no second run of the same results."""
    path = Path(folder) / LOGGED_FILE
    return path.is_file() and path.read_text() == _logged_digest(content, mode)


def record_logged(folder: str | os.PathLike[str], content: str, mode: str | None = None) -> None:
    """Remember that `content` was logged from `folder` in this mode (see `logged_already`)."""
    (Path(folder) / LOGGED_FILE).write_text(_logged_digest(content, mode))


def _logged_digest(content: str, mode: str | None) -> str:
    return hashlib.sha256(f"{resolve_mode(mode)}\n{content}".encode()).hexdigest() + "\n"


# The status of a process ended by SIGTERM (128 + 15), as a shell reports it.
TERMINATED = 128 + signal.SIGTERM


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM as an exception (a job scheduler's stop, `kill`): Python's default ends the process at
    once, leaving the W&B run open and partial files behind; this unwinds through every `with`."""
    raise SystemExit(TERMINATED)


@contextlib.contextmanager
def _logging_errors_unprinted() -> Iterator[None]:
    """While a run is finished after an error: wandb's own log files may be what failed (a full disk),
    and each of its log records would then print a "--- Logging error ---" traceback over the error
    that ended the work."""
    previous, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        yield
    finally:
        logging.raiseExceptions = previous


def exit_status(error: BaseException) -> int:
    """The status a process ends with when `error` ends it: a SystemExit's own (0 for none, 1 for a
    message; SIGTERM's 143 under a Tracker), 130 for Ctrl-C (Python exits by SIGINT), otherwise 1. A
    run ended by it records this."""
    if isinstance(error, SystemExit):
        code = error.code
        return 0 if code is None else code if isinstance(code, int) else 1
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def _settings(mode: Mode, capture_console: bool, system_metrics: bool) -> Any:
    """wandb Settings for a quiet run whose files stay in the run folder."""
    import wandb

    wanted: dict[str, Any] = {
        "mode": mode,
        "silent": True,  # no banner, no run summary, no sync hints on the console
        "console": "auto" if capture_console else "off",
        "x_disable_stats": not system_metrics,
        "use_dot_wandb": False,  # always <run_dir>/wandb, never a hidden .wandb
        "reinit": "create_new",  # several trackers may be open at once (sweeps, notebooks)
    }
    known = getattr(wandb.Settings, "model_fields", wanted)
    return wandb.Settings(**{k: v for k, v in wanted.items() if k in known})


class Tracker:
    """One W&B run mirroring one run folder; a context manager that finishes the run on exit.

    Args:
        run_dir: the experiment's run folder; wandb writes under `<run_dir>/wandb/`.
        project, name, group, tags, job_type, entity: as in `wandb.init`.
        config: the full resolved config, logged at start (more with `log_config`).
        mode: "online", "offline" or "disabled"; None decides as `resolve_mode` says.
        enabled: False disables tracking whatever `mode` and the environment say.
        capture_console: also record the process's stdout/stderr in the run (off by default,
            since experiments keep their own logs and capture interferes with progress bars).
        system_metrics: sample CPU/GPU/memory use into the run (on by default).

    Steps given to the `log_*` methods must not decrease within a run: wandb drops rows logged
    at an earlier step (a warning is logged here when that happens).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        project: str = "numina",
        name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        mode: str | None = None,
        job_type: str | None = None,
        *,
        enabled: bool = True,
        entity: str | None = None,
        capture_console: bool = False,
        system_metrics: bool = True,
    ) -> None:
        self._run_dir = Path(run_dir).expanduser().absolute()
        self._mode: Mode = resolve_mode(mode, enabled=enabled)
        self._run: Any = None
        self._wandb_dir: Path | None = None
        self._run_id: str | None = None
        self._url: str | None = None
        self._last_step: int | None = None
        self._previous_sigterm: Any = None  # the SIGTERM handler to put back on exit
        if self._mode == "disabled":
            return

        import wandb

        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            dir=str(self._run_dir),
            project=project,
            entity=entity,
            name=name,
            group=group,
            job_type=job_type,
            tags=list(tags) or None,
            config=to_plain(config) if config else None,
            settings=_settings(self._mode, capture_console, system_metrics),
        )
        self._run_id = self._run.id
        self._wandb_dir = Path(self._run.settings.sync_dir)
        self._url = self._run.url if self._mode == "online" else None

    # ----------------------------------------------------------------- state

    @property
    def mode(self) -> Mode:
        """The mode this tracker runs in: "online", "offline" or "disabled"."""
        return self._mode

    @property
    def enabled(self) -> bool:
        """False when every method is a no-op."""
        return self._mode != "disabled"

    @property
    def active(self) -> bool:
        """True between start and `finish` of an enabled tracker."""
        return self._run is not None

    @property
    def run(self) -> Any:
        """The underlying `wandb.Run` (None when disabled or finished), for anything not wrapped."""
        return self._run

    @property
    def run_dir(self) -> Path:
        """The experiment's run folder this tracker mirrors."""
        return self._run_dir

    @property
    def wandb_dir(self) -> Path | None:
        """Where wandb keeps this run (`<run_dir>/wandb/offline-run-<time>-<id>`); None if disabled.

        An offline run is uploaded later with `wandb sync <wandb_dir>`.
        """
        return self._wandb_dir

    @property
    def run_id(self) -> str | None:
        """The W&B run id (None when disabled)."""
        return self._run_id

    @property
    def url(self) -> str | None:
        """The run's page on W&B; None offline or disabled."""
        return self._url

    # ----------------------------------------------------------------- logging

    def _live(self) -> bool:
        """True if there is a run to log to; False when disabled; an error after `finish`."""
        if self._run is not None:
            return True
        if self._mode == "disabled":
            return False
        raise RuntimeError(
            f"The W&B run {self._run_id} has finished; start a new Tracker to log more to W&B."
        )

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Add (or update) config values; nested dicts are kept nested."""
        if not self._live():
            return
        self._run.config.update(to_plain(config), allow_val_change=True)

    def _log(self, payload: dict[str, Any], step: int | None) -> None:
        if step is not None:
            step = int(step)
            if self._last_step is not None and step < self._last_step:
                logger.warning(
                    "W&B drops data logged at step %d after step %d (keys %s); log steps in order.",
                    step,
                    self._last_step,
                    sorted(payload),
                )
            self._last_step = step if self._last_step is None else max(step, self._last_step)
        self._run.log(payload, step=step)

    def log_scalars(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Log numbers (Python, numpy or 0-d tensors) as one history row at `step`."""
        if not self._live():
            return
        self._log({str(k): python_number(str(k), v) for k, v in values.items()}, step)

    def log_image(
        self,
        name: str,
        image: np.ndarray | Figure | str | os.PathLike[str],
        caption: str | None = None,
        step: int | None = None,
        *,
        cmap: str = "viridis",
        vmin: float | None = None,
        vmax: float | None = None,
    ) -> None:
        """Log an image: a 2-D map (colour-mapped), an (H, W, 3|4) array, a Figure or an image file.

        2-D arrays are attention maps and go through `colorize(cmap, vmin, vmax)`; RGB(A) arrays
        must be uint8, integers in [0, 255] or floats in [0, 1] (they are never rescaled).
        """
        if not self._live():
            return
        import wandb

        self._log({name: wandb.Image(self._image_source(image, cmap, vmin, vmax), caption=caption)}, step)

    @staticmethod
    def _image_source(image: Any, cmap: str, vmin: float | None, vmax: float | None) -> Any:
        import numpy as np

        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"Image file {path} does not exist.")
            return str(path)
        if hasattr(image, "savefig"):
            return figure_to_array(image)
        array = np.asarray(image)
        if array.ndim == 2:
            return colorize(array, cmap=cmap, vmin=vmin, vmax=vmax)
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            return rgb_uint8(array)
        raise ValueError(
            f"log_image takes a 2-D map (H, W), an RGB(A) array (H, W, 3|4), a matplotlib Figure "
            f"or an image path; got an array of shape {array.shape}."
        )

    def log_table(
        self,
        name: str,
        data: pd.DataFrame | Sequence[Mapping[str, Any]],
        step: int | None = None,
    ) -> None:
        """Log a table from a DataFrame or from a list of dict records (columns = union of keys)."""
        if not self._live():
            return
        import wandb

        self._log({name: wandb.Table(dataframe=records_frame(data))}, step)

    def log_artifact(
        self,
        path: str | os.PathLike[str],
        name: str,
        type: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        copy: bool = False,
    ) -> None:
        """Record a file or folder (e.g. the HDF5 store, type "attention-store") as a W&B artifact.

        By default the artifact refers to the file where it is (wandb's "immutable" policy): a
        multi-gigabyte store is not copied, and for an offline run it is read from where it is
        when the run is synced, so it must stay there unchanged until then. `copy=True`
        stages a private copy in wandb's data folder instead (~/.local/share/wandb or
        `WANDB_DATA_DIR`).
        """
        if not self._live():
            return
        import wandb

        source = Path(path).expanduser().absolute()  # an offline run is synced from anywhere
        if not source.exists():
            raise FileNotFoundError(f"Cannot log artifact {name!r}: {source} does not exist.")
        artifact = wandb.Artifact(
            name,
            type=type,
            description=description,
            metadata=to_plain(metadata) if metadata else None,
        )
        policy = "mutable" if copy else "immutable"
        if source.is_dir():
            artifact.add_dir(str(source), policy=policy)
        else:
            artifact.add_file(str(source), policy=policy)
        self._run.log_artifact(artifact, aliases=list(aliases) or None)

    def log_video(
        self,
        name: str,
        video: str | os.PathLike[str] | np.ndarray,
        fps: int = 16,
        caption: str | None = None,
        step: int | None = None,
    ) -> bool:
        """Log a video file (mp4/gif/webm/ogg) or frames (frame, height, width, channel).

        Files are logged as they are (`fps` is the file's own). Frames are encoded by wandb,
        which needs moviepy; without it nothing is logged and a warning says so. Returns
        whether the video was logged (True when disabled, since nothing was asked for).
        """
        if not self._live():
            return True
        import numpy as np
        import wandb

        if isinstance(video, (str, os.PathLike)):
            path = Path(video)
            if not path.is_file():
                raise FileNotFoundError(f"Video file {path} does not exist.")
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"W&B takes videos as {VIDEO_SUFFIXES}; got {path.name}.")
            self._log({name: wandb.Video(str(path), caption=caption)}, step)
            return True
        frames = np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"Video frames must be (frame, height, width, channel); got shape {frames.shape}."
            )
        if importlib.util.find_spec("moviepy") is None:
            logger.warning(
                "Video %r not logged to W&B: encoding frames needs moviepy, which is not installed. "
                "Log the video file from the run folder instead (log_video(name, path)).",
                name,
            )
            return False
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        frames = np.stack([rgb_uint8(f) for f in frames])[..., :3]
        clip = wandb.Video(frames.transpose(0, 3, 1, 2), caption=caption, fps=fps, format="mp4")
        self._log({name: clip}, step)
        return True

    # ----------------------------------------------------------------- end

    def finish(self, exit_code: int = 0, timeout: float = 30.0) -> None:
        """End the run (idempotent); it is then complete on disk, ready to copy or sync.

        Waits (up to `timeout` seconds) for wandb's service to write the run's exit record,
        since `wandb.Run.finish` returns before the log file is closed.
        """
        if self._run is None:
            return
        run, self._run = self._run, None
        run.finish(exit_code=exit_code)
        log = self._wandb_dir / f"run-{self._run_id}.wandb"
        if not wait_for_exit_record(log, timeout):
            logger.warning("W&B's log %s did not show the run's end within %.0f s.", log, timeout)
        if self._mode == "offline":
            where = self._wandb_dir
            logger.info("Offline W&B run in %s; upload it with `wandb sync %s`.", where, where)

    def __enter__(self) -> Tracker:
        """Also turns SIGTERM into SystemExit(143) while the run is open (main thread, default handler
        only), so a stopped script finishes its run marked failed; the old handler returns on exit."""
        if (
            self.enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            self._previous_sigterm = signal.signal(signal.SIGTERM, _terminated)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Finish the run with the exit status the error gives the process, so a failed script's run
        ends marked failed, never left open; a failure while finishing after an error is logged, not
        raised, so that it cannot hide the error that ended the work."""
        try:
            if exc is None:
                self.finish()
                return
            try:
                with _logging_errors_unprinted():
                    self.finish(exit_code=exit_status(exc))
            except OSError as error:  # most often a full disk: one line, then the error that ended the work
                run_id = self._run_id
                logger.warning("W&B: the run %s could not be finished after an error: %s", run_id, error)
            except Exception:
                logger.exception("W&B: the run %s could not be finished after an error", self._run_id)
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None

    def __repr__(self) -> str:
        where = self.wandb_dir if self.enabled else None
        return f"Tracker(mode={self._mode!r}, run_dir={str(self._run_dir)!r}, wandb_dir={where!r})"
