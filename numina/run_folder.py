"""The run folder: one per run, holding its config, attention store, video, figures and W&B files.

Names sort by time and say what ran (`20261125-153012-three-cats-on-a-sofa`); files are written
atomically (temporary file, then rename), so a crash never leaves a half-written file under its
final name. May import only the standard library (and diffusers' video export, when a video is saved).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def slug(text: str, max_length: int = 48) -> str:
    """Lower-case words joined by hyphens, for folder names."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:max_length].strip("-") or "run"


def new_run_folder(root: str | Path, name: str) -> Path:
    """Create and return `root/<time>-<slug(name)>`, never reusing an existing folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{slug(name)}"
    for attempt in range(1000):
        folder = root / (stem if attempt == 0 else f"{stem}-{attempt + 1}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not create a new run folder under {root}")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    For writers that take a file name (pandas, imageio): the final name appears only complete.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_resumable(
    folder: str | Path,
    config: Mapping[str, Any],
    keys: Sequence[str],
    script: str,
    per_entry: Sequence[str] = (),
) -> None:
    """Refuse to add results to `folder` when its `config.json` was written with other values of `keys`
    (compared as JSON): the folder's results would silently mix two experiments. The refusal names
    every changed setting with its old and new value (a field of a mapping by its dotted name); a
    setting the folder does not record counts as changed, since its results cannot be shown to match.

    The mappings under `per_entry` hold one entry per independent part of the results (a method's
    options, say): only entries recorded both before and now must agree, so a resume may add one.
    """
    try:
        old = recorded_config(folder)
    except ValueError as error:
        raise SystemExit(f"{script}: {error}") from None
    if not old:
        return
    changed = []
    for key in keys:
        before, now = old.get(key, _NOT_RECORDED), json.loads(json.dumps(config.get(key), default=str))
        if key in per_entry and isinstance(before, dict) and isinstance(now, dict):
            common = before.keys() & now.keys()
            before, now = {k: before[k] for k in common}, {k: now[k] for k in common}
        changed += _differences(key, before, now)
    if changed:
        raise SystemExit(
            f"{script}: {folder} holds results made with other settings ({'; '.join(changed)}); "
            f"resume it with the same settings or pass another --out.{_version_hint(old, config)}"
        )


def _version_hint(old: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """A sentence naming the code versions that made a folder's results when this run's differs: a
    setting that is the code's own default (a preset's options, the capture's) changes only with it."""
    made_by = [entry["code_version"] for entry in (old, *old.get("resumed", [])) if "code_version" in entry]
    now = config.get("code_version")
    if not made_by or now is None or now in made_by:
        return ""
    return (
        f" Its results were made by code version {', '.join(dict.fromkeys(made_by))}, this is {now}: "
        "defaults that changed with the code (a preset's options, the capture's) come back with that version."
    )


_NOT_RECORDED = object()  # what a comparison's side holds for a setting or field it lacks


def _differences(name: str, before: Any, now: Any) -> list[str]:
    """'name: <before> before, <now> now' for each JSON value that differs, by dotted field name."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [
            difference
            for field in sorted(before.keys() | now.keys())
            for difference in _differences(
                f"{name}.{field}", before.get(field, _NOT_RECORDED), now.get(field, _NOT_RECORDED)
            )
        ]
    shown = ["(not recorded)" if value is _NOT_RECORDED else json.dumps(value) for value in (before, now)]
    return [] if shown[0] == shown[1] else [f"{name}: {shown[0]} before, {shown[1]} now"]


def recorded_config(folder: str | Path) -> dict[str, Any]:
    """The settings `folder/config.json` records; {} for a folder without one (a new run). A file that
    is not a JSON object raises a ValueError that says so: its results' settings are unknown."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        reason = "" if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = f"not JSON: {error}"
    if reason:
        raise ValueError(
            f"{path} is damaged ({reason}), so the settings of the results beside it are unknown; "
            "restore it, or pass another --out."
        )
    return record


def write_config(folder: str | Path, config: Mapping[str, Any], per_entry: Sequence[str] = ()) -> Path:
    """Write `folder/config.json`, keeping the first run's `command` and `code_version`: a resumed
    run's command (and code version) is appended to `resumed`, unless it repeats the last one. The
    mappings under `per_entry` (as `check_resumable` takes them) keep the entries this run left out."""
    path = Path(folder) / "config.json"
    record = dict(config)
    old = recorded_config(folder)
    for key in per_entry:
        if isinstance(old.get(key), dict) and isinstance(record.get(key), dict):
            record[key] = {**old[key], **record[key]}
    if old:
        first = {key: old[key] for key in ("command", "code_version") if key in old}
        entry = {key: config[key] for key in first if key in config}
        resumed = list(old.get("resumed", []))
        if entry and entry != (resumed[-1] if resumed else first):
            resumed.append(entry)
        record.update(first, resumed=resumed)
    return write_json(path, record)


def device_type(device: str) -> str:
    """The kind of device a run computes on ('cpu', 'cuda', 'mps'), without its index: the numbers of
    a run depend on the kind, so a resumed folder must keep it, while cuda:0 and cuda:1 are alike."""
    return str(device).split(":", 1)[0]


def check_writable_folder(path: str | Path, option: str = "--out") -> None:
    """Raise a ValueError that names `option` when the folder `path` could not be created or written
    in: a file in its place or above it, or a nearest existing folder that refuses a new file (read-only
    or not ours). Checked before any work, so that no result is lost to it."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under the file {existing}"
        raise ValueError(f"{option} {path} {where}, not a folder; pass a folder path for {option}.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(
            f"{option} {path}: cannot write in {existing} ({error.strerror or error}); "
            f"pass a folder you can write to for {option}."
        ) from None


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def disk_full_ends_cleanly(script: str) -> Iterator[None]:
    """Turn a full disk (an OSError ENOSPC/EDQUOT, or an error caused by one, such as the store writer's)
    into one message and exit status 1 instead of a traceback. Files already complete are kept: every
    file is written atomically, and a store cut off stays `.partial`, which a resumed run makes again."""
    try:
        yield
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and getattr(cause, "errno", None) not in DISK_FULL:
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise SystemExit(
            f"{script}: error: the disk is full ({cause}); what was complete is kept. Free some space and "
            "run the same command again: it resumes where it stopped."
        ) from None


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON, atomically."""
    with atomic_write(path) as temporary, open(temporary, "w") as file:
        json.dump(data, file, indent=2, default=str)
        file.write("\n")
    return Path(path)


def save_video(frames: Any, path: str | Path, fps: int = 16) -> Path:
    """Write (frames, H, W, 3) floats in [0, 1] as an mp4 (through diffusers/imageio), atomically."""
    from diffusers.utils import export_to_video

    with atomic_write(path) as temporary:
        export_to_video(list(frames), str(temporary), fps=fps)
    return Path(path)
