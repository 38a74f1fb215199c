"""Cross-attention modulation: delta(t), the bias per label against a literal reading of METHOD.md, hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from numina.method.modulate import (
    CrossAttentionModulation,
    ModulationPlan,
    delta,
    is_active,
    reference_instance,
    schedule_centre,
)

H, W, FRAMES, HEADS, DIM, TEXT = 4, 5, 3, 2, 8, 12
COLUMNS = (2, 3)


def _labels() -> np.ndarray:
    """Frame 0: instances 1 (3 px) and 2 (2 px: the reference), two removed, three added.
    Frame 1: no instance, two added (disc) and one removed. Frame 2: untouched instance 1."""
    labels = np.zeros((FRAMES, H, W), dtype=np.int64)
    labels[0, 0, 0:3] = 1
    labels[0, 3, 3:5] = 2
    labels[0, 1, 4] = labels[0, 2, 4] = -1
    labels[0, 2, 0:3] = 100
    labels[1, 1, 1:3] = 100
    labels[1, 3, 0] = -1
    labels[2, 1:3, 1:3] = 1
    return labels


def test_delta_at_the_steps_the_method_names() -> None:
    assert delta(0) == pytest.approx(1.75)
    assert delta(22) == pytest.approx(0.25 * (4 + 3 * math.tanh(3)))  # 1.7463
    assert delta(25) == pytest.approx(1.0)
    assert delta(28) == pytest.approx(0.25 * (4 - 3 * math.tanh(3)))  # 0.2537
    assert is_active(44) and delta(44) > 0.25  # on for steps 0-44 at 50 steps
    assert not is_active(45) and delta(45) == 0.25
    assert [s for s in range(50) if is_active(s)] == list(range(45))
    assert schedule_centre(50) == 25.0 and schedule_centre(20) == 25.0
    assert schedule_centre(20, follow_steps=True) == 10.0
    assert [s for s in range(20) if is_active(s, schedule_centre(20, True))] == list(range(20))


def test_reference_instance_ties_go_to_the_lower_label() -> None:
    labels = np.array([[1, 1, 2, 2], [3, 0, -1, 100]])
    assert reference_instance(labels) == 3
    labels[1, 0] = 0
    assert reference_instance(labels) == 1
    assert reference_instance(np.array([[0, -1, 100]])) is None


def _literal_bias(labels: np.ndarray, q: torch.Tensor, k: torch.Tensor, strength: float) -> torch.Tensor:
    """METHOD.md step 8 read literally, position by position: a dense (L, T) bias."""
    scale = 1 / math.sqrt(DIM)
    bias = torch.zeros(FRAMES * H * W, TEXT, dtype=torch.float64)
    for frame in range(FRAMES):
        flat = labels[frame].reshape(-1)
        detected = [label for label in np.unique(flat) if 1 <= label < 100]
        reference = None
        if detected:
            sizes = {label: int((flat == label).sum()) for label in detected}
            reference = min(detected, key=lambda label: (sizes[label], label))
            rows = [frame * H * W + i for i in np.flatnonzero(flat == reference)]
            m_ref = np.mean(
                [float(q[r, h] @ k[c, h]) * scale for r in rows for h in range(HEADS) for c in COLUMNS]
            )
        for i, label in enumerate(flat):
            row = frame * H * W + i
            for c in COLUMNS:
                if label == -1:
                    bias[row, c] += -10 * strength
                elif label >= 100 and reference is None:
                    bias[row, c] += 0.8 * strength
                elif label >= 100:
                    head_mean = np.mean([float(q[row, h] @ k[c, h]) * scale for h in range(HEADS)])
                    bias[row, c] = strength * m_ref - head_mean
    return bias


def test_modulated_rows_match_the_literal_bias() -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(FRAMES * H * W, HEADS, DIM, generator=generator, dtype=torch.float64)
    k = torch.randn(TEXT, HEADS, DIM, generator=generator, dtype=torch.float64)
    v = torch.randn(TEXT, HEADS, DIM, generator=generator, dtype=torch.float64)
    labels = _labels()
    strength = delta(10)
    plan = ModulationPlan.from_layout({"cat": labels}, {"cat": COLUMNS}).to("cpu")
    bias = _literal_bias(labels, q, k, strength)
    touched = torch.nonzero(bias.abs().sum(dim=1)).squeeze(1)
    assert plan.rows.tolist() == touched.tolist()  # exactly the removed and added positions: 2 + 3 + 2 + 1
    assert len(touched) == 8
    logits = torch.einsum("lhd,thd->hlt", q, k) / math.sqrt(DIM) + bias
    expected = torch.einsum("hlt,thd->lhd", torch.softmax(logits, dim=-1), v).flatten(1)
    got = plan.modulated_rows(q, k, v, strength)
    torch.testing.assert_close(got.double(), expected[touched], rtol=1e-5, atol=1e-6)


def test_the_hooks_bias_only_touched_rows_of_the_conditional_branch(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    frames, height, width = 3, 4, 4
    generator = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, 16, frames, 2 * height, 2 * width, generator=generator),
        timestep=torch.tensor([700.0]),
        encoder_hidden_states=torch.randn(1, 512, transformer.config.text_dim, generator=generator),
        return_dict=False,
    )
    labels = np.zeros((frames, height, width), dtype=np.int64)
    labels[0, 0, 0:2], labels[0, 3, 3] = 1, -1
    labels[0, 2, 0:2] = 100
    labels[1, 1, 1] = 100
    plan = ModulationPlan.from_layout({"cat": labels}, {"cat": (1, 2)})
    outputs: dict[str, torch.Tensor] = {}
    handle = transformer.blocks[0].attn2.register_forward_hook(
        lambda module, args, output: outputs.__setitem__("attn2", output.detach().clone())
    )

    def run(branch: str, modulated: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # hooks first: diffusers hands the cache context to the hooks registered when it is entered
        modulation = CrossAttentionModulation(transformer, plan if modulated else ModulationPlan((), frames))
        with torch.no_grad(), modulation, transformer.cache_context(branch, step_index=3):
            video = transformer(**inputs)[0]
        return video, outputs["attn2"][0]

    try:
        plain_video, plain_attn = run("cond", False)
        video, attn = run("cond", True)
        uncond_plain, _ = run("uncond", False)
        uncond_video, _ = run("uncond", True)
    finally:
        handle.remove()
    rows = plan.to("cpu").rows
    untouched = torch.ones(attn.shape[0], dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(attn[untouched], plain_attn[untouched])  # the model's own output, to the bit
    assert not torch.allclose(attn[rows], plain_attn[rows])
    assert not torch.equal(video, plain_video)
    assert torch.equal(uncond_video, uncond_plain)  # the unconditional branch is never modulated
    assert not transformer.blocks[0].attn2.norm_q._diffusers_hook.hooks  # all hooks removed


def test_the_scale_multiplies_the_strength_and_leaves_the_gate(tiny_pipe) -> None:
    """scale 0.5 at step 3 (delta 1.75) biases as scale 1 does where delta is 0.875; scale 10 at step
    45 (delta 0.25, gate closed) leaves the model's output alone."""
    transformer = tiny_pipe.transformer
    generator = torch.Generator().manual_seed(2)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, generator=generator),
        timestep=torch.tensor([700.0]),
        encoder_hidden_states=torch.randn(1, 512, transformer.config.text_dim, generator=generator),
        return_dict=False,
    )
    labels = np.zeros((2, 4, 4), dtype=np.int64)
    labels[0, 0, 0:2], labels[0, 3, 3], labels[0, 2, 0:2], labels[1, 1, 1] = 1, -1, 100, 100

    def video(step: int, centre: float = 25.0, scale: float = 1.0) -> torch.Tensor:
        plan = ModulationPlan.from_layout({"cat": labels}, {"cat": (1, 2)}, centre, scale)
        with (
            torch.no_grad(),
            CrossAttentionModulation(transformer, plan),
            transformer.cache_context("cond", step_index=step),
        ):
            return transformer(**inputs)[0]

    half_strength_centre = 3 - math.atanh(1 / 6)  # 0.25 (4 - 3 tanh(3 - c)) = 0.875
    assert delta(3, half_strength_centre) == pytest.approx(0.5 * delta(3), abs=1e-12)
    halved = video(3, scale=0.5)
    torch.testing.assert_close(halved, video(3, centre=half_strength_centre), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(halved, video(3))
    gated = video(45, scale=10.0)
    with torch.no_grad(), transformer.cache_context("cond", step_index=45):
        assert torch.equal(gated, transformer(**inputs)[0])


def test_an_empty_plan_installs_nothing(tiny_pipe) -> None:
    plan = ModulationPlan.from_layout({"cat": np.ones((2, 4, 4), dtype=np.int64)}, {"cat": (1,)})
    assert plan.empty
    with CrossAttentionModulation(tiny_pipe.transformer, plan) as modulation:
        assert modulation.device_plan is None and not modulation._hooks


def test_the_zero_padding_shortcut_gives_the_same_rows() -> None:
    """Keys and values equal from position n on (zero padding): n + 1 columns, one counted T - n times."""
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(FRAMES * H * W, HEADS, DIM, generator=generator, dtype=torch.float64)
    k = torch.randn(TEXT, HEADS, DIM, generator=generator, dtype=torch.float64)
    v = torch.randn(TEXT, HEADS, DIM, generator=generator, dtype=torch.float64)
    k[8:], v[8:] = k[8], v[8]
    plan = ModulationPlan.from_layout({"cat": _labels()}, {"cat": COLUMNS}).to("cpu")
    dense = plan.modulated_rows(q, k, v, delta(3))
    torch.testing.assert_close(
        plan.modulated_rows(q, k, v, delta(3), uniform_from=8), dense, rtol=1e-6, atol=1e-7
    )
    modulation = CrossAttentionModulation(torch.nn.Linear(1, 1), ModulationPlan((), 1), prompt_length=8)
    assert modulation.uniform_from(k, v) == 8
    k[9] += 1
    assert (
        CrossAttentionModulation(torch.nn.Linear(1, 1), ModulationPlan((), 1), prompt_length=8).uniform_from(
            k, v
        )
        is None
    )
