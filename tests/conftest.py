"""Shared builders: tiny real diffusers models, pipeline folders and image folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
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


# The CIFAR-10 model's layout (diffusers' conversion of Ho et al.'s checkpoint), at a quarter of its widths.
CIFAR_LAYOUT = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64, 64, 64),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 2,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "downsample_padding": 0,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
}
CIFAR_INDEX = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.1.1",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}


@pytest.fixture(scope="module")
def cifar_repo_files(tmp_path_factory) -> dict[str, bytes]:
    """The files of a repo in ``google/ddpm-cifar10-32``'s flat layout (``CIFAR_LAYOUT``, random weights, diffusers'
    scheduler with σ² = β and clipping), written by stock diffusers."""
    folder = tmp_path_factory.mktemp("cifar-layout")
    torch.manual_seed(0)
    UNet2DModel(**CIFAR_LAYOUT).save_pretrained(folder, safe_serialization=True)
    DDPMScheduler(variance_type="fixed_large", clip_sample=True).save_pretrained(folder)
    (folder / "model_index.json").write_text(json.dumps(CIFAR_INDEX))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
