"""Step caching (EasyCache's rule, diffusers' FirstBlockCache): which steps are reused, and what a
reused or computed step returns."""

from __future__ import annotations

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry

from numina.method.cache import FirstBlockStepCache, StepCache
from numina.method.presets import preset


def _denoise(
    transformer, inputs: list[torch.Tensor], text: torch.Tensor, step_end=None
) -> list[torch.Tensor]:
    """Both branches per step as the Wan pipeline calls them; the conditional outputs. `step_end` is
    called after each step, as the pipeline's step-end callback."""
    outputs = []
    for step, latents in enumerate(inputs):
        for branch in ("cond", "uncond"):
            with torch.no_grad(), transformer.cache_context(branch, step_index=step):
                out = transformer(
                    hidden_states=latents, timestep=torch.tensor([900.0]),
                    encoder_hidden_states=text, return_dict=False,
                )[0]  # fmt: skip
            if branch == "cond":
                outputs.append(out)
        if step_end is not None:
            step_end(None, step, None, {})
    return outputs


def _run(
    transformer, inputs: list[torch.Tensor], text: torch.Tensor, **rule
) -> tuple[list[torch.Tensor], list[int]]:
    with StepCache(transformer, len(inputs), **rule) as hook:
        return _denoise(transformer, inputs, text), hook.skipped


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


def test_first_block_cache_skips_only_where_allowed_and_computes_the_rest_exactly(tiny_pipe) -> None:
    """diffusers' cache with a threshold nothing reaches, from step 0 with step 3 always computed, on 8
    steps: it starts afresh each time it is switched on (steps 0 and 4 computed), skips 1, 2, 5, 6; the
    computed steps are the uncached transformer's outputs to the bit."""
    transformer = tiny_pipe.transformer
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 16, 2, 8, 8, generator=generator) for _ in range(8)]
    text = torch.randn(1, 512, transformer.config.text_dim, generator=generator)
    plain = _denoise(transformer, inputs, text)
    with FirstBlockStepCache(transformer, 8, first=0, always=(3,), threshold=1e9) as cache:
        cached = _denoise(transformer, inputs, text, cache.step_end)
    assert cache.skipped == [1, 2, 5, 6]
    for step in range(8):
        if step in cache.skipped:
            assert not torch.equal(cached[step], plain[step])
        else:
            torch.testing.assert_close(cached[step], plain[step], rtol=0, atol=0)
    assert not transformer.is_cache_enabled  # leaving the context removes every hook
    for module in (transformer, transformer.blocks[0], transformer.blocks[-1]):
        assert not HookRegistry.check_if_exists_or_initialize(module).hooks

    with FirstBlockStepCache(transformer, 4, first=0, threshold=0.0) as cache:  # every change exceeds 0
        _denoise(transformer, inputs[:4], text, cache.step_end)
    assert cache.skipped == []


def test_first_block_cache_refuses_a_transformer_that_already_has_a_diffusers_cache(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    transformer.enable_cache(FirstBlockCacheConfig())
    try:
        with pytest.raises(RuntimeError, match="disable_cache"), FirstBlockStepCache(transformer, 4):
            pass
    finally:
        transformer.disable_cache()


def test_the_cache_method_is_checked() -> None:
    assert preset("official").cache_method == "easycache"
    assert preset("official", cache_method="first_block").cache_method == "first_block"
    with pytest.raises(
        ValueError, match=r"cache_method='teacache' is not one of \['easycache', 'first_block'\]"
    ):
        preset("official", cache_method="teacache")
