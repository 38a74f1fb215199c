"""NUMINA-lab: attention capture, analysis and the NUMINA counting method on diffusers' Wan pipelines.

Subpackages: models (loading, tiny offline pipelines, geometry), prompts (token map), capture (the hook
layer), store (HDF5 attention store), metrics (measures of one map), tracking (Weights & Biases).
"""

__version__ = "0.1.0"
