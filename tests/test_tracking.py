"""numina.wandb_mirror: mode decision, conversions, and what an offline W&B run writes to disk.

One offline run (module fixture) logs a config, scalars, images, tables, an artifact and a video
file; the tests then read the run back from disk: the media files, and the run's `.wandb`
transaction log decoded into wandb's own protobuf `Record`s (the records `wandb sync` uploads)
by `read_transaction_log` (tests/wandb_log.py), which is itself checked against `wandb leet inspect --json`.

No test needs the network: HOME, netrc and the wandb folders point into tmp, no API key is set,
and WANDB_BASE_URL points at a closed local port.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from wandb_log import read_transaction_log  # noqa: E402

from numina.wandb_mirror import (  # noqa: E402
    Tracker,
    colorize,
    exit_status,
    has_api_key,
    resolve_mode,
    to_plain,
)
from numina.wandb_mirror import tracker as tracker_module  # noqa: E402
from numina.wandb_mirror.media import python_number  # noqa: E402

LOSSES = {step: 1.0 / (step + 1) for step in range(5)}
MAP_SHAPE = (12, 20)  # (height, width) of the logged attention map
FIG_SIZE, FIG_DPI = (2.0, 1.0), 50  # -> 100 x 50 pixels
IMAGE_STEP = 5
STORE_BYTES = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64
# long enough that its config record spans several 32 KiB blocks of the transaction log
PROMPTS = [f"{n} cats sitting on a red sofa, photorealistic" for n in range(2000)]

WANDB_ENV = (
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_DISABLED",
    "WANDB_SILENT",
    "WANDB_ERROR_REPORTING",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
)


def isolate_wandb(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Not logged in, every wandb folder in tmp, and any stray request sent to a closed local port."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    for name in WANDB_ENV:
        mp.delenv(name, raising=False)
    mp.setenv("HOME", str(home))
    mp.setenv("NETRC", str(home / ".netrc"))  # does not exist
    mp.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    for name, sub in (
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        mp.setenv(name, str(root / "wandb-home" / sub))


# --------------------------------------------------------------------------- reading a run back


def item_key(item: Any) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


def item_value(item: Any) -> Any:
    """The value of a config/summary/history item, whichever encoding wandb chose."""
    kind = item.WhichOneof("value") if "value" in type(item).DESCRIPTOR.oneofs_by_name else None
    if kind is None:
        return json.loads(item.value_json)
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)


@dataclasses.dataclass
class RunOnDisk:
    """What an offline run holds, folded from its transaction log."""

    wandb_dir: Path
    records: list[Any]
    run: Any
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    artifacts: list[Any]
    files: list[str]
    exit_code: int | None

    @classmethod
    def read(cls, wandb_dir: Path) -> RunOnDisk:
        records = read_transaction_log(wandb_dir)
        by_type: dict[str, list[Any]] = {}
        for record in records:
            by_type.setdefault(record.WhichOneof("record_type"), []).append(record)
        (run,) = (r.run for r in by_type["run"])
        config: dict[str, Any] = {}
        for update in [run.config] + [r.config for r in by_type.get("config", [])]:
            config.update({item_key(i): item_value(i) for i in update.update})
        summary: dict[str, Any] = {}
        for r in by_type.get("summary", []):
            summary.update({item_key(i): item_value(i) for i in r.summary.update})
        history = [{item_key(i): item_value(i) for i in r.history.item} for r in by_type.get("history", [])]
        exits = [r.exit.exit_code for r in by_type.get("exit", [])]
        return cls(
            wandb_dir=wandb_dir,
            records=records,
            run=run,
            config=config,
            summary=summary,
            history=history,
            artifacts=[r.artifact for r in by_type.get("artifact", [])],
            files=[f.path for r in by_type.get("files", []) for f in r.files.files],
            exit_code=exits[-1] if exits else None,
        )

    def row(self, step: int) -> dict[str, Any]:
        (row,) = [h for h in self.history if h["_step"] == step]
        return row

    def media(self, key: str, step: int) -> tuple[dict[str, Any], Path]:
        """The media entry logged under `key` at `step` (flattened or nested) and its file."""
        row = self.row(step)
        entry = (
            row[key]
            if key in row
            else {k[len(key) + 1 :]: v for k, v in row.items() if k.startswith(key + ".")}
        )
        return entry, self.wandb_dir / "files" / entry["path"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# --------------------------------------------------------------------------- the offline run


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, root)
        run_dir = root / "run"
        store = root / "outside" / "attention.h5"
        store.parent.mkdir()
        store.write_bytes(STORE_BYTES)
        video = root / "outside" / "clip.mp4"
        video.write_bytes(VIDEO_BYTES)
        attention = np.linspace(0.0, 1.0, MAP_SHAPE[0] * MAP_SHAPE[1]).reshape(MAP_SHAPE)
        frame = pd.DataFrame({"prompt": ["three cats", "two dogs"], "target": [3, 2], "counted": [3, 1]})
        records = [{"head": 4, "score": 0.5}, {"head": 7, "layer": 15}]
        fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=FIG_DPI)
        ax.plot([0, 1], [1, 0])

        tracker = Tracker(
            run_dir,
            name="tracking-test",
            group="tests",
            tags=("unit", "offline"),
            job_type="test",
            config={"model": {"name": "tiny", "layers": (15, 17)}, "seed": 7},
            system_metrics=False,
        )
        error_reporting = tracker.mode == "offline" and os.environ.get("WANDB_ERROR_REPORTING")
        wandb_dir_live = tracker.wandb_dir
        with tracker:
            tracker.log_config({"method": {"alpha": 0.5, "store": store}, "dtype": np.dtype("float16")})
            tracker.log_config({"prompts": PROMPTS})
            for step, loss in LOSSES.items():
                tracker.log_scalars({"loss": loss, "count": np.int64(step)}, step=step)
            tracker.log_image("attention/map", attention, caption="token 'cats'", step=IMAGE_STEP)
            tracker.log_image("figure", fig, step=IMAGE_STEP)
            tracker.log_table("counts", frame, step=IMAGE_STEP)
            tracker.log_table("heads", records, step=IMAGE_STEP)
            tracker.log_video("video", video, step=IMAGE_STEP)
            tracker.log_artifact(store, "attention-store", "attention-store", metadata={"layers": [15]})
        plt.close(fig)
        tracker.finish()  # a second finish is a no-op
        yield {
            "tracker": tracker,
            "run_dir": run_dir,
            "store": store,
            "attention": attention,
            "frame": frame,
            "records": records,
            "disk": RunOnDisk.read(tracker.wandb_dir),
            "error_reporting": error_reporting,
            "wandb_dir_live": wandb_dir_live,
        }


def test_default_mode_is_offline_and_run_lives_in_run_folder(logged):
    tracker, run_dir = logged["tracker"], logged["run_dir"]
    assert tracker.mode == "offline" and tracker.enabled and not tracker.active
    assert tracker.url is None
    wandb_dir = tracker.wandb_dir
    assert wandb_dir == logged["wandb_dir_live"]
    assert wandb_dir.is_dir() and wandb_dir.is_absolute()
    assert wandb_dir.parent == run_dir / "wandb"
    assert wandb_dir.name.startswith("offline-run-") and wandb_dir.name.endswith(tracker.run_id)
    assert (wandb_dir / f"run-{tracker.run_id}.wandb").is_file()
    assert logged["error_reporting"] == "false"


def test_logging_after_finish_is_an_error(logged):
    with pytest.raises(RuntimeError, match="has finished"):
        logged["tracker"].log_scalars({"loss": 0.0}, step=99)


def test_run_record_holds_name_group_tags(logged):
    run = logged["disk"].run
    assert run.display_name == "tracking-test"
    assert run.run_group == "tests"
    assert run.job_type == "test"
    assert list(run.tags) == ["unit", "offline"]
    assert run.project == "numina"
    assert logged["disk"].exit_code == 0


def test_config_is_recorded_nested(logged):
    config = logged["disk"].config
    assert config["model"] == {"name": "tiny", "layers": [15, 17]}
    assert config["seed"] == 7
    assert config["method"] == {"alpha": 0.5, "store": str(logged["store"])}
    assert config["dtype"] == "float16"
    assert config["prompts"] == PROMPTS


def test_every_scalar_step_is_in_history_and_summary_has_last(logged):
    disk = logged["disk"]
    for step, loss in LOSSES.items():
        row = disk.row(step)
        assert row["loss"] == pytest.approx(loss)
        assert row["count"] == step
    last = max(LOSSES)
    assert disk.summary["loss"] == pytest.approx(LOSSES[last])
    assert disk.summary["count"] == last
    assert disk.summary["_step"] == IMAGE_STEP


def test_attention_map_is_a_colour_mapped_png_of_its_size(logged):
    entry, path = logged["disk"].media("attention/map", IMAGE_STEP)
    assert entry["_type"] == "image-file" and entry["caption"] == "token 'cats'"
    assert (entry["width"], entry["height"]) == (MAP_SHAPE[1], MAP_SHAPE[0])
    assert path.is_file() and png_size(path) == (MAP_SHAPE[1], MAP_SHAPE[0])
    assert entry["path"] in logged["disk"].files
    pixels = np.round(plt.imread(path)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, colorize(logged["attention"]))


def test_figure_is_rendered_at_its_pixel_size(logged):
    entry, path = logged["disk"].media("figure", IMAGE_STEP)
    size = (int(FIG_SIZE[0] * FIG_DPI), int(FIG_SIZE[1] * FIG_DPI))
    assert path.is_file() and png_size(path) == size
    assert (entry["width"], entry["height"]) == size


def test_tables_hold_rows_and_columns(logged):
    disk = logged["disk"]
    entry, path = disk.media("counts", IMAGE_STEP)
    table = json.loads(path.read_text())
    frame = logged["frame"]
    assert table["columns"] == list(frame.columns)
    assert table["data"] == frame.values.tolist()
    assert (entry["nrows"], entry["ncols"]) == frame.shape

    _, path = disk.media("heads", IMAGE_STEP)
    table = json.loads(path.read_text())
    assert table["columns"] == ["head", "score", "layer"]
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["head"] for r in rows] == [4, 7]
    assert rows[0]["score"] == 0.5 and rows[1]["layer"] == 15


def test_video_file_is_logged_as_is(logged):
    entry, path = logged["disk"].media("video", IMAGE_STEP)
    assert entry["_type"] == "video-file"
    assert path.read_bytes() == VIDEO_BYTES


def test_artifact_is_recorded_for_later_sync(logged):
    store = logged["store"]
    (artifact,) = [a for a in logged["disk"].artifacts if a.type == "attention-store"]
    assert artifact.name == "attention-store"
    assert json.loads(artifact.metadata) == {"layers": [15]}
    (entry,) = artifact.manifest.contents
    assert entry.path == store.name
    assert int(entry.size) == len(STORE_BYTES)
    # referenced where it is (no staged copy), by an absolute path so `wandb sync` works from anywhere
    assert Path(entry.local_path) == store


def test_transaction_log_reader_agrees_with_wandb_inspect(logged):
    """Cross-check the reader above against wandb's own inspector, where this wandb has one."""
    disk = logged["disk"]
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", str(disk.wandb_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WANDB_ERROR_REPORTING": "false"},
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.skip(f"`wandb leet inspect` is not available here: {proc.stderr.strip()[-200:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["type"] for r in rows] == [r.WhichOneof("record_type") for r in disk.records]
    steps = {r["history"]["step"].get("num", 0): r["history"]["item"] for r in rows if r["type"] == "history"}
    for step, loss in LOSSES.items():
        assert steps[step]["loss"] == pytest.approx(loss)


def test_transaction_log_reader_leaves_out_a_cut_off_tail(logged, tmp_path):
    log = next(logged["disk"].wandb_dir.glob("run-*.wandb"))
    raw = log.read_bytes()
    assert len(raw) > 3 * 32768  # the prompts make records span blocks
    kinds = [r.WhichOneof("record_type") for r in logged["disk"].records]
    assert kinds[-1] == "exit"
    cut = tmp_path / log.name
    cut.write_bytes(raw[:40000])  # inside the long config record
    partial = [r.WhichOneof("record_type") for r in read_transaction_log(cut)]
    assert partial == kinds[: len(partial)]
    cut_record = logged["disk"].records[len(partial)]  # the first record not whole in the cut file
    assert [item_key(i) for i in cut_record.config.update] == ["prompts"]
    cut.write_bytes(b"not a log")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        read_transaction_log(cut)


# --------------------------------------------------------------------------- context manager, disabled


def test_exception_in_with_block_marks_run_failed(tmp_path, monkeypatch):
    isolate_wandb(monkeypatch, tmp_path)
    with (
        pytest.raises(RuntimeError, match="boom"),
        Tracker(tmp_path / "run", system_metrics=False) as tracker,
    ):
        tracker.log_scalars({"x": 1.0}, step=0)
        raise RuntimeError("boom")
    disk = RunOnDisk.read(tracker.wandb_dir)
    assert disk.exit_code == 1
    assert disk.row(0)["x"] == 1.0


@pytest.mark.slow  # a process of its own that starts W&B
def test_sigterm_finishes_the_run_as_terminated_and_the_handler_is_put_back(tmp_path, monkeypatch):
    """A scheduler's or `kill`'s SIGTERM would end Python at once with the run open; under a Tracker it
    unwinds: the process ends with 143 and the run records it. After the block the handler is the
    process's own again."""
    isolate_wandb(monkeypatch, tmp_path)
    script = (
        "import signal, sys, time\n"
        "from numina.wandb_mirror import Tracker\n"
        "with Tracker(sys.argv[1], system_metrics=False):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    (run,) = (tmp_path / "run").rglob("offline-run-*")
    assert RunOnDisk.read(run).exit_code == 143
    with Tracker(tmp_path / "again", system_metrics=False):
        assert signal.getsignal(signal.SIGTERM) is tracker_module._terminated
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError("boom"), 1),
        (SystemExit("generate.py: error: the disk is full"), 1),
        (SystemExit(3), 3),
        (SystemExit(0), 0),
        (SystemExit(), 0),
        (KeyboardInterrupt(), 130),
    ],
)
def test_a_run_ended_by_an_error_records_the_status_the_process_ends_with(error, status):
    assert exit_status(error) == status


