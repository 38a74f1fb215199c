"""numina.capture: capturing never changes the output, and the captured maps equal a float64 reference."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry

from numina.capture import (
    AttentionCapture,
    CaptureSpec,
    CrossAttentionCapture,
    MemoryStore,
    SelfAttentionCapture,
    TeeSink,
    numina_spec,
    open_capture_store,
    quantity_name,
    read,
    reductions,
)
from numina.capture.background import SideStreamWorker
from numina.metrics import separability, top_components
from numina.metrics.lowrank import products_for, randomized_svd_components, release_score_components
from numina.models import Geometry
from numina.prompts import parse_prompt
from numina.sampling import GenerationSettings, capture_generation, plain_generation, run_with_capture
from numina.store import CoordinateError, open_store

PROMPT = "three red cats on a sofa"
FRAMES, SIZE, STEPS, STEP, LAYER = 9, 128, 4, 2, 1


@pytest.fixture(scope="module")
def geometry(tiny_pipe) -> Geometry:
    return Geometry.from_pipeline(tiny_pipe, FRAMES, SIZE, SIZE)


def _generate(pipe, **kwargs) -> torch.Tensor:
    arguments = dict(
        num_frames=FRAMES,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    arguments.update(kwargs)
    if "prompt_embeds" not in arguments:
        arguments["prompt"] = PROMPT
    return pipe(**arguments).frames


def _spec(geometry: Geometry, prompt_length: int = 8) -> CaptureSpec:
    return CaptureSpec(
        steps=(1, STEP),
        branches=("cond", "uncond"),
        self_attention=SelfAttentionCapture(layers=(LAYER, 3), maps=True),
        cross_attention=CrossAttentionCapture(
            layers=(0, LAYER), tokens=(0, 2, 3, 40), prompt_length=prompt_length
        ),
    ).resolved(geometry, STEPS)


def _read(store: MemoryStore, name: str, **index) -> torch.Tensor:
    """One written cell of a capture in memory, as a tensor."""
    return torch.from_numpy(store[name].sel(index).values)


class _Inputs:
    """Records what enters one block's attention modules at the captured call (a plain torch hook)."""

    def __init__(self, block: torch.nn.Module) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []
        self.handles = [
            block.attn1.register_forward_pre_hook(self._self, with_kwargs=True),
            block.attn2.register_forward_pre_hook(self._cross, with_kwargs=True),
        ]

    def _self(self, module, args, kwargs):
        self.calls.append({"kind": "self", "hidden": args[0].clone(), "rotary": args[3]})

    def _cross(self, module, args, kwargs):
        self.calls.append({"kind": "cross", "hidden": args[0].clone(), "context": args[1].clone()})

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _reference_rotary(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Textbook interleaved RoPE in float64: (x_2i, x_2i+1) -> (x_2i c - x_2i+1 s, x_2i s + x_2i+1 c)."""
    cos, sin = (part[0].double() for part in rotary)  # (L, 1, d)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos[..., 0::2] - odd * sin[..., 0::2]
    out[..., 1::2] = even * sin[..., 1::2] + odd * cos[..., 1::2]
    return out


def _reference_qk(attention: torch.nn.Module, hidden: torch.Tensor, context: torch.Tensor | None):
    module = copy.deepcopy(attention).double()
    source = hidden if context is None else context
    q = module.norm_q(module.to_q(hidden[0].double())).unflatten(-1, (module.heads, -1))
    k = module.norm_k(module.to_k(source[0].double())).unflatten(-1, (module.heads, -1))
    return q.transpose(0, 1), k.transpose(0, 1)  # (heads, tokens, d)


def test_capture_never_changes_the_output(tiny_pipe, geometry: Geometry) -> None:
    plain = _generate(tiny_pipe)
    spec = _spec(geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, MemoryStore(spec, geometry)):
        captured = _generate(tiny_pipe)
    after = _generate(tiny_pipe)
    assert torch.equal(plain, captured)
    assert torch.equal(plain, after)
    leftover = [
        name
        for module in tiny_pipe.transformer.modules()
        if hasattr(module, "_diffusers_hook")
        for name in module._diffusers_hook.hooks
        if name.startswith("numina")
    ]
    assert leftover == []


def _count_full_softmax(monkeypatch) -> list[int]:
    """Counts calls of the full-softmax path (the zero-padding shortcut never calls it)."""
    calls: list[int] = []
    full = reductions.log_normaliser

    def counted(*args):
        calls.append(1)
        return full(*args)

    monkeypatch.setattr(reductions, "log_normaliser", counted)
    return calls


def test_captured_maps_equal_float64_reference(tiny_pipe, geometry: Geometry, monkeypatch) -> None:
    full_softmax_calls = _count_full_softmax(monkeypatch)
    # Maps of 3 heads per chunk: the tiny model's 4 heads are reduced as 3 + 1, and put back in order.
    head_bytes = geometry.frames * (geometry.height * geometry.width) ** 2 * 4
    monkeypatch.setattr(reductions, "MAP_CHUNK_BYTES", 3 * head_bytes + head_bytes // 2)
    assert geometry.heads == 4
    block = tiny_pipe.transformer.blocks[LAYER]
    recorder = _Inputs(block)
    spec = _spec(geometry)
    sink = MemoryStore(spec, geometry)
    # Inputs are recorded at every call; the captured call is the 2 * STEP-th pair (cond first).
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, sink):
        _generate(tiny_pipe)
    recorder.remove()
    assert full_softmax_calls == []  # zero-padded prompts take the exact shortcut
    calls = [call for call in recorder.calls if call["kind"] == "self"]
    crosses = [call for call in recorder.calls if call["kind"] == "cross"]
    for branch, offset in (("cond", 0), ("uncond", 1)):
        index = {"step": STEP, "branch": branch, "layer": LAYER}
        self_call, cross_call = calls[2 * STEP + offset], crosses[2 * STEP + offset]

        q, k = _reference_qk(block.attn1, self_call["hidden"], None)
        q, k = (_reference_rotary(x.transpose(0, 1), self_call["rotary"]).transpose(0, 1) for x in (q, k))
        q, k = (x.unflatten(1, (geometry.frames, -1)) for x in (q, k))
        maps = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (h, F, tpf, tpf)
        torch.testing.assert_close(
            _read(sink, "self_attention/maps", **index).double(), maps, atol=2e-4, rtol=2e-3
        )
        components, singular = top_components(maps, 3)
        torch.testing.assert_close(
            _read(sink, "self_attention/components", **index).double(),
            components.unflatten(-2, (geometry.height, geometry.width)),
            atol=2e-3,
            rtol=2e-3,
        )
        torch.testing.assert_close(
            _read(sink, "self_attention/singular_values", **index).double(), singular, rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(
            _read(sink, "self_attention/scores", **index).double(),
            separability(components, geometry.height, geometry.width),
            rtol=1e-3,
            atol=1e-4,
        )

        q, k = _reference_qk(block.attn2, cross_call["hidden"], cross_call["context"])
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (h, L, 512)
        expected = (
            probs[..., [0, 2, 3, 40]]
            .transpose(-1, -2)
            .unflatten(-1, (geometry.frames, geometry.height, geometry.width))
        )
        torch.testing.assert_close(
            _read(sink, "cross_attention/probs", **index).double(), expected, rtol=2e-3, atol=1e-6
        )
        prompt_mass = probs[..., :8].sum(-1).unflatten(-1, (geometry.frames, -1)).mean(-1)
        torch.testing.assert_close(
            _read(sink, "cross_attention/text_mass", **index)[..., 0].double(),
            prompt_mass,
            rtol=1e-5,
            atol=1e-6,
        )
        per_query = probs[..., :8].sum(-1).unflatten(-1, (geometry.frames, geometry.height, geometry.width))
        torch.testing.assert_close(
            _read(sink, "cross_attention/prompt_mass", **index).double(), per_query, rtol=2e-3, atol=1e-6
        )


def test_self_attention_chunks_change_no_number() -> None:
    """Heads reduced in chunks give each head the numbers of all heads at once, within float32 rounding:
    bit-equal on one CPU, up to 2e-6 apart on another (batched products may sum in another order, and
    the components' eigen-decomposition carries that on); a head mixed up with another is far outside."""
    frames, height, width, heads = 3, 4, 5, 5
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, frames * height * width, heads, 16, generator=generator)
    part = SelfAttentionCapture(layers=(0,), maps=True)
    head_bytes = frames * (height * width) ** 2 * 4
    whole = reductions.self_attention_reductions(query, key, frames, height, width, part, 100 * head_bytes)
    assert whole["maps"].shape == (heads, frames, height * width, height * width)
    for per_chunk in (1, 2):  # 5 chunks; 2 + 2 + 1
        chunked = reductions.self_attention_reductions(
            query, key, frames, height, width, part, per_chunk * head_bytes
        )
        assert chunked.keys() == whole.keys()
        for name in whole:
            torch.testing.assert_close(chunked[name], whole[name], rtol=1e-4, atol=1e-5)


def test_the_capture_multiplies_maps_as_its_spec_says() -> None:
    """`SelfAttentionCapture(products=...)` reaches the components: each head's are those of
    `top_components` with the same products on its own maps."""
    frames, height, width, heads = 2, 4, 6, 3
    generator = torch.Generator().manual_seed(5)
    query, key = torch.randn(2, frames * height * width, heads, 16, generator=generator)
    maps = reductions.frame_local_attention(query, key, frames)
    expected = {products: top_components(maps, products=products)[0] for products in ("tf32", "float16")}
    assert not torch.equal(expected["tf32"], expected["float16"])
    for products in ("tf32", "float16"):
        part = SelfAttentionCapture(layers=(0,), products=products)
        reduced = reductions.self_attention_reductions(query, key, frames, height, width, part)
        torch.testing.assert_close(reduced["components"].flatten(-3, -2), expected[products])


def test_auto_products_are_made_explicit_for_the_device_and_recorded(tiny_pipe, geometry: Geometry) -> None:
    """The default "auto" products are float16 maps on CUDA and TF32's (float32 natively) elsewhere;
    resolving a spec for the model's device writes that into the spec, so a store records what ran,
    and a CPU's numbers are those of TF32 products to the bit."""
    assert SelfAttentionCapture(layers=(0,)).products == "auto"
    assert [products_for(device) for device in ("cuda", "cuda:1", torch.device("cpu"), "mps")] == [
        "float16",
        "float16",
        "tf32",
        "tf32",
    ]
    spec = numina_spec(geometry, tokens=(1, 2), prompt_length=7, num_steps=4)
    resolved = {
        device: spec.resolved(geometry, 4, device).self_attention.products for device in ("cuda", "cpu")
    }
    assert resolved == {"cuda": "float16", "cpu": "tf32"}
    assert spec.resolved(geometry, 4).self_attention.products == "auto"  # resolved where the maps are
    maps = reductions.frame_local_attention(*torch.randn(2, 2 * 12, 3, 8), frames=2)
    assert torch.equal(top_components(maps, products="auto")[0], top_components(maps, products="tf32")[0])
    _, capture = run_with_capture(tiny_pipe, "three cats", spec, GenerationSettings(5, 32, 32, 4))
    assert capture.attrs["capture_spec"]["self_attention"]["products"] == "tf32"
    before_products = spec.to_dict()  # a store written before `products` was recorded
    del before_products["self_attention"]["products"]
    assert CaptureSpec.from_dict(before_products).self_attention.products == "tf32"


def test_an_unknown_products_is_refused_when_the_spec_is_made() -> None:
    """A misspelt `products` is an error when the capture is asked for, before any model runs."""
    with pytest.raises(ValueError, match="products 'fp16' is not one of"):
        SelfAttentionCapture(layers=(0,), products="fp16")
    with pytest.raises(ValueError, match="products 'fp16' is not one of"):
        CaptureSpec.requesting(["blocks.0.attn1.scores"], products="fp16")


def test_heads_per_chunk_at_full_size() -> None:
    # 21 frames of 30 x 52 tokens: one head's float32 maps are 21 * 1560^2 * 4 = 204,422,400 bytes.
    assert reductions.heads_per_chunk(21, 1560) == 5  # 2**30 / 204,422,400 = 5.25
    assert reductions.heads_per_chunk(21, 1560, chunk_bytes=1000) == 1  # never zero
    assert reductions.heads_per_chunk(3, 64, chunk_bytes=3 * 3 * 64**2 * 4) == 3


def test_heads_are_chunked_into_as_few_near_equal_chunks_as_fit() -> None:
    def sizes(heads: int, per_chunk: int) -> list[int]:
        chunks = reductions.head_chunks(heads, per_chunk)
        assert chunks[0].start == 0 and chunks[-1].stop == heads
        assert all(left.stop == right.start for left, right in itertools.pairwise(chunks))
        return [chunk.stop - chunk.start for chunk in chunks]

    assert sizes(12, 5) == [4, 4, 4]  # Wan2.1-1.3B at 1 GiB of maps: not 5 + 5 + 2
    assert sizes(40, 5) == [5] * 8  # Wan2.1-14B
    assert sizes(7, 3) == [3, 2, 2]
    assert sizes(3, 100) == [3]
    assert sizes(2, 1) == [1, 1]


def test_rope_applied_a_chunk_at_a_time_changes_no_number() -> None:
    """The reductions rotate each chunk's queries and keys themselves (no float32 copy of every head):
    in any chunking, the same numbers, to the bit, as rotating all heads first."""
    frames, height, width, heads, dim = 3, 4, 5, 5, 16
    tokens = frames * height * width
    generator = torch.Generator().manual_seed(3)
    query, key = torch.randn(2, tokens, heads, dim, generator=generator).to(torch.bfloat16)
    angles = torch.rand(1, tokens, 1, dim // 2, generator=generator).repeat_interleave(2, dim=-1) * 6
    rotary = (angles.cos(), angles.sin())
    part = SelfAttentionCapture(layers=(0,), maps=True)
    rotated = reductions.apply_rotary(query, rotary), reductions.apply_rotary(key, rotary)
    head_bytes = frames * (height * width) ** 2 * 4
    for chunk_bytes in (head_bytes, 2 * head_bytes, heads * head_bytes):
        rotated_first = reductions.self_attention_reductions(
            *rotated, frames, height, width, part, chunk_bytes
        )
        chunked = reductions.self_attention_reductions(
            query, key, frames, height, width, part, chunk_bytes, rotary=rotary
        )
        for name, values in rotated_first.items():
            torch.testing.assert_close(chunked[name], values, rtol=0, atol=0, msg=name)
    unrotated = reductions.self_attention_reductions(query, key, frames, height, width, part)
    assert not torch.equal(unrotated["maps"], chunked["maps"])  # the rotation did act


def test_zero_padded_prompts_give_the_full_softmaxs_probabilities() -> None:
    """The shortcut's one softmax over the prompt keys and one padding key weighted by its count gives
    every probability (a padding position's too) and the prompt's mass of a float64 softmax over all
    512 keys, as the full path does; both to float32 rounding."""
    generator = torch.Generator().manual_seed(5)
    query = torch.randn(300, 3, 16, generator=generator) * 2
    key = torch.randn(512, 3, 16, generator=generator) * 2
    key[7:] = key[7]  # a 7-token prompt padded to 512 positions with one vector
    tokens = torch.tensor([0, 4, 6, 7, 300])  # two of them padding positions
    reference = torch.softmax(
        query.double().transpose(0, 1) @ key.double().permute(1, 2, 0) / 4, dim=-1
    )  # (h, L, 512)
    for uniform in (True, False):
        probs, text_mass = reductions.cross_attention_probabilities(query, key, tokens, 7, uniform)
        torch.testing.assert_close(
            probs.double(), reference[..., tokens].transpose(1, 2), rtol=1e-5, atol=1e-9
        )
        torch.testing.assert_close(
            text_mass.double(),
            torch.stack([reference[..., :7].sum(-1), reference[..., 7:].sum(-1)], -1),
            rtol=0,
            atol=2e-6,  # the full path's log-sum-exp over 512 keys on a CPU: 1.3e-6
        )


def test_non_uniform_padding_takes_the_full_softmax(tiny_pipe, geometry: Geometry, monkeypatch) -> None:
    """Prompt embeddings whose padding differs per position: the exact shortcut must not be used."""
    full_softmax_calls = _count_full_softmax(monkeypatch)
    generator = torch.Generator().manual_seed(3)
    embeds = torch.randn(1, 512, tiny_pipe.text_encoder.config.d_model, generator=generator)
    negative = torch.zeros_like(embeds)
    spec = _spec(geometry, prompt_length=6)
    block = tiny_pipe.transformer.blocks[LAYER]
    recorder = _Inputs(block)
    sink = MemoryStore(spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, sink):
        _generate(tiny_pipe, prompt_embeds=embeds, negative_prompt_embeds=negative)
    recorder.remove()
    # Per captured call: 2 cond calls (2 layers) with random padding take the full softmax; the
    # zero-padded uncond calls take the shortcut.
    assert len(full_softmax_calls) == 2 * len(spec.steps)
    cross_call = [call for call in recorder.calls if call["kind"] == "cross"][2 * STEP]
    q, k = _reference_qk(block.attn2, cross_call["hidden"], cross_call["context"])
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    expected = (
        probs[..., [0, 2, 3, 40]]
        .transpose(-1, -2)
        .unflatten(-1, (geometry.frames, geometry.height, geometry.width))
    )
    got = _read(sink, "cross_attention/probs", step=STEP, branch="cond", layer=LAYER).double()
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=1e-6)


def test_capture_without_cache_context_explains_itself(tiny_pipe, geometry: Geometry) -> None:
    transformer, spec = tiny_pipe.transformer, _spec(geometry)
    inputs = dict(
        hidden_states=torch.randn(1, 16, geometry.frames, SIZE // 8, SIZE // 8),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.zeros(1, 512, tiny_pipe.text_encoder.config.d_model),
    )
    with (
        AttentionCapture(transformer, spec, geometry, MemoryStore(spec, geometry)),
        pytest.raises(RuntimeError, match="cache_context"),
    ):
        transformer(**inputs)
    sink = MemoryStore(spec, geometry)
    with (
        AttentionCapture(transformer, spec, geometry, sink),
        transformer.cache_context("cond", step_index=1),
    ):
        transformer(**inputs)
    assert _read(sink, "capture/timestep", step=1, branch="cond").item() == 500.0
    assert HookRegistry.check_if_exists_or_initialize(transformer).get_hook("numina.capture.step") is None


def test_spec_validation_and_round_trip(geometry: Geometry) -> None:
    spec = numina_spec(geometry, tokens=(1, 2), prompt_length=7, num_steps=50)
    assert spec.steps == (20,) and spec.self_attention.layers == (2,)  # tiny model: middle block
    assert spec.cross_attention.layers == tuple(range(geometry.layers))
    assert "blocks.2.attn1" in spec.points() and "blocks.3.attn2" in spec.points()
    assert CaptureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match=r"layer index \[9\] out of range"):
        CaptureSpec(self_attention=SelfAttentionCapture(layers=(9,))).resolved(geometry, 10)
    with pytest.raises(ValueError, match=r"step index \[12\]"):
        CaptureSpec(steps=(12,), self_attention=SelfAttentionCapture(layers=(1,))).resolved(geometry, 10)
    with pytest.raises(ValueError, match="captures nothing"):
        CaptureSpec().resolved(geometry, 10)
    with pytest.raises(ValueError, match="guidance branch"):
        CaptureSpec(branches=("both",), self_attention=SelfAttentionCapture(layers=(1,))).resolved(
            geometry, 10
        )


def test_capture_into_the_store_has_named_dimensions(tiny_pipe, geometry: Geometry, tmp_path: Path) -> None:
    spec = _spec(geometry)
    writer = open_capture_store(tmp_path / "attention.h5", spec, geometry, {"prompt": PROMPT, "seed": 0})
    sink = MemoryStore(spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, writer):
        _generate(tiny_pipe)
    writer.close()
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, sink):
        _generate(tiny_pipe)
    with open_store(tmp_path / "attention.h5") as store:
        assert store.attrs["prompt"] == PROMPT
        assert Geometry.from_dict(store.attrs["geometry"]) == geometry
        assert CaptureSpec.from_dict(store.attrs["capture_spec"]) == spec
        probs = store["cross_attention/probs"]
        assert probs.dims == ("step", "branch", "layer", "head", "token", "frame", "y", "x")
        assert list(probs.coords["token"]) == [0, 2, 3, 40]
        one = probs.sel(step=STEP, branch="uncond", layer=LAYER, token=3).values
        expected = _read(sink, "cross_attention/probs", step=STEP, branch="uncond", layer=LAYER)[:, 2]
        assert one.shape == (geometry.heads, geometry.frames, geometry.height, geometry.width)
        torch.testing.assert_close(torch.from_numpy(one), expected)
        scores = store["self_attention/scores"].sel(step=1, branch="cond", layer=3).values
        torch.testing.assert_close(
            torch.from_numpy(scores), _read(sink, "self_attention/scores", step=1, branch="cond", layer=3)
        )


