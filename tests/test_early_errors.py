"""Errors that used to come after the model had loaded are refused first, with a message that says
what to do: an --out that cannot be written, W&B online without a key, a model that is neither a
folder nor a reachable hub id; a full disk ends with one message and keeps what was complete."""

from __future__ import annotations

import base64
import errno
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import torch
from experiment_scripts import load_experiment

from numina.models import resolve_model
from numina.run_folder import check_writable_folder, disk_full_ends_cleanly
from numina.store import StoreWriteError
from numina.wandb_mirror import check_mode

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


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda"])
def test_a_device_torch_cannot_use_is_an_argument_error(
    script: str, device: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before, a misspelt --device ended the run as torch's own error, after the model had loaded."""
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    module = load_experiment(script)
    with pytest.raises(SystemExit) as exited:
        module.parse_args(
            ["--out", str(tmp_path / "run"), "--wandb", "disabled", "--device", device]
            + SCRIPT_ARGS.get(script, [])
        )
    assert exited.value.code == 2
    assert f"--device {device}" in capsys.readouterr().err.replace("'", "")


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


KEY = "k" * 40


class FakeWandb(http.server.BaseHTTPRequestHandler):
    """A W&B server's GraphQL endpoint that knows one API key (KEY) and nothing else."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers["Authorization"] != "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode():
            self.send_error(401)
            return
        body = json.dumps({"data": {"viewer": {"id": "user"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def wandb_server() -> Iterator[str]:
    """The base URL of a FakeWandb server on this machine."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeWandb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, no netrc, no WANDB_MODE: the mode is only what a test sets."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_wandb_online_without_a_key_is_refused_before_any_work(
    no_login: None,
    wandb_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(ValueError, match="needs an API key"):
        check_mode("online")
    assert check_mode("offline") == "offline"
    with pytest.raises(SystemExit):
        load_experiment("countbench").parse_args(["--wandb", "online", "--out", str(tmp_path / "run")])
    assert "--wandb: W&B online mode needs an API key" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    assert check_mode("online") == "online"
    assert check_mode() == "online"  # a stored key and a server that knows it


def test_wandb_online_with_a_server_that_does_not_answer_is_refused_at_once(
    no_login: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A key and no network: refused in a moment with what to do (wandb.init retried for 90 s after the
    model had run, then raised CommError)."""
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        load_experiment("countbench").parse_args(["--wandb", "online", "--out", str(tmp_path / "run")])
    assert exited.value.code == 2 and time.perf_counter() - started < 3
    error = capsys.readouterr().err
    assert (
        "--wandb: W&B online mode cannot start: the W&B server http://127.0.0.1:9 could not be reached"
        in error
    )
    assert "Connection refused" in error and "--wandb offline" in error and "wandb sync" in error
    monkeypatch.setenv("WANDB_MODE", "online")  # asked for through wandb's own variable: also refused
    with pytest.raises(ValueError, match="could not be reached"):
        check_mode()
    assert not (tmp_path / "run").exists()


def test_a_server_that_takes_the_connection_and_never_answers_is_given_up_on(
    no_login: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections wait in the backlog: no answer ever comes
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.perf_counter()
        with pytest.raises(ValueError, match=r"could not be reached \(no answer within 0.5 s\)"):
            check_mode("online", timeout=0.5)
        assert time.perf_counter() - started < 2


def test_a_rejected_key_is_refused_and_an_inferred_online_mode_stays_offline_with_a_warning(
    no_login: None, wandb_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    with pytest.raises(ValueError, match=r"rejected the API key \(HTTP 401\).*wandb login --relogin"):
        check_mode("online")
    with caplog.at_level(logging.WARNING, logger="numina.wandb_mirror"):
        assert check_mode() == "offline"  # nobody asked for online: the key alone chose it
    assert "rejected the API key" in caplog.text and "recorded offline" in caplog.text
    assert "wandb sync" in caplog.text


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
