"""How many CountWorld 2 scenes per second `world2.render_scenes` draws, as images and as clips.

CountWorld 2 renders fresh training scenes every step, so the renderer must keep up with the trainer
(about 1,500 images/s on a GPU). This times `render_scenes` on random training scenes at frames=1 and
frames=17 (128 px), on the CPU and on CUDA when available, and prints the median scenes/s and
frames/s over `--repeats` batches after one untimed warm-up batch.

    python benchmarks/countworld2_render_speed.py --device cpu cuda --batch 256 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from numina.arguments import integer


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", nargs="+", default=["cpu", "cuda"], help="devices to time (cuda if available)"
    )
    parser.add_argument("--batch", type=integer(1), default=256, help="scenes per render_scenes call")
    parser.add_argument("--repeats", type=integer(1), default=5, help="timed calls per configuration")
    parser.add_argument("--frames", type=integer(1), nargs="+", default=[1, 17])
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import torch

from numina.countworld import world2


def seconds_per_batch(device: str, batch: int, frames: int, repeats: int) -> float:
    """Median wall seconds of one `render_scenes` call (synchronised on CUDA), fresh scenes each call."""
    rng = np.random.default_rng(0)
    times = []
    for repeat in range(repeats + 1):
        scenes = world2.sample_scenes(rng, batch)
        start = time.perf_counter()
        world2.render_scenes(scenes, seed=repeat, frames=frames, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if repeat > 0:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    args = build_parser().parse_args()
    for device in args.device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"{device}: not available, skipped")
            continue
        name = (
            torch.cuda.get_device_name(device)
            if device.startswith("cuda")
            else f"cpu x{torch.get_num_threads()}"
        )
        for frames in args.frames:
            seconds = seconds_per_batch(device, args.batch, frames, args.repeats)
            print(
                f"{device} ({name}) batch {args.batch} frames {frames:2d}: {seconds * 1e3:8.1f} ms/batch "
                f"{args.batch / seconds:8.1f} scenes/s {args.batch * frames / seconds:9.1f} frames/s"
            )


if __name__ == "__main__":
    main()
