"""benchmarks/capture_overhead.py: its output paths checked before the model is built, and the replay
of a CUDA allocator trace that says what holds memory at the peak (the GPU run itself is a benchmark,
not a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "capture_overhead.py"
GIB = 2**30


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("benchmarks_capture_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("option", "value"),
    [("--out", "result.json"), ("--memory-trace", "held.json"), ("--profile", "tables")],
)
def test_an_output_path_under_a_file_is_refused_before_the_model_is_built(
    script, option: str, value: str, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr("sys.argv", ["capture_overhead.py", option, str(blocker / value)])
    with pytest.raises(SystemExit):
        script.parse_args()
    assert f"{option} {blocker}" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["capture_overhead.py", option, str(tmp_path / "results" / value)])
    parsed = script.parse_args()  # a folder yet to be made is fine
    assert getattr(parsed, option.removeprefix("--").replace("-", "_")) == tmp_path / "results" / value


def _event(action: str, addr: int, size: int, stream: int = 0, file: str = "", line: int = 1) -> dict:
    frames = [{"filename": "/usr/lib/python3.12/threading.py", "line": 9, "name": "run"}]
    if file:
        frames.insert(0, {"filename": file, "line": line, "name": "f"})
    return {"action": action, "addr": addr, "size": size, "stream": stream, "frames": frames}


def test_held_at_peak_counts_a_block_until_its_free_completes(script) -> None:
    """A block freed on one stream but still used by another (free requested, not completed) keeps
    its memory: the peak is A + B + C = 5 GiB at C's allocation, not the 4 GiB of B + C + D after A's
    free completes (4 GiB would also be the peak if a requested free counted as freed)."""
    reductions = "/repo/numina/capture/reductions.py"
    trace = [
        _event("alloc", 1, 2 * GIB, stream=0, file=reductions, line=10),  # A
        _event("alloc", 2, 1 * GIB, stream=7, file=reductions, line=20),  # B
        _event("free_requested", 1, 2 * GIB),
        _event("alloc", 3, 2 * GIB, stream=7, file="/site/diffusers/models/attention.py", line=5),  # C
        _event("free_completed", 1, 2 * GIB),
        _event("alloc", 4, 1 * GIB, stream=7),  # D, from code of neither project
        _event("free_completed", 4, 1 * GIB),
        _event("free_completed", 99, 5 * GIB),  # allocated before the trace began: ignored
    ]
    held = script.held_at_peak(trace)
    assert held["peak_gib_over_trace_start"] == 5
    assert held["by_stream_gib"] == {"0": 2, "7": 3}
    assert held["by_code_gib"] == {
        "stream 0: reductions.py:10 f": 2,
        "stream 7: attention.py:5 f": 2,
        "stream 7: reductions.py:20 f": 1,
    }
