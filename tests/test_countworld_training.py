"""CountWorld training: the arithmetic against hand-computed values, and the training script end to end
(pieces resume to the same weights as one run; the exported folder loads and generates)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from experiment_scripts import load_experiment
from safetensors.torch import load_file

from numina.countworld.trainer import Trainer, latents
from numina.countworld.trainer.export import evaluate_samples
from numina.countworld.trainer.latents import encode_part, part_version
from numina.countworld.training import (
    ema_decay,
    flow_matching_pair,
    gaussian_kl,
    latent_object_mask,
    latent_statistics,
    learning_rate,
    object_weights,
    shifted_sigmas,
    vae_loss,
    weighted_flow_loss,
)
from numina.countworld.world import benchmark_scenes, render_scenes
from numina.models import load_pipeline
from numina.models.countworld import SHARD_SIZE

pytestmark = pytest.mark.slow  # end to end: run by .ci/run, not by the default loop

train = load_experiment("train_countworld")


def test_flow_matching_pair_is_the_samplers_convention():
    clean, noise = torch.full((2, 1, 1), 2.0), torch.full((2, 1, 1), -1.0)
    noisy, target = flow_matching_pair(clean, noise, torch.tensor([0.25, 1.0]))
    assert noisy.flatten().tolist() == [0.75 * 2 + 0.25 * -1, -1.0]
    assert target.flatten().tolist() == [-3.0, -3.0]


def test_shifted_sigmas_follow_the_shift_rule():
    generator = torch.Generator().manual_seed(0)
    u = torch.rand(5, generator=torch.Generator().manual_seed(0)).clamp(1e-4, 1 - 1e-4)
    assert torch.allclose(shifted_sigmas(5, 3.0, generator), 3 * u / (1 + 2 * u))


def test_learning_rate_warms_up_then_follows_the_cosine():
    assert learning_rate(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert learning_rate(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert learning_rate(55, 100, 1.0, warmup=10, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(100, 100, 1.0, warmup=10, floor=0.1) == pytest.approx(0.1)
    assert ema_decay(0, 0.999) == pytest.approx(0.1) and ema_decay(10**6, 0.999) == 0.999


def test_learning_rate_warms_up_again_after_the_moments_restart():
    plain = learning_rate(55, 100, 1.0, warmup=10)
    assert learning_rate(50, 100, 1.0, warmup=10, restarted_at=50) == pytest.approx(
        0.1 * learning_rate(50, 100, 1.0, 10)
    )
    assert learning_rate(55, 100, 1.0, warmup=10, restarted_at=50) == pytest.approx(0.6 * plain)
    assert learning_rate(60, 100, 1.0, warmup=10, restarted_at=50) == learning_rate(60, 100, 1.0, 10)


def test_latent_object_mask_follows_the_causal_strides():
    # 9 frames of 16 x 16 -> latent frames {0}, {1-4}, {5-8} on a 4 x 4 grid.
    instances = torch.zeros(1, 9, 16, 16, dtype=torch.int16)
    instances[0, 0, 0, 0] = 1  # frame 0, latent cell (0, 0)
    instances[0, 6, 13, 9] = 2  # frame 6 -> latent frame 2, cell (3, 2)
    mask = latent_object_mask(instances)
    assert mask.shape == (1, 3, 4, 4)
    assert mask[0, 1].sum() == 0
    # each touched cell grows by one cell (3 x 3, cut at the edge)
    assert mask[0, 0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert mask[0, 2].nonzero().tolist() == [[2, 1], [2, 2], [2, 3], [3, 1], [3, 2], [3, 3]]
    with pytest.raises(ValueError, match="causal VAE"):
        latent_object_mask(torch.zeros(1, 8, 16, 16))


def test_weighted_flow_loss_by_hand():
    target = torch.zeros(1, 2, 1, 1, 2)
    prediction = target.clone()
    prediction[0, 0, 0, 0, 0] = 2.0  # error 4 at the object position, channel 0
    objects = torch.tensor([[[[True, False]]]])
    # weights 5 and 1 in both channels: (5 * 4) / ((5 + 1) * 2)
    assert weighted_flow_loss(prediction, target, objects, 5.0).item() == pytest.approx(20 / 12)
    assert weighted_flow_loss(prediction, target, objects, 1.0).item() == pytest.approx(
        torch.nn.functional.mse_loss(prediction, target).item()
    )


def test_kl_and_weighted_loss_by_hand():
    assert gaussian_kl(torch.zeros(3), torch.zeros(3)).item() == 0
    assert gaussian_kl(torch.ones(1), torch.zeros(1)).item() == pytest.approx(0.5)
    instances = torch.zeros(1, 1, 5, 5, dtype=torch.int16)
    instances[0, 0, 2, 2] = 1
    weights = object_weights(instances, 10.0)
    assert weights.shape == (1, 1, 1, 5, 5)
    assert weights[0, 0, 0, 1:4, 1:4].eq(10).all() and weights.sum().item() == 9 * 10 + 16
    # Error 1 on the object's pixel only, in one of three channels: (10 * 1) / (106 * 3) for L1 and L2.
    target = torch.zeros(1, 3, 1, 5, 5)
    reconstruction = target.clone()
    reconstruction[0, 0, 0, 2, 2] = 1
    loss, parts = vae_loss(reconstruction, target, torch.zeros(1), torch.zeros(1), 1.0, weights)
    assert parts["l1"] == pytest.approx(10 / 318) and loss.item() == pytest.approx(20 / 318)


def test_latent_statistics_are_per_channel():
    latents = torch.stack([torch.full((2, 1, 2, 2), 1.0), torch.full((2, 1, 2, 2), 3.0)], dim=1)
    latents[:, 1, 0, 0, 0] = 5.0
    mean, std = latent_statistics(latents)
    assert mean[0] == 1.0 and std[0] == 0.0
    values = torch.tensor([5.0, 3, 3, 3] * 2)
    assert mean[1] == pytest.approx(values.mean().item()) and std[1] == pytest.approx(values.std().item())


SMALL = [
    "--size", "64", "--frames", "5", "--vae-frames", "5", "--vae-steps", "2", "--vae-batch", "2",
    "--eval-clips", "2", "--clips", "6", "--steps", "3", "--batch", "2", "--log-every", "1",
    "--warmup", "1", "--sample-prompts", "2", "--sample-steps", "2", "--wandb", "disabled",
]  # fmt: skip


def _ema(work):
    return torch.load(work / "transformer.ckpt", map_location="cpu")["ema"]


def test_pieces_resume_to_the_same_weights_and_the_export_loads(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train.main(["--work", str(whole), *SMALL])
    # Two VAE steps and one transformer step, then the rest in a second piece.
    train.main(["--work", str(split), *SMALL, "--piece-steps", "3"])
    state = json.loads((split / "state.json").read_text())
    assert (state["stage"], state["vae_step"], state["step"]) == ("transformer", 2, 1)
    train.main(["--work", str(split), *SMALL])
    assert json.loads((split / "state.json").read_text())["stage"] == "done"
    for name, tensor in _ema(whole).items():
        assert torch.equal(tensor, _ema(split)[name]), name
    records = [json.loads(line) for line in (split / "losses.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["stage"] != "samples"]
    assert steps == [1, 2, 1, 2, 3]  # every step once, none repeated after the resume
    # the model's own samples were scored after each piece
    assert [r["step"] for r in records if r["stage"] == "samples"] == [1, 3]
    assert json.loads((split / "state.json").read_text())["sample_eval"]["step"] == 3

    folder = whole / "pipeline"
    sizes = [path.stat().st_size for path in folder.rglob("*.safetensors")]
    assert sizes and max(sizes) < 15 * 2**20
    assert (
        load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")[
            "blocks.0.attn1.to_q.weight"
        ].dtype
        == torch.float16
    )
    assert json.loads((folder / "numina.json").read_text())["counter"] == "exact"
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    assert vae_config["latents_std"] == pytest.approx(
        json.loads((whole / "state.json").read_text())["latents_std"]
    )
    pipeline = load_pipeline(str(folder), torch.float32, "cpu")
    video = pipeline("two red circles resting on a grey floor", num_frames=5, height=64, width=64,
                     num_inference_steps=2, output_type="np").frames[0]  # fmt: skip
    assert video.shape == (5, 64, 64, 3) and math.isfinite(float(video.sum()))
    assert (whole / "loss_curves.png").stat().st_size > 0


def test_a_fresh_machine_resumes_from_the_portable_checkpoint(tmp_path):
    first, fresh = tmp_path / "first", tmp_path / "fresh"
    train.main(["--work", str(first), *SMALL, "--piece-steps", "3"])
    portable = first / "portable"
    # the portable state is the work folder's, with the time spent in this piece
    assert json.loads((portable / "state.json").read_text()) == json.loads((first / "state.json").read_text())
    assert (portable / "losses.jsonl").read_text() == (first / "losses.jsonl").read_text()  # with samples
    assert max(path.stat().st_size for path in portable.rglob("*.safetensors")) < 15 * 2**20
    # Mark the carried weights, so that the resumed model shows it started from them.
    carried = WanTransformer3DModel.from_pretrained(portable / "transformer")
    marked = carried.scale_shift_table.detach().clone() + 1.0
    carried.scale_shift_table.data.copy_(marked)
    carried.save_pretrained(portable / "transformer", max_shard_size=SHARD_SIZE)
    train.main(["--work", str(fresh), *SMALL, "--resume-from", str(portable)])
    records = [json.loads(line) for line in (fresh / "losses.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["stage"] != "samples"]
    # The log came along; the VAE is not trained again; the transformer goes on from step 1.
    assert steps == [1, 2, 1, 2, 3]
    assert len(list((fresh / "latents").glob("part_*.pt"))) == 1
    before = torch.load(first / "vae.ckpt", map_location="cpu")["vae"]
    after = torch.load(fresh / "transformer.ckpt", map_location="cpu")
    vae = load_pipeline(str(fresh / "pipeline"), torch.float32, "cpu").vae.state_dict()
    assert all(
        torch.allclose(vae[name], tensor, atol=1e-3) for name, tensor in before.items()
    )  # float16 export
    # Two Adam steps of at most lr 5e-4 each from the marked weights (a fresh start would be 1 away).
    assert torch.allclose(after["model"]["scale_shift_table"], marked, atol=2e-3)
    # The next piece in the same folder (a machine still warm) keeps the carried VAE, not a random one.
    train.main(["--work", str(fresh), *SMALL, "--steps", "4"])
    vae = load_pipeline(str(fresh / "pipeline"), torch.float32, "cpu").vae.state_dict()
    assert all(torch.allclose(vae[name], tensor, atol=1e-3) for name, tensor in before.items())
    (fresh / "vae.ckpt").unlink()
    with pytest.raises(SystemExit, match="holds no vae.ckpt"):
        train.main(["--work", str(fresh), *SMALL, "--steps", "5"])


def test_changed_data_settings_are_refused_and_a_batch_change_is_recorded(tmp_path):
    train.main(["--work", str(tmp_path), *SMALL, "--piece-steps", "3"])  # 2 VAE steps, 1 transformer step
    with pytest.raises(SystemExit, match="other settings"):
        train.main(["--work", str(tmp_path), *SMALL, "--seed", "1"])
    train.main(["--work", str(tmp_path), *SMALL, "--batch", "3", "--piece-steps", "1"])
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["changes"] == [{"step": 1, "batch": [2, 3]}]
    assert state["settings"]["batch"] == 3 and state["step"] == 2


def test_refresh_replaces_one_part_per_interval_and_a_fresh_machine_agrees(tmp_path, monkeypatch):
    monkeypatch.setattr(latents, "PART_SIZE", 2)  # --clips 6: three parts of two clips
    args = train.parse_args(["--work", str(tmp_path / "t"), *SMALL, "--refresh-every", "2"])
    trainer = Trainer(args)
    # Hand-computed: the r-th refresh (step 2r) replaces part (r - 1) mod 3.
    expected = {0: [0, 0, 0], 2: [1, 0, 0], 4: [1, 1, 0], 6: [1, 1, 1], 8: [2, 1, 1], 14: [3, 2, 2]}
    for step, versions in expected.items():
        trainer.state["step"] = step
        assert [part_version(trainer, part) for part in range(3)] == versions
    first = tmp_path / "first"
    train.main(["--work", str(first), *SMALL, "--refresh-every", "2", "--steps", "4"])
    names = sorted(path.name for path in (first / "latents").glob("*.pt"))
    assert names == ["part_0000_v001.pt", "part_0001_v001.pt", "part_0002.pt"]
    captions = {name: torch.load(first / "latents" / name)["captions"] for name in names}
    start = Trainer(train.parse_args(["--work", str(tmp_path / "u"), *SMALL]))
    original = [encode_part(start, part, 0)["captions"] for part in range(2)]
    assert captions["part_0000_v001.pt"] != original[0] and captions["part_0001_v001.pt"] != original[1]
    # A fresh machine at step 4 encodes the same versions: the same clips.
    fresh = tmp_path / "fresh"
    train.main(["--work", str(fresh), *SMALL, "--refresh-every", "2", "--steps", "5",
                "--resume-from", str(first / "portable"), "--piece-steps", "1"])  # fmt: skip
    for name in ("part_0000_v001.pt", "part_0001_v001.pt"):
        assert torch.load(fresh / "latents" / name)["captions"] == captions[name]


class _Replay:
    """Stands in for the pipeline: returns the true renders of the captions it is asked for (or blank
    frames), so the sample score's arithmetic can be checked against known answers."""

    def __init__(self, scenes, blank=False):
        self.by_caption = {scene.caption: scene for scene in scenes}
        self.blank = blank

    def set_progress_bar_config(self, **_):
        pass

    def __call__(self, captions, num_frames, height, width, **_):
        scenes = [self.by_caption[caption] for caption in captions]
        videos = render_scenes(scenes, 0, num_frames, height).videos.numpy()
        return SimpleNamespace(frames=np.zeros_like(videos) if self.blank else videos)


