"""ddpm-hf: the DDPM of Ho et al. 2020 on the Hugging Face stack.

- ``DDPMHFScheduler``: the DDPM chain as a diffusers scheduler (a drop-in for ``DDPMScheduler``).
- ``variational_bound`` / ``vb_terms``: the paper's bound on -log p(x_0) in bits/dim, and its per-t terms;
  ``estimate_bound``: the per-image estimate to report (small t exact, the rest stratified per image).
- ``reverse_chain``: the reverse process as a generator of steps, for every sampler in ``SAMPLERS``.
- ``sample``: images from the chain, with callbacks and trajectories.
- ``save_pipeline`` / ``load_pipeline``: the pipeline folder training writes and the app reads.
"""

from .likelihood import estimate_bound, variational_bound, vb_terms
from .pipeline_io import load_pipeline, save_pipeline
from .samplers import SAMPLERS
from .sampling import ChainStep, initial_noise, reverse_chain, sample, seed_generators
from .scheduling_ddpm_hf import DDPMHFScheduler

__all__ = [
    "SAMPLERS",
    "ChainStep",
    "DDPMHFScheduler",
    "estimate_bound",
    "initial_noise",
    "load_pipeline",
    "reverse_chain",
    "sample",
    "save_pipeline",
    "seed_generators",
    "variational_bound",
    "vb_terms",
]
__version__ = "0.1.0"