def test_a_failure_while_finishing_after_an_error_does_not_hide_the_error(
    tmp_path, monkeypatch, caplog, capsys
):
    """On a full disk wandb's own log files fail too: finishing says so in one line, and the log records
    that cannot be written print no "--- Logging error ---" traceback over the error that ended the work."""
    isolate_wandb(monkeypatch, tmp_path)
    tracker = Tracker(tmp_path / "run", system_metrics=False)
    run = tracker.run

    class FullDiskHandler(logging.Handler):  # as wandb's debug.log handler on a full disk
        def emit(self, record: logging.LogRecord) -> None:
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                self.handleError(record)

    wandb_log = logging.getLogger("wandb_on_a_full_disk")
    wandb_log.addHandler(FullDiskHandler())

    def full_disk(exit_code: int = 0) -> None:
        wandb_log.warning("finishing run")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(run, "finish", full_disk)
        with pytest.raises(RuntimeError, match="boom"), tracker:
            raise RuntimeError("boom")
    (record,) = [r for r in caplog.records if "could not be finished after an error" in r.getMessage()]
    assert "No space left" in record.getMessage() and record.exc_info is None  # one line
    assert "Logging error" not in capsys.readouterr().err and logging.raiseExceptions
    assert not tracker.active
    run.finish(exit_code=1)


