"""The CountWorld model's plumbing: its tokenizer, the saved folder and the defaults it declares, its
prompt set and the counter's colours from the prompt, and the sample sheet script."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from experiment_scripts import load_experiment

from numina.cli import add_prompt_arguments, load_prompt_set
from numina.countworld.world import (
    BACKGROUNDS,
    benchmark_scenes,
    palette_from_prompt,
    render_scenes,
    sample_scene,
    words_outside_vocabulary,
)
from numina.evaluation.countbench import countworld_prompts
from numina.evaluation.counters import ExactColourCounter
from numina.evaluation.detectors import prompt_counter
from numina.models import countworld as countworld_model
from numina.models import load_pipeline, model_defaults, resolve_model
from numina.sampling import GenerationSettings, plain_generation


@pytest.fixture(scope="module")
def untrained_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("countworld") / "pipeline"
    return countworld_model.save_countworld(countworld_model.untrained_pipeline(seed=0), folder)


def test_every_caption_word_is_one_token():
    tokenizer = countworld_model.countworld_tokenizer()
    scene = sample_scene(np.random.default_rng(3), counts=[3, 2])
    ids = tokenizer(scene.caption).input_ids
    assert len(ids) == len(scene.caption.split()) + 1  # one piece per word, then </s>
    assert tokenizer.unk_token_id not in ids


def test_saved_folder_is_small_float16_and_declares_its_defaults(untrained_folder: Path):
    sizes = [path.stat().st_size for path in untrained_folder.rglob("*.safetensors")]
    assert sum(sizes) < 32 * 2**20 and max(sizes) < 16 * 2**20
    assert model_defaults(str(untrained_folder)) == countworld_model.RUN_DEFAULTS
    pipeline = load_pipeline(str(untrained_folder), torch.float32, "cpu")
    assert pipeline.vae_scale_factor_spatial == 4 and pipeline.vae_scale_factor_temporal == 4
    assert (
        pipeline.transformer.config.num_attention_heads == countworld_model.TRANSFORMER["num_attention_heads"]
    )
    # diffusers keeps its float32 modules in float32 in the file as well.
    assert pipeline.transformer.scale_shift_table.dtype == torch.float32


def test_named_countworld_without_weights_says_what_to_do(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(countworld_model, "FOLDER", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="train_countworld.py"):
        resolve_model("countworld")


def test_countworld_prompt_set_through_the_command_line():
    parser = argparse.ArgumentParser()
    add_prompt_arguments(parser)
    args = parser.parse_args(["--prompt-set", "countworld", "--countworld-prompts", "16", "--limit", "9"])
    args.model = None
    prompts = load_prompt_set(args)
    assert len(prompts) == 9 and prompts == countworld_prompts(16)[:9]
    first_counts = [next(iter(p.targets.values())) for p in countworld_prompts(16)]
    assert first_counts == [1, 2, 3, 4, 5, 6, 7, 8] * 2


def test_exact_counter_takes_its_colours_from_the_prompt():
    scenes = [sample_scene(np.random.default_rng(seed)) for seed in range(4)]
    clips = render_scenes(scenes, seed=0, frames=3, size=64)
    counter_for = prompt_counter("exact")
    for scene, video in zip(scenes, clips.videos.numpy(), strict=True):
        counter = counter_for(scene.caption, scene.targets)
        for noun, count in scene.targets.items():
            assert counter.count(video, noun).tolist() == [count] * 3


@pytest.mark.slow
def test_sample_sheet_counts_each_row(untrained_folder: Path, tmp_path: Path):
    samples = load_experiment("countworld_samples")
    out = tmp_path / "sheet.png"
    samples.main(["--model", str(untrained_folder), "--out", str(out), "--steps", "1", "--frames", "5",
                  "--height", "64", "--width", "64"])  # fmt: skip
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [row["target"] for row in rows] == list(range(1, 9))
    assert all(len(counts) == 5 for row in rows for counts in row["counts"].values())
    assert out.stat().st_size > 0


def test_committed_weights_fit_the_repository_limits():
    files = list(countworld_model.FOLDER.rglob("*.safetensors"))
    assert {path.parent.name for path in files} == {"transformer", "vae", "text_encoder"}
    sizes = [path.stat().st_size for path in files]
    assert sum(sizes) <= 32 * 2**20 and max(sizes) < 16 * 2**20


@pytest.mark.slow
def test_the_default_model_is_the_trained_countworld_and_draws_its_world():
    """With no model named, scripts run the committed CountWorld weights, and those weights paint the
    caption's background and objects of its colour (an untrained pipeline paints neither)."""
    assert model_defaults(None) == countworld_model.RUN_DEFAULTS
    pipeline = load_pipeline(None, torch.float32, "cpu")
    assert pipeline.transformer.config.num_layers == countworld_model.TRANSFORMER["num_layers"]
    settings = GenerationSettings(num_frames=17, height=128, width=128, steps=20, guidance=5.0, seed=0)
    prompt = "two yellow squares resting on a black floor"
    frames = plain_generation(pipeline, prompt, settings)  # (17, 128, 128, 3) in [0, 1]
    border = np.concatenate([frames[:, :4].reshape(-1, 3), frames[:, -4:].reshape(-1, 3)])
    assert np.median(border, axis=0) == pytest.approx(BACKGROUNDS["black"], abs=0.1)
    counter = ExactColourCounter(palette_from_prompt(prompt, {"squares": 2}))
    assert counter.count(frames, "squares").min() >= 1


def test_words_outside_the_vocabulary_are_named():
    assert words_outside_vocabulary("Three red cats on a grey sofa.") == ["cats", "sofa"]
    assert all(words_outside_vocabulary(scene.caption) == [] for scene in benchmark_scenes())
