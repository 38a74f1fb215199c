"""The walk-through's own schedule: phase 1 may run fewer steps, or no classifier-free guidance, than
the final video, as long as it stops at the noise level of the final run's reference step.

The walk-through is most of NUMINA's cost (21 of 50 guided steps in the release) and only its
reference step is read. On the release's samplers (flow-matching sigmas spaced evenly before the shift)
step r of S and step r * N / S of N sit at the same noise level whenever that index is whole, so a
walk-through of N < S steps reaches the reference level after r * N / S + 1 transformer calls instead
of r + 1; `check_same_noise_level` confirms it on the pipeline's own scheduler before any work. May
import numina.capture.spec, numina.method.presets (for types) and numina.sampling.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from numina.capture.spec import release_reference_step
from numina.sampling import GenerationSettings

if TYPE_CHECKING:
    from numina.method.presets import NuminaOptions

# Timesteps of two schedules at the same noise level agree to float32 rounding of a value <= 1000.
TIMESTEP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class WalkthroughSchedule:
    """The walk-through's sampler call and its step at the final run's reference noise level."""

    settings: GenerationSettings  # the walk-through's sampler call (steps, guidance)
    reference_step: int  # the walk-through's step read by phase 1
    final_reference_step: int  # the final run's step at the same noise level

    def is_final_run(self, final: GenerationSettings) -> bool:
        """The walk-through is the final run's own beginning, so it can go on to be the video
        (early accept); a shorter or unguided walk-through cannot."""
        return self.settings == final


def reference_step_of(num_steps: int, reference_step: int | None = None) -> int:
    """The step of a `num_steps` run that phase 1 reads: `reference_step`, else the release's step 20
    of 50 (the same fraction of other step counts)."""
    return release_reference_step(num_steps) if reference_step is None else reference_step


def walkthrough_schedule(
    settings: GenerationSettings,
    reference_step: int | None = None,
    walkthrough_steps: int | None = None,
    walkthrough_guidance: float | None = None,
) -> WalkthroughSchedule:
    """The walk-through for a final run `settings`: `reference_step` of the final run (None: the
    release's step 20 of 50), `walkthrough_steps` (None: the final run's) and `walkthrough_guidance`
    (None: the final run's; 1 switches classifier-free guidance off and halves each step's cost)."""
    final_step = reference_step_of(settings.steps, reference_step)
    if not 0 <= final_step < settings.steps:
        raise ValueError(
            f"reference_step={final_step} is not a step index of a {settings.steps}-step run "
            f"(0..{settings.steps - 1})"
        )
    steps = settings.steps if walkthrough_steps is None else walkthrough_steps
    if (final_step * steps) % settings.steps:
        unit = settings.steps // math.gcd(final_step, settings.steps)
        raise ValueError(
            f"walkthrough_steps={steps} has no step at the noise level of step {final_step} of "
            f"{settings.steps} (the reference): step {final_step * steps / settings.steps:g} would be. "
            f"Choose a multiple of {unit}, e.g. {unit}, or another reference_step."
        )
    guidance = settings.guidance if walkthrough_guidance is None else walkthrough_guidance
    own = replace(settings, steps=steps, guidance=guidance)
    return WalkthroughSchedule(own, final_step * steps // settings.steps, final_step)


def transformer_calls(settings: GenerationSettings, steps: int | None = None) -> int:
    """Transformer calls of `steps` denoising steps (all of the run's when None) of a run with
    `settings`: two per step with classifier-free guidance (guidance > 1, as diffusers decides), else one."""
    return (settings.steps if steps is None else steps) * (2 if settings.guidance > 1 else 1)


def options_schedule(settings: GenerationSettings, options: NuminaOptions) -> WalkthroughSchedule:
    """The walk-through's schedule under NUMINA `options` for a final run `settings`."""
    return walkthrough_schedule(
        settings, options.reference_step, options.walkthrough_steps, options.walkthrough_guidance
    )


def check_same_noise_level(scheduler: Any, schedule: WalkthroughSchedule, final: GenerationSettings) -> None:
    """Refuse a walk-through whose reference step is not at the final run's reference noise level on
    this scheduler (one whose sigmas are not evenly spaced before the shift), before any work."""
    if schedule.settings.steps == final.steps:
        return
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(final.steps)
    wanted = float(probe.timesteps[schedule.final_reference_step])
    probe.set_timesteps(schedule.settings.steps)
    reached = float(probe.timesteps[schedule.reference_step])
    if abs(reached - wanted) > TIMESTEP_TOLERANCE:
        raise ValueError(
            f"{type(scheduler).__name__}'s step {schedule.reference_step} of {schedule.settings.steps} is "
            f"at timestep {reached:.4f}, not at {wanted:.4f} (step {schedule.final_reference_step} of "
            f"{final.steps}): this scheduler does not space its steps evenly, so a shorter walk-through "
            "would read another noise level. Leave walkthrough_steps unset."
        )
