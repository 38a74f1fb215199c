"""The names of what a capture writes: one constant per dataset, used to declare, write and read it.

A dataset is `<group>/<quantity>`; its layer is a dimension (`.sel(layer=15)`), and the capture
point it comes from is named as in `CaptureSpec.points()` (`blocks.15.attn2`). Store files of every
version use these names. May import only the standard library.
"""

from __future__ import annotations

TIMESTEP = "capture/timestep"  # the sampler's timestep of each captured (step, branch)

SELF_MAPS = "self_attention/maps"  # full frame-local maps (small models only)
SELF_COMPONENTS = "self_attention/components"  # top principal component scores of each map
SELF_SINGULAR_VALUES = "self_attention/singular_values"
SELF_SCORES = "self_attention/scores"  # S1, S2, S3, S per head and frame
SELF_SCORE_COMPONENTS = "self_attention/score_components"  # the release estimator's own components

CROSS_PROBS = "cross_attention/probs"  # chosen text positions' maps per head and frame
CROSS_TEXT_MASS = "cross_attention/text_mass"  # probability mass on the prompt and on the padding
CROSS_PROMPT_MASS = "cross_attention/prompt_mass"  # per query: mass on the prompt
CROSS_STATS = "cross_attention/stats"  # concentration statistics per token
