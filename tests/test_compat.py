"""numina.compat: one denoising-context hook shared by every feature, and transformers the hooks would
read wrongly refused before any hook goes on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import HookRegistry

from numina import compat
from numina.capture import AttentionCapture, CaptureSpec, CrossAttentionCapture, MemoryStore
from numina.method.cache import FirstBlockStepCache, StepCache
from numina.method.modulate import CrossAttentionModulation, ModulationPlan
from numina.models import Geometry

FRAMES, SIZE = 5, 64


def _numina_hooks(transformer: torch.nn.Module) -> list[str]:
    """Every hook named numina.* on the transformer or any of its submodules."""
    return [
        name
        for module in transformer.modules()
        if hasattr(module, "_diffusers_hook")
        for name in module._diffusers_hook.hooks
        if name.startswith("numina.")
    ]


def _transformer(**config) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
        freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32, **config,
    )  # fmt: skip


def _plan() -> ModulationPlan:
    labels = np.zeros((2, 4, 4), dtype=np.int64)
    labels[0, 0, 0:2], labels[1, 1, 1] = 1, 100
    return ModulationPlan.from_layout({"cat": labels}, {"cat": (1, 2)})


def test_only_the_tested_diffusers_releases_are_taken() -> None:
    assert compat.diffusers_problem("0.42.1") is None
    assert compat.diffusers_problem("0.42.0.dev0") is None
    for other in ("0.43.0", "0.41.2", "1.0.0", "main"):
        problem = compat.diffusers_problem(other)
        assert problem is not None and other in problem and "diffusers>=0.42,<0.43" in problem


def test_features_share_one_context_hook_removed_with_the_last(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    geometry = Geometry.from_pipeline(tiny_pipe, FRAMES, SIZE, SIZE)
    spec = CaptureSpec(
        steps=(1,),
        branches=("cond",),
        cross_attention=CrossAttentionCapture(layers=(0,), tokens=(1,), prompt_length=8),
    ).resolved(geometry, 4)
    sink = MemoryStore(spec, geometry)
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, geometry.frames, SIZE // 8, SIZE // 8, generator=generator),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.zeros(1, 512, tiny_pipe.text_encoder.config.d_model),
    )  # fmt: skip
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    with AttentionCapture(transformer, spec, geometry, sink), StepCache(transformer, 4) as cache:
        modulation = CrossAttentionModulation(transformer, _plan())
        with modulation:
            context = registry.get_hook(compat.CONTEXT_HOOK)
            assert context.users == 3
            assert [name for name in registry._hook_order if name == compat.CONTEXT_HOOK] == [
                compat.CONTEXT_HOOK
            ]
            with torch.no_grad(), transformer.cache_context("cond", step_index=1):
                transformer(**inputs)
        assert context.users == 2 and registry.get_hook(compat.CONTEXT_HOOK) is context
        assert not modulation._hooks
    # each feature read the step and branch from the shared hook: capture recorded step 1's timestep,
    # the cache kept the output change of the conditional branch it was told it computed
    assert sink["capture/timestep"].sel(step=1, branch="cond").values.item() == 500.0
    assert set(cache.delta) == {"cond"} and cache.skipped == []
    assert _numina_hooks(transformer) == []


def test_a_transformer_run_another_way_is_refused_before_any_hook(tiny_pipe, monkeypatch) -> None:
    geometry = Geometry.from_pipeline(tiny_pipe, FRAMES, SIZE, SIZE)
    spec = CaptureSpec(
        steps=(1,),
        branches=("cond",),
        cross_attention=CrossAttentionCapture(layers=(1,), tokens=(1,), prompt_length=8),
    ).resolved(geometry, 4)
    transformer = tiny_pipe.transformer
    attention = transformer.blocks[1].attn2

    class OtherProcessor:
        def __call__(self, *args, **kwargs):  # never reached: the hooks refuse first
            raise AssertionError

    original = attention.processor
    attention.processor = OtherProcessor()
    try:
        for feature in (
            AttentionCapture(transformer, spec, geometry, MemoryStore(spec, geometry)),
            CrossAttentionModulation(transformer, _plan()),
        ):
            with pytest.raises(
                RuntimeError, match="blocks.1.attn2 runs OtherProcessor.*set_default_attn_processor"
            ):
                feature.install()
            assert _numina_hooks(transformer) == []
    finally:
        attention.processor = original

    monkeypatch.setattr(compat, "version", lambda name: "0.44.0")
    for feature in (
        AttentionCapture(transformer, spec, geometry, MemoryStore(spec, geometry)),
        CrossAttentionModulation(transformer, _plan()),
        StepCache(transformer, 4),
        FirstBlockStepCache(transformer, 4),
    ):
        with pytest.raises(RuntimeError, match=r"diffusers 0\.44\.0 is installed"):
            feature.__enter__()
        assert _numina_hooks(transformer) == []


def test_modulation_refuses_image_attention_fused_projections_and_split_transformers() -> None:
    image_to_video = _transformer(image_dim=16, added_kv_proj_dim=16)
    with pytest.raises(RuntimeError, match="attends to an image.*text-to-video"):
        CrossAttentionModulation(image_to_video, _plan()).install()
    assert _numina_hooks(image_to_video) == []

    fused = _transformer()
    fused.fuse_qkv_projections()
    with pytest.raises(RuntimeError, match="fused q/k/v projections; call transformer.unfuse_qkv"):
        CrossAttentionModulation(fused, _plan()).install()
    assert _numina_hooks(fused) == []

    split = _transformer()
    split._parallel_config = object()  # what enable_parallelism records
    with pytest.raises(RuntimeError, match="split over processes"):
        CrossAttentionModulation(split, _plan()).install()
    with pytest.raises(RuntimeError, match="split over processes"):
        StepCache(split, 4).__enter__()
    assert _numina_hooks(split) == []
