"""The Space's explanations: the forward process q(x_t | x_0), the schedule, one reverse step beside the true
posterior, and the variational bound of one image (Ho et al. 2020, eqs. 4, 5, 7)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .. import pictures
from ..likelihood import variational_bound, vb_terms
from ..samplers import with_variance
from ..scheduling_ddpm_hf import DDPMHFScheduler
from ..validate import check_int
from .images import new_file, picture
from .limits import ANIMATION_FRAMES, BOUND_POINTS
from .registry import Model

SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def readable(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits in one style: plain where that is short ("0.842", "12.5"), else
    with a power of ten ("9.35 × 10⁻⁷", "1.00 × 10⁴"), never "1e+04"."""
    plain = f"{value:.{digits}g}"
    if value != 0 and ("e" in plain or not 1e-3 <= abs(value) < 1e3):
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        return f"{mantissa} × 10{str(int(exponent)).translate(SUPERSCRIPTS)}"
    return plain


def check_t(t, scheduler: DDPMHFScheduler) -> int:
    return check_int("t", t, 0, scheduler.config.num_train_timesteps - 1)


@dataclass
class ForwardResult:
    x0: Image.Image
    x_t: Image.Image
    signal_rate: float  # √ᾱ_t
    noise_rate: float  # √(1-ᾱ_t)
    animation: Path  # x_t for t = 0 → T-1, one ε

    def readout(self, t: int) -> str:
        snr = self.signal_rate**2 / max(self.noise_rate**2, 1e-300)
        return (
            f"At t = {t}: signal rate √ᾱₜ = **{readable(self.signal_rate)}**, noise rate √(1−ᾱₜ) = "
            f"**{readable(self.noise_rate)}**, SNR = {readable(snr)}"
        )


