"""Weights & Biases mirror of a run folder: config, scalars, attention maps, tables, stores, videos.

Every experiment writes its results into a run folder first; `Tracker` mirrors the same content
into W&B so runs can be followed and compared there. It is a thin layer over `wandb.init` that

- picks the mode once (`resolve_mode`): offline unless the user is logged in, never a prompt;
- keeps wandb's files inside the run folder (`<run_dir>/wandb/offline-run-.../`), its console
  output off, and an offline start free of network calls (see "Network" below);
- turns the project's data into W&B media (2-D attention maps -> colour-mapped RGB images,
  DataFrames -> tables, the HDF5 attention store -> an artifact);
- is a cheap no-op when disabled, so experiments call it unconditionally.

Modes, first match wins:
    1. `enabled=False` -> "disabled";
    2. the `mode` argument ("online", "offline", "disabled"; wandb's "dryrun" means offline);
    3. the `WANDB_MODE` environment variable (`WANDB_DISABLED=true` also disables);
    4. "online" when an API key is available (`WANDB_API_KEY`, or a netrc entry for the W&B host
       of `WANDB_BASE_URL`, https://api.wandb.ai by default), otherwise "offline".
An offline run is uploaded later with `wandb sync <Tracker.wandb_dir>`. Scripts pass their mode
through `check_mode` before any work: it refuses an online mode that could not start (no key, or a
server that does not answer or rejects the key: one request, `SERVER_TIMEOUT` seconds at most, instead
of wandb.init's 90 s of retries after the work), and turns an online mode that was only inferred from
a stored key into offline, with a warning, when the server cannot be used.

Network: an offline `wandb.init` skips the login and the user-settings query, so nothing goes to
W&B. wandb 0.31 starts a `wandb-core` service process which, unless `WANDB_ERROR_REPORTING` is
false, reports to W&B's telemetry endpoint (a DNS lookup shows it, even offline); `Tracker` sets it
to "false" when the user has not set it (the service reads it once, when the process's first
run starts). With that, an offline run opens only local sockets (checked with strace).

On disk: `finish` returns once the run's `.wandb` transaction log ends with its exit record
(wandb's own `finish` returns a moment before the log is closed); `read_transaction_log`
decodes that log into wandb's protobuf records, which is how the tests check what was written.
Artifacts refer to their files in place, by absolute path, until the run is synced.

Videos: a video file (mp4, gif, webm, ogg) is logged as is. Encoding an array needs moviepy
(wandb's encoder); without it the array is skipped with a logged warning, because the video
file in the run folder is the product and can be logged instead.

May import the standard library, then wandb, numpy, matplotlib and pandas only (each lazily, so
that `import numina.tracking` and a disabled tracker stay cheap), and nothing from numina.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import importlib.util
import io
import json
import logging
import netrc
import os
import signal
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]

DEFAULT_BASE_URL = "https://api.wandb.ai"
SERVER_TIMEOUT = 10.0  # seconds for the server check's one request (wandb's own login check uses 10)
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".ogg")
_MODE_ALIASES: dict[str, Mode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}
_TRUE = ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- mode selection


def _netrc_path(environ: Mapping[str, str]) -> Path:
    """Where wandb (and curl) look for the netrc file: `NETRC`, else ~/.netrc."""
    if environ.get("NETRC"):
        return Path(environ["NETRC"]).expanduser()
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".netrc"


def _base_url(environ: Mapping[str, str]) -> str:
    """The W&B server wandb would use: `WANDB_BASE_URL`, else api.wandb.ai."""
    return (environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _api_key(environ: Mapping[str, str]) -> str | None:
    """The key wandb would log in with: `WANDB_API_KEY`, else the netrc password for the W&B host."""
    key = environ.get("WANDB_API_KEY", "").strip()
    if key:
        return key
    host = urlsplit(_base_url(environ)).netloc
    if not host:
        return None
    try:
        entry = netrc.netrc(str(_netrc_path(environ))).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return entry[2] if entry and entry[2] else None


def has_api_key(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an online run could authenticate without a prompt.

    True when `WANDB_API_KEY` is set or the netrc file has a password for the W&B host
    (`WANDB_BASE_URL`, default api.wandb.ai). The key is not checked against the server:
    that would need the network, which this decision must not touch (`server_problem` does).
    """
    return _api_key(os.environ if environ is None else environ) is not None