def test_installing_a_capture_creates_the_store_file_before_the_model_runs(
    tiny_pipe, geometry: Geometry, tmp_path: Path
) -> None:
    """The HDF5 store lays out its file when the capture is installed, not inside the first captured
    step in the model's thread; through a TeeSink too, beside sinks that have no start()."""
    spec = _spec(geometry)
    for wrap in (lambda writer: writer, lambda writer: TeeSink(MemoryStore(spec, geometry), writer)):
        path = tmp_path / f"attention{len(list(tmp_path.iterdir()))}.h5"
        writer = open_capture_store(path, spec, geometry)
        assert not writer.started and not writer.partial_path.exists()
        with AttentionCapture(tiny_pipe.transformer, spec, geometry, wrap(writer)):
            assert writer.started and writer.partial_path.exists()
        writer.close()
        with open_store(path) as store:
            assert store["self_attention/scores"].written() == []  # nothing ran: nothing written


def test_a_sink_that_cannot_start_leaves_the_model_without_hooks(tiny_pipe, geometry: Geometry) -> None:
    class FullDisk:
        def start(self) -> None:
            raise OSError(28, "No space left on device")

        def write(self, name: str, index, data) -> None:
            raise AssertionError("never written")

    with pytest.raises(OSError, match="No space left"):
        AttentionCapture(tiny_pipe.transformer, _spec(geometry), geometry, FullDisk()).install()
    assert not HookRegistry.check_if_exists_or_initialize(tiny_pipe.transformer).hooks


