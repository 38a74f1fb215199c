"""Cross-attention modulation: the guided run's pull toward the corrected layout (METHOD.md, step 8).

At every denoising step t with delta(t) > 0.25, in the cross-attention of every block, conditional
branch only, a pre-softmax bias is added to the scaled logits q.k/sqrt(d) of the noun's token columns
at the query positions of each latent frame, the same for every head:

    removed positions (label -1)                           += -10 delta(t)
    added positions (label >= 100), frame has no instance  += +0.8 delta(t)
    added positions, frame has an instance (reference)      = delta(t) m_ref - mean_heads(logit)

with m_ref the mean scaled logit from the frame's smallest detected instance (labels 1..99, fewest
positions, ties to the lower label) to the noun's tokens, over heads, positions and tokens, computed
in each block from that block's own q and k; delta(t) = 0.25 (4 - 3 tanh(t - c)), c = 25 (the
release, for 50 steps) or 25 * steps / 50 (`follow_steps`). A plan's `scale` (1 in the release)
multiplies delta(t) in the bias, not in the gate, so a stronger or weaker pull is on at the same steps.

How: everything the bias needs is turned into index tensors on the device once per run
(`ModulationPlan.to`). Hooks keep the block's q, k, v (outputs of `norm_q`, `norm_k`, `to_v`); a hook
on the output projection `to_out[0]` recomputes only the touched query rows, densely over the 512
text positions with the bias, and writes them over the fast kernel's output. No L x 512 tensor is
built, nothing leaves the device, and untouched rows are the model's own output: with nothing to
modulate the output is unchanged to the bit. May import numpy, torch, diffusers hooks,
numina.capture, numina.checks, numina.compat and the layout labels (numina.method.layout and
numina.method.correct).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.hooks import ModelHook

from numina.capture.hooks import CallState, HookSet, KeepOutputHook
from numina.capture.spec import cross_attention_point
from numina.checks import check_real
from numina.compat import DenoisingContext, check_transformer
from numina.method.correct import smallest_instance
from numina.method.layout import ADDED_BASE, BACKGROUND, REMOVED

RELEASE_CENTRE, RELEASE_STEPS = 25.0, 50
GATE = 0.25
REMOVED_BIAS, DISC_BIAS = -10.0, 0.8
HOOK_PREFIX = "numina.modulate"


def schedule_centre(num_steps: int, follow_steps: bool = False) -> float:
    """The tanh schedule's centre: the release's constant 25, or 25 scaled to `num_steps` of 50."""
    return RELEASE_CENTRE * num_steps / RELEASE_STEPS if follow_steps else RELEASE_CENTRE


def delta(step: float, centre: float = RELEASE_CENTRE) -> float:
    """delta(t) = 0.25 (4 - 3 tanh(t - centre)), in float64: 1.75 early, 1.0 at the centre, 0.25 late."""
    return 0.25 * (4.0 - 3.0 * math.tanh(step - centre))


def is_active(step: float, centre: float = RELEASE_CENTRE) -> bool:
    """Whether step `step` is modulated: delta(t) > 0.25 (steps 0-44 of 50 with the release's centre)."""
    return delta(step, centre) > GATE


def reference_instance(labels: np.ndarray) -> int | None:
    """The frame's reference: its smallest detected instance (labels 1..99; added ones do not count),
    ties to the lower label, or None."""
    return smallest_instance(np.where(labels < ADDED_BASE, labels, BACKGROUND))


@dataclass(frozen=True)
class NounModulation:
    """What one noun's bias touches: its token columns and, per kind, flat query rows with their frame."""

    noun: str
    columns: tuple[int, ...]
    removed: np.ndarray  # (n,) flat query rows labelled -1
    disc: np.ndarray  # (n,) added rows in frames without a detected instance
    added: np.ndarray  # (n,) added rows in frames with a reference instance
    added_frame: np.ndarray  # (n,) the frame of each `added` row
    reference: np.ndarray  # (n,) rows of the reference instances of the frames that have added rows
    reference_frame: np.ndarray

    @classmethod
    def from_labels(cls, noun: str, labels: np.ndarray, columns: Sequence[int]) -> NounModulation:
        """From the corrected layout of one noun, (frames, H, W) with METHOD.md's labels."""
        labels = np.asarray(labels)
        frames, height, width = labels.shape
        tokens_per_frame = height * width
        removed, disc, added, added_frame, reference, reference_frame = [], [], [], [], [], []
        for frame in range(frames):
            flat = labels[frame].reshape(-1)
            offset = frame * tokens_per_frame
            removed.append(offset + np.flatnonzero(flat == REMOVED))
            new = offset + np.flatnonzero(flat >= ADDED_BASE)
            if len(new) == 0:
                continue
            instance = reference_instance(labels[frame])
            if instance is None:
                disc.append(new)
                continue
            added.append(new)
            added_frame.append(np.full(len(new), frame))
            rows = offset + np.flatnonzero(flat == instance)
            reference.append(rows)
            reference_frame.append(np.full(len(rows), frame))

        def join(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

        return cls(
            noun,
            tuple(int(c) for c in columns),
            join(removed),
            join(disc),
            join(added),
            join(added_frame),
            join(reference),
            join(reference_frame),
        )

    @property
    def touched(self) -> np.ndarray:
        return np.concatenate([self.removed, self.disc, self.added])


@dataclass(frozen=True)
class ModulationPlan:
    """Every noun's modulation for one run, on the host; `to(device)` makes the device index tensors."""

    nouns: tuple[NounModulation, ...]
    frames: int
    centre: float = RELEASE_CENTRE
    scale: float = 1.0  # the bias's strength is scale * delta(t); the gate stays delta(t) > 0.25

    def __post_init__(self) -> None:
        check_real("scale", self.scale, 0, low_open=True)  # a NaN here would bias every touched row to NaN

    @classmethod
    def from_layout(
        cls,
        labels: Mapping[str, np.ndarray],
        columns: Mapping[str, Sequence[int]],
        centre: float = RELEASE_CENTRE,
        scale: float = 1.0,
    ) -> ModulationPlan:
        """`labels[noun]` (frames, H, W) corrected layout; `columns[noun]` its modulated token positions."""
        missing = sorted(set(labels) - set(columns))
        if missing:
            raise KeyError(f"no token columns given for noun(s) {missing}")
        nouns = tuple(NounModulation.from_labels(noun, labels[noun], columns[noun]) for noun in labels)
        frames = {np.asarray(label).shape[0] for label in labels.values()}
        if len(frames) > 1:
            raise ValueError(f"the nouns' layouts have different frame counts: {sorted(frames)}")
        return cls(nouns, frames.pop() if frames else 0, centre, scale)

    @property
    def empty(self) -> bool:
        """Nothing to modulate: no removed or added position for any noun."""
        return all(len(noun.touched) == 0 for noun in self.nouns)

    def to(self, device: torch.device | str) -> DevicePlan:
        return DevicePlan(self, torch.device(device))


class DevicePlan:
    """The plan's index tensors on the device, built once: rows to recompute and where each bias goes."""

    def __init__(self, plan: ModulationPlan, device: torch.device) -> None:
        self.plan, self.device = plan, device
        touched = [noun.touched for noun in plan.nouns]
        rows = np.unique(np.concatenate(touched)) if touched else np.zeros(0, dtype=np.int64)
        self.rows = torch.as_tensor(rows, device=device)

        def local(values: np.ndarray) -> torch.Tensor:  # positions of flat rows within `rows`
            return torch.as_tensor(np.searchsorted(rows, values), device=device)

        def tensor(values: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.int64), device=device)

        self.nouns = []
        for noun in plan.nouns:
            counts = np.bincount(noun.reference_frame, minlength=plan.frames).astype(np.float32)
            self.nouns.append(
                {
                    "columns": tensor(noun.columns),
                    "removed": local(noun.removed),
                    "disc": local(noun.disc),
                    "added": local(noun.added),
                    "added_frame": tensor(noun.added_frame),
                    "reference": tensor(noun.reference),
                    "reference_frame": tensor(noun.reference_frame),
                    "reference_count": torch.as_tensor(np.maximum(counts, 1.0), device=device),
                    "has_reference": len(noun.reference) > 0,
                }
            )

    def modulated_rows(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        strength: float,
        uniform_from: int | None = None,
    ) -> torch.Tensor:
        """The attention output of the touched rows with the bias: (rows, heads * head_dim).

        query (L, h, d), key and value (T, h, d) of one video in one block; computed in float32.
        `uniform_from`: text positions from there on hold one key and value (the zero padding), so the
        softmax needs only the prompt's positions and one padding position counted T - n times:
        the same result with (n + 1) instead of T columns.
        """
        text = key.shape[0]
        if uniform_from is not None and uniform_from < text:
            key, value = key[: uniform_from + 1], value[: uniform_from + 1]
        q = query.index_select(0, self.rows).transpose(0, 1).float()  # (h, R, d)
        k, v = key.transpose(0, 1).float(), value.transpose(0, 1).float()  # (h, T', d)
        scale = 1.0 / math.sqrt(q.shape[-1])
        logits = torch.matmul(q, k.transpose(1, 2)) * scale  # (h, R, T')
        if key.shape[0] < text:
            logits[..., -1] += math.log(text - uniform_from)  # the padding position's multiplicity
        bias = torch.zeros(logits.shape[1:], device=logits.device)  # (R, T), R = touched rows only
        for noun in self.nouns:
            columns = noun["columns"]
            for kind, weight in (("removed", REMOVED_BIAS), ("disc", DISC_BIAS)):
                rows = noun[kind]
                bias[rows.unsqueeze(1), columns.unsqueeze(0)] += weight * strength
            if noun["has_reference"]:
                reference_q = query.index_select(0, noun["reference"]).float()  # (n, h, d)
                reference_logits = torch.einsum(
                    "nhd,chd->nhc", reference_q, key.index_select(0, columns).float()
                )
                per_row = (reference_logits * scale).mean(dim=(1, 2))  # (n,)
                sums = torch.zeros(self.plan.frames, device=per_row.device).index_add_(
                    0, noun["reference_frame"], per_row
                )
                m_ref = sums / noun["reference_count"]  # (frames,)
                added = noun["added"]
                head_mean = logits[:, added.unsqueeze(1), columns.unsqueeze(0)].mean(dim=0)  # (n, C)
                target = strength * m_ref[noun["added_frame"]].unsqueeze(1)
                bias[added.unsqueeze(1), columns.unsqueeze(0)] = target - head_mean
        probs = torch.softmax(logits + bias, dim=-1)
        return torch.matmul(probs, v).transpose(0, 1).flatten(1)  # (R, h*d)


class _ModulatedCall(CallState):
    """The modulation's call state: also delta(t), the strength of this call's bias (None: not modulated)."""

    def __init__(self) -> None:
        super().__init__()
        self.strength: float | None = None

    def end(self) -> None:
        super().end()
        self.strength = None


class _StepHook(ModelHook):
    """On the transformer: decides per call whether to modulate (conditional branch, delta > 0.25) and
    how strongly (scale * delta)."""

    _is_stateful = True  # reset by diffusers when a pipeline call ends

    def __init__(self, state: _ModulatedCall, plan: ModulationPlan, context: DenoisingContext) -> None:
        super().__init__()
        self.state, self.plan, self.context = state, plan, context

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        step, branch = self.context.where("Cross-attention modulation")
        strength = delta(step, self.plan.centre)
        self.state.end()
        self.state.strength = self.plan.scale * strength if branch == "cond" and strength > GATE else None
        self.state.active = self.state.strength is not None
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.state.end()
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.end()
        return module


class _OutputHook(ModelHook):
    """On `to_out[0]`: replaces the touched rows of the attention output with the modulated ones."""

    def __init__(self, modulation: CrossAttentionModulation, layer: int, heads: int) -> None:
        super().__init__()
        self.modulation, self.layer, self.heads = modulation, layer, heads

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        state = self.modulation.state
        if state.strength is None:
            return args, kwargs
        q, k, v = (state.tensors.pop(f"{self.layer}.{name}") for name in ("q", "k", "v"))
        split = (self.heads, -1)
        with torch.no_grad():
            rows = self.modulation.device_plan.modulated_rows(
                q.unflatten(-1, split),
                k.unflatten(-1, split),
                v.unflatten(-1, split),
                state.strength,
                self.modulation.uniform_from(k, v),
            )
        hidden = args[0].clone()
        hidden[self.modulation.batch_index].index_copy_(
            0, self.modulation.device_plan.rows, rows.to(hidden.dtype)
        )
        return (hidden, *args[1:]), kwargs


class CrossAttentionModulation:
    """Installs the modulation hooks on a WanTransformer3DModel for one run (a context manager).

        plan = ModulationPlan.from_layout(corrected_labels, token_columns, centre=25.0)
        with CrossAttentionModulation(pipeline.transformer, plan, prompt_length=tokens.n_tokens):
            pipeline(prompt, ...)   # same seed and noise as the walk-through

    An empty plan installs nothing, so the run is exactly the unmodulated one.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        plan: ModulationPlan,
        batch_index: int = 0,
        prompt_length: int | None = None,
    ) -> None:
        self.transformer, self.plan, self.batch_index = transformer, plan, batch_index
        self.prompt_length = prompt_length
        self.state = _ModulatedCall()
        self.device_plan: DevicePlan | None = None
        self._uniform: bool | None = None
        self._hooks = HookSet(HOOK_PREFIX)

    def uniform_from(self, key: torch.Tensor, value: torch.Tensor) -> int | None:
        """`prompt_length` when the text keys and values from there on are all equal (zero padding).

        Checked once, on the first modulated call (one host sync per run): the conditional branch's
        text embedding is the same at every step, and keys and values are per-position projections.
        """
        n = self.prompt_length
        if n is None or n >= key.shape[0]:
            return None
        if self._uniform is None:
            self._uniform = bool((key[n:] == key[n : n + 1]).all() and (value[n:] == value[n : n + 1]).all())
        return n if self._uniform else None

    def __enter__(self) -> CrossAttentionModulation:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def install(self) -> None:
        if self._hooks:
            raise RuntimeError("This modulation is already installed.")
        if self.plan.empty:
            return
        attentions = [
            (cross_attention_point(layer), block.attn2) for layer, block in enumerate(self.transformer.blocks)
        ]
        check_transformer(
            self.transformer, "Cross-attention modulation", attentions, projections=True, text_only=True
        )
        device = next(self.transformer.parameters()).device
        if self.device_plan is None or self.device_plan.rows.device != device:
            self.device_plan = self.plan.to(device)  # built once, however often the hooks go on
        context = self._hooks.context(self.transformer)
        self._hooks.register(self.transformer, "step", _StepHook(self.state, self.plan, context))
        for layer, (name, attention) in enumerate(attentions):
            for slot, module in (("q", attention.norm_q), ("k", attention.norm_k), ("v", attention.to_v)):
                self._hooks.register(
                    module, f"{name}.{slot}", KeepOutputHook(self.state, f"{layer}.{slot}", self.batch_index)
                )
            self._hooks.register(
                attention.to_out[0], f"{name}.out", _OutputHook(self, layer, attention.heads)
            )

    def remove(self) -> None:
        self._hooks.remove()
