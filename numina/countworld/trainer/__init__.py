"""The first CountWorld's trainer: a work folder trained in resumable pieces, stage by stage.

`Trainer(settings).run()` runs whichever stage comes next until the budget ends (the settings are
`experiments/train_countworld.py`'s options, which document each):

1. vae: the AutoencoderKLWan learns to reconstruct clips rendered on the fly, then is scored on
   held-out clips (PSNR, and whether the exact counter counts the reconstructions right);
2. latents: a data set of clips rendered and encoded in parts (optionally refreshed part by part),
   with their captions and object positions; per-channel statistics go into the VAE config;
3. transformer: flow matching with caption dropout, object positions weighted up, AdamW, warm-up and
   cosine learning rate, gradient clipping, bf16 autocast on GPU, an EMA of the weights; the EMA
   pipeline is exported after every piece and its samples are counted.

Every checkpoint also writes the portable copy (state, loss log, weights as diffusers folders in
files under 15 MB, no optimiser moments), from which a fresh machine resumes. Every step draws its
clips, noise and noise levels from generators seeded by (seed, step), so a run split into pieces
ends with the same weights as one run.

Modules: run (the `Trainer`: state, budget, log, checkpoints, the order of the stages), vae, latents,
transformer (the stages), export (the pipeline after each piece, its samples counted, the loss
curves).
"""

from numina.countworld.trainer.export import loss_curves_figure
from numina.countworld.trainer.run import Trainer

__all__ = ["Trainer", "loss_curves_figure"]