def test_a_capture_in_memory_reads_as_the_same_capture_in_a_file(
    tiny_pipe, geometry: Geometry, tmp_path: Path
) -> None:
    """One reader: every dataset of the store's layout, its dims, coordinates, values (NaN where
    nothing was written, the dataset's dtype) and written cells, equal in memory and on disk."""
    spec = _spec(geometry)
    memory = MemoryStore(spec, geometry, {"prompt": PROMPT})
    writer = open_capture_store(tmp_path / "attention.h5", spec, geometry, {"prompt": PROMPT})
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, TeeSink(memory, writer)):
        _generate(tiny_pipe)
    writer.close()
    with open_store(tmp_path / "attention.h5") as store:
        assert sorted(memory.datasets) == sorted(store.datasets)
        assert {key: memory.attrs[key] for key in ("prompt", "geometry", "capture_spec")} == {
            key: store.attrs[key] for key in ("prompt", "geometry", "capture_spec")
        }
        for name in memory.datasets:
            mine, theirs = memory[name], store[name]
            assert mine.dims == theirs.dims and mine.dtype == theirs.dtype, name
            assert all(np.array_equal(mine.coords[d], theirs.coords[d]) for d in mine.dims), name
            np.testing.assert_array_equal(mine.values, theirs.values, err_msg=name)  # NaN == NaN
            assert mine.written() == theirs.written(), name
        cell = dict(step=STEP, branch="uncond", layer=LAYER, token=[40, 0], head=1)
        probs = memory["cross_attention/probs"].sel(cell)
        assert probs.dims == ("token", "frame", "y", "x")
        np.testing.assert_array_equal(probs.values, store["cross_attention/probs"].sel(cell).values)
    memory.clear()  # what run_numina does after the walk-through: nothing written is left
    unwritten = memory["self_attention/scores"].sel(step=1, branch="cond", layer=LAYER)
    assert np.isnan(unwritten.values).all() and unwritten.written() == []
    with pytest.raises(CoordinateError, match="not a coordinate value"):
        memory.write("capture/timestep", {"step": 99, "branch": "cond"}, torch.tensor(1.0))
    with pytest.raises(CoordinateError, match="no dataset 'self_attention/maps_x'"):
        memory["self_attention/maps_x"]


