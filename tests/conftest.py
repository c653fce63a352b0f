"""Shared builders: tiny real diffusers models and pipeline folders."""

import pytest
import torch

from ddpm_hf import DDPMHFScheduler, save_pipeline
from ddpm_hf.models import build_unet


def tiny_unet(resolution: int = 16, channels: int = 1, seed: int = 0):
    """A real, randomly initialised UNet2DModel small enough for tests."""
    torch.manual_seed(seed)
    return build_unet("tiny", resolution, channels).eval()


@pytest.fixture
def tiny_pipeline_dir(tmp_path):
    """A pipeline folder written by save_pipeline: tiny UNet at 16x16, default scheduler."""
    return save_pipeline(tiny_unet(), DDPMHFScheduler(), tmp_path / "tiny-ddpm")
