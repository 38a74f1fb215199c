"""Step caching: skip transformer work whose output barely changes (METHOD.md step 9).

Two caches, chosen by `NuminaOptions.cache_method` (`CACHE_METHODS`), run on the same steps: from
`first` (10 in the walk-through; in the guided run the step where modulation ends), never on the
steps in `always` (the reference step) nor on the last step.

`easycache` (`StepCache`, the project's hook, EasyCache's rule): a skipped step returns its input
plus the output-minus-input of the last computed step of the same guidance branch. Whether to skip
is decided once per step, on the conditional call, and applied to both branches:

    k     = |v_a - v_b| / |x_a - x_b|        transformation rate over the last two computed steps
                                             (v: the transformer's output, x: its input latents)
    e_t   = k |x_t - x_a| / |v_a|            estimated relative change of the output at step t
    E    += e_t; skip while E < tau (0.05); else compute and reset E to 0

Steps before two have been computed are computed too. One host sync per step where the rule decides
(reading the accumulated change), none on the steps it never considers.

`first_block` (`FirstBlockStepCache`): diffusers' own FirstBlockCache (`FirstBlockCacheConfig`,
through `transformer.enable_cache`). Every call runs the first block; when the change of that
block's residual since the last fully computed call of the same branch (mean absolute difference
over mean absolute value) is at most the threshold, the other blocks are skipped and their cached
residual is added. It cannot be told to compute a given step, so it is enabled only while the
denoising loop is on a step it may skip and disabled otherwise (`step_end`, the pipeline's step-end
callback, switches it between steps): skipped blocks never run, so a capture or a modulation on a
step outside that range sees the model's full computation. Each time it is enabled it starts from
nothing, so its first step there is computed. One host sync per call on the steps it may skip.

Both yield an object with `skipped` (steps that reused a cached output) and `step_end` (the
pipeline's `callback_on_step_end`). diffusers does not report what FirstBlockCache skipped, so under
`first_block` it is observed: a hook inside the cache's hook on the last block runs only when that
block is computed, and a step is recorded when either guidance branch ran without it (which branch,
and the first block's measured change, are not recorded). May import torch, diffusers hooks,
numina.capture.hooks and numina.compat.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from diffusers.hooks import FirstBlockCacheConfig, ModelHook

from numina.capture.hooks import HookSet
from numina.compat import DenoisingContext, check_transformer, original_forward

HOOK_PREFIX = "numina.step_cache"
TAU, WARMUP = 0.05, 10
CACHE_METHODS = ("easycache", "first_block")


def cacheable_steps(num_steps: int, first: int, always: Iterable[int] = ()) -> set[int]:
    """The steps a cache may skip: from `first` on, except `always` and the last step."""
    return set(range(first, num_steps - 1)) - set(always)


class StepCacheHook(ModelHook):
    """On the transformer: computes or reuses each denoising step's output under EasyCache's rule."""

    _is_stateful = True  # reset by diffusers when a pipeline call ends

    def __init__(
        self, num_steps: int, first: int = WARMUP, always: Iterable[int] = (), tau: float = TAU
    ) -> None:
        super().__init__()
        self.context: DenoisingContext | None = None  # set when installed
        self.tau = tau
        self.cacheable = cacheable_steps(num_steps, first, always)
        # The record of what was skipped outlives `reset`: diffusers resets stateful hooks when a
        # pipeline call ends, before the caller reads it.
        self.skipped: list[int] = []
        self.reset()

    def reset(self) -> None:
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []  # conditional (input, output) computed
        self.delta: dict[str, torch.Tensor] = {}  # per branch: output - input of its last computed step
        self.accumulated = 0.0
        self.skip: dict[int, bool] = {}

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.reset()
        return module

    def _decide(self, step: int, latents: torch.Tensor) -> bool:
        if step not in self.cacheable or len(self.history) < 2:
            return False
        (x_a, v_a), (x_b, v_b) = self.history[-1], self.history[-2]
        rate = (v_a - v_b).float().norm() / (x_a - x_b).float().norm().clamp_min(1e-12)
        change = rate * (latents - x_a).float().norm() / v_a.float().norm().clamp_min(1e-12)
        accumulated = self.accumulated + float(change)  # the one host sync of a cacheable step
        if accumulated < self.tau:
            self.accumulated = accumulated
            return True
        self.accumulated = 0.0
        return False

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        step, branch = self.context.where("Step caching")
        latents = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if branch == "cond" and step not in self.skip:
            self.skip[step] = self._decide(step, latents)
            if self.skip[step]:
                self.skipped.append(step)
        if self.skip.get(step, False) and branch in self.delta:
            sample = latents + self.delta[branch]
            return (sample,) if not kwargs.get("return_dict", True) else self._wrap(sample)
        output = original_forward(self, *args, **kwargs)
        sample = output[0] if isinstance(output, tuple) else output.sample
        self.delta[branch] = (sample - latents).detach()
        if branch == "cond":
            self.history = [*self.history[-1:], (latents.detach(), sample.detach())]
        return output

    def step_end(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        """Nothing to switch between steps: this hook decides on every call."""
        return {}

    @staticmethod
    def _wrap(sample: torch.Tensor) -> Any:
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=sample)


class StepCache:
    """Installs a `StepCacheHook` on a transformer for one pipeline call (a context manager)."""

    def __init__(self, transformer: torch.nn.Module, num_steps: int, **rule: Any) -> None:
        self.transformer = transformer
        self.hook = StepCacheHook(num_steps, **rule)
        self._hooks = HookSet(HOOK_PREFIX)

    def __enter__(self) -> StepCacheHook:
        check_transformer(self.transformer, "Step caching", [])
        self.hook.context = self._hooks.context(self.transformer)
        self._hooks.register(self.transformer, "step", self.hook)
        return self.hook

    def __exit__(self, *exc: object) -> None:
        self._hooks.remove()


class _LastBlockRan(ModelHook):
    """On the last block, inside FirstBlockCache's hook: it runs only when that block is computed."""

    def __init__(self, record: _SkipRecord) -> None:
        super().__init__()
        self.record = record

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        self.record.ran = True
        return args, kwargs


