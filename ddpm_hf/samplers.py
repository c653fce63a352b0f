"""The reverse-process samplers and the arithmetic precision of the network, chosen by name.

Samplers (all built ``from_config`` of the model's scheduler, so they share its β schedule; none is written here):

    "ddpm"       DDPMHFScheduler: the paper's ancestral chain (Ho et al. 2020, Algorithm 2), strided if asked
    "ddim"       diffusers' DDIMScheduler with η = 0: deterministic (Song et al. 2021)
    "ddim-eta1"  the same with η = 1: stochastic, DDPM-like noise on DDIM's timesteps
    "dpm++"      diffusers' DPMSolverMultistepScheduler, algorithm_type="dpmsolver++", solver_order=2 (Lu et al. 2022)
    "sde-dpm++"  the same with algorithm_type="sde-dpmsolver++": the stochastic (SDE) form of DPM-Solver++ as
                 diffusers implements it, which adds fresh noise each step as the paper's chain does

η is chosen by the name (``ETA``). A strided chain of n < T steps takes its timesteps by ``timestep_spacing``;
``ddpm_hf.sampling`` asks for "trailing" (T−1, T−1−T/n, …), so every chain starts from x_T however few its steps
(Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"); "leading", diffusers'
default, starts a 1-step chain at t = 0. Precision: "float32", "bfloat16" or "float16" autocast for the network's
forward (the scheduler's arithmetic is always float32), or "auto": bfloat16 on a CPU with native bfloat16
instructions (AVX512-BF16 or AMX) and on CUDA devices that support it (else float16), float32 elsewhere.
``DDPM_HF_NATIVE_BF16=1`` makes "auto" treat the CPU as having native bfloat16 (so a float32-only machine runs
the bfloat16 path, slowly but the same), ``=0`` as lacking it (float32 everywhere); unset, the CPU is asked.
"""

import contextlib
import os
from typing import Literal, get_args

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from .scheduling_ddpm_hf import DDPMHFScheduler, TimestepSpacing
from .validate import check_choice

Sampler = Literal["ddpm", "ddim", "ddim-eta1", "dpm++", "sde-dpm++"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]
Variance = Literal["fixed_small", "fixed_large"]
SAMPLERS, PRECISIONS, VARIANCES = get_args(Sampler), get_args(Precision), get_args(Variance)
SPACINGS = get_args(TimestepSpacing)
ETA = {"ddim": 0.0, "ddim-eta1": 1.0}  # DDIM's η per sampler name (Song et al. 2021, eq. 16)
DPM_ALGORITHM = {"dpm++": "dpmsolver++", "sde-dpm++": "sde-dpmsolver++"}  # DPM-Solver's algorithm_type per name


def make_sampler(
    scheduler: DDPMHFScheduler,
    sampler: str,
    variance: str | None = None,
    timestep_spacing: TimestepSpacing | None = None,
):
    """A fresh scheduler for ``sampler`` with ``scheduler``'s configuration, and the keyword arguments of its ``step``.

    Args:
        scheduler: the model's scheduler (not modified).
        sampler: one of ``SAMPLERS``.
        variance: σ_t² of the "ddpm" chain, "fixed_small" (β̃_t) or "fixed_large" (β_t); None keeps the
            scheduler's. The other samplers have no such choice and ignore it.
        timestep_spacing: how a strided chain picks its timesteps ("trailing", "leading", "linspace", as in
            diffusers); None keeps the scheduler's. Every spacing gives all T timesteps when T steps are asked.

    Returns:
        (scheduler, step_kwargs).
    """
    check_choice("sampler", sampler, SAMPLERS)
    if variance is not None:
        check_choice("variance", variance, VARIANCES)
    config = scheduler.config
    spacing = {} if timestep_spacing is None else {"timestep_spacing": timestep_spacing}
    if timestep_spacing is not None:
        check_choice("timestep_spacing", timestep_spacing, SPACINGS)
    if sampler == "ddpm":
        return with_variance(scheduler, variance, **spacing), {}
    if sampler in DPM_ALGORITHM:
        return DPMSolverMultistepScheduler.from_config(
            config, **spacing, algorithm_type=DPM_ALGORITHM[sampler], solver_order=2
        ), {}
    return DDIMScheduler.from_config(config, **spacing), {"eta": ETA[sampler]}


def with_variance(scheduler: DDPMHFScheduler, variance: str | None, **config) -> DDPMHFScheduler:
    """A fresh ``DDPMHFScheduler`` with ``scheduler``'s configuration and σ_t² = ``variance`` ("fixed_small": β̃_t,
    "fixed_large": β_t; None keeps the scheduler's), and any other configuration given in ``config``."""
    if variance is not None:
        config["variance_type"] = check_choice("variance", variance, VARIANCES)
    return DDPMHFScheduler.from_config(scheduler.config, **config)


NATIVE_BF16_ENV = "DDPM_HF_NATIVE_BF16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX tiles), as torch detects them, unless
    ``DDPM_HF_NATIVE_BF16`` is "1" (treat as native) or "0" (treat as absent)."""
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of the network's forward on ``device`` (float32: no autocast)."""
    if check_choice("precision", precision, PRECISIONS) != "auto":
        return getattr(torch, precision)
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """A context running the network in ``dtype`` (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
