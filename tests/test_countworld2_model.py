"""CountWorld 2 as a built-in model: its shape (32 x 32 tokens per frame), its folder's size, loading
by name through the same path as every pipeline, its prompt set, and what happens without weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from experiment_scripts import load_experiment
from PIL import Image

from numina.cli import add_prompt_arguments, load_prompt_set
from numina.countworld import world2
from numina.models import countworld2, geometry_of, load_pipeline, model_defaults, resolve_model


@pytest.fixture(scope="module")
def untrained_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("countworld2") / "pipeline"
    return countworld2.save_countworld2(countworld2.untrained_pipeline(seed=0), folder)


def test_the_vae_starts_from_the_first_countworlds():
    pipeline = countworld2.untrained_pipeline(seed=0)
    first = load_pipeline("countworld", torch.float32)
    for name, weight in first.vae.state_dict().items():
        assert torch.equal(pipeline.vae.state_dict()[name], weight), name


@pytest.mark.slow
def test_saved_folder_fits_the_repository_and_loads_by_name(untrained_folder: Path, monkeypatch):
    sizes = [path.stat().st_size for path in untrained_folder.rglob("*.safetensors")]
    assert sum(sizes) <= 32 * 2**20 and max(sizes) < 16 * 2**20
    monkeypatch.setattr(countworld2, "FOLDER", untrained_folder)
    assert resolve_model("countworld2") == str(untrained_folder)
    assert model_defaults("countworld2") == countworld2.RUN_DEFAULTS == model_defaults(str(untrained_folder))
    geometry = geometry_of(str(untrained_folder), 17, 128, 128)
    assert (geometry.frames, geometry.height, geometry.width) == (5, 32, 32)  # one token per 4 x 4 pixels
    pipeline = load_pipeline("countworld2", torch.float32)
    assert sum(p.numel() for p in pipeline.transformer.parameters()) == pytest.approx(11.2e6, rel=0.02)
    image = pipeline("two red circles resting on a grey floor", num_frames=1, height=64, width=64,
                     num_inference_steps=2, output_type="np").frames[0]  # fmt: skip
    assert image.shape == (1, 64, 64, 3)


def test_named_countworld2_without_weights_says_how_to_train_them(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(countworld2, "FOLDER", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="train_countworld2.py"):
        resolve_model("countworld2")


def test_countworld2_prompt_set_keeps_its_object_limit():
    parser = argparse.ArgumentParser()
    add_prompt_arguments(parser)
    args = parser.parse_args(["--prompt-set", "countworld2", "--countworld-prompts", "48"])
    args.model = None
    prompts = load_prompt_set(args)
    assert len(prompts) == 48 and max(sum(p.targets.values()) for p in prompts) <= world2.MAX_TOTAL
    assert [next(iter(p.targets.values())) for p in prompts[:8]] == list(range(1, 9))
    assert {len(p.targets) for p in prompts} == {1, 2, 3}


def test_committed_checkpoint_fits_the_repository_and_records_its_training():
    files = list(countworld2.FOLDER.rglob("*.safetensors"))
    assert {path.parent.name for path in files} == {"transformer", "vae", "text_encoder"}
    sizes = [path.stat().st_size for path in files]
    assert sum(sizes) <= 32 * 2**20 and max(sizes) < 16 * 2**20
    state = json.loads((countworld2.FOLDER / "training.json").read_text())
    assert state["stage"] == "transformer" and state["step"] == state["evals"][-1]["step"] > 0
    pipeline = load_pipeline("countworld2", torch.float32)
    assert pipeline.transformer.config.patch_size == [1, 1, 1]
    assert pipeline.vae.config.latents_mean == pytest.approx(state["latents_mean"])


@pytest.mark.parametrize("guidance", ["nan", "0.5", "five", "1,inf"])
def test_counting_script_refuses_bad_guidance_before_loading(guidance: str, tmp_path: Path, capsys):
    parse_args = load_experiment("countworld2_counting").parse_args
    with pytest.raises(SystemExit):
        parse_args(["--model", str(tmp_path / "not-loaded"), "--guidance", guidance, "--out", str(tmp_path)])
    assert "--guidance" in capsys.readouterr().err


@pytest.mark.slow
def test_counting_script_tables_every_scale_and_count(untrained_folder: Path, tmp_path: Path):
    main = load_experiment("countworld2_counting").main
    out = tmp_path / "counting"
    table = main(["--model", str(untrained_folder), "--guidance", "1,3", "--prompts", "8", "--steps", "1",
                  "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert table["guidance"].tolist() == [1.0, 3.0]
    assert {f"accuracy_{count}" for count in range(1, 9)} <= set(table.columns)
    counts = pd.read_csv(out / "counts.csv")
    assert len(counts) == 16 and sorted(counts["target"].unique()) == list(range(1, 9))
    for guidance in ("1", "3"):
        with Image.open(out / f"contact_g{guidance}.png") as sheet:
            assert sheet.size == (8 * 128, 128)  # eight scenes of one row, one per count
