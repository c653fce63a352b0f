"""Shared builders: tiny real diffusers models, pipeline folders and image folders."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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


def write_image_folder(folder: Path, n: int = 64) -> Path:
    """``n`` 28x28 grayscale PNGs (smooth random blobs), for runs that should not pay for decoding MNIST."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(n):
        cy, cx, r = rng.uniform(6, 22), rng.uniform(6, 22), rng.uniform(3, 8)
        pixels = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        Image.fromarray(pixels.astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
    return folder
