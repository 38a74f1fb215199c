"""Errors that used to come after the model had loaded are refused first, with a message that says
what to do: an --out that cannot be written, W&B online without a key, a model that is neither a
folder nor a reachable hub id; a full disk ends with one message and keeps what was complete."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import huggingface_hub
import pytest
from experiment_scripts import load_experiment

from numina.models import resolve_model
from numina.run_folder import check_writable_folder, disk_full_ends_cleanly
from numina.store import StoreWriteError
from numina.tracking import check_mode

SCRIPTS = ("generate", "countbench", "ablate_heads", "diagnose_numerals", "instance_heads")
SCRIPT_ARGS = {"generate": ["--prompt", "three cats"], "ablate_heads": ["--heads"]}


def _bad_outs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    file = tmp_path / "a-file"
    file.write_text("")
    return {"a file": (file, "is a file"), "under a file": (file / "run", f"lies under the file {file}")}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_an_out_that_cannot_be_a_folder_is_an_argument_error(
    script: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, named = _bad_outs(tmp_path)[case]
    module = load_experiment(script)
    with pytest.raises(SystemExit) as exited:
        module.parse_args(["--out", str(out), "--wandb", "disabled", *SCRIPT_ARGS.get(script, [])])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_a_folder_that_refuses_files_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("numina.run_folder.tempfile.TemporaryFile", read_only)
    with pytest.raises(
        ValueError, match=rf"--out {tmp_path}/new/run: cannot write in {tmp_path} \(Read-only"
    ):
        check_writable_folder(tmp_path / "new" / "run")


def test_a_writable_out_passes_and_is_not_created(tmp_path: Path) -> None:
    check_writable_folder(tmp_path / "new" / "run")
    check_writable_folder(tmp_path)
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []


def test_wandb_online_without_a_key_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ValueError, match="needs an API key"):
        check_mode("online")
    assert check_mode("offline") == "offline"
    with pytest.raises(SystemExit):
        load_experiment("countbench").parse_args(["--wandb", "online", "--out", str(tmp_path / "run")])
    assert "--wandb: W&B online mode needs an API key" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert check_mode("online") == "online"


def test_a_model_that_is_no_folder_and_no_reachable_id_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="There is no folder .*nonexistent/folder.*HF_HUB_OFFLINE"):
        resolve_model("nonexistent/folder")

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(FileNotFoundError, match="the hub could not be reached .*Name or service not known"):
        resolve_model("nonexistent/folder")
    assert time.perf_counter() - started < 2


def test_a_full_disk_ends_with_one_message_and_a_non_zero_status() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    with (
        pytest.raises(SystemExit, match="x.py: error: the disk is full") as exited,
        disk_full_ends_cleanly("x.py"),
    ):
        raise full
    assert exited.value.code != 0
    with pytest.raises(SystemExit, match="No space left on device"), disk_full_ends_cleanly("x.py"):
        raise StoreWriteError("the background writer failed") from full
    with pytest.raises(OSError, match="Permission denied"), disk_full_ends_cleanly("x.py"):
        raise OSError(errno.EACCES, "Permission denied")