class _SkipRecord(ModelHook):
    """On the transformer: adds the step to `skipped` when a call ended without its last block running."""

    def __init__(self, skipped: list[int], context: DenoisingContext) -> None:
        super().__init__()
        self.skipped, self.context, self.step, self.ran = skipped, context, 0, True

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        self.step, _ = self.context.where("FirstBlockCache's record of skipped steps")
        self.ran = False
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        if not self.ran and self.step not in self.skipped:
            self.skipped.append(self.step)
        return output


class FirstBlockStepCache:
    """diffusers' FirstBlockCache on the transformer, enabled only on the steps it may skip, for one
    pipeline call (a context manager; pass `step_end` as the pipeline's `callback_on_step_end`)."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        num_steps: int,
        first: int = WARMUP,
        always: Iterable[int] = (),
        threshold: float = TAU,
    ) -> None:
        self.transformer, self.threshold = transformer, threshold
        self.cacheable = cacheable_steps(num_steps, first, always)
        self.skipped: list[int] = []
        self._hooks = HookSet(HOOK_PREFIX)

    def __enter__(self) -> FirstBlockStepCache:
        if self.transformer.is_cache_enabled:
            raise RuntimeError(
                "The transformer already has a diffusers cache enabled; call `transformer.disable_cache()` "
                "before a NUMINA run with cache_method='first_block'."
            )
        check_transformer(self.transformer, "Step caching", [])
        record = _SkipRecord(self.skipped, self._hooks.context(self.transformer))
        # Registered before the cache, so the cache's hook on the last block wraps this one.
        self._hooks.register(self.transformer.blocks[-1], "last_block_ran", _LastBlockRan(record))
        self._hooks.register(self.transformer, "skip_record", record)
        self._switch(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.transformer.is_cache_enabled:
            self.transformer.disable_cache()
        self._hooks.remove()

    def step_end(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's step-end callback: the cache on for the next step if it may be skipped, else off."""
        self._switch(index + 1)
        return {}

    def _switch(self, step: int) -> None:
        if step in self.cacheable and not self.transformer.is_cache_enabled:
            self.transformer.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
        elif step not in self.cacheable and self.transformer.is_cache_enabled:
            self.transformer.disable_cache()
