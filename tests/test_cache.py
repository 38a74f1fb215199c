"""Step caching (EasyCache's rule): which steps are reused, and what a reused step returns."""

from __future__ import annotations

import torch

from numina.method.cache import StepCache


def _run(
    transformer, inputs: list[torch.Tensor], text: torch.Tensor, **rule
) -> tuple[list[torch.Tensor], list[int]]:
    outputs = []
    with torch.no_grad(), StepCache(transformer, len(inputs), **rule) as hook:
        for step, latents in enumerate(inputs):
            for branch in ("cond", "uncond"):
                with transformer.cache_context(branch, step_index=step):
                    out = transformer(
                        hidden_states=latents, timestep=torch.tensor([900.0]),
                        encoder_hidden_states=text, return_dict=False,
                    )[0]  # fmt: skip
                if branch == "cond":
                    outputs.append(out)
    return outputs, hook.skipped


def test_slowly_changing_inputs_reuse_the_last_output_change(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(1, 16, 2, 8, 8, generator=generator)
    drift = torch.randn(base.shape, generator=generator)
    text = torch.randn(1, 512, transformer.config.text_dim, generator=generator)
    slow = [base + 1e-4 * step * drift for step in range(12)]
    outputs, skipped = _run(transformer, slow, text, first=3, always=(6,), tau=0.05)
    assert skipped and all(step >= 3 and step not in (6, 11) for step in skipped)
    assert 4 in skipped  # steps 3 and 4: two computed steps give the rate; from then on it is reused
    computed = [step for step in range(12) if step not in skipped]
    for step in skipped:
        last = max(s for s in computed if s < step)
        expected = slow[step] + (outputs[last] - slow[last])
        torch.testing.assert_close(outputs[step], expected, rtol=0, atol=0)

    jumps = [torch.randn(base.shape, generator=generator) for _ in range(12)]
    _, skipped = _run(transformer, jumps, text, first=3, tau=0.05)
    assert skipped == []  # every step changes the output a lot: all computed
