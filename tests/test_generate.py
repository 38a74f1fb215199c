"""experiments/generate.py --capture-only on the tiny pipeline: the run folder holds everything."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from experiment_scripts import load_experiment
from wandb_log import read_transaction_log

from numina.capture import CaptureSpec
from numina.prompts import PromptTokens
from numina.store import IncompleteStoreError, open_store

generate = load_experiment("generate")


def _args(tiny_folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--prompt", "three cats on a sofa", "--capture-only", "--model", str(tiny_folder), "--out", str(out),
        "--frames", "9", "--height", "64", "--width", "64", "--steps", "5", "--wandb", "offline", *extra,
    ]  # fmt: skip


def test_capture_only_run_writes_the_whole_run_folder(tiny_folder: Path, tmp_path: Path) -> None:
    run_dir = generate.main(_args(tiny_folder, tmp_path))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["targets"] == {"cats": 3} and config["settings"]["seed"] == 0
    assert config["geometry"]["frames"] == 3 and config["capture_spec"]["steps"] == [2]  # 20/50 of 5 steps

    with open_store(run_dir / "attention.h5") as store:
        tokens = PromptTokens.from_records(store.attrs["tokens"])
        spec = CaptureSpec.from_dict(store.attrs["capture_spec"])
        numeral, noun = tokens.numeral_for("cats").positions, tokens.noun_spans("cats")[0]
        assert sorted(spec.cross_attention.tokens) == sorted({*numeral, *noun})
        assert store.attrs["seed"] == 0 and store.attrs["code_version"].startswith("0.1.0")
        assert (
            len(store.attrs["timesteps"]) == 5 and store.attrs["config"]["prompt"] == "three cats on a sofa"
        )
        probs = store["cross_attention/probs"].sel(step=2, branch="cond", token=noun[0]).values
        assert probs.shape == (4, 4, 3, 4, 4) and np.isfinite(probs).all()  # layer, head, frame, y, x
        scores = store["self_attention/scores"].sel(step=2, branch="cond").values
        assert np.isfinite(scores).all()

    frames = iio.imread(run_dir / "video.mp4")
    assert frames.shape[0] == 9 and frames.shape[-1] == 3
    assert (run_dir / "figures" / "token_maps.png").stat().st_size > 0
    assert (run_dir / "figures" / "token_maps.pdf").stat().st_size > 0

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    records = read_transaction_log(offline)
    artifacts = [record.artifact for record in records if record.WhichOneof("record_type") == "artifact"]
    assert [artifact.type for artifact in artifacts] == ["attention-store"]
    config_record = next(record for record in records if record.WhichOneof("record_type") == "run").run.config
    assert any(item.key == "prompt" for item in config_record.update)
    assert list(offline.glob("files/media/images/figures/token_maps*.png"))


def test_a_numina_run_writes_layouts_videos_and_decisions(tiny_folder: Path, tmp_path: Path) -> None:
    args = _args(tiny_folder, tmp_path, "--baseline", "--early-accept")
    run_dir = generate.main([arg for arg in args if arg != "--capture-only"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["mode"] == "numina" and config["preset"] == "official"
    assert (
        config["numina_options"]["early_accept"] is True and config["numina_options"]["cross_heads"] == "mean"
    )
    decisions = json.loads((run_dir / "numina.json").read_text())
    assert decisions["path"] in ("guided", "regenerated", "accepted")
    assert len(decisions["counts"]["walkthrough"]["cats"]) == 3  # one count per latent frame
    with open_store(run_dir / "attention.h5") as store:
        counts = store["layout/counts"].sel(stage="corrected", noun="cats").values
        assert counts.tolist() == decisions["counts"]["corrected"]["cats"]
    video, baseline = iio.imread(run_dir / "video.mp4"), iio.imread(run_dir / "baseline.mp4")
    assert video.shape == baseline.shape == (9, 64, 64, 3)
    assert iio.imread(run_dir / "side_by_side.mp4").shape == (9, 64, 128, 3)
    for name in ("layout_cats_walkthrough", "layout_cats_corrected", "token_maps"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 0


def test_bad_requests_fail_before_model_work(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="'dogs' is not in the prompt"):
        generate.main(_args(tiny_folder, tmp_path, "--counts", '{"dogs": 2}'))
    with pytest.raises(SystemExit, match="Nearest valid values: 9 or 13"):
        generate.main(_args(tiny_folder, tmp_path, "--frames", "10"))
    with pytest.raises(SystemExit):
        generate.main(_args(tiny_folder, tmp_path, "--counts", '{"cats": -1}'))
    with pytest.raises(SystemExit):
        generate.main(_args(tiny_folder, tmp_path, "--counts", '{"cats": 120}'))
    with pytest.raises(SystemExit, match="step index"):
        generate.main(
            [a for a in _args(tiny_folder, tmp_path, "--reference-step", "7") if a != "--capture-only"]
        )
    with pytest.raises(SystemExit, match="walkthrough_steps=3 has no step .* multiple of 5"):
        generate.main(
            [a for a in _args(tiny_folder, tmp_path, "--walkthrough-steps", "3") if a != "--capture-only"]
        )  # step 2 of 5
    with pytest.raises(SystemExit):  # capture-only runs --steps itself
        generate.main(_args(tiny_folder, tmp_path, "--walkthrough-steps", "5"))
    assert "--capture-only generates with --steps" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="layer index"):
        generate.main(
            [a for a in _args(tiny_folder, tmp_path, "--reference-layer", "9") if a != "--capture-only"]
        )
    assert not any(tmp_path.iterdir())  # no run folder was started


@pytest.mark.parametrize(
    "prompt", ["a hundred and fifty birds on a lake", "a thousand stars in the sky", "a few cats on a sofa"]
)
def test_targets_numina_cannot_reach_are_refused_before_model_work(
    tiny_folder: Path, tmp_path: Path, prompt: str
) -> None:
    args = [arg for arg in _args(tiny_folder, tmp_path) if arg != "--capture-only"]
    args[args.index("three cats on a sofa")] = prompt
    with pytest.raises(SystemExit, match="--counts") as error:
        generate.main(args)
    assert "Traceback" not in str(error.value)
    assert not list(tmp_path.iterdir())  # no run folder: refused before any work


def test_the_cache_method_reaches_numina_options(tiny_folder: Path, tmp_path: Path, capsys) -> None:
    args = generate.parse_args(
        _args(tiny_folder, tmp_path, "--cache-guided", "--cache-method", "first_block")
    )
    assert args.options.cache_guided and args.options.cache_method == "first_block"
    assert generate.parse_args(_args(tiny_folder, tmp_path)).options.cache_method == "easycache"
    with pytest.raises(SystemExit):
        generate.parse_args(_args(tiny_folder, tmp_path, "--cache-method", "teacache"))
    assert "invalid choice: 'teacache'" in capsys.readouterr().err


def test_interrupted_run_leaves_no_complete_store(tiny_folder: Path, tmp_path: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "save_video", fail)  # interrupt after capture, before the video
    with pytest.raises(KeyboardInterrupt):
        generate.main(_args(tiny_folder, tmp_path))
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "attention.h5").exists()  # the capture itself had finished
    monkeypatch.undo()

    monkeypatch.setattr(generate, "capture_generation", _interrupting_capture(generate.capture_generation))
    with pytest.raises(KeyboardInterrupt):
        generate.main(_args(tiny_folder, tmp_path / "second"))
    (run_dir,) = (tmp_path / "second").iterdir()
    assert not (run_dir / "attention.h5").exists()
    with pytest.raises(IncompleteStoreError):
        open_store(run_dir / "attention.h5.partial")


def _interrupting_capture(capture_generation):
    """Runs the real capture but interrupts the pipeline at its third step."""

    def wrapped(pipeline, *args, **kwargs):
        original = pipeline.scheduler.step
        calls = []

        def step(*step_args, **step_kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return original(*step_args, **step_kwargs)

        pipeline.scheduler.step = step
        try:
            return capture_generation(pipeline, *args, **kwargs)
        finally:
            del pipeline.scheduler.step

    return wrapped
