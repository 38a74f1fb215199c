"""CountWorld 2's training: text embeddings as the pipeline makes them, a step that trains the text
encoder too, the counting summary on a hand case, and the training script end to end on the CPU
(pieces, the portable copy, resuming from it, refusing changed settings)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from experiment_scripts import load_experiment

from numina.countworld.joint_training import (
    TrainingBatch,
    counting_rows,
    counting_summary,
    encode_text,
    joint_flow_step,
    single_kind_scenes,
    tokenize,
)
from numina.countworld.trainer2 import run as trainer_run
from numina.countworld.trainer2 import stages as trainer_stages
from numina.models import load_pipeline
from numina.models.countworld2 import RUN_DEFAULTS, TRANSFORMER, untrained_pipeline

pytestmark = pytest.mark.slow  # end to end: run by .ci/run, not by the default loop

train = load_experiment("train_countworld2")


@pytest.fixture(scope="module")
def pipeline():
    return untrained_pipeline(seed=0, vae_from=None)


def test_text_embeddings_are_the_pipelines(pipeline):
    captions = [
        "three red circles resting on a grey floor",
        "",
        "one blue star drifting left on a white floor",
    ]
    ids, mask = tokenize(pipeline.tokenizer, captions)
    ours = encode_text(pipeline.text_encoder.eval(), ids, mask)
    theirs, _ = pipeline.encode_prompt(captions, do_classifier_free_guidance=False, max_sequence_length=512)
    assert ours.shape == theirs.shape == (3, 512, pipeline.text_encoder.config.d_model)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert ours[0, int(mask[0].sum()) :].abs().max() == 0  # zeros after the caption, as in Wan


def test_one_step_moves_the_text_encoder_and_the_transformer_and_their_averages(pipeline):
    models = [pipeline.text_encoder.train(), pipeline.transformer.train()]
    averages = [copy.deepcopy(m).requires_grad_(False) for m in models]
    before = [[p.detach().clone() for p in m.parameters()] for m in (*models, *averages)]
    parameters = [p for m in models for p in m.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 16, 1, 8, 8, generator=generator)
    batch = TrainingBatch(
        clean, torch.zeros(2, 1, 8, 8, dtype=torch.bool), ["two red circles", "one blue star"]
    )
    settings = {"caption_dropout": 0.0, "shift": 3.0, "object_weight": 1.0, "decay": 0.5}
    loss, grad_norm = joint_flow_step(
        models,
        averages,
        optimiser,
        pipeline.tokenizer,
        [batch],
        generator,
        settings,
        torch.autocast("cpu", enabled=False),
    )
    assert torch.isfinite(loss) and grad_norm > 0
    for old, model in zip(before, (*models, *averages), strict=True):
        assert any(not torch.equal(o, p) for o, p in zip(old, model.parameters(), strict=True)), type(model)


def test_counting_summary_on_a_hand_case():
    # Two one-frame images: target 2 drawn 2 (right), target 4 drawn 3 (wrong).
    rows = pd.DataFrame(
        [
            {
                "prompt_id": 0,
                "seed": 0,
                "method": "baseline",
                "frame": 0,
                "noun": "circles",
                "target": 2,
                "count": 2,
            },
            {
                "prompt_id": 1,
                "seed": 0,
                "method": "baseline",
                "frame": 0,
                "noun": "stars",
                "target": 4,
                "count": 3,
            },
        ]
    )
    summary = counting_summary(rows)
    assert summary["accuracy"] == 0.5 and summary["accuracy_2"] == 1.0 and summary["accuracy_4"] == 0.0
    assert summary["slope"] == pytest.approx(0.5) and summary["correlation"] == pytest.approx(1.0)


def test_a_video_with_nan_pixels_is_not_counted():
    def broken_pipeline(prompts, **kwargs):
        return SimpleNamespace(frames=np.full((len(prompts), 1, 8, 8, 3), np.nan, dtype=np.float32))

    broken_pipeline.set_progress_bar_config = lambda **kwargs: None
    scenes = single_kind_scenes(2)
    with pytest.raises(ValueError, match="NaN or inf pixels for prompts 0..1"):
        counting_rows(broken_pipeline, scenes, 1, 8, 2, 5.0, 0, torch.autocast("cpu", enabled=False))


def test_single_kind_benchmark_counts_one_to_eight_in_turn():
    scenes = single_kind_scenes(16, seed=3)
    assert [s.kinds[0].count for s in scenes] == [i % 8 + 1 for i in range(16)]
    assert all(len(s.kinds) == 1 for s in scenes)


def _args(work, *extra):
    return [
        "--work", str(work), "--device", "cpu", "--size", "64", "--frames", "5",
        "--vae-steps", "2", "--vae-batch", "1", "--vae-eval-clips", "2",
        "--steps", "4", "--image-batch", "2", "--video-batch", "1", "--video-from", "2",
        "--multi-kind-from", "1",
        "--eval-prompts", "2", "--eval-steps", "2", "--probe-captions", "40", "--log-every", "1", *extra,
    ]  # fmt: skip


def test_training_runs_in_pieces_and_resumes_from_the_portable_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(
        trainer_run, "untrained_pipeline", lambda seed: untrained_pipeline(seed, vae_from=None)
    )
    work = tmp_path / "work"
    train.main(_args(work, "--piece-steps", "2"))  # the VAE's two steps, G0
    state = json.loads((work / "state.json").read_text())
    assert state["vae_step"] == 2 and 0 <= state["vae_eval"]["count_agreement"] <= 1
    train.main(_args(work, "--piece-steps", "2"))  # statistics, two transformer steps, an evaluation
    state = json.loads((work / "state.json").read_text())
    assert state["step"] == 2 and len(state["latents_mean"]) == 16
    assert [e["step"] for e in state["evals"]] == [2] and 0 <= state["evals"][0]["accuracy"] <= 1
    portable = work / "portable"  # the pipeline folder, its state and learning curve beside it
    assert (portable / "learning_curve.png").is_file() and (portable / "model_index.json").is_file()
    assert json.loads((portable / "training.json").read_text()) == state
    assert [p["step"] for p in state["text_probes"]] == [2] and 0 <= state["text_probes"][0][
        "noun_probe"
    ] <= 1
    with pytest.raises(SystemExit, match="other settings"):
        train.main(_args(work, "--image-batch", "3"))
    # A loss that turns NaN stops the piece, at the next log line or before the piece's checkpoint,
    # keeping the step-2 checkpoint.
    nan_step = lambda *args, **kwargs: (torch.tensor(float("nan")), torch.tensor(1.0))  # noqa: E731
    monkeypatch.setattr(trainer_stages, "joint_flow_step", nan_step)
    for log_every in ("1", "100"):
        with pytest.raises(SystemExit, match=r"not finite at step 3 .* holds step 2"):
            train.main(_args(work, "--piece-steps", "1", "--log-every", log_every))
    assert json.loads((work / "state.json").read_text())["step"] == 2
    monkeypatch.undo()
    monkeypatch.setattr(
        trainer_run, "untrained_pipeline", lambda seed: untrained_pipeline(seed, vae_from=None)
    )
    # A fresh machine: a new work folder resumes from the portable copy, with videos from step 2.
    fresh = tmp_path / "fresh"
    # A refused resume leaves the new folder without a state, so the next try still resumes.
    with pytest.raises(SystemExit, match="other settings"):
        train.main(_args(fresh, "--resume-from", str(portable), "--image-batch", "3"))
    assert not (fresh / "state.json").exists()
    train.main(_args(fresh, "--resume-from", str(portable)))
    state = json.loads((fresh / "state.json").read_text())
    assert state["step"] == 4 and state["restarted_at"]["transformer"] == 2
    assert [(p["vae_step"], p["step"]) for p in state["pieces"]] == [(0, 0), (2, 0), (2, 2)]
    # From step 4 (past --video-from) the clips of 1-3 kinds are scored beside the images.
    assert [(e["step"], e["frames"]) for e in state["evals"]] == [(2, 1), (4, 1), (4, 5)]
    losses = [json.loads(line) for line in (fresh / "losses.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in losses if r["stage"] == "transformer"][-1] == 3  # 2 images + 1 video
    # Without its checkpoints a trained state is refused, not trained on from random weights.
    (fresh / "transformer.ckpt").unlink()
    with pytest.raises(SystemExit, match="transformer.ckpt is missing"):
        train.main(_args(fresh, "--steps", "6"))
    shipped = load_pipeline(str(fresh / "portable"), dtype=torch.float32)
    assert shipped.transformer.config.patch_size == list(TRANSFORMER["patch_size"])
    assert json.loads((fresh / "portable" / "numina.json").read_text()) == RUN_DEFAULTS
    assert np.allclose(shipped.vae.config.latents_mean, state["latents_mean"])