def resolve_mode(
    mode: str | None = None,
    *,
    enabled: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Mode:
    """Decide once how W&B is used: "online", "offline" or "disabled" (order in the module doc).

    Offline is the default so that nothing ever waits on the network or a login prompt; a
    logged-in user gets online runs without having to ask for them.
    """
    env = os.environ if environ is None else environ
    if not enabled:
        return "disabled"
    if mode is None:
        if env.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
            return "disabled"
        mode = env.get("WANDB_MODE", "").strip() or None
        source = "WANDB_MODE"
    else:
        source = "mode"
    if mode is None:
        return "online" if has_api_key(env) else "offline"
    try:
        return _MODE_ALIASES[mode.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown W&B mode {mode!r} (from {source}); use 'online', 'offline' or 'disabled'."
        ) from None


def server_problem(environ: Mapping[str, str] | None = None, timeout: float = SERVER_TIMEOUT) -> str | None:
    """Why an online run could not start now, in words; None when the W&B server answers and knows the key.

    One GraphQL `viewer` request (what wandb's own login check asks), through urllib, so the usual
    proxy variables (HTTPS_PROXY, NO_PROXY) and SSL_CERT_FILE apply; `timeout` bounds it all, name
    lookup included. Without it, an unreachable server costs wandb.init's 90 s of retries and a
    traceback, after the work.
    """
    env = os.environ if environ is None else environ
    base = _base_url(env)
    token = base64.b64encode(f"api:{_api_key(env) or ''}".encode()).decode()
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": "query Viewer { viewer { id } }"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    answers: list[str | None] = []
    asking = threading.Thread(
        target=lambda: answers.append(_viewer_problem(request, base, timeout)), daemon=True
    )
    asking.start()
    asking.join(timeout)  # a name lookup is not bound by the socket's timeout
    if not answers:
        return f"the W&B server {base} could not be reached (no answer within {timeout:g} s)"
    return answers[0]


def _viewer_problem(request: urllib.request.Request, base: str, timeout: float) -> str | None:
    """`server_problem`'s request to the server at `base`, and the reading of its answer."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return f"the W&B server {base} rejected the API key (HTTP {error.code})"
        return f"the W&B server {base} answered HTTP {error.code} ({error.reason})"
    except OSError as error:  # URLError (refused, unknown host, ...) or a timeout while reading
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        return f"the W&B server {base} could not be reached ({reason})"
    try:
        viewer = json.loads(body)["data"]["viewer"]
    except (ValueError, KeyError, TypeError):
        return f"{base} did not answer as a W&B server"
    return None if viewer else f"the W&B server {base} knows no user for the API key"


def check_mode(
    mode: str | None = None, environ: Mapping[str, str] | None = None, *, timeout: float = SERVER_TIMEOUT
) -> Mode:
    """The W&B mode a script should run in, checked before its work: wandb would fail (or prompt, or
    retry for 90 s) only once the run starts, after the work.

    An online mode that was asked for (`mode`, or WANDB_MODE) is refused with a ValueError that says
    what to do when there is no API key, or when the server does not answer or rejects the key: a run
    asked to be online must not silently stay on this machine. An online mode that was only inferred
    from a stored key becomes offline in that case, with a warning that says why and how to upload.
    """
    env = os.environ if environ is None else environ
    resolved = resolve_mode(mode, environ=env)
    if resolved != "online":
        return resolved
    if not has_api_key(env):
        raise ValueError(
            "W&B online mode needs an API key and none was found (WANDB_API_KEY, or a netrc entry "
            "written by `wandb login`); log in, or use --wandb offline and upload later with `wandb sync`."
        )
    problem = server_problem(env, timeout)
    if problem is None:
        return "online"
    if mode is not None or env.get("WANDB_MODE", "").strip():
        raise ValueError(
            f"W&B online mode cannot start: {problem}. Nothing was run. Check the network (and "
            "WANDB_BASE_URL) or the key (`wandb login --relogin`), or use --wandb offline and upload the "
            "run later with `wandb sync <run folder>/wandb/offline-run-*`."
        )
    logger.warning(
        "W&B: an API key was found, so this run would be online, but %s; it is recorded offline instead "
        "(upload it later with `wandb sync <run folder>/wandb/offline-run-*`; --wandb online makes this "
        "an error, --wandb offline silences it).",
        problem,
    )
    return "offline"


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


# --------------------------------------------------------------------------- conversions


def to_plain(value: Any) -> Any:
    """A JSON-friendly copy of a config value, so any resolved config can be logged.

    Mappings keep their nesting (keys become strings), sequences become lists, paths and
    unknown objects (a torch dtype, a device) become their `str`, numpy scalars and arrays
    become Python numbers and lists, dataclasses become dicts and enums their value.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return to_plain(value.tolist())
    return str(value)


def colorize(
    values: np.ndarray,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """A 2-D map as an (H, W, 3) uint8 RGB image through a matplotlib colour map.

    The range defaults to the map's own finite minimum and maximum, so each attention map uses
    the full colour scale; pass vmin/vmax to compare maps on one scale. NaNs get the colour
    map's "bad" colour.
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"colorize takes a 2-D map (height, width); got shape {data.shape}.")
    finite = data[np.isfinite(data)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    rgba = colormaps[cmap](Normalize(vmin=lo, vmax=hi, clip=True)(np.ma.masked_invalid(data)))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) array -> uint8: integers must lie in [0, 255], floats in [0, 1] (no rescaling)."""
    import numpy as np

    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    integer = np.issubdtype(image.dtype, np.integer)
    data = image.astype(np.float64)
    top = 255.0 if integer else 1.0
    if data.size and (not np.all(np.isfinite(data)) or data.min() < 0.0 or data.max() > top):
        raise ValueError(
            "An RGB(A) image must be uint8, integers in [0, 255] or floats in [0, 1]; got "
            f"dtype {image.dtype} with range [{np.nanmin(data)}, {np.nanmax(data)}]. "
            "Scale it first, or pass a 2-D map to have it colour-mapped."
        )
    return image.astype(np.uint8) if integer else np.round(data * 255).astype(np.uint8)


def figure_to_array(figure: Figure, dpi: float | None = None) -> np.ndarray:
    """A matplotlib Figure rendered to an (H, W, 4) uint8 RGBA array.

    Renders through `savefig` into memory, so the figure's own canvas and backend (a notebook
    widget, say) are left untouched and no temporary file is needed.
    """
    import numpy as np
    from matplotlib.image import imread

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi if dpi is not None else "figure")
    buffer.seek(0)
    rgba = imread(buffer, format="png")
    return np.round(np.asarray(rgba) * 255).astype(np.uint8)


def _records_frame(data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A DataFrame from a DataFrame or from dict records (missing keys become empty cells)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    records = list(data)
    if not all(isinstance(r, Mapping) for r in records):
        raise TypeError("log_table takes a pandas DataFrame or a list of dict records.")
    return pd.DataFrame.from_records([dict(r) for r in records])


def _scalar(key: str, value: Any) -> float | int | bool:
    """A Python number from a number-like value (numpy scalar, 0-d array or tensor)."""
    if isinstance(value, (bool, int, float)):
        return value
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as err:
            raise TypeError(f"Scalar {key!r} has more than one element: {value!r}") from err
        if isinstance(value, (bool, int, float)):
            return value
    raise TypeError(f"Scalar {key!r} must be a number; got {type(value).__name__}.")


# --------------------------------------------------------------------------- the run's transaction log

_LOG_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # identifier, magic, version
_LOG_BLOCK = 32768
_CHUNK_HEADER = 7  # crc32 (uint32), length (uint16), kind (uint8)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _transaction_log(path: str | os.PathLike[str]) -> Path:
    """The `.wandb` file itself, given it or the run folder wandb wrote it into."""
    path = Path(path)
    if path.is_dir():
        logs = sorted(path.glob("run-*.wandb"))
        if len(logs) != 1:
            raise FileNotFoundError(f"Expected one run-*.wandb file in {path}; found {len(logs)}.")
        return logs[0]
    return path


def _complete_records(raw: bytes, pos: int) -> tuple[list[bytes], int]:
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


def read_transaction_log(path: str | os.PathLike[str]) -> list[Any]:
    """Every record of a run's `.wandb` log (the file, or its run folder) as wandb `Record`s.

    This is what `wandb sync` uploads: run (with the initial config), config, history,
    summary, files, artifact, exit... records. It lets tests and people check an offline run
    without syncing it; `Record.WhichOneof("record_type")` names each record.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    log = _transaction_log(path)
    raw = log.read_bytes()
    if not raw.startswith(_LOG_HEADER):
        raise ValueError(f"{log} is not a W&B transaction log (it does not start with {_LOG_HEADER!r}).")
    payloads, _ = _complete_records(raw, len(_LOG_HEADER))
    records = []
    for payload in payloads:
        record = Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _wait_for_exit_record(log: Path, timeout: float) -> bool:
    """Wait until the run's log ends with its exit record; False on timeout or unknown format.

    `wandb.Run.finish` returns once the service has handled the exit, but the service writes
    and closes the log a moment later; without this wait a copy or `wandb sync` started right
    after `finish` can see a cut-off file.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    deadline = time.monotonic() + timeout
    pos, last = len(_LOG_HEADER), None
    while True:
        raw = log.read_bytes() if log.is_file() else b""
        if len(raw) >= len(_LOG_HEADER):
            if not raw.startswith(_LOG_HEADER):
                return False
            try:
                payloads, pos = _complete_records(raw, pos)
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


# --------------------------------------------------------------------------- the tracker


# The status of a process ended by SIGTERM (128 + 15), as a shell reports it.
TERMINATED = 128 + signal.SIGTERM


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM as an exception (a job scheduler's stop, `kill`): Python's default ends the process at
    once, leaving the W&B run open and partial files behind; this unwinds through every `with`."""
    raise SystemExit(TERMINATED)


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
        self._log({str(k): _scalar(str(k), v) for k, v in values.items()}, step)

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
            return _to_uint8_rgb(array)
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

        self._log({name: wandb.Table(dataframe=_records_frame(data))}, step)

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
        frames = np.stack([_to_uint8_rgb(f) for f in frames])[..., :3]
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
        if not _wait_for_exit_record(log, timeout):
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
                self.finish(exit_code=exit_status(exc))
            except Exception:
                logger.exception("W&B: the run %s could not be finished after an error", self._run_id)
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None

    def __repr__(self) -> str:
        where = self.wandb_dir if self.enabled else None
        return f"Tracker(mode={self._mode!r}, run_dir={str(self._run_dir)!r}, wandb_dir={where!r})"