@pytest.mark.slow
def test_capture_on_wan22_records_expanded_timesteps(tmp_path: Path) -> None:
    """Wan2.2-TI2V passes one timestep per token, (batch, tokens): capture records the step's value."""
    from numina.models import build_tiny_pipeline, load_pipeline

    pipe = load_pipeline(str(build_tiny_pipeline(tmp_path / "ti2v", "wan2.2-5b")), dtype=torch.float32)
    geometry = Geometry.from_pipeline(pipe, FRAMES, SIZE, SIZE)
    spec = _spec(geometry).resolved(geometry, STEPS)
    plain = _generate(pipe)
    sink = MemoryStore(spec, geometry)
    with AttentionCapture(pipe.transformer, spec, geometry, sink):
        captured = _generate(pipe)
    assert torch.equal(plain, captured)
    for step in spec.steps:
        recorded = _read(sink, "capture/timestep", step=step, branch="uncond")
        assert recorded.item() == pytest.approx(pipe.scheduler.timesteps[step].item())
    assert _read(sink, "self_attention/scores", step=STEP, branch="cond", layer=LAYER).shape == (
        geometry.heads,
        geometry.frames,
        4,
    )


def test_the_release_estimators_reduce_maps_as_their_functions_do_in_any_chunking() -> None:
    """estimator='release': the layout's components are scikit-learn's randomized_svd (float64, stored
    as float32), the scores come from seeded svd_lowrank components, kept beside them."""
    generator = torch.Generator().manual_seed(4)
    query, key = torch.randn(2, 80, 3, 16, generator=generator).unbind(0)  # (L = 5 frames x 16, heads, d)
    part = SelfAttentionCapture(layers=(0,), estimator="release", score_seed=7)
    reduced = reductions.self_attention_reductions(query, key, 5, 4, 4, part)
    maps = reductions.frame_local_attention(query, key, 5)  # (head, frame, 16, 16)
    layout, singular = randomized_svd_components(maps, 3)
    scored = release_score_components(maps, 7)
    torch.testing.assert_close(reduced["components"].flatten(2, 3), layout.float(), rtol=0, atol=0)
    torch.testing.assert_close(reduced["singular_values"], singular.float(), rtol=0, atol=0)
    torch.testing.assert_close(reduced["score_components"].flatten(2, 3), scored, rtol=0, atol=0)
    torch.testing.assert_close(reduced["scores"], separability(scored, 4, 4), rtol=0, atol=0)
    one_head_at_a_time = reductions.self_attention_reductions(query, key, 5, 4, 4, part, chunk_bytes=1)
    for name, values in reduced.items():
        torch.testing.assert_close(one_head_at_a_time[name], values, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="estimator 'exact' is not one of"):
        SelfAttentionCapture(layers=(0,), estimator="exact")


