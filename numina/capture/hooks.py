"""The hook layer: diffusers hooks that capture attention reductions without changing the model.

`AttentionCapture(transformer, spec, geometry, sink)` installs, through diffusers' `HookRegistry`:

- one stateful hook on the transformer that reads the pipeline's cache context (diffusers' Wan
  pipelines run each branch inside `transformer.cache_context("cond" | "uncond", step_index=i)`), so
  every capture knows its step and branch, and the timestep of each captured call is recorded;
- on each captured block: hooks on the attention's `norm_q` / `norm_k` that keep a reference to the
  query and key the block computed anyway, and a hook on the attention module that takes RoPE's
  angles on the way in and, on the way out, computes the maps of `numina.capture.reductions` and
  hands them to the sink (the HDF5 writer's background thread, or memory). The cross-attention
  reductions (a few small kernels) run in the hook itself. The self-attention reductions run there
  too on a CPU; on CUDA devices, by default, in a `numina.capture.background.SideStreamWorker`,
  beside the model's later blocks, and that worker then writes everything to the sink.

Nothing the model computes is replaced or modified: hooks only read inputs and outputs and return them
untouched, so capturing never changes the output (tested to the bit). Outside the captured steps and
branches the hooks return at once. Every hook checks, before it goes on, that the transformer runs
the way it reads it (`numina.compat.check_transformer`). May import diffusers, torch and
numina.capture/compat/metrics/models.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from numina.capture import reductions
from numina.capture.background import SideStreamWorker
from numina.capture.names import (
    CROSS_PROBS,
    CROSS_PROMPT_MASS,
    CROSS_STATS,
    CROSS_TEXT_MASS,
    SELF_COMPONENTS,
    SELF_MAPS,
    SELF_SCORE_COMPONENTS,
    SELF_SCORES,
    SELF_SINGULAR_VALUES,
    TIMESTEP,
)
from numina.capture.sinks import Sink, start_sink
from numina.capture.spec import CaptureSpec, cross_attention_point, self_attention_point
from numina.compat import DenoisingContext, check_transformer
from numina.models.geometry import Geometry

HOOK_PREFIX = "numina.capture"


class CallState:
    """What one feature's hooks share during a transformer call: whether the call is theirs (`active`)
    and the tensors a block computes anyway, kept for a hook further on in that block (`tensors`)."""

    def __init__(self) -> None:
        self.active = False
        self.tensors: dict[str, torch.Tensor] = {}

    def end(self) -> None:
        """The call is over (or was cut short): nothing active, nothing kept."""
        self.active = False
        self.tensors.clear()


class _CaptureCall(CallState):
    """A capture's call state: also where the denoising loop is and whether the padding is uniform."""

    def __init__(self) -> None:
        super().__init__()
        self.uniform_padding = False
        self.step: int | None = None
        self.branch: str | None = None


class _StepContextHook(ModelHook):
    """On the transformer: per call, whether this step and branch are captured, and the timestep."""

    _is_stateful = True  # reset by diffusers when a pipeline call ends

    def __init__(self, capture: AttentionCapture, context: DenoisingContext) -> None:
        super().__init__()
        self.capture, self.context = capture, context
        self.state, self.spec, self.sink = capture.state, capture.spec, capture.sink

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        state = self.state
        state.step, state.branch = self.context.where("Attention capture")
        state.active = self.spec.captures(state.step, state.branch)
        state.tensors.clear()
        if state.active and self.spec.cross_attention is not None:
            # One host sync per captured forward (not per head or layer): decides the exact shortcut of
            # reductions.cross_attention_probabilities for zero-padded prompts.
            context = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            prompt_length = self.spec.cross_attention.prompt_length
            state.uniform_padding = bool(
                reductions.padding_is_uniform(context[self.spec.batch_index], prompt_length)
            )
        if state.active:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            worker = self.capture.worker_on(hidden.device)
            timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
            if timestep is not None:
                # (batch,) or, with expanded timesteps (Wan2.2), (batch, tokens): the video's first token
                value = timestep.reshape(timestep.shape[0], -1)[self.spec.batch_index, 0].float()
                write = functools.partial(
                    self.sink.write, TIMESTEP, {"step": state.step, "branch": state.branch}, value
                )
                if worker is None:
                    write()
                else:  # the worker is the sink's only writer
                    worker.submit(write, [value])
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        try:
            if self.capture.worker is not None and self.state.active:
                self.capture.worker.wait()  # the call's captures are in the sink when the call returns
        finally:
            self.state.end()
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.end()
        return module


