"""ddpm-hf: the DDPM of Ho et al. 2020 on the Hugging Face stack.

- ``DDPMHFScheduler``: the DDPM chain as a diffusers scheduler (a drop-in for ``DDPMScheduler``).
- ``variational_bound``: the paper's bound on -log p(x_0) in bits/dim.
- ``sample``: ancestral sampling with callbacks and trajectories.
- ``save_pipeline`` / ``load_pipeline``: the pipeline folder training writes and the app reads.
"""

from .likelihood import variational_bound
from .pipeline_io import load_pipeline, save_pipeline
from .sampling import sample
from .scheduling_ddpm_hf import DDPMHFScheduler

__all__ = ["DDPMHFScheduler", "load_pipeline", "sample", "save_pipeline", "variational_bound"]
__version__ = "0.1.0"
