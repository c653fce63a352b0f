"""The reverse chain x_T → x_0 as a generator of steps, and ``sample`` on top of it.

``reverse_chain`` yields one ``ChainStep`` per step (x_t, x_s and x̂_0) for any sampler of ``ddpm_hf.samplers``;
the caller may stop early or ``close()`` it. Each step runs under ``torch.inference_mode``, which is never held
across a ``yield``. It also starts part-way (SDEdit: ``start_timestep``, Meng et al. 2022) and keeps a known region
(inpainting without resampling: ``known``, Lugmayr et al. 2022). ``sample`` draws x_T exactly as diffusers'
``DDPMPipeline`` does, so the "ddpm" sampler in float32 gives the pipeline's images for the same UNet, scheduler
config and seed (strided chains here use "trailing" timesteps: give the pipeline's scheduler the same spacing), and
adds a per-step callback and a trajectory of x_t and x̂_0 captured every k steps.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import speed
from .data import to_uint8
from .guidance import Labels, check_guidance, doubles_batch, guided, label_tensor, null_label
from .samplers import SAMPLERS, Precision, Sampler, Variance, autocast, make_sampler
from .scheduling_ddpm_hf import DDPMHFScheduler, TimestepSpacing

OutputType = Literal["pil", "np", "pt"]
STRIDED_SPACING = "trailing"  # the timesteps of strided chains here: every chain starts at T - 1
__all__ = ["SAMPLERS", "ChainStep", "Variance", "initial_noise", "reverse_chain", "sample", "seed_generators"]


@dataclass
class ChainStep:
    """One step of the reverse chain, tensors float32 on the model's device: step ``index`` at ``timestep`` t maps
    ``x_t`` to ``x_prev`` (x_s, s the next timestep; x_0 after the last step), predicting ``pred_x0`` (x̂_0)."""

    index: int
    timestep: int
    x_t: torch.Tensor
    x_prev: torch.Tensor
    pred_x0: torch.Tensor


@dataclass
class Trajectory:
    """x_t and x̂_0 (in [-1, 1], on the CPU) at the captured timesteps, in sampling order."""

    timesteps: list[int] = field(default_factory=list)
    x_t: list[torch.Tensor] = field(default_factory=list)
    pred_x0: list[torch.Tensor] = field(default_factory=list)

    def add(self, step: "ChainStep") -> None:
        """Keep the step's timestep, x_t and x̂_0 (as float32 on the CPU)."""
        self.timesteps.append(step.timestep)
        self.x_t.append(step.x_t.float().cpu())
        self.pred_x0.append(step.pred_x0.float().cpu())


@dataclass
class SampleOutput:
    images: list[Image.Image] | np.ndarray | torch.Tensor
    trajectory: Trajectory | None


def to_output(x: torch.Tensor, output_type: OutputType):
    """Map samples in [-1, 1] (B, C, H, W) to PIL images (``ddpm_hf.data.to_uint8``), a (B, H, W, C) float array in
    [0, 1], or a tensor in [0, 1]; the floats as ``DDPMPipeline`` forms them."""
    if output_type == "pil":
        pixels = to_uint8(x).cpu().permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]
    x = (x.float() / 2 + 0.5).clamp(0, 1)
    return x if output_type == "pt" else x.cpu().permute(0, 2, 3, 1).numpy()