class HookSet:
    """Hooks registered under one name prefix and removed together, leaving the model as before; the
    shared `DenoisingContext` they read is released with them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.installed: list[tuple[torch.nn.Module, str]] = []
        self.contexts: list[tuple[torch.nn.Module, DenoisingContext]] = []

    def __bool__(self) -> bool:
        return bool(self.installed)

    def register(self, module: torch.nn.Module, name: str, hook: ModelHook) -> None:
        full_name = f"{self.prefix}.{name}"
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, full_name)
        self.installed.append((module, full_name))

    def context(self, transformer: torch.nn.Module) -> DenoisingContext:
        """The transformer's one `DenoisingContext` (step and branch of the call in flight)."""
        context = DenoisingContext.attach(transformer)
        self.contexts.append((transformer, context))
        return context

    def remove(self) -> None:
        for module, name in reversed(self.installed):
            HookRegistry.check_if_exists_or_initialize(module).remove_hook(name, recurse=False)
        self.installed.clear()
        for transformer, context in self.contexts:
            context.detach(transformer)
        self.contexts.clear()


class KeepOutputHook(ModelHook):
    """Keeps a reference to a module's output (one video of the batch) in `state.tensors[slot]` while
    `state.active`: the q, k (and v) a block computes anyway, for a hook further on in that block."""

    def __init__(self, state: CallState, slot: str, batch_index: int) -> None:
        super().__init__()
        self.state, self.slot, self.batch_index = state, slot, batch_index

    def post_forward(self, module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        if self.state.active:
            self.state.tensors[self.slot] = output[self.batch_index]
        return output


class _AttentionHook(ModelHook):
    """On `attn1` / `attn2`: keeps RoPE's angles on the way in, computes the reductions on the way out."""

    def __init__(self, capture: AttentionCapture, layer: int, kind: str) -> None:
        super().__init__()
        self.capture, self.layer, self.kind = capture, layer, kind
        self.q_slot, self.k_slot = f"{kind}.{layer}.q", f"{kind}.{layer}.k"

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        state = self.capture.state
        if state.active and self.kind == "self":
            state.tensors["rotary"] = kwargs.get("rotary_emb", args[3] if len(args) > 3 else None)
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        state = self.capture.state
        if state.active:
            query, key = state.tensors.pop(self.q_slot), state.tensors.pop(self.k_slot)
            capture, index = self.capture, self.capture._index(self.layer)
            if self.kind == "self":
                rotary = state.tensors["rotary"]
                record = functools.partial(
                    capture.record_self_attention, index, module.heads, query, key, rotary
                )
                tensors = [query, key, *rotary]
            else:
                # Reduced here even with a worker: a few small kernels, where handing the query to the
                # side stream would hold it (335 MB a block at the 14B shape) for as long as the side
                # stream lags behind the model; only the small results wait for the worker's write.
                with torch.no_grad():
                    writes = capture.cross_attention_writes(module.heads, query, key, state.uniform_padding)
                record = functools.partial(capture.write_all, index, writes)
                tensors = []
            worker = capture.worker
            if worker is None or query.device != worker.device:  # (a model split over devices)
                with torch.no_grad():
                    record()
            else:
                worker.submit(record, tensors)
        return output


class AttentionCapture:
    """Installs capture hooks on a WanTransformer3DModel for a resolved `CaptureSpec`.

    Use as a context manager around the pipeline call (the hooks are removed on exit):

        spec = CaptureSpec(...).resolved(geometry, num_steps)
        with AttentionCapture(pipeline.transformer, spec, geometry, sink):
            pipeline(prompt, ...)
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        spec: CaptureSpec,
        geometry: Geometry,
        sink: Sink,
        background: bool | None = None,
    ) -> None:
        """`background`: compute the self-attention reductions in a `SideStreamWorker` (a thread, and
        on CUDA a side stream), beside the model's later blocks instead of before them; the numbers are
        the same. The sink is then written from that thread only, and holds a call's captures when it
        returns. None (the default): in the background where the model runs on a CUDA device, in line
        elsewhere (on a CPU the worker would only compete for the same cores). On an H100 the captured
        step took x1.045-1.054 of a plain step in the background against x1.065-1.074 in line at the
        Wan2.1-1.3B shape (+0.1-0.5 GiB of peak memory), and x1.024-1.037 against x1.035 at 14B
        (+1.0-2.0 GiB, below the generation's own peak; benchmarks/RESULTS.md)."""
        if spec.steps is None or spec.heads is None:
            raise ValueError(
                "AttentionCapture needs a resolved spec: call spec.resolved(geometry, num_steps, device) "
                "(the model's device makes the default products explicit in what the sink records)."
            )
        self.transformer, self.spec, self.geometry, self.sink = transformer, spec, geometry, sink
        self.state = _CaptureCall()
        self.background = background
        self.worker: SideStreamWorker | None = None
        self._hooks = HookSet(HOOK_PREFIX)
        all_heads = tuple(spec.heads) == tuple(range(geometry.heads))
        self._head_index = None if all_heads else torch.tensor(spec.heads)
        self._token_index = (
            torch.tensor(spec.cross_attention.tokens) if spec.cross_attention is not None else None
        )

    def __enter__(self) -> AttentionCapture:
        self.install()
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        try:
            self.remove()
        except Exception:
            if exc_type is None:  # else the error in flight is the one to see
                raise

    def install(self) -> None:
        """Register the hooks (named `numina.capture.*`) on the transformer and the captured blocks."""
        if self._hooks:
            raise RuntimeError("This capture is already installed.")
        points = []
        if self.spec.self_attention:
            points += [
                (self_attention_point(layer), "self", layer) for layer in self.spec.self_attention.layers
            ]
        if self.spec.cross_attention:
            points += [
                (cross_attention_point(layer), "cross", layer) for layer in self.spec.cross_attention.layers
            ]
        attentions = {
            name: getattr(self.transformer.blocks[layer], "attn1" if kind == "self" else "attn2")
            for name, kind, layer in points
        }
        check_transformer(self.transformer, "Attention capture", list(attentions.items()))
        start_sink(self.sink)  # before any hook: a sink that cannot start leaves the model untouched
        context = self._hooks.context(self.transformer)
        self._hooks.register(self.transformer, "step", _StepContextHook(self, context))
        for name, kind, layer in points:
            attention = attentions[name]
            hook = _AttentionHook(self, layer, kind)
            self._hooks.register(
                attention.norm_q, f"{name}.q", KeepOutputHook(self.state, hook.q_slot, self.spec.batch_index)
            )
            self._hooks.register(
                attention.norm_k, f"{name}.k", KeepOutputHook(self.state, hook.k_slot, self.spec.batch_index)
            )
            self._hooks.register(attention, name, hook)

    def worker_on(self, device: torch.device) -> SideStreamWorker | None:
        """The background worker, started at the first captured call on the device the model runs on
        then (offloading hooks move a model only as it runs); None where reductions run in line."""
        wanted = self.background if self.background is not None else device.type == "cuda"
        if self.worker is None and wanted:
            self.worker = SideStreamWorker(device)
        return self.worker

    def remove(self) -> None:
        """Remove every hook this capture installed; the model is as before. Raises a background
        reduction's error that no call has raised yet."""
        worker, self.worker = self.worker, None
        try:
            if worker is not None:
                worker.close()
        finally:
            self._hooks.remove()

    def _index(self, layer: int) -> dict[str, Any]:
        return {"step": self.state.step, "branch": self.state.branch, "layer": layer}

    def _heads(self, device: torch.device) -> torch.Tensor | None:
        if self._head_index is not None and self._head_index.device != device:
            self._head_index = self._head_index.to(device)
        return self._head_index

    def record_self_attention(
        self, index: dict[str, Any], heads: int, query: torch.Tensor, key: torch.Tensor, rotary: Any
    ) -> None:
        """Frame-local self-attention of one block, reduced, written to the sink at `index`."""
        part, geometry = self.spec.self_attention, self.geometry
        head_index = self._heads(query.device)
        q = reductions.split_heads(query, heads, head_index)
        k = reductions.split_heads(key, heads, head_index)
        reduced = reductions.self_attention_reductions(
            q, k, geometry.frames, geometry.height, geometry.width, part, rotary=rotary
        )
        if part.maps:
            self.sink.write(SELF_MAPS, index, reduced["maps"])
        # float32: the layout clusters these values, and they are small (heads x frames x tpf x k)
        self.sink.write(SELF_COMPONENTS, index, reduced["components"].float())
        self.sink.write(SELF_SINGULAR_VALUES, index, reduced["singular_values"])
        if "scores" in reduced:
            self.sink.write(SELF_SCORES, index, reduced["scores"])
        if "score_components" in reduced:
            self.sink.write(SELF_SCORE_COMPONENTS, index, reduced["score_components"])

    def cross_attention_writes(
        self, heads: int, query: torch.Tensor, key: torch.Tensor, uniform_padding: bool
    ) -> list[tuple[str, torch.Tensor]]:
        """Cross-attention probabilities of one block at the chosen tokens, reduced, as the (dataset,
        tensor) pairs to write; `uniform_padding` as `reductions.cross_attention_probabilities` takes it."""
        part, geometry = self.spec.cross_attention, self.geometry
        head_index = self._heads(query.device)
        if self._token_index.device != query.device:
            self._token_index = self._token_index.to(query.device)
        q = reductions.split_heads(query, heads, head_index)
        k = reductions.split_heads(key, heads, head_index)
        probs, text_mass = reductions.cross_attention_probabilities(
            q, k, self._token_index, part.prompt_length, uniform_padding
        )
        reduced = reductions.reduce_cross_attention(
            probs, text_mass, geometry.frames, geometry.height, geometry.width, part.stats
        )
        writes = [(CROSS_TEXT_MASS, reduced["text_mass"])]
        if part.maps:
            writes.append((CROSS_PROBS, reduced["probs"].to(torch.float16)))
            writes.append((CROSS_PROMPT_MASS, reduced["prompt_mass"].to(torch.float16)))
        if part.stats:
            writes.append((CROSS_STATS, reduced["stats"]))
        return writes

    def write_all(self, index: dict[str, Any], writes: list[tuple[str, torch.Tensor]]) -> None:
        """Write each (dataset, tensor) pair to the sink at `index`."""
        for name, data in writes:
            self.sink.write(name, index, data)
