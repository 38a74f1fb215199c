"""How close are the capture's components to a float64 SVD with the maps stored in float16, against
TF32 products? A CPU emulation on planted self-attention maps.

    python benchmarks/map_products_accuracy.py --out benchmarks/results/map_products_accuracy_cpu.json \
        --layouts benchmarks/results/map_products_layouts_cpu.json

The converged estimator's power iterations read every map ~17 times (`numina.metrics.lowrank`); on a
GPU those reads are its cost, and float16 maps halve them (`products="float16"`). TF32 tensor cores
keep 11 significant bits of each product's inputs, float16 as many, so the two should be about as
accurate. This checks it without a GPU: the iterations of `top_components` are run with each big
product's two inputs rounded first, as the device would round them (TF32 by truncation, as the
tensor cores read float32 inputs, and by rounding to nearest; float16 to nearest, the maps scaled by
their width first as `half_maps` does), and compared per component (relative error of U S, signs
aligned), in S (the head score) and in the singular values with a float64 SVD of the same maps.
Scenes: `numina.evaluation.planted` at 30 x 52 (Wan2.1 480p), 3 levels x 3 counts, 3 frames each.
`--layouts` asks what the roundings change downstream: the layout's labels and exact rate on the
planted suite (`layout_decisions`, about a minute).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

from numina.arguments import check_output


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the per-case errors")
    parser.add_argument(
        "--layouts",
        type=Path,
        default=None,
        help="JSON file: does each rounding change the layout's decisions? `improved`'s layout from each "
        "mode's components on the planted suite (16x16, 32x32, 30x52; k = 0-8; 3 levels; 3 cases a cell)",
    )
    args = parser.parse_args()
    for option, path in (("--out", args.out), ("--layouts", args.layouts)):
        if path is not None:
            check_output(parser, path.parent, option)
    return args


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    parse_args()

import torch

from numina.evaluation.planted import CaseSpec, benchmark_suite, generate_case, match_frame
from numina.method.layout import build_layout
from numina.method.presets import preset
from numina.metrics.lowrank import exact_components, orthonormalize, scores_from_gram, small_eigh
from numina.metrics.separability import separability

HEIGHT, WIDTH = 30, 52
LEVELS, COUNTS = ("easy", "medium", "weak"), (1, 3, 6)


def truncated_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 with its 13 lowest mantissa bits cleared (10 stored bits, as TF32)."""
    return (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


def rounded_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to 10 stored mantissa bits, to nearest (ties away from zero)."""
    return ((x.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def rounded_float16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).float()


# name -> (how each product's inputs are rounded, the scale the maps are multiplied by first)
MODES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool]] = {
    "float32": (lambda x: x, False),
    "tf32 truncated": (truncated_tf32, False),
    "tf32 to nearest": (rounded_tf32, False),
    "float16 maps": (rounded_float16, True),
}


def emulated_components(maps: torch.Tensor, mode: str, k: int = 3, iterations: int = 7) -> tuple:
    """`top_components(maps)` (width 16, seed 0, centred) with each big product's inputs rounded."""
    rounding, scaled = MODES[mode]
    scale = float(maps.shape[-1]) if scaled else 1.0
    stored = rounding(maps * scale)
    mean = maps.mean(dim=-2, keepdim=True)
    probe = torch.randn(maps.shape[-1], 16, generator=torch.Generator().manual_seed(0))

    def times(right: torch.Tensor) -> torch.Tensor:
        return stored @ rounding(right) / scale - mean @ right

    def transposed_times(left: torch.Tensor) -> torch.Tensor:
        product = stored.transpose(-1, -2) @ rounding(left) / scale
        return product - mean.transpose(-1, -2) * left.sum(dim=-2, keepdim=True)

    basis = orthonormalize(times(probe), passes=1)
    for _ in range(iterations):
        basis = orthonormalize(times(orthonormalize(transposed_times(basis), passes=1)), passes=1)
    basis = orthonormalize(basis)
    small = transposed_times(basis).transpose(-1, -2)
    return scores_from_gram(basis, *small_eigh(small @ small.transpose(-1, -2)), k)


def layout_decisions(grids: list[tuple[int, int]], cases_per_cell: int) -> dict:
    """Per mode, over the planted suite's frames: how many get `improved`'s layout labels equal to
    those from float32 products, how many are exact against the truth (`match_frame`), and the largest
    change of S from float32's."""
    specs, _ = benchmark_suite(grids, range(9), ("easy", "medium", "weak"), cases_per_cell)
    options = preset("improved").layout
    equal, exact, score_change = dict.fromkeys(MODES, 0), dict.fromkeys(MODES, 0), dict.fromkeys(MODES, 0.0)
    frames = 0
    for spec in specs:
        case = generate_case(spec)
        nouns, labels, scores = {"noun": case.noun_maps}, {}, {}
        for mode in MODES:  # float32 first: the others are compared with it
            components, _ = emulated_components(torch.from_numpy(case.self_maps), mode)
            scores[mode] = separability(components, spec.height, spec.width)
            change = (scores[mode] - scores["float32"]).abs().max().item()
            score_change[mode] = max(score_change[mode], change)
            labels[mode] = build_layout(components.numpy(), nouns, spec.height, spec.width, options)["noun"]
        frames += spec.frames
        for mode, frame in itertools.product(MODES, range(spec.frames)):
            equal[mode] += bool((labels[mode][frame] == labels["float32"][frame]).all())
            exact[mode] += match_frame(case.truth[frame], labels[mode][frame]).exact
    return {
        "cases": len(specs),
        "frames": frames,
        "labels_equal_to_float32": equal,
        "exact": exact,
        "largest_S_change_from_float32": score_change,
    }


def main() -> None:
    args = parse_args()
    if args.layouts is not None:
        decisions = layout_decisions([(16, 16), (32, 32), (30, 52)], cases_per_cell=3)
        header = f"{'products':<18}{'labels as float32':>20}{'exact':>8}{'largest S change':>18}"
        print(f"{header}  (of {decisions['frames']} frames)")
        for mode in MODES:
            print(
                f"{mode:<18}{decisions['labels_equal_to_float32'][mode]:>20}{decisions['exact'][mode]:>8}"
                f"{decisions['largest_S_change_from_float32'][mode]:>18.1e}"
            )
        args.layouts.write_text(json.dumps(decisions, indent=1) + "\n")
    rows = []
    for level, count in itertools.product(LEVELS, COUNTS):
        spec = CaseSpec(HEIGHT, WIDTH, count, others=1, difficulty=level, frames=3, seed=11 * count)
        maps = torch.from_numpy(generate_case(spec).self_maps)
        exact, exact_singular = exact_components(maps)
        exact_score = separability(exact, HEIGHT, WIDTH)
        for mode in MODES:
            scores, singular = (t.double() for t in emulated_components(maps, mode))
            aligned = scores * torch.sign((scores * exact).sum(dim=-2, keepdim=True))
            error = ((aligned - exact).norm(dim=-2) / exact.norm(dim=-2)).amax(dim=0)  # per component
            rows.append(
                {
                    "level": level,
                    "k": count,
                    "mode": mode,
                    "component_rel_error": error.tolist(),
                    "score_abs_error": (separability(scores, HEIGHT, WIDTH) - exact_score).abs().max().item(),
                    "singular_rel_error": ((singular - exact_singular).abs() / exact_singular).max().item(),
                }
            )
    print(
        f"{'products':<18}{'worst rel. error of component 1':>32}{'2':>10}{'3':>10}{'S':>10}{'singular':>10}"
    )
    summary = {}
    for mode in MODES:
        mine = [row for row in rows if row["mode"] == mode]
        worst = [max(row["component_rel_error"][i] for row in mine) for i in range(3)]
        score = max(row["score_abs_error"] for row in mine)
        singular = max(row["singular_rel_error"] for row in mine)
        summary[mode] = {
            "component_rel_error": worst,
            "score_abs_error": score,
            "singular_rel_error": singular,
        }
        print(f"{mode:<18}{worst[0]:>32.1e}{worst[1]:>10.1e}{worst[2]:>10.1e}{score:>10.1e}{singular:>10.1e}")
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
