"""ddpm-hf: the DDPM of Ho et al. 2020 on the Hugging Face stack."""

from .scheduling_ddpm_hf import DDPMHFScheduler

__all__ = ["DDPMHFScheduler"]
__version__ = "0.1.0"
