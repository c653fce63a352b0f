"""Ancestral sampling (Ho et al. 2020, Algorithm 2) with the whole reverse chain in view.

``sample`` runs x_T ~ N(0, I) → x_0 for any diffusers ``UNet2DModel`` with ``DDPMHFScheduler``. It draws its noise
exactly as diffusers' ``DDPMPipeline`` does, so the same UNet, scheduler config and seed give the same images, and adds
what the pipeline lacks: a per-step callback and a trajectory of x_t and x̂_0 captured every k steps.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .scheduling_ddpm_hf import DDPMHFScheduler

OutputType = Literal["pil", "np", "pt"]
Variance = Literal["fixed_small", "fixed_large"]


@dataclass
class Trajectory:
    """x_t and x̂_0 (in [-1, 1], on the CPU) at the captured timesteps, in sampling order."""

    timesteps: list[int] = field(default_factory=list)
    x_t: list[torch.Tensor] = field(default_factory=list)
    pred_x0: list[torch.Tensor] = field(default_factory=list)


@dataclass
class SampleOutput:
    images: list[Image.Image] | np.ndarray | torch.Tensor
    trajectory: Trajectory | None


def to_output(x: torch.Tensor, output_type: OutputType):
    """Map samples in [-1, 1] (B, C, H, W) to PIL images, a (B, H, W, C) float array in [0, 1], or a tensor in [0, 1]."""
    x = (x.float() / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return x
    array = x.cpu().permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    pixels = (array * 255).round().astype(np.uint8)
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]


def sample(
    unet: UNet2DModel,
    scheduler: DDPMHFScheduler,
    batch_size: int = 16,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    seed: int | None = None,
    num_inference_steps: int = 1000,
    variance: Variance | None = None,
    output_type: OutputType = "pil",
    callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
    capture_every: int = 0,
) -> SampleOutput:
    """Sample ``batch_size`` images from p_θ.

    Args:
        unet: the ε-network; sampling runs on its device and dtype.
        scheduler: its scheduler (not modified: a copy is stepped).
        batch_size: number of images, ≥ 1.
        generator: a generator, or one per image (images then do not depend on the batch size).
        seed: shorthand for ``generator=[Generator(seed + i) for each image i]`` on the CPU; not with ``generator``.
        num_inference_steps: steps of the (strided) reverse chain, 1..T.
        variance: σ_t² = β̃_t ("fixed_small") or β_t ("fixed_large"); None keeps the scheduler's setting.
        output_type: "pil", "np" (B, H, W, C in [0, 1]) or "pt" (B, C, H, W in [0, 1]).
        callback: called after every step as ``callback(i, t, x_{t-1}, x̂_0)``.
        capture_every: keep x_t and x̂_0 every this many steps (and the last) in ``trajectory``; 0 keeps none.

    Returns:
        ``SampleOutput(images, trajectory)``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type={output_type!r} is not supported; choose 'pil', 'np' or 'pt'")
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if seed is not None:
        generator = [torch.Generator().manual_seed(seed + i) for i in range(batch_size)]
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}")
    if capture_every < 0:
        raise ValueError(f"capture_every must be >= 0, got {capture_every}")
    overrides = {} if variance is None else {"variance_type": variance}
    if variance is not None and variance not in ("fixed_small", "fixed_large"):
        raise ValueError(f"variance={variance!r} is not supported; choose 'fixed_small' or 'fixed_large'")
    scheduler = DDPMHFScheduler.from_config(scheduler.config, **overrides)
    scheduler.set_timesteps(num_inference_steps)

    cfg = unet.config
    size = (cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
    x = randn_tensor((batch_size, cfg.in_channels, *size), generator=generator, device=unet.device, dtype=unet.dtype)
    # NHWC activations: ~1.2x faster convolutions on CPU (1.3x with a channels_last UNet, as load_pipeline returns)
    x = x.contiguous(memory_format=torch.channels_last)
    trajectory = Trajectory() if capture_every else None
    last = len(scheduler.timesteps) - 1
    with torch.inference_mode():
        for i, t in enumerate(scheduler.timesteps):
            model_output = unet(x, t).sample
            x_t = x
            x, pred_x0 = scheduler.step(model_output, t, x, generator=generator, return_dict=False)
            if trajectory is not None and (i % capture_every == 0 or i == last):
                trajectory.timesteps.append(int(t))
                trajectory.x_t.append(x_t.float().cpu())
                trajectory.pred_x0.append(pred_x0.float().cpu())
            if callback is not None:
                callback(i, int(t), x, pred_x0)
    return SampleOutput(images=to_output(x, output_type), trajectory=trajectory)
