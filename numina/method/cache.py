"""Step caching: skip transformer calls whose output barely changes (METHOD.md step 9, EasyCache's rule).

A skipped step returns its input plus the output-minus-input of the last computed step of the same
guidance branch. Whether to skip is decided once per step, on the conditional call, and applied to
both branches:

    k     = |v_a - v_b| / |x_a - x_b|        transformation rate over the last two computed steps
                                             (v: the transformer's output, x: its input latents)
    e_t   = k |x_t - x_a| / |v_a|            estimated relative change of the output at step t
    E    += e_t; skip while E < tau (0.05); else compute and reset E to 0

Steps before `first` (10 in the walk-through), the steps in `always` (the reference step) and the
last step are always computed, and so are steps before two have been computed. In the guided run
the same rule can run from the step where modulation ends. One host sync per step where the rule
decides (reading the accumulated change), none on the steps it never considers. May import torch,
diffusers hooks and numina.capture.hooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import StateManager

from numina.capture.hooks import HookSet, NoState, denoising_context

HOOK_PREFIX = "numina.step_cache"
TAU, WARMUP = 0.05, 10


class StepCacheHook(ModelHook):
    """On the transformer: computes or reuses each denoising step's output under EasyCache's rule."""

    _is_stateful = True

    def __init__(
        self, num_steps: int, first: int = WARMUP, always: Iterable[int] = (), tau: float = TAU
    ) -> None:
        super().__init__()
        self.context_manager = StateManager(NoState)
        self.first, self.tau = first, tau
        self.always = set(always) | {num_steps - 1}
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
        if step < self.first or step in self.always or len(self.history) < 2:
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
        step, branch = denoising_context(self.context_manager, "Step caching")
        latents = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if branch == "cond" and step not in self.skip:
            self.skip[step] = self._decide(step, latents)
            if self.skip[step]:
                self.skipped.append(step)
        if self.skip.get(step, False) and branch in self.delta:
            sample = latents + self.delta[branch]
            return (sample,) if not kwargs.get("return_dict", True) else self._wrap(sample)
        output = self.fn_ref.original_forward(*args, **kwargs)
        sample = output[0] if isinstance(output, tuple) else output.sample
        self.delta[branch] = (sample - latents).detach()
        if branch == "cond":
            self.history = [*self.history[-1:], (latents.detach(), sample.detach())]
        return output

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
        self._hooks.register(self.transformer, "step", self.hook)
        return self.hook

    def __exit__(self, *exc: object) -> None:
        self._hooks.remove()
