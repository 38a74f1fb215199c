"""The diagnosis: do numeral tokens get more diffuse, weaker cross-attention than nouns and adjectives?

    python experiments/diagnose_numerals.py --limit 20            # the built-in CountWorld, CPU
    python experiments/diagnose_numerals.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --layers 0,5,10,15,20,25

For each CountBench prompt: a generation with capture at the chosen steps of every prompt token's
cross-attention (and one padding position) at the chosen blocks, and of the self-attention
reductions (components, S1/S2/S3) at the reference block; one HDF5 store per prompt. Then the
token-type statistics table, its summary with 95% confidence intervals over prompts, the paired
numeral-minus-noun (and -adjective) differences, the separability table and head choices, the
figures, and a W&B run with the tables and figures. The output folder is resumable: prompts whose
tables exist are skipped; a store that is complete but has no table yet is analysed without
generating again; an interrupted store (`.partial`) is generated again.

Output folder (default runs/diagnose-<model>):
    config.json, prompts.csv, stores/pNNN.h5, tables/pNNN_tokens.csv, tables/pNNN_separability.csv,
    token_statistics.csv, separability.csv, summary.csv, type_differences.csv, head_choices.csv,
    figures/{diagnosis,diagnosis_prompt_renormalised,separability_heatmap,example_tokens}.{png,pdf},
    wandb/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from numina.arguments import (
    add_model_arguments,
    add_prompt_arguments,
    index_list,
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    add_prompt_arguments(parser)
    parser.add_argument(
        "--capture-steps", type=index_list, default=None, help="denoising steps captured (the reference step)"
    )
    parser.add_argument(
        "--layers", type=index_list, default=None, help="blocks whose cross-attention is captured (all)"
    )
    parser.add_argument(
        "--self-attention-layers",
        type=index_list,
        default=None,
        help="blocks whose self-attention is reduced (the reference block)",
    )
    parser.add_argument(
        "--stats-only",
        action="store_true",
        help="store the statistics computed on the device instead of the maps (small stores; no "
        "renormalisation over the prompt)",
    )
    parser.add_argument(
        "--save-videos", action="store_true", help="decode and keep every video (videos/pNNN.mp4)"
    )
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv", help="table file format")
    parser.add_argument(
        "--ci", choices=["t", "bootstrap"], default="t", help="confidence intervals over prompts"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (runs/diagnose-<model>)")
    add_model_arguments(parser)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import pandas as pd
from tqdm.auto import tqdm

from analysis.figures import (
    concentration_by_type_figure,
    save_figure,
    separability_heatmap,
    token_maps_figure,
)
from analysis.separability import choose_heads, separability_table
from analysis.statistics import compare_types, prompt_tokens_of, summarise, token_table
from numina.capture import CaptureSpec, CrossAttentionCapture, SelfAttentionCapture
from numina.capture.spec import release_reference_layer, release_reference_step, self_attention_defaults
from numina.cli import (
    check_output,
    generation_settings,
    load_prompt_set,
    pipeline_from_args,
    resolve_model_arguments,
)
from numina.models import geometry_of, load_tokenizer, resolve_model
from numina.prompts import PromptTokens, parse_prompt
from numina.run_folder import (
    atomic_write,
    check_resumable,
    device_type,
    disk_full_ends_cleanly,
    save_video,
    slug,
    write_config,
)
from numina.sampling import capture_generation
from numina.store import IncompleteStoreError, TruncatedStoreError, open_store
from numina.version import code_version
from numina.wandb_mirror import Tracker

log = logging.getLogger("diagnose_numerals")
# Settings that change what a stored prompt holds: a resumed run must keep them.
FIXED_SETTINGS = (
    "model",
    "prompt_set",
    "settings",
    "capture_steps",
    "layers",
    "self_attention_layers",
    "stats_only",
    "flow_shift",
    "dtype",
    "device",
    "attention_backend",
    "self_attention_defaults",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_arguments(parser, args)
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            parser.error("--format parquet needs pyarrow (pip install pyarrow), or use --format csv")
    if args.out is None:
        args.out = Path("runs") / f"diagnose-{slug(args.model)}"
    check_output(parser, args.out)
    return args


def capture_spec(tokens: PromptTokens, args: argparse.Namespace) -> CaptureSpec:
    """Every prompt token plus the first padding position (all padding keys are alike)."""
    positions = list(range(tokens.n_tokens))
    if tokens.n_tokens < tokens.max_length:
        positions.append(tokens.n_tokens)
    return CaptureSpec(
        steps=tuple(args.capture_steps),
        self_attention=SelfAttentionCapture(layers=tuple(args.self_attention_layers)),
        cross_attention=CrossAttentionCapture(
            layers=tuple(args.layers),
            tokens=tuple(positions),
            prompt_length=tokens.n_tokens,
            maps=not args.stats_only,
            stats=args.stats_only,
        ),
    )


def write_table(table: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as temporary:
        if path.suffix == ".parquet":
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, index=False)


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def analyse_store(store_path: Path, prompt_id: int, stats_only: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The token table (raw and, with maps, renormalised over the prompt) and separability of one store."""
    with open_store(store_path) as store:
        normalisations = ["all"] if stats_only else ["all", "prompt"]
        tokens = token_table(store, normalisations, prompt_id=prompt_id)  # one read of the maps
        scores = separability_table(store)
    scores.insert(0, "prompt_id", prompt_id)
    return tokens, scores


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()

    # Everything that can be wrong with the request fails here, before any weights are loaded.
    try:
        prompts = load_prompt_set(args)
        model = resolve_model(args.model)
        settings = generation_settings(args)
        geometry = geometry_of(model, settings.num_frames, settings.height, settings.width)
        tokenizer = load_tokenizer(model)
        parsed = {item.index: parse_prompt(item.prompt, tokenizer, targets=item.targets) for item in prompts}
    except (ValueError, OSError) as error:
        raise SystemExit(f"diagnose_numerals.py: error: {error}") from None
    args.capture_steps = args.capture_steps or [release_reference_step(settings.steps)]
    args.layers = args.layers if args.layers is not None else list(range(geometry.layers))
    args.self_attention_layers = args.self_attention_layers or [release_reference_layer(geometry)]
    try:  # checks steps, layers and tokens against the model before any work
        specs = {
            item.index: capture_spec(parsed[item.index], args).resolved(geometry, settings.steps, args.device)
            for item in prompts
        }
    except ValueError as error:
        raise SystemExit(f"diagnose_numerals.py: error: {error}") from None

    out = args.out
    config = {
        "model": args.model,
        "model_source": model,
        "dtype": args.dtype,
        "device": device_type(args.device),
        "attention_backend": args.attention_backend,
        "flow_shift": args.flow_shift,
        "settings": settings.to_dict(),
        "geometry": geometry.to_dict(),
        "capture_steps": args.capture_steps,
        "layers": args.layers,
        "self_attention_layers": args.self_attention_layers,
        "stats_only": args.stats_only,
        "self_attention_defaults": self_attention_defaults(args.device),
        "prompt_set": args.prompt_set,
        "countbench": str(args.countbench or "default"),
        "prompts": [item.index for item in prompts],
        "code_version": code_version(),
        "command": ["experiments/diagnose_numerals.py", *(sys.argv[1:] if argv is None else argv)],
    }
    check_resumable(out, config, FIXED_SETTINGS, "diagnose_numerals.py")
    for folder in ("stores", "tables", "figures"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_config(out, config)
    log.info("output folder: %s (%d prompts)", out, len(prompts))

    pipeline = None
    suffix = f".{args.format}"
    token_tables, score_tables, status = [], [], []
    with Tracker(out, name=out.name, config=config, mode=args.wandb, job_type="diagnose") as tracker:
        for item in tqdm(prompts, desc="prompts", unit="prompt"):
            name = f"p{item.index:03d}"
            store_path = out / "stores" / f"{name}.h5"
            tokens_path = out / "tables" / f"{name}_tokens{suffix}"
            scores_path = out / "tables" / f"{name}_separability{suffix}"
            if tokens_path.exists() and scores_path.exists():
                state = "done before"
            else:
                if _complete(store_path):
                    state = "analysed stored run"
                else:
                    if pipeline is None:
                        pipeline = pipeline_from_args(args, model)
                    video = capture_generation(
                        pipeline,
                        parsed[item.index],
                        specs[item.index],
                        settings,
                        store_path,
                        {"model": config["model"], "prompt_id": item.index},
                        output_type="np" if args.save_videos else "latent",
                    )
                    if args.save_videos:
                        (out / "videos").mkdir(exist_ok=True)
                        save_video(video, out / "videos" / f"{name}.mp4", settings.fps)
                    state = "generated"
                token_rows, score_rows = analyse_store(store_path, item.index, args.stats_only)
                write_table(score_rows, scores_path)
                write_table(token_rows, tokens_path)  # last: its presence marks the prompt done
            token_tables.append(read_table(tokens_path))
            score_tables.append(read_table(scores_path))
            status.append(
                {
                    "prompt_id": item.index,
                    "prompt": item.prompt,
                    "targets": json.dumps(item.targets),
                    "status": state,
                }
            )
            tracker.log_scalars({"prompts_done": len(status)})

        report = summarise_run(out, prompts, token_tables, score_tables, status, args, suffix)
        for name, table in report["tables"].items():
            tracker.log_table(name, table)
        for name, path in report["figures"].items():
            tracker.log_image(f"figures/{name}", path)
        seconds = time.perf_counter() - started
        tracker.log_scalars({"seconds": seconds, "prompts": len(prompts)})
    log.info("done in %.1f s; summary: %s", seconds, out / "summary.csv")
    return out


def _complete(store_path: Path) -> bool:
    """Whether a finished store is there (a `.partial` or cut-off file means: generate again)."""
    if not store_path.exists():
        return False
    try:
        with open_store(store_path):
            return True
    except (IncompleteStoreError, TruncatedStoreError, OSError):
        log.warning("store %s is unreadable; generating it again", store_path)
        store_path.unlink()
        return False


def summarise_run(
    out: Path,
    prompts: list,
    token_tables: list[pd.DataFrame],
    score_tables: list[pd.DataFrame],
    status: list[dict],
    args: argparse.Namespace,
    suffix: str,
) -> dict:
    """Combined tables, summaries with CIs, head choices and figures of the selected prompts."""
    tokens = pd.concat(token_tables, ignore_index=True)
    scores = pd.concat(score_tables, ignore_index=True)
    write_table(tokens, out / f"token_statistics{suffix}")
    write_table(scores, out / f"separability{suffix}")
    write_table(pd.DataFrame(status), out / "prompts.csv")

    summary = summarise(tokens, by=("normalisation", "token_type", "layer"), method=args.ci)
    write_table(summary, out / "summary.csv")
    differences = [
        compare_types(part, "numeral", other, by=("layer",), method=args.ci)
        .rename(columns={"numeral": "numeral_level", other: "compared_level"})
        .assign(normalisation=normalisation, comparison=f"numeral - {other}")
        for normalisation, part in tokens.groupby("normalisation")
        for other in ("noun", "adjective")
        if {"numeral", other} <= set(part["token_type"])
    ]
    differences = pd.concat(differences, ignore_index=True) if differences else pd.DataFrame()
    write_table(differences, out / "type_differences.csv")
    choices = pd.concat(
        [
            choose_heads(part, "per_frame", layer=args.self_attention_layers[0]).assign(prompt_id=prompt_id)
            for prompt_id, part in scores.groupby("prompt_id")
        ],
        ignore_index=True,
    )
    write_table(choices, out / "head_choices.csv")

    figures = {}
    for normalisation, name in (("all", "diagnosis"), ("prompt", "diagnosis_prompt_renormalised")):
        part = summary[summary["normalisation"] == normalisation]
        if not part.empty:
            title = f"Cross-attention concentration by token type, {len(prompts)} prompts, 95% CI" + (
                ", renormalised over the prompt's tokens" if normalisation == "prompt" else ""
            )
            figure = concentration_by_type_figure(part, title=title)
            figures[name] = save_figure(figure, out / "figures" / name)[0]
    figures["separability_heatmap"] = save_figure(
        separability_heatmap(scores), out / "figures" / "separability_heatmap"
    )[0]
    if not args.stats_only:
        first = prompts[0]
        with open_store(out / "stores" / f"p{first.index:03d}.h5") as store:
            tokens_of = prompt_tokens_of(store)
            labels = {
                f'{word.type} "{word.text}"': list(word.positions)
                for word in tokens_of.words
                if word.type in ("numeral", "noun", "adjective") and word.positions
            }
            figure = token_maps_figure(store, labels, step=args.capture_steps[0])
        figures["example_tokens"] = save_figure(figure, out / "figures" / "example_tokens")[0]
    return {
        "tables": {"summary": summary, "type_differences": differences, "prompts": pd.DataFrame(status)},
        "figures": figures,
    }


if __name__ == "__main__":
    with disk_full_ends_cleanly("diagnose_numerals.py"):
        main()