def seed_generators(seed: int, batch_size: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded ``seed + i``: image i then does not depend on the batch size."""
    return [torch.Generator().manual_seed(seed + i) for i in range(batch_size)]


def initial_noise(unet: UNet2DModel, batch_size: int, generator=None) -> torch.Tensor:
    """x_T ~ N(0, I) of shape (B, C, H, W), drawn as diffusers' ``DDPMPipeline`` draws it (``randn_tensor``)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}")
    cfg = unet.config
    size = (cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else tuple(cfg.sample_size)
    return randn_tensor(
        (batch_size, cfg.in_channels, *size), generator=generator, device=unet.device, dtype=unet.dtype
    )


def _chain_timesteps(chain, num_inference_steps: int, start_timestep: int | None, T: int) -> list[int]:
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
        raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {num_inference_steps!r}")
    chain.set_timesteps(num_inference_steps)
    timesteps = [int(t) for t in chain.timesteps]
    if start_timestep is None:
        return timesteps
    if not isinstance(start_timestep, int) or not 0 <= start_timestep < T:
        raise ValueError(f"start_timestep must be an integer in [0, {T - 1}], got {start_timestep!r}")
    kept = [t for t in timesteps if t <= start_timestep]
    if not kept:
        raise ValueError(f"start_timestep={start_timestep} is below the schedule's last timestep {timesteps[-1]}")
    return kept


def reverse_chain(
    unet: UNet2DModel,
    scheduler: DDPMHFScheduler,
    sample: torch.Tensor,
    *,
    num_inference_steps: int = 1000,
    sampler: Sampler = "ddpm",
    variance: Variance | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    start_timestep: int | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    precision: Precision = "auto",
    timestep_spacing: TimestepSpacing | None = STRIDED_SPACING,
    autotune: bool | None = None,
    compile: bool | None = None,
    class_labels: Labels = None,
    guidance_scale: float | None = None,
) -> Iterator[ChainStep]:
    """Run the reverse chain from ``sample``, one ``ChainStep`` per step.

    Args:
        unet: the network; the chain runs on its device.
        scheduler: its scheduler (not modified: ``sampler`` builds a fresh one from its config).
        sample: the starting x: x_T (``initial_noise``), or for SDEdit x_0 noised to ``start_timestep`` with
            ``scheduler.add_noise``.
        num_inference_steps: steps of the sampler's (strided) schedule, 1..T.
        sampler: one of ``ddpm_hf.samplers.SAMPLERS``.
        variance: σ_t² of the "ddpm" chain ("fixed_small" β̃_t, "fixed_large" β_t); None keeps the scheduler's.
        generator: the noise of stochastic samplers and of ``known``: a generator or one per image.
        start_timestep: keep only the schedule's timesteps ≤ this one (SDEdit); every sampler supports it.
        known: (x0_known, mask), mask 1 where x_0 is known: after each step, x_prev there is replaced by a fresh
            draw of q(x_s | x0_known) (x0_known itself after the last step), for every sampler.
        precision: the network's autocast precision (``ddpm_hf.samplers``); the scheduler's arithmetic is float32.
            "auto" runs float32 or the device's reduced precision, whichever ``ddpm_hf.speed.choose`` times faster.
        timestep_spacing: the timesteps of a strided chain; "trailing" (the default) starts every chain at T−1,
            so even 1 step maps pure noise to x̂_0; None keeps the scheduler's own (diffusers' "leading").
        autotune: time the network's memory formats (and, for "auto", precisions) once and run the fastest
            (``ddpm_hf.speed.choose``; the UNet's weights are put in that format); False: a fixed rule, for runs that
            must repeat bit for bit; None: as ``DDPM_HF_AUTOTUNE`` says (on unless "0").
        compile: True: run the UNet through ``torch.compile`` (compiled at the first chain, tens of seconds);
            False: eager; None: compiled only if ``ddpm_hf.speed.compile_in_background`` has finished for it.
        class_labels: for a class-conditional UNet, one class index per image (None entries: no class, ∅); None
            samples unconditionally. A UNet without class embeddings refuses them (``ddpm_hf.guidance``).
        guidance_scale: classifier-free guidance w (Ho & Salimans 2022): ε(x, ∅) + w (ε(x, y) − ε(x, ∅)), both
            terms from one forward of a doubled batch; None or 1: the plain conditional ε(x, y); 0: ε(x, ∅).

    Yields:
        ``ChainStep`` per step; x_prev of the last one is the result.
    """
    chain, step_kwargs = make_sampler(scheduler, sampler, variance, timestep_spacing)
    timesteps = _chain_timesteps(chain, num_inference_steps, start_timestep, scheduler.config.num_train_timesteps)
    device = unet.device
    labels = label_tensor(unet, class_labels, sample.shape[0])
    check_guidance(guidance_scale)
    if known is not None:
        x0_known, mask = (v.to(device=device, dtype=torch.float32) for v in known)
        if x0_known.shape != sample.shape or torch.broadcast_shapes(mask.shape, sample.shape) != sample.shape:
            raise ValueError(f"known=(x0, mask) must match the sample's shape {tuple(sample.shape)}")
    # the UNet's memory format is held while the chain runs: a choice made meanwhile runs in it too
    batch = sample.shape[0] * (2 if doubles_batch(labels, null_label(unet), guidance_scale) else 1)
    with speed.running(unet, batch, precision, autotune=autotune, compile=compile) as (choice, network):
        network = guided(network, labels, null_label(unet), guidance_scale)
        x = sample.to(device=device, dtype=torch.float32).contiguous(memory_format=choice.memory_format)
        for index, t in enumerate(timesteps):
            prev_t = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            with torch.inference_mode():
                with autocast(device, choice.dtype):
                    model_output = network(x.to(unet.dtype), t)
                model_output = model_output.float()
                out = chain.step(model_output, t, x, generator=generator, **step_kwargs)
                x_prev = out.prev_sample
                pred_x0 = getattr(out, "pred_original_sample", None)
                if pred_x0 is None:  # DPM-Solver's output has none: x̂_0 as the DDPM chain forms it
                    pred_x0 = scheduler.p_mean_variance(model_output, x, t, t - 1)[3]
                if known is not None:
                    noise = randn_tensor(x.shape, generator=generator, device=device, dtype=torch.float32)
                    truth = scheduler.add_noise(x0_known, noise, torch.tensor(prev_t)) if prev_t >= 0 else x0_known
                    x_prev = torch.lerp(x_prev, truth, mask)
            yield ChainStep(index, t, x, x_prev, pred_x0)
            x = x_prev


def sample(
    unet: UNet2DModel,
    scheduler: DDPMHFScheduler,
    batch_size: int = 16,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    seed: int | None = None,
    num_inference_steps: int = 1000,
    sampler: Sampler = "ddpm",
    variance: Variance | None = None,
    output_type: OutputType = "pil",
    callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
    capture_every: int = 0,
    precision: Precision = "auto",
    timestep_spacing: TimestepSpacing | None = STRIDED_SPACING,
    autotune: bool | None = None,
    compile: bool | None = None,
    class_labels: Labels = None,
    guidance_scale: float | None = None,
) -> SampleOutput:
    """Sample ``batch_size`` images from p_θ (consumes ``reverse_chain``).

    Args:
        unet: the ε-network; sampling runs on its device.
        scheduler: its scheduler (not modified).
        batch_size: number of images, ≥ 1.
        generator: a generator, or one per image (images then do not depend on the batch size).
        seed: shorthand for ``generator=seed_generators(seed, batch_size)``; not with ``generator``.
        num_inference_steps: steps of the (strided) reverse chain, 1..T.
        sampler: one of ``ddpm_hf.samplers.SAMPLERS``; "ddpm" is the paper's chain.
        variance: σ_t² = β̃_t ("fixed_small") or β_t ("fixed_large") of the "ddpm" chain; None keeps the scheduler's.
        output_type: "pil", "np" (B, H, W, C in [0, 1]) or "pt" (B, C, H, W in [0, 1]).
        callback: called after every step as ``callback(i, t, x_{t-1}, x̂_0)``.
        capture_every: keep x_t and x̂_0 every this many steps (and the last) in ``trajectory``; 0 keeps none.
        precision: the network's autocast precision ("auto", "float32", "bfloat16", "float16"; ``ddpm_hf.samplers``).
        timestep_spacing: "trailing" (default: a strided chain starts at T−1), "leading" or "linspace" as in
            diffusers, or None for the scheduler's own; all give the same 1000-step chain.
        autotune: time memory formats and precisions once and run the fastest (``reverse_chain``); False: a fixed
            rule, bit for bit repeatable; None: ``DDPM_HF_AUTOTUNE`` decides (on unless "0").
        compile: True: ``torch.compile`` the UNet (once, tens of seconds); False: eager; None: compiled if a
            background compile (``ddpm_hf.speed.compile_in_background``) has finished.
        class_labels: one class index per image for a class-conditional UNet (None entries: ∅), or None.
        guidance_scale: classifier-free guidance w; None or 1: plain conditional, 0: unconditional (``reverse_chain``).

    Returns:
        ``SampleOutput(images, trajectory)``.
    """
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type={output_type!r} is not supported; choose 'pil', 'np' or 'pt'")
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if capture_every < 0:
        raise ValueError(f"capture_every must be >= 0, got {capture_every}")
    if seed is not None:
        generator = seed_generators(seed, batch_size) if isinstance(batch_size, int) else None
    x = initial_noise(unet, batch_size, generator)
    options = {"sampler": sampler, "variance": variance, "generator": generator, "precision": precision}
    options.update(timestep_spacing=timestep_spacing, autotune=autotune, compile=compile)
    options.update(class_labels=class_labels, guidance_scale=guidance_scale)
    chain = reverse_chain(unet, scheduler, x, num_inference_steps=num_inference_steps, **options)
    trajectory = Trajectory() if capture_every else None
    step = None
    for step in chain:
        if trajectory is not None and step.index % capture_every == 0:
            trajectory.add(step)
        if callback is not None:
            callback(step.index, step.timestep, step.x_prev, step.pred_x0)
    if trajectory is not None and trajectory.timesteps[-1] != step.timestep:
        trajectory.add(step)  # the last step is always kept
    return SampleOutput(images=to_output(step.x_prev, output_type), trajectory=trajectory)
