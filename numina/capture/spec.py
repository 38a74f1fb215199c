"""What to capture: steps, layers, heads, guidance branch, and which reductions of which maps.

A `CaptureSpec` is plain data (it round-trips through a dict into the run's config and the store), and
it names every capture point the way the model names its modules (`blocks.15.attn1` for the
self-attention of block 15, `blocks.15.attn2` for its cross-attention). It also declares the store
datasets a capture fills, with their named dimensions. May import numina.capture.names,
numina.models.geometry and numina.metrics (for the names of statistics, score terms and products).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

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
    parse_quantity,
)
from numina.metrics.concentration import STATS
from numina.metrics.lowrank import AUTO_PRODUCTS, PRODUCT_CHOICES, products_for
from numina.metrics.separability import TERMS
from numina.models.geometry import Geometry

BRANCHES = ("cond", "uncond")
TEXT_PARTS = ("prompt", "padding")
RELEASE_REFERENCE_STEP, RELEASE_STEPS, RELEASE_REFERENCE_LAYER = 20, 50, 15
ESTIMATORS = ("converged", "release")
SCORE_COMPONENTS = 3  # the release's head score reads three components


def self_attention_point(layer: int) -> str:
    return f"blocks.{layer}.attn1"


def cross_attention_point(layer: int) -> str:
    return f"blocks.{layer}.attn2"


@dataclass(frozen=True)
class SelfAttentionCapture:
    """Frame-local self-attention A = softmax(q_f k_f^T / sqrt(d)) per head and latent frame, reduced.

    Kept: the top `components` principal component scores of the column-centred A, their singular
    values, and S1/S2/S3/S (`score_variant`). `maps=True` also keeps every full tpf x tpf map (small
    models only). The `estimator` of the components (numina.metrics.lowrank):
    - "converged": this project's seeded randomised subspace iteration (`iterations`, `oversample`,
      `seed`, the maps multiplied as `products` says: numina.metrics.lowrank.PRODUCTS; "auto", the
      default, is float16 maps on CUDA and float32 products elsewhere, made explicit by
      `CaptureSpec.resolved` for the capture's device, see numina.metrics.lowrank.products_for), whose
      components serve both the scores and the layout;
    - "release": the release's two estimators: the layout's components as scikit-learn's
      `randomized_svd(random_state=seed)`, the scores from `torch.svd_lowrank(q=3)` seeded with
      `score_seed` (kept as `score_components`, since the layout's components did not make them).
    """

    layers: tuple[int, ...]
    components: int = 3
    iterations: int = 7
    oversample: int = 10
    products: str = AUTO_PRODUCTS
    seed: int = 0
    scores: bool = True
    score_variant: str = "official"
    maps: bool = False
    estimator: str = "converged"
    score_seed: int = 0

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} is not one of {list(ESTIMATORS)}")
        if self.products not in PRODUCT_CHOICES:
            raise ValueError(f"products {self.products!r} is not one of {list(PRODUCT_CHOICES)}")

    @property
    def keeps_score_components(self) -> bool:
        """Whether the scores came from components other than the stored ones (kept beside them)."""
        return self.scores and self.estimator == "release"


def self_attention_defaults(device: Any) -> dict[str, Any]:
    """Every default of `SelfAttentionCapture` (its estimator's iterations, oversampling, products...)
    as it acts on `device` ("auto" products made explicit): what a resumable folder records, since a
    default changed between versions changes its numbers."""
    defaults = {f.name: f.default for f in fields(SelfAttentionCapture) if f.default is not MISSING}
    return {**defaults, "products": products_for(device)}


@dataclass(frozen=True)
class CrossAttentionCapture:
    """Cross-attention probabilities P = softmax(q k^T / sqrt(d)) over all text positions, per head.

    Kept: P at the chosen text `tokens` (positions), reshaped to (frame, y, x) maps, their concentration
    statistics per frame, and how much attention goes to the prompt's own tokens versus the padding
    (positions from `prompt_length` on; the Wan cross-attention has no mask): per frame (`text_mass`)
    and, with the maps, per video position (`prompt_mass`, to renormalise maps over the prompt).
    """

    layers: tuple[int, ...]
    tokens: tuple[int, ...]
    prompt_length: int
    maps: bool = True
    stats: bool = True


@dataclass(frozen=True)
class CaptureSpec:
    """Which steps, heads and branch to capture, and what (self and/or cross-attention)."""

    steps: tuple[int, ...] | None = None  # None: every step
    branches: tuple[str, ...] = ("cond",)
    heads: tuple[int, ...] | None = None  # None: every head
    self_attention: SelfAttentionCapture | None = None
    cross_attention: CrossAttentionCapture | None = None
    batch_index: int = 0  # which video of the batch is captured

    @classmethod
    def requesting(
        cls,
        names: list[str],
        *,
        tokens: tuple[int, ...] = (),
        prompt_length: int | None = None,
        steps: tuple[int, ...] | None = None,
        branches: tuple[str, ...] = ("cond",),
        heads: tuple[int, ...] | None = None,
        **self_attention: Any,
    ) -> CaptureSpec:
        """The spec that captures these quantities (`numina.capture.names`), e.g.
        ["blocks.15.attn1.scores", "blocks.15.attn2.probs"]; cross-attention needs the text `tokens`
        and `prompt_length`, `self_attention` passes `SelfAttentionCapture` options. What a part keeps
        applies to all its blocks (maps of one block's self-attention: maps of every captured block)."""
        wanted: dict[str, set[int]] = {"attn1": set(), "attn2": set()}
        quantities: dict[str, set[str]] = {"attn1": set(), "attn2": set()}
        if not names:
            raise ValueError("Ask for at least one quantity, e.g. 'blocks.15.attn2.probs'.")
        for asked in map(parse_quantity, names):
            wanted[asked.module].add(asked.layer)
            quantities[asked.module].add(asked.quantity)
        self_part = cross_part = None
        if wanted["attn1"]:
            if "score_components" in quantities["attn1"] and self_attention.get("estimator") != "release":
                raise ValueError("score_components are kept only with estimator='release'; pass it too.")
            self_part = SelfAttentionCapture(
                layers=tuple(sorted(wanted["attn1"])), maps="maps" in quantities["attn1"], **self_attention
            )
        if wanted["attn2"]:
            if not tokens or prompt_length is None:
                raise ValueError("Cross-attention quantities need the text `tokens` and the `prompt_length`.")
            cross_part = CrossAttentionCapture(
                layers=tuple(sorted(wanted["attn2"])),
                tokens=tuple(tokens),
                prompt_length=prompt_length,
                maps=bool(quantities["attn2"] & {"probs", "prompt_mass"}),
                stats="stats" in quantities["attn2"],
            )
        return cls(steps, tuple(branches), heads, self_part, cross_part)

    def points(self) -> list[str]:
        """Stable names of the modules this spec captures from."""
        names = []
        if self.self_attention:
            names += [self_attention_point(layer) for layer in self.self_attention.layers]
        if self.cross_attention:
            names += [cross_attention_point(layer) for layer in self.cross_attention.layers]
        return names

    def captures(self, step: int, branch: str) -> bool:
        return branch in self.branches and (self.steps is None or step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CaptureSpec:
        values = dict(values)
        if values.get("self_attention"):
            # Stores from before `products` was recorded multiplied the maps as "tf32".
            self_attention = {"products": "tf32", **values["self_attention"]}
            values["self_attention"] = SelfAttentionCapture(**_tuples(self_attention))
        if values.get("cross_attention"):
            values["cross_attention"] = CrossAttentionCapture(**_tuples(values["cross_attention"]))
        return cls(**_tuples(values))

    def resolved(self, geometry: Geometry, num_steps: int, device: Any = None) -> CaptureSpec:
        """This spec with `steps` and `heads` made explicit, after checking it fits the model and run;
        with the model's `device` also its "auto" products, so that a store records what ran."""
        self.validate(geometry, num_steps)
        part = self.self_attention
        if part is not None and part.products == AUTO_PRODUCTS and device is not None:
            part = replace(part, products=products_for(device))
        return replace(
            self,
            steps=tuple(range(num_steps)) if self.steps is None else tuple(sorted(set(self.steps))),
            heads=tuple(range(geometry.heads)) if self.heads is None else tuple(self.heads),
            self_attention=part,
        )

    def validate(self, geometry: Geometry, num_steps: int) -> None:
        """Clear errors for layers, heads, steps, tokens or branches the model or run does not have."""
        _check_indices("step", self.steps or (), num_steps, "the run has that many denoising steps")
        _check_indices("head", self.heads or (), geometry.heads, "the model has that many heads")
        unknown = set(self.branches) - set(BRANCHES)
        if unknown or not self.branches:
            raise ValueError(f"Unknown guidance branch(es) {sorted(unknown)}; choose from {list(BRANCHES)}.")
        if self.self_attention is None and self.cross_attention is None:
            raise ValueError("The capture spec captures nothing: give self_attention and/or cross_attention.")
        for part in (self.self_attention, self.cross_attention):
            if part is not None:
                _check_indices("layer", part.layers, geometry.layers, "the model has that many blocks")
        if self.self_attention and not 1 <= self.self_attention.components <= geometry.tokens_per_frame:
            raise ValueError(f"components must be in 1..{geometry.tokens_per_frame} (tokens per frame).")
        part = self.self_attention
        if part and part.scores and part.estimator == "converged" and part.components < SCORE_COMPONENTS:
            raise ValueError("S1/S2/S3 scores need at least 3 components.")
        if self.cross_attention:
            _check_indices("token", self.cross_attention.tokens, geometry.text_length, "text positions")
            if not 0 < self.cross_attention.prompt_length <= geometry.text_length:
                raise ValueError(f"prompt_length must be in 1..{geometry.text_length}.")


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def _check_indices(name: str, indices: tuple[int, ...], size: int, meaning: str) -> None:
    bad = [index for index in indices if not 0 <= index < size]
    if bad:
        raise ValueError(f"{name} index {bad} out of range: valid {name}s are 0..{size - 1} ({meaning}).")


def release_reference_step(num_steps: int) -> int:
    """The release's walk-through stop: step 20 of 50, the same fraction of other step counts."""
    return min(num_steps - 1, round(RELEASE_REFERENCE_STEP * num_steps / RELEASE_STEPS))


def release_reference_layer(geometry: Geometry) -> int:
    """The release's block 15; the middle block for models with 15 blocks or fewer."""
    return RELEASE_REFERENCE_LAYER if geometry.layers > RELEASE_REFERENCE_LAYER else geometry.layers // 2


def numina_spec(
    geometry: Geometry,
    tokens: tuple[int, ...],
    prompt_length: int,
    num_steps: int,
    reference_step: int | None = None,
    reference_layer: int | None = None,
) -> CaptureSpec:
    """The default NUMINA capture: at the reference step, conditional branch, self-attention reduced at
    the reference layer and the chosen tokens' cross-attention maps at every layer (their statistics
    are left to analysis, which computes them from the stored maps)."""
    step = release_reference_step(num_steps) if reference_step is None else reference_step
    layer = release_reference_layer(geometry) if reference_layer is None else reference_layer
    return CaptureSpec(
        steps=(step,),
        self_attention=SelfAttentionCapture(layers=(layer,)),
        cross_attention=CrossAttentionCapture(
            layers=tuple(range(geometry.layers)),
            tokens=tuple(tokens),
            prompt_length=prompt_length,
            stats=False,
        ),
    )


@dataclass(frozen=True)
class DatasetDeclaration:
    """One store dataset a capture fills: its path, named dimensions, dtype and chunking dims."""

    name: str
    dims: tuple[str, ...]
    dtype: str = "float16"
    chunk_dims: tuple[str, ...] = ("step", "branch", "layer")


@dataclass(frozen=True)
class StoreLayout:
    """Groups (with their coordinates) and datasets for a resolved spec on a geometry."""

    coords: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    datasets: list[DatasetDeclaration] = field(default_factory=list)


def store_layout(spec: CaptureSpec, geometry: Geometry) -> StoreLayout:
    """Declare the datasets a resolved `spec` writes, with named dimensions and coordinates."""
    if spec.steps is None or spec.heads is None:
        raise ValueError("store_layout needs a resolved spec (CaptureSpec.resolved).")
    common = {"step": list(spec.steps), "branch": list(spec.branches), "head": list(spec.heads)}
    grid = {
        "frame": list(range(geometry.frames)),
        "y": list(range(geometry.height)),
        "x": list(range(geometry.width)),
    }
    layout = StoreLayout()
    layout.coords["capture"] = {"step": common["step"], "branch": common["branch"]}
    layout.datasets.append(DatasetDeclaration(TIMESTEP, ("step", "branch"), "float32", ("step",)))
    head_frame = ("step", "branch", "layer", "head", "frame")
    if spec.self_attention:
        part = spec.self_attention
        layout.coords["self_attention"] = {
            **common,
            "layer": list(part.layers),
            **grid,
            "component": list(range(part.components)),
            "term": list(TERMS),
        }
        if part.keeps_score_components:
            layout.coords["self_attention"]["score_component"] = list(range(SCORE_COMPONENTS))
        layout.datasets.extend(
            [
                DatasetDeclaration(SELF_COMPONENTS, (*head_frame, "y", "x", "component"), "float32"),
                DatasetDeclaration(SELF_SINGULAR_VALUES, (*head_frame, "component"), "float32"),
            ]
        )
        if part.scores:
            layout.datasets.append(DatasetDeclaration(SELF_SCORES, (*head_frame, "term"), "float32"))
        if part.keeps_score_components:
            layout.datasets.append(
                DatasetDeclaration(
                    SELF_SCORE_COMPONENTS, (*head_frame, "y", "x", "score_component"), "float32"
                )
            )
        if part.maps:
            positions = list(range(geometry.tokens_per_frame))
            layout.coords["self_attention"].update(query=positions, key=positions)
            layout.datasets.append(DatasetDeclaration(SELF_MAPS, (*head_frame, "query", "key")))
    if spec.cross_attention:
        part = spec.cross_attention
        layout.coords["cross_attention"] = {
            **common,
            "layer": list(part.layers),
            "token": list(part.tokens),
            **grid,
            "stat": list(STATS),
            "part": list(TEXT_PARTS),
        }
        by_token = ("step", "branch", "layer", "head", "token", "frame")
        layout.datasets.append(DatasetDeclaration(CROSS_TEXT_MASS, (*head_frame, "part"), "float32"))
        if part.maps:
            layout.datasets.extend(
                [
                    DatasetDeclaration(
                        CROSS_PROBS,
                        (*by_token, "y", "x"),
                        chunk_dims=("step", "branch", "layer", "token"),
                    ),
                    DatasetDeclaration(CROSS_PROMPT_MASS, (*head_frame, "y", "x")),
                ]
            )
        if part.stats:
            layout.datasets.append(DatasetDeclaration(CROSS_STATS, (*by_token, "stat"), "float32"))
    return layout
