"""NUMINA-lab: attention capture, analysis and the NUMINA counting method on diffusers' Wan pipelines.

Subpackages: models (loading, the built-in and tiny offline pipelines, geometry), prompts (token map),
capture (the hook layer), store (HDF5 attention store), metrics (measures of one map), method (NUMINA),
evaluation (CountBench, counters, accuracy, CLIP score), countworld (the model organisms' worlds and
training), wandb_mirror (Weights & Biases). Modules: sampling (pipeline runs), compat (the diffusers
and torch internals used), testing (tiny random evaluation models), run_folder, checks, arguments, cli.
"""

__version__ = "0.1.0"