def test_sample_score_is_one_on_true_renders_and_zero_on_blank_frames(tmp_path):
    args = train.parse_args(["--work", str(tmp_path), *SMALL, "--sample-prompts", "3"])
    trainer = Trainer(args)
    scenes = benchmark_scenes(3, seed=args.seed)
    trainer.pipeline = _Replay(scenes)
    assert evaluate_samples(trainer) == {"accuracy": 1.0, "all_frames_exact": 1.0, "mean_abs_error": 0.0}
    trainer.pipeline = _Replay(scenes, blank=True)
    blank = evaluate_samples(trainer)
    assert blank["accuracy"] == 0.0 and blank["all_frames_exact"] == 0.0
    # every noun counted 0: the mean absolute error is the mean of each video's mean target
    expected = np.mean([np.mean(list(scene.targets.values())) for scene in scenes])
    assert blank["mean_abs_error"] == pytest.approx(expected)


def test_compiled_blocks_train_like_the_eager_ones(tmp_path):
    small = [
        "--size", "64", "--frames", "5", "--vae-frames", "5", "--vae-steps", "0", "--eval-clips", "1",
        "--clips", "2", "--steps", "2", "--batch", "2", "--log-every", "1", "--warmup", "1",
        "--sample-prompts", "0", "--wandb", "disabled",
    ]  # fmt: skip
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        train.main(["--work", str(tmp_path / name), *small, *extra])
        records = [json.loads(line) for line in (tmp_path / name / "losses.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if r["stage"] == "transformer"]
    assert len(losses["eager"]) == 2
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
