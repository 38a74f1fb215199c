"""The names of what a capture writes: one constant per dataset, used to declare, write and read it,
and one name per block's quantity, used to ask for a capture and to read it back.

A dataset is `<group>/<quantity>` with the block as a dimension (`.sel(layer=15)`); the same slice is
named `blocks.15.attn2.probs` (TransformerLens-style: the capture point of `CaptureSpec.points()`,
then the quantity), which `CaptureSpec.requesting` takes and `read` reads from a store in memory or
in a file. Store files of every version use these names. May import only the standard library.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

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

# What each capture point keeps, by quantity: `blocks.<i>.attn1.<quantity>` (self-attention) and
# `blocks.<i>.attn2.<quantity>` (cross-attention) name one block's slice of one dataset.
QUANTITIES: dict[str, dict[str, str]] = {
    "attn1": {
        "components": SELF_COMPONENTS,
        "singular_values": SELF_SINGULAR_VALUES,
        "scores": SELF_SCORES,
        "score_components": SELF_SCORE_COMPONENTS,
        "maps": SELF_MAPS,
    },
    "attn2": {
        "probs": CROSS_PROBS,
        "text_mass": CROSS_TEXT_MASS,
        "prompt_mass": CROSS_PROMPT_MASS,
        "stats": CROSS_STATS,
    },
}
_QUANTITY_NAME = re.compile(r"blocks\.(\d+)\.(attn1|attn2)\.(\w+)")


class Quantity(NamedTuple):
    """A parsed quantity name: the block, its attention module, the quantity and the dataset."""

    layer: int
    module: str
    quantity: str
    dataset: str


def quantity_name(layer: int, module: str, quantity: str) -> str:
    """One block's quantity by name: quantity_name(15, "attn2", "probs") -> "blocks.15.attn2.probs"."""
    name = f"blocks.{layer}.{module}.{quantity}"
    parse_quantity(name)
    return name


def parse_quantity(name: str) -> Quantity:
    """What a quantity name such as "blocks.15.attn2.probs" names; a clear error for one that is not."""
    match = _QUANTITY_NAME.fullmatch(name)
    if match is None:
        raise ValueError(
            f"{name!r} is not a quantity name: write blocks.<layer>.attn1.<quantity> (one of "
            f"{sorted(QUANTITIES['attn1'])}) or blocks.<layer>.attn2.<quantity> (one of "
            f"{sorted(QUANTITIES['attn2'])})."
        )
    layer, module, quantity = int(match[1]), match[2], match[3]
    if quantity not in QUANTITIES[module]:
        raise ValueError(f"{name!r}: {module} keeps {sorted(QUANTITIES[module])}, not {quantity!r}.")
    return Quantity(layer, module, quantity, QUANTITIES[module][quantity])


def read(store: Any, name: str, **selection: Any) -> Any:
    """One block's quantity from a capture, in memory or in a file (`MemoryStore` or `open_store`'s
    store), as a lazy NamedArray: read(store, "blocks.15.attn2.probs", step=20, branch="cond")."""
    quantity = parse_quantity(name)
    return store[quantity.dataset].sel(layer=quantity.layer, **selection)
