"""benchmarks/capture_overhead.py: its output paths checked before the model is built, the replay
of a CUDA allocator trace that says what holds memory at the peak, and the device timeline read from
a profiler trace (the GPU run itself is a benchmark, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from experiment_scripts import load_benchmark

GIB = 2**30


@pytest.fixture(scope="module")
def script():
    return load_benchmark("capture_overhead")


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


def _work(category: str, name: str, stream: int, start: float, end: float) -> dict:
    return {
        "ph": "X",
        "cat": category,
        "name": name,
        "ts": start,
        "dur": end - start,
        "args": {"stream": stream},
    }


def test_the_gpu_timeline_finds_the_models_stream_its_gaps_and_the_overlap(script) -> None:
    """Hand-made trace (microseconds): the model's stream 7 runs a [0, 100], b [100, 300], c [500, 600]
    (busy 400 of the 600-us window, one 200-us gap between b and c); a side stream 20 runs s [250, 550];
    a copy on stream 30 [50, 60]. Two streams are busy in [50, 60], [250, 300] and [500, 550]: 110 us.
    Host events are ignored."""
    events = [
        _work("kernel", "a", 7, 0, 100),
        _work("kernel", "b", 7, 100, 300),
        _work("kernel", "c", 7, 500, 600),
        _work("kernel", "s", 20, 250, 550),
        _work("gpu_memcpy", "copy", 30, 50, 60),
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": -50, "dur": 1000, "args": {}},
    ]
    timeline = script.gpu_timeline(events, gap_ms=0.05)
    assert timeline["main_stream"] == "7"
    assert timeline["window_ms"] == pytest.approx(0.6)
    assert timeline["streams"]["7"] == {"events": 3, "busy_ms": pytest.approx(0.4)}
    assert timeline["streams"]["20"]["busy_ms"] == pytest.approx(0.3)
    assert timeline["main_idle_ms"] == pytest.approx(0.2)
    assert timeline["main_gaps_over_threshold"]["count"] == 1
    gap = timeline["main_longest_gaps"][0]
    assert (gap["at_ms"], gap["ms"], gap["after"], gap["before"]) == (
        pytest.approx(0.3),
        pytest.approx(0.2),
        "b",
        "c",
    )
    assert timeline["two_or_more_streams_busy_ms"] == pytest.approx(0.11)
    assert script.gpu_timeline(events, gap_ms=0.5)["main_gaps_over_threshold"]["count"] == 0
    with pytest.raises(ValueError, match="no device events"):
        script.gpu_timeline(events[-1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_timeline_reads_a_real_profiler_trace(script, tmp_path: Path) -> None:
    matrix = torch.randn(512, 512, device="cuda")
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(3):
            matrix = matrix @ matrix.T / 512
        torch.cuda.synchronize()
    profile.export_chrome_trace(str(tmp_path / "trace.json"))
    timeline = script.gpu_timeline(json.loads((tmp_path / "trace.json").read_text())["traceEvents"])
    main = timeline["streams"][timeline["main_stream"]]
    assert main["events"] >= 3 and 0 < main["busy_ms"] <= timeline["window_ms"]


def test_the_ratio_interval_holds_a_planted_ratio_and_excludes_no_change(script) -> None:
    """Six repeats of a step 10% slower than plain (its own noise on top): the interval holds 1.10 and
    not 1.0; plain against another draw of itself holds 1.0."""
    noise = torch.Generator().manual_seed(0)
    plain = (600 + 4 * torch.randn(6, generator=noise)).tolist()
    slower = (660 + 4 * torch.randn(6, generator=noise)).tolist()
    again = (600 + 4 * torch.randn(6, generator=noise)).tolist()
    low, high = script.ratio_interval(slower, plain)
    assert 1.0 < low < 1.10 < high < 1.2
    low, high = script.ratio_interval(again, plain)
    assert low < 1.0 < high
    assert script.ratio_interval(slower, plain) == script.ratio_interval(slower, plain)  # seeded
