"""Does the numeral reach CountWorld's picture as a number of objects or as an amount of colour?

    python benchmarks/countworld_numeral_mass.py --seeds 0 1 \
        --out benchmarks/results/countworld_numeral_mass.json

For "<N> red circles drifting right on a grey floor", N = one..eight, and one noise draw per seed
(the same for every N), the transformer's clean-video estimate x0 = x_t - sigma v at a few noise
levels sigma (x_t is the pure noise, as at the start of sampling) is decoded, and the share of red
pixels (R > 0.6, G and B < 0.4) over all frames is reported. Red area that grows with N at high noise
says the numeral is read; whether the sampler turns that area into N objects is what the benchmark
measures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from numina.arguments import integer


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="countworld")
    parser.add_argument("--seeds", type=integer(0), nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=None)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import torch

from numina.countworld.world import NUMERALS
from numina.models import load_pipeline
from numina.models.countworld import VIDEO

SIGMAS = (0.97, 0.9, 0.8, 0.6)


def red_share(pipeline, prompt_embeds: torch.Tensor, noise: torch.Tensor, sigma: float) -> list[float]:
    """The share of red pixels in the decoded x0 estimate at noise level `sigma`, per prompt."""
    vae = pipeline.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    batch = noise.expand(len(prompt_embeds), -1, -1, -1, -1)
    with torch.no_grad():
        timestep = torch.full((len(prompt_embeds),), sigma * 1000)
        velocity = pipeline.transformer(batch, timestep, prompt_embeds, return_dict=False)[0]
        video = vae.decode((batch - sigma * velocity) * std + mean, return_dict=False)[0]
    rgb = (video.clamp(-1, 1) + 1) / 2
    red = (rgb[:, 0] > 0.6) & (rgb[:, 1] < 0.4) & (rgb[:, 2] < 0.4)
    return red.float().mean(dim=(1, 2, 3)).tolist()


def main() -> None:
    args = build_parser().parse_args()
    pipeline = load_pipeline(args.model, torch.float32, "cpu")
    prompts = [f"{word} red circle{'s' if n > 1 else ''} drifting right on a grey floor" for n, word in
               enumerate(NUMERALS, start=1)]  # fmt: skip
    embeds, _ = pipeline.encode_prompt(
        prompts, do_classifier_free_guidance=False, max_sequence_length=512, device="cpu"
    )  # 512 positions, as the pipeline call and training pad
    shape = (
        1,
        pipeline.transformer.config.in_channels,
        (VIDEO["frames"] - 1) // pipeline.vae_scale_factor_temporal + 1,
        VIDEO["height"] // pipeline.vae_scale_factor_spatial,
        VIDEO["width"] // pipeline.vae_scale_factor_spatial,
    )
    rows = []
    for seed in args.seeds:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(shape, generator=generator)
        for sigma in SIGMAS:
            shares = red_share(pipeline, embeds, noise, sigma)
            rows.append({"seed": seed, "sigma": sigma, "red_share_by_count": shares})
            percent = [round(100 * share, 2) for share in shares]
            print(f"seed {seed} sigma {sigma}: red pixels % for N = 1..8:", percent)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"model": args.model, "prompts": prompts, "rows": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