def forward_process(scheduler: DDPMHFScheduler, x0: torch.Tensor, t, seed) -> ForwardResult:
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for one ε drawn from ``seed``, and a GIF of t = 0 → T-1 with the same ε."""
    t = check_t(t, scheduler)
    T, scale = scheduler.config.num_train_timesteps, max(1, 224 // x0.shape[-1])
    (x_t,) = pictures.forward_frames(scheduler, x0, [t], seed=seed, scale=scale)
    timesteps = np.unique(np.linspace(0, T - 1, ANIMATION_FRAMES).round().astype(int))
    frames = pictures.forward_frames(scheduler, x0, timesteps, seed=seed, scale=scale)
    return ForwardResult(
        picture(x0, scale),
        x_t,
        float(scheduler.sqrt_alphas_cumprod[t]),
        float(scheduler.sqrt_one_minus_alphas_cumprod[t]),
        pictures.save_gif(frames, new_file(".gif"), frame_ms=100),
    )


def schedule_tables(scheduler: DDPMHFScheduler) -> dict[str, pd.DataFrame]:
    """Long tables (t, value, quantity) for three plots: the rates ᾱ_t, √ᾱ_t, √(1-ᾱ_t); the ratio β̃_t / β_t of the
    two choices of σ_t² (t ≥ 1: β̃_0 = 0), which is far from 1 only at small t; and log10 SNR_t."""
    t = np.arange(scheduler.config.num_train_timesteps)

    def long(columns: dict[str, torch.Tensor], start: int = 0) -> pd.DataFrame:
        frames = [
            pd.DataFrame({"t": t[start:], "value": v.double().numpy()[start:], "quantity": k})
            for k, v in columns.items()
        ]
        return pd.concat(frames, ignore_index=True)

    s = scheduler
    return {
        "rates": long(
            {
                "ᾱₜ": s.alphas_cumprod,
                "√ᾱₜ (signal)": s.sqrt_alphas_cumprod,
                "√(1−ᾱₜ) (noise)": s.sqrt_one_minus_alphas_cumprod,
            }
        ),
        "variances": long({"β̃ₜ / βₜ": s.posterior_variance.double() / s.betas.double()}, start=1),
        "snr": long({"log10 SNRₜ": s.snr.double().log10()}),
    }


@dataclass
class PosteriorResult:
    """One reverse step at t for a known x_0, and how far p_θ is from q there."""

    pictures: tuple[Image.Image, ...]  # x_0, x_t, x̂_0, μ̃_t(x_t, x_0), μ_θ(x_t), one draw of x_{t-1} ~ p_θ
    mean_gap: float  # RMS of μ̃_t − μ_θ
    vb_term: float  # L_{t-1} (t > 0) or L_0 (t = 0) in bits/dim for this x_0 and ε

    def readout(self, t: int) -> str:
        term = "L₀ (decoder)" if t == 0 else "Lₜ₋₁ = KL(q ‖ pθ)"
        line = f"RMS(μ̃ₜ − μθ) = **{readable(self.mean_gap)}**; {term} = **{readable(self.vb_term)} bits/dim**"
        if t == 0:  # L_0 = -log p(x_0 | x_1) depends on the draw of x_1, and the bound draws its own
            line += " for this draw of x₁ (ε from the seed); the bound's L₀ uses its own draw, so the two differ"
        return line


def posterior_step(model: Model, x0: torch.Tensor, t, variance, seed) -> PosteriorResult:
    """Draw x_t ~ q(x_t | x_0), run the network once, take one step of p_θ and score it against q(x_{t-1} | x_t, x_0).

    ε is ``torch.randn(x0.shape, generator=Generator().manual_seed(seed))``, the first draw; z comes next.
    """
    scheduler, t = with_variance(model.scheduler, variance), check_t(t, model.scheduler)
    generator = torch.Generator().manual_seed(seed)
    unet = model.pipe.unet
    x0 = x0.to(unet.device)
    noise = torch.randn(x0.shape, generator=generator).to(unet.device)
    timesteps = torch.full((x0.shape[0],), t, device=unet.device)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    with torch.inference_mode():
        output = unet(x_t, timesteps).sample.float()
        x_prev, pred_x0 = scheduler.step(output, t, x_t, generator=generator, return_dict=False)
        true_mean = scheduler.q_posterior_mean_variance(x0, x_t, timesteps)[0]
        model_mean = scheduler.q_posterior_mean_variance(pred_x0, x_t, timesteps)[0]
        vb = vb_terms(scheduler, x0, x_t, timesteps, output)
    images = tuple(picture(x) for x in (x0, x_t, pred_x0, true_mean, model_mean, x_prev))
    return PosteriorResult(images, float((true_mean - model_mean).pow(2).mean().sqrt()), float(vb[0]))


@dataclass
class BoundResult:
    curve: pd.DataFrame  # t, bits/dim, log10 bits/dim: L_0 at t = 0, then L_{t-1} at the evaluated t
    total: float  # the bound L: L_T + L_0 + Σ_t L_{t-1}, the sum estimated from the same evaluated terms
    prior: float  # L_T
    decoder: float  # L_0

    def readout(self) -> str:
        return (
            f"Bound L ≈ **{readable(self.total)} bits/dim** = L<sub>T</sub> {readable(self.prior)} + "
            f"L₀ {readable(self.decoder)} + Σ Lₜ₋₁ {readable(self.total - self.prior - self.decoder)}, from "
            f"{len(self.curve) - 1} timesteps and one draw of ε per term (so L₀ here need not equal the posterior "
            "step's at t = 0, which uses the seed's first draw)"
        )


def bound_terms(model: Model, x0: torch.Tensor, variance, seed) -> BoundResult:
    """The bound's terms for one x_0 and their total, from one stratified evaluation (``variational_bound``)."""
    scheduler, generator = with_variance(model.scheduler, variance), torch.Generator().manual_seed(seed)
    unet = model.pipe.unet
    bound = variational_bound(unet, scheduler, x0.to(unet.device), num_timesteps=BOUND_POINTS, generator=generator)
    per_t = (bound.terms[0] / bound.weights).double().numpy()  # each L_{t-1} itself, before its stratum's weight
    t = np.concatenate([[0], bound.timesteps.numpy()])
    bits = np.concatenate([[float(bound.decoder[0])], per_t])
    curve = pd.DataFrame({"t": t, "bits/dim": bits, "log10 bits/dim": np.log10(np.maximum(bits, 1e-12))})
    return BoundResult(curve, float(bound.total[0]), float(bound.prior[0]), float(bound.decoder[0]))
