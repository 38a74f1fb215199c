"""NUMINA's settings as one frozen record, and the named presets.

`official` reproduces the public release (METHOD.md); `paper` changes what the paper text describes
differently (per-noun cross-attention head by concentration); `improved` switches on this project's
improvements, each also a separate option. The default stays `official` until a measurement says an
improvement is better. May import numina.capture.spec, numina.checks, numina.method (identify, layout,
correct, cache) and numina.metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from numina.capture.spec import ESTIMATORS
from numina.checks import check_int, check_optional_int, check_real, check_reals, record_fields
from numina.method.cache import CACHE_METHODS, TAU
from numina.method.correct import DEFAULT_WEIGHTS as COST_WEIGHTS
from numina.method.identify import CROSS_HEADS, HEAD_RULES
from numina.method.layout import LayoutOptions
from numina.metrics.concentration import STATS
from numina.metrics.separability import DEFAULT_WEIGHTS as SCORE_WEIGHTS

# The guided run's biased columns: the noun's, its phrase's, or every token of the prompt (a diagnostic)
MODULATED_TOKENS = ("noun", "phrase", "prompt")


@dataclass(frozen=True)
class NuminaOptions:
    """Every switch of the method; the defaults are the release's."""

    reference_step: int | None = None  # None: step 20 of 50, the same fraction of other step counts
    reference_layer: int | None = None  # None: block 15 (the middle block of smaller models)
    # The walk-through's own schedule (numina.method.schedule), read at the reference step's noise
    # level: None keeps the final run's steps / guidance (the release); fewer steps (a multiple that
    # has a step at that level, e.g. 10 of 50) or guidance 1 (no CFG) cost less. Early accept needs
    # the walk-through to be the final run's beginning; otherwise a right count is generated again.
    walkthrough_steps: int | None = None
    walkthrough_guidance: float | None = None
    head_rule: str = "per_frame"  # self-attention head: per_frame (release), per_video, per_layer, fixed
    fixed_head: int | None = None  # the head of the reference block under head_rule="fixed"
    # Low-rank components of the self-attention maps: release (the layout's by scikit-learn's
    # randomized_svd, the head scores' by seeded torch.svd_lowrank(q=3)) or converged (this project's
    # seeded converged estimator for both: S no longer depends on the draw)
    estimator: str = "release"
    score_variant: str = "official"  # S2 from block sums (official) or block means (normalised)
    score_weights: tuple[float, float, float] = SCORE_WEIGHTS  # S = w1 S1 + w2 S2 + w3 S3
    cross_heads: str = "mean"  # noun map: mean over heads (release), concentration (paper), peak
    concentration_measure: str = "entropy"  # for cross_heads="concentration"
    all_occurrences: bool = False  # every occurrence of a repeated noun (release: the first only)
    # Token columns the guided run biases: the noun's (release), its whole phrase from the numeral on
    # ("three red circles": the numeral and adjectives too), or every token of the prompt, EOS included
    # (a diagnostic: does the model read an object from tokens other than its phrase's?)
    modulated_tokens: str = "noun"
    # The bias's strength as a multiple of delta(t) (release: 1; the gate delta(t) > 0.25 is unchanged):
    # how hard the guided run must be pushed before the model's count follows the layout
    modulation_scale: float = 1.0
    follow_steps: bool = False  # delta(t) centred at 25 * steps / 50 (release: 25 whatever the steps)
    early_accept: bool = False  # right count after the walk-through: finish its own latent, no second run
    track_instances: bool = False  # one label per object over time; remove whole tracks (release: per frame)
    cache_walkthrough: bool = False  # EasyCache's step caching in the walk-through (from step 10)
    cache_guided: bool = False  # the same in the guided run, once modulation has ended
    cache_method: str = "easycache"  # easycache (this project's hook), first_block (diffusers')
    cache_threshold: float = TAU  # easycache: accumulated change (tau); first_block: the first block's change
    cost_weights: tuple[float, float, float] = COST_WEIGHTS  # C_o, C_c, C_t of a placement
    stride: int = 2  # placement search stride
    disc_radius: int = 5  # template for frames without an instance
    layout: LayoutOptions = field(default_factory=LayoutOptions)

    def __post_init__(self) -> None:
        choices = {
            "head_rule": HEAD_RULES,
            "estimator": ESTIMATORS,
            "score_variant": ("official", "normalised"),
            "cross_heads": CROSS_HEADS,
            "concentration_measure": STATS,
            "cache_method": CACHE_METHODS,
            "modulated_tokens": MODULATED_TOKENS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        if self.head_rule == "fixed" and self.fixed_head is None:
            raise ValueError("head_rule='fixed' needs fixed_head (a head index of the reference block)")
        for name in ("reference_step", "reference_layer", "fixed_head"):
            check_optional_int(name, getattr(self, name), 0)
        check_optional_int("walkthrough_steps", self.walkthrough_steps, 1)
        if self.walkthrough_guidance is not None:
            check_real("walkthrough_guidance", self.walkthrough_guidance, 0)
        check_reals("score_weights", self.score_weights, 3)
        check_reals("cost_weights", self.cost_weights, 3, low=0)
        check_real("cache_threshold", self.cache_threshold, 0)
        check_real("modulation_scale", self.modulation_scale, 0, low_open=True)
        check_int("stride", self.stride, 1)
        check_int("disc_radius", self.disc_radius, 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NuminaOptions:
        """The options `to_dict` wrote (e.g. a stored run's `numina_options` attribute, JSON lists and
        all). Every field must be there: a record from before a field existed is refused rather than
        read with today's default, which may not be what that run used."""
        record_fields(cls, values, "NUMINA options")
        values = dict(values)
        values["layout"] = LayoutOptions(**record_fields(LayoutOptions, values["layout"], "layout options"))
        for name in ("score_weights", "cost_weights"):
            values[name] = tuple(values[name])
        return cls(**values)


PRESETS: dict[str, NuminaOptions] = {
    "official": NuminaOptions(),
    "paper": NuminaOptions(cross_heads="concentration"),
    "improved": NuminaOptions(
        estimator="converged",
        score_variant="normalised",
        all_occurrences=True,
        follow_steps=True,
        early_accept=True,
        track_instances=True,
        cache_walkthrough=True,
        cache_guided=True,
    ),
}


def preset(name: str, **overrides: Any) -> NuminaOptions:
    """A named preset with some options changed, e.g. preset("official", early_accept=True)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    known = {f.name for f in fields(NuminaOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown NUMINA option(s) {unknown}; options are {sorted(known)}")
    return replace(PRESETS[name], **overrides)