def test_run_with_capture_gives_the_plain_video_and_the_stored_runs_capture(
    tiny_pipe, geometry: Geometry, tmp_path: Path
) -> None:
    settings = GenerationSettings(FRAMES, SIZE, SIZE, STEPS, seed=3)
    spec = _spec(geometry)
    video, capture = run_with_capture(tiny_pipe, PROMPT, spec, settings)
    assert np.array_equal(video, plain_generation(tiny_pipe, PROMPT, settings))
    capture_generation(
        tiny_pipe, parse_prompt(PROMPT, tiny_pipe.tokenizer), spec, settings, tmp_path / "a.h5"
    )
    with open_store(tmp_path / "a.h5") as store:
        for name in capture.datasets:
            np.testing.assert_array_equal(capture[name].values, store[name].values, err_msg=name)
    assert capture.attrs["prompt"] == PROMPT and capture.attrs["settings"]["seed"] == 3


def test_quantity_names_ask_for_a_capture_and_read_it_back(tiny_pipe, geometry: Geometry) -> None:
    names = ["blocks.1.attn1.scores", "blocks.3.attn1.maps", "blocks.0.attn2.probs", "blocks.1.attn2.stats"]
    spec = CaptureSpec.requesting(names, tokens=(0, 2), prompt_length=8, steps=(STEP,), branches=("cond",))
    assert spec.points() == ["blocks.1.attn1", "blocks.3.attn1", "blocks.0.attn2", "blocks.1.attn2"]
    assert spec.self_attention.maps and spec.cross_attention.maps and spec.cross_attention.stats
    settings = GenerationSettings(FRAMES, SIZE, SIZE, STEPS)
    _, capture = run_with_capture(tiny_pipe, PROMPT, spec, settings)
    probs = read(capture, "blocks.0.attn2.probs", step=STEP, branch="cond")
    assert probs.dims == ("head", "token", "frame", "y", "x") and np.isfinite(probs.values).all()
    np.testing.assert_array_equal(
        probs.values, capture["cross_attention/probs"].sel(step=STEP, branch="cond", layer=0).values
    )
    assert quantity_name(3, "attn1", "maps") == "blocks.3.attn1.maps"
    for bad, message in [
        ("blocks.3.attn2.maps", "attn2 keeps"),
        ("block.3.attn2.probs", "not a quantity name"),
        ("blocks.x.attn1.scores", "not a quantity name"),
    ]:
        with pytest.raises(ValueError, match=message):
            read(capture, bad)
    with pytest.raises(ValueError, match="need the text `tokens`"):
        CaptureSpec.requesting(["blocks.0.attn2.probs"])
    with pytest.raises(ValueError, match="estimator='release'"):
        CaptureSpec.requesting(["blocks.0.attn1.score_components"])
    with pytest.raises(ValueError, match="at least one quantity"):
        CaptureSpec.requesting([])


