"""diffusers' and torch's internals the project relies on, in one place, and the check that they hold.

Capture, modulation and step caching read what diffusers does not publish as API: the denoising
loop's cache context (`transformer.cache_context("cond" | "uncond", step_index=i)` sets it only on
the `StateManager`s of stateful hooks), the forward a hook wraps (`fn_ref.original_forward`), and
which submodules `WanAttnProcessor` calls (`norm_q`, `norm_k`, `to_v`, `to_out[0]`, with RoPE's
angles as `rotary_emb`). They were read from diffusers `TESTED_DIFFUSERS`; `check_transformer`
refuses, before any hook goes on, another diffusers and a transformer whose attention does not run
that way, with a message that says what to do.

Three more private names live here: a pipeline's `_interrupt` flag (diffusers' documented way to end
its denoising loop from a step-end callback), torch's flash-attention kernel that returns the
log-sum-exp (`aten._scaled_dot_product_flash_attention`, the capture's exact softmax normaliser on a
GPU) and `torch._foreach_lerp_` (one fused update of many tensors, the EMA of the trainers).

`DenoisingContext` is the one hook that reads the cache context: a stateful hook on the transformer,
shared by every feature installed there (`attach` / `detach` count them), which answers "which step
and guidance branch is this call" for all of them.

May import diffusers, torch and the standard library.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

# The diffusers releases whose internals were read and tested: from the first to before the second.
TESTED_DIFFUSERS = ((0, 42), (0, 43))
CONTEXT_HOOK = "numina.denoising_context"


def diffusers_problem(installed: str | None = None) -> str | None:
    """Why the installed diffusers cannot carry the hooks, in words; None when it is a tested release."""
    installed = version("diffusers") if installed is None else installed
    match = re.match(r"(\d+)\.(\d+)", installed)
    release = (int(match[1]), int(match[2])) if match else None
    low, high = TESTED_DIFFUSERS
    if release is not None and low <= release < high:
        return None
    return (
        f"diffusers {installed} is installed, but the hooks read diffusers internals as they are in "
        f"{low[0]}.{low[1]}.x; install a tested release (pip install 'diffusers>={low[0]}.{low[1]},"
        f"<{high[0]}.{high[1]}'), as pyproject.toml asks"
    )


def check_transformer(
    transformer: torch.nn.Module,
    user: str,
    attentions: list[tuple[str, torch.nn.Module]],
    *,
    projections: bool = False,
    text_only: bool = False,
) -> None:
    """Refuse, before any hook goes on, what `user`'s hooks on `attentions` ((point name, module)
    pairs) would read wrongly: another diffusers, a transformer split over processes, an attention run
    by another processor; with `projections`, fused q/k/v projections (the hooks read `to_v`); with
    `text_only`, cross-attention that also attends to an image (image-to-video: its output reaches
    `to_out[0]` summed with the text attention's)."""
    problem = diffusers_problem()
    if problem is None and getattr(transformer, "_parallel_config", None) is not None:
        problem = (
            "the transformer runs split over processes (diffusers' context or tensor parallelism), so a "
            "hook sees one process's share of the tokens; run it on one device"
        )
    for name, attention in attentions:
        if problem is not None:
            break
        processor = getattr(attention, "processor", None)
        if type(processor).__name__ != "WanAttnProcessor":
            problem = (
                f"{name} runs {type(processor).__name__}, not diffusers' WanAttnProcessor, whose "
                "computation the hooks follow; call transformer.set_default_attn_processor() or "
                "remove the custom processor"
            )
        elif projections and getattr(attention, "fused_projections", False):
            problem = f"{name} has fused q/k/v projections; call transformer.unfuse_qkv()"
        elif text_only and getattr(attention, "add_k_proj", None) is not None:
            problem = (
                f"{name} also attends to an image (an image-to-video model); its text and image "
                "attention reach the output projection summed, which the modulation would overwrite. "
                "Use a text-to-video model"
            )
    if problem is not None:
        raise RuntimeError(f"{user} cannot run: {problem}.")


class _NoState(BaseState):
    """The empty per-context state of a hook that only reads diffusers' cache context."""

    def reset(self) -> None:
        pass


class DenoisingContext(ModelHook):
    """On the transformer, once: the step index and guidance branch of the call in flight.

    diffusers sets the pipeline's cache context on stateful hooks only; features read it here through
    `where`. `attach` registers it on the first use and `detach` removes it after the last.
    """

    _is_stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.context_manager = StateManager(_NoState)  # diffusers sets the cache context on it
        self.users = 0

    @classmethod
    def attach(cls, transformer: torch.nn.Module) -> DenoisingContext:
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        hook = registry.get_hook(CONTEXT_HOOK)
        if hook is None:
            hook = cls()
            registry.register_hook(hook, CONTEXT_HOOK)
        hook.users += 1
        return hook

    def detach(self, transformer: torch.nn.Module) -> None:
        self.users -= 1
        if self.users == 0:
            HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(CONTEXT_HOOK, recurse=False)

    def where(self, user: str) -> tuple[int, str]:
        """(step index, "cond" | "uncond") of the transformer call in flight; `user` names the caller in
        the error raised when the call carries no such context."""
        try:
            context = self.context_manager.context
        except ValueError:
            raise RuntimeError(
                f"{user} needs the denoising step and guidance branch. Call the transformer inside "
                "`transformer.cache_context('cond' or 'uncond', step_index=i)`, as diffusers' Wan pipelines "
                "do."
            ) from None
        if context.step_index is None or context.name not in ("cond", "uncond"):
            raise RuntimeError(
                f"Cache context {context.name!r} (step_index={context.step_index}) does not say the "
                f"branch ('cond'/'uncond') and step index {user} needs."
            )
        return context.step_index, context.name

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        return module


def original_forward(hook: ModelHook, *args: Any, **kwargs: Any) -> Any:
    """The forward that a hook replacing `new_forward` wraps (the module's own, or an inner hook's)."""
    return hook.fn_ref.original_forward(*args, **kwargs)


def interrupt(pipeline: Any) -> None:
    """End a diffusers pipeline's denoising loop after the current step (from a step-end callback)."""
    pipeline._interrupt = True


def flash_log_normaliser(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(batch, heads, L) log-sum-exp of q k^T / sqrt(d), from PyTorch's flash-attention kernel (CUDA,
    half precision), which never writes the L x T logits."""
    return torch.ops.aten._scaled_dot_product_flash_attention(query, key, key)[1]


def lerp_all_(tensors: list[torch.Tensor], ends: list[torch.Tensor], weight: float) -> None:
    """tensors[i] += weight * (ends[i] - tensors[i]) for every i, in one fused update."""
    torch._foreach_lerp_(tensors, ends, weight)