def test_disabled_tracker_is_a_no_op(tmp_path, monkeypatch):
    import wandb

    def no_init(*args, **kwargs):
        raise AssertionError("a disabled tracker must not start wandb")

    monkeypatch.setattr(wandb, "init", no_init)
    isolate_wandb(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    store = tmp_path / "store.h5"
    store.write_bytes(b"x")
    trackers = [Tracker(run_dir, mode="disabled"), Tracker(run_dir, enabled=False, mode="offline")]
    monkeypatch.setenv("WANDB_MODE", "disabled")
    trackers.append(Tracker(run_dir, config={"a": 1}))
    for tracker in trackers:
        assert tracker.mode == "disabled" and not tracker.enabled and not tracker.active
        with tracker:
            tracker.log_config({"a": 1})
            tracker.log_scalars({"x": 1.0}, step=0)
            tracker.log_image("m", np.zeros((4, 4)))
            tracker.log_table("t", [{"a": 1}])
            tracker.log_artifact(store, "s", "attention-store")
            assert tracker.log_video("v", tmp_path / "missing.mp4") is True
        assert tracker.wandb_dir is None and tracker.url is None and tracker.run_id is None
    assert not run_dir.exists()


# --------------------------------------------------------------------------- mode decision


def test_mode_offline_when_not_logged_in(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert not has_api_key(env)
    assert resolve_mode(environ=env) == "offline"


def test_mode_online_with_api_key(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "x" * 40}
    assert has_api_key(env)
    assert resolve_mode(environ=env) == "online"
    assert resolve_mode(environ={**env, "WANDB_API_KEY": "  "}) == "offline"


def test_mode_online_with_netrc_entry_for_the_wandb_host(tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode(environ={"HOME": str(tmp_path)}) == "online"
    assert resolve_mode(environ={"NETRC": str(netrc)}) == "online"
    # an entry for another host does not count, and a server of one's own is looked up by its host
    other = {"HOME": str(tmp_path), "WANDB_BASE_URL": "https://wandb.example.org"}
    assert resolve_mode(environ=other) == "offline"
    netrc.write_text("machine wandb.example.org\n  login user\n  password secret\n")
    assert resolve_mode(environ=other) == "online"


def test_unreadable_netrc_means_not_logged_in(tmp_path):
    (tmp_path / ".netrc").write_text("machine\n")
    assert resolve_mode(environ={"HOME": str(tmp_path)}) == "offline"


def test_mode_precedence(tmp_path):
    key = {"HOME": str(tmp_path), "WANDB_API_KEY": "x" * 40}
    assert resolve_mode(environ={**key, "WANDB_MODE": "offline"}) == "offline"
    assert resolve_mode(environ={**key, "WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_mode(environ={**key, "WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode(environ={**key, "WANDB_DISABLED": "true"}) == "disabled"
    assert resolve_mode("offline", environ={**key, "WANDB_MODE": "online"}) == "offline"
    assert resolve_mode("online", environ={"HOME": str(tmp_path)}) == "online"
    assert resolve_mode("online", enabled=False, environ=key) == "disabled"
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_mode(environ={"HOME": str(tmp_path), "WANDB_MODE": "sometimes"})
    with pytest.raises(ValueError, match="'onlne'"):
        resolve_mode("onlne", environ={})


# --------------------------------------------------------------------------- conversions


def test_colorize_uses_the_maps_range_and_the_colour_map():
    values = np.array([[0.0, 0.5], [1.0, np.nan]])
    rgb = colorize(values, cmap="magma")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    cmap = colormaps["magma"]
    np.testing.assert_array_equal(rgb[0, 0], np.round(np.array(cmap(0.0)[:3]) * 255))
    np.testing.assert_array_equal(rgb[1, 0], np.round(np.array(cmap(1.0)[:3]) * 255))
    np.testing.assert_array_equal(rgb[1, 1], np.round(np.array(cmap.get_bad()[:3]) * 255))
    # a fixed scale compares maps; a constant map does not divide by zero
    np.testing.assert_array_equal(colorize(values * 0.5, cmap="magma", vmin=0, vmax=1)[1, 0], rgb[0, 1])
    assert colorize(np.full((3, 3), 2.0)).shape == (3, 3, 3)
    with pytest.raises(ValueError, match="2-D"):
        colorize(np.zeros((2, 2, 2)))


def test_image_inputs_are_checked(tmp_path):
    source = Tracker._image_source
    assert source(np.zeros((4, 5, 3), np.uint8), "viridis", None, None).shape == (4, 5, 3)
    assert source(np.ones((4, 5, 3)), "viridis", None, None).max() == 255
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        source(np.full((4, 5, 3), 2.0), "viridis", None, None)
    with pytest.raises(ValueError, match="shape"):
        source(np.zeros((2, 4, 5, 3)), "viridis", None, None)
    with pytest.raises(FileNotFoundError):
        source(tmp_path / "missing.png", "viridis", None, None)


def test_to_plain_makes_configs_json_friendly(tmp_path):
    @dataclasses.dataclass
    class Preset:
        layers: tuple[int, ...] = (15, 17)

    plain = to_plain(
        {
            "path": tmp_path,
            "preset": Preset(),
            "n": np.int64(3),
            "x": np.float32(0.5),
            "arr": np.arange(3),
            "obj": object.__new__(type("DType", (), {"__str__": lambda self: "torch.bfloat16"})),
            1: {"nested": {3}},
        }
    )
    assert plain == {
        "path": str(tmp_path),
        "preset": {"layers": [15, 17]},
        "n": 3,
        "x": 0.5,
        "arr": [0, 1, 2],
        "obj": "torch.bfloat16",
        "1": {"nested": [3]},
    }
    json.dumps(plain)


def test_scalars_must_be_numbers():
    assert python_number("a", np.float32(2.5)) == 2.5
    with pytest.raises(TypeError, match="'a'"):
        python_number("a", "high")
    with pytest.raises(TypeError, match="more than one"):
        python_number("a", np.zeros(3))


def test_video_frames_without_moviepy_are_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    """Only the decision is tested (no run): frames need moviepy, which this project does not require."""
    monkeypatch.setattr(tracker_module.importlib.util, "find_spec", lambda name: None)
    tracker = Tracker.__new__(Tracker)
    tracker._run, tracker._last_step = object(), None
    with caplog.at_level("WARNING", logger="numina.wandb_mirror"):
        assert tracker.log_video("v", np.zeros((4, 8, 8, 3), np.uint8)) is False
    assert "moviepy" in caplog.text
    with pytest.raises(ValueError, match="frame, height, width, channel"):
        tracker.log_video("v", np.zeros((8, 8, 3), np.uint8))