def test_a_background_capture_equals_the_inline_one_and_leaves_the_output(
    tiny_pipe, geometry: Geometry, tmp_path: Path
) -> None:
    """`background=True` (the reductions in a worker thread): the same output, the same numbers in
    every dataset, in memory and through the HDF5 writer, and the thread is gone after the capture."""
    spec = _spec(geometry)
    inline = MemoryStore(spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, inline) as capture:
        inline_output = _generate(tiny_pipe)
        assert capture.worker is None  # the default computes in line on a CPU
    memory = MemoryStore(spec, geometry)
    writer = open_capture_store(tmp_path / "background.h5", spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, TeeSink(memory, writer), background=True):
        background = _generate(tiny_pipe)
    writer.close()
    assert torch.equal(inline_output, background)
    assert not [thread for thread in threading.enumerate() if thread.name == "numina-capture"]
    with open_store(tmp_path / "background.h5") as store:
        for name in inline.datasets:
            assert inline[name].written() == memory[name].written() != [], name
            np.testing.assert_array_equal(inline[name].values, memory[name].values, err_msg=name)
            np.testing.assert_array_equal(inline[name].values, store[name].values, err_msg=name)


def test_a_background_capture_holds_only_the_self_attention_blocks_tensors(
    tiny_pipe, geometry: Geometry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is handed the query, key and RoPE angles of the self-attention blocks only: the
    cross-attention is reduced in the hook, so no cross block's query waits (in memory, on CUDA) for a
    side stream that lags behind the model. Every block's writes still go through the worker."""
    handed: dict[str, list[int]] = {}  # tensors handed over with each job, by what the job does
    submit = SideStreamWorker.submit

    def counting_submit(worker, job, tensors=()) -> None:
        tensors = list(tensors)
        handed.setdefault(getattr(job.func, "__name__", "?"), []).append(len(tensors))
        submit(worker, job, tensors)

    monkeypatch.setattr(SideStreamWorker, "submit", counting_submit)
    spec = _spec(geometry)
    sink = MemoryStore(spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, sink, background=True):
        _generate(tiny_pipe)
    calls = len(spec.steps) * len(spec.branches)
    assert handed == {
        "write": [1] * calls,  # the timestep, a 0-d tensor
        "record_self_attention": [4] * calls * len(spec.self_attention.layers),  # q, k, cos, sin
        "write_all": [0] * calls * len(spec.cross_attention.layers),  # reduced in the hook
    }


class _SlowSink(MemoryStore):
    def write(self, name: str, index, data) -> None:
        time.sleep(0.02)
        super().write(name, index, data)


def test_a_background_capture_is_in_the_sink_when_its_call_returns(tiny_pipe, geometry: Geometry) -> None:
    """The captured call waits for the worker: a sink that writes slowly holds every write of the last
    step's capture as soon as the pipeline returns, with no step after it to wait through."""
    spec = dataclasses.replace(_spec(geometry), steps=(STEPS - 1,))
    sink = _SlowSink(spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, sink, background=True):
        _generate(tiny_pipe)
        written = {name: len(sink[name].written()) for name in sink.datasets}
    inline = MemoryStore(spec, geometry)
    with AttentionCapture(tiny_pipe.transformer, spec, geometry, inline, background=False):
        _generate(tiny_pipe)
    assert written == {name: len(inline[name].written()) for name in inline.datasets}
    assert sum(written.values()) > 0


class _FailingSink(MemoryStore):
    def write(self, name: str, index, data) -> None:
        if name == "cross_attention/text_mass" and index["layer"] == LAYER:
            raise ValueError("planted failure")
        super().write(name, index, data)


def test_a_background_reduction_error_ends_the_call_that_made_it(tiny_pipe, geometry: Geometry) -> None:
    """An error in the worker is raised in the pipeline call whose capture failed (not lost, not
    later), and the hooks are gone after it."""
    spec = _spec(geometry)
    sink = _FailingSink(spec, geometry)
    capture = AttentionCapture(tiny_pipe.transformer, spec, geometry, sink, background=True)
    with capture, pytest.raises(ValueError, match="planted failure"):  # raised inside, not at exit
        _generate(tiny_pipe)
    assert not HookRegistry.check_if_exists_or_initialize(tiny_pipe.transformer).hooks
    assert torch.equal(_generate(tiny_pipe), _generate(tiny_pipe))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_background_capture_on_a_side_stream_equals_the_inline_one(tiny_folder: Path) -> None:
    """On CUDA the worker runs on a side stream: the same kernels on the same inputs, so the same
    numbers, and the model's output is the plain one."""
    from numina.models import load_pipeline

    pipe = load_pipeline(str(tiny_folder), dtype=torch.bfloat16).to("cuda")
    geometry = Geometry.from_pipeline(pipe, FRAMES, SIZE, SIZE)
    spec = _spec(geometry)
    plain = _generate(pipe)
    stores = {}
    for background in (False, True):
        stores[background] = MemoryStore(spec, geometry)
        with AttentionCapture(pipe.transformer, spec, geometry, stores[background], background=background):
            assert torch.equal(_generate(pipe), plain)
    for name in stores[False].datasets:
        assert stores[False][name].written() == stores[True][name].written(), name
        np.testing.assert_array_equal(stores[False][name].values, stores[True][name].values, err_msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_capture_runs_in_the_background_on_cuda_unless_asked_and_at_the_highest_priority(
    tiny_folder: Path,
) -> None:
    """On CUDA the default capture starts a worker (measured faster, benchmarks/RESULTS.md) and
    `background=False` keeps it in line; the worker's side stream has the device's highest priority,
    where it was measured faster at the 14B shape."""
    from numina.models import load_pipeline

    pipe = load_pipeline(str(tiny_folder), dtype=torch.bfloat16).to("cuda")
    geometry = Geometry.from_pipeline(pipe, FRAMES, SIZE, SIZE)
    for background, started in ((None, True), (False, False)):
        sink = MemoryStore(_spec(geometry), geometry)
        with AttentionCapture(pipe.transformer, _spec(geometry), geometry, sink, background) as capture:
            _generate(pipe)
            assert (capture.worker is not None) == started, background
            if started:
                assert capture.worker.stream.priority == torch.cuda.Stream.priority_range()[1]


def test_the_side_stream_worker_runs_jobs_in_order_and_skips_those_after_an_error() -> None:
    worker, ran = SideStreamWorker(torch.device("cpu")), []
    for index in range(5):
        worker.submit(lambda index=index: ran.append(index))
    worker.wait()
    assert ran == [0, 1, 2, 3, 4]

    def fail() -> None:
        raise RuntimeError("job 6 failed")

    worker.submit(lambda: ran.append(5))
    worker.submit(fail)
    worker.submit(lambda: ran.append(7))  # skipped: the call it belongs to has already failed
    with pytest.raises(RuntimeError, match="job 6 failed"):
        worker.wait()
    worker.submit(lambda: ran.append(8))  # the error was handed over: the next call's jobs run
    worker.close()
    assert ran == [0, 1, 2, 3, 4, 5, 8]
    assert not worker._thread.is_alive()
