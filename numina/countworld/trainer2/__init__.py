"""CountWorld 2's trainer: a work folder trained in resumable pieces, stage by stage, within a budget.

`Trainer(settings).run()` runs whichever stage comes next until the budget ends (the settings are
`experiments/train_countworld2.py`'s options, which document each):

1. vae: the first CountWorld's VAE fine-tuned on CountWorld 2's scenes, then gate G0 (the exact
   counter on held-out reconstructions);
2. stats: the latents' per-channel mean and standard deviation;
3. transformer: the text encoder and the transformer learn together by flow matching on scenes drawn
   and rendered fresh every step; after every piece the EMA pipeline is scored (the learning curve)
   and gate G1's text probe is measured.

Checkpoints: full ones in the work folder (optimiser moments included), and the portable copy, the
EMA pipeline in float16 with `training.json`, the log and the learning curve beside it, from which a
new work folder resumes on a machine that kept nothing. Steps draw their scenes and noise from
generators seeded by (seed, step).

Modules: run (the `Trainer`: the work folder's state, budget and log, and the order of the stages),
stages (VAE, latent statistics, transformer), export (checkpoints, the portable copy, the learning
curve's evaluation and figure).
"""

from numina.countworld.trainer2.export import learning_curve_figure
from numina.countworld.trainer2.run import FIXED_SETTINGS, STATE_FILE, Trainer

__all__ = ["FIXED_SETTINGS", "STATE_FILE", "Trainer", "learning_curve_figure"]
