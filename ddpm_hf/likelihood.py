"""The variational bound on -log p_θ(x_0) in bits per dimension (Ho et al. 2020, eq. 5).

    L = L_T + Σ_{t>1} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) ‖ N(0, I))                      (prior term; no parameters)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p_θ(x_{t-1} | x_t))  (two Gaussians: closed form)
    L_0     = -log p_θ(x_0 | x_1)                           (discretised Gaussian decoder, eq. 13)

for 8-bit data scaled to [-1, 1]. Indices here are diffusers' (t = 0..T-1): the KL terms are at t = 1..T-1 and the
decoder at t = 0. Every term is averaged over dimensions and divided by ln 2. The full sum needs T network
evaluations per image; ``num_timesteps=K`` estimates Σ_t without bias from K stratified timesteps shared by the
batch (``variational_bound``, which draws the bound's curve). ``estimate_bound`` is the estimator for reporting a
number: the heavy small-t terms exactly, the rest stratified with a fresh draw per image, so the spread across images
includes the timestep draw and its standard error is honest. ``vb_terms`` takes a model output the caller already
has, so a network evaluation serves both a sampling step and the bound.
"""

import math
from dataclasses import dataclass

import torch

from .guidance import forward, label_tensor
from .scheduling_ddpm_hf import DDPMHFScheduler

LOG2 = math.log(2.0)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log P(x) per element, x on the 256-level grid in [-1, 1], under N(means, e^{2 log_scales}) integrated over
    the pixel's bin of width 2/255; the first and last bins extend to ∓∞ (Ho et al. 2020, eq. 13)."""
    inv_std = torch.exp(-log_scales)
    cdf_plus = torch.special.ndtr(inv_std * (x - means + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (x - means - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))


def _mean_bits(nats: torch.Tensor) -> torch.Tensor:
    return nats.flatten(1).mean(1) / LOG2


def prior_bpd(scheduler: DDPMHFScheduler, x0: torch.Tensor) -> torch.Tensor:
    """L_T in bits/dim, per image."""
    T = scheduler.config.num_train_timesteps
    mean = scheduler.add_noise(x0, torch.zeros_like(x0), torch.full((x0.shape[0],), T - 1, device=x0.device))
    logvar = torch.log1p(-scheduler.alphas_cumprod[T - 1].double()).to(x0.dtype).expand_as(x0)
    return _mean_bits(normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)))


def vb_terms(
    scheduler: DDPMHFScheduler, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, model_output: torch.Tensor
) -> torch.Tensor:
    """L_{t-1} (t > 0) or L_0 (t = 0) in bits/dim per image, from a model output the caller already has.

    Args:
        scheduler: gives p_θ(x_{t-1} | x_t) through ``p_mean_variance`` (the same function ``step`` uses).
        x0: (B, C, H, W) data on the 8-bit grid in [-1, 1].
        x_t: a draw of q(x_t | x_0).
        t: (B,) timesteps.
        model_output: the network's output at (x_t, t).

    Returns:
        (B,) float32 bits/dim.
    """
    model_mean, _, model_logvar, _ = scheduler.p_mean_variance(model_output.float(), x_t, t, t - 1)
    true_mean, _, true_logvar = scheduler.q_posterior_mean_variance(x0, x_t, t)
    # in float64: late KL terms are differences of nearly equal variances (β̃_t → β_t), ~1e-9 nats
    true_mean, true_logvar, model_mean, model_logvar = (
        v.double().expand_as(x0) for v in (true_mean, true_logvar, model_mean, model_logvar)
    )
    kl = _mean_bits(normal_kl(true_mean, true_logvar, model_mean, model_logvar))
    nll = -_mean_bits(discretized_gaussian_log_likelihood(x0.double(), model_mean, 0.5 * model_logvar))
    return torch.where(t == 0, nll, kl).float()


def vb_term_bpd(
    unet, scheduler: DDPMHFScheduler, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, class_labels=None
):
    """``vb_terms`` at x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for this ``noise``, running the network once (a class-conditional
    one given ``class_labels``, one per image, None entries ∅; no labels: ∅ for all, its unconditional model)."""
    x_t = scheduler.add_noise(x0, noise, t)
    labels = label_tensor(unet, class_labels, x0.shape[0])
    return vb_terms(scheduler, x0, x_t, t, forward(unet, x_t, t, labels))


@dataclass
class BoundTerms:
    """Per-image bits/dim: ``prior`` L_T, ``decoder`` L_0, ``terms[:, k]`` L_{t_k - 1} at ``timesteps[k]``
    multiplied by ``weights[k]`` (the size of its stratum, to estimate the full sum when only some t were
    evaluated; 1 for the exact sum), and their ``total``."""

    prior: torch.Tensor
    decoder: torch.Tensor
    timesteps: torch.Tensor
    terms: torch.Tensor
    total: torch.Tensor
    weights: torch.Tensor


def variational_bound(
    unet,
    scheduler: DDPMHFScheduler,
    x0: torch.Tensor,
    num_timesteps: int | None = None,
    generator: torch.Generator | None = None,
    class_labels=None,
) -> BoundTerms:
    """The bound L (eq. 5) in bits/dim for a batch x_0 in [-1, 1] on the 8-bit grid.

    Args:
        unet: the ε-network (any diffusers ``UNet2DModel``), used under ``torch.inference_mode``.
        scheduler: the scheduler it was trained with (its variance_type sets p_θ's variance).
        x0: (B, C, H, W) images, values k/127.5 - 1 for integers k in 0..255.
        num_timesteps: None evaluates every t = 1..T-1 (exact sum); K draws one t from each of K equal strata of
            1..T-1 and weights each term by the stratum's size (an unbiased estimate of the sum).
        generator: seeds the noise ε of each term and the stratified timesteps.
        class_labels: for a class-conditional UNet, the bound of x_0 given y: one class per image (None: ∅).

    Returns:
        ``BoundTerms`` with per-image tensors.
    """
    T = scheduler.config.num_train_timesteps
    if x0.ndim != 4 or x0.min() < -1 or x0.max() > 1:
        raise ValueError("x0 must be a (B, C, H, W) batch in [-1, 1]")
    device = x0.device
    if num_timesteps is None or num_timesteps >= T - 1:
        timesteps, weights = torch.arange(1, T), torch.ones(T - 1)
    else:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        starts, sizes = _strata(1, T, num_timesteps)
        timesteps = starts + (torch.rand(num_timesteps, generator=generator) * sizes).long()
        weights = sizes.float()
    batch = x0.shape[0]
    with torch.inference_mode():
        terms = (
            torch.stack(
                [
                    vb_term_bpd(
                        unet,
                        scheduler,
                        x0,
                        torch.full((batch,), int(t), device=device),
                        torch.randn(x0.shape, generator=generator).to(device),
                        class_labels,
                    )
                    for t in timesteps
                ],
                dim=1,
            ).cpu()
            * weights
        )
        decoder = vb_term_bpd(
            unet,
            scheduler,
            x0,
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.randn(x0.shape, generator=generator).to(device),
            class_labels,
        ).cpu()
        prior = prior_bpd(scheduler, x0).cpu()
    return BoundTerms(prior, decoder, timesteps, terms, prior + decoder + terms.sum(1), weights)


def _strata(first: int, T: int, num_strata: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges and sizes of ``num_strata`` near-equal strata of the timesteps first..T-1."""
    edges = torch.linspace(first, T, num_strata + 1).long()
    return edges[:-1], edges[1:] - edges[:-1]


def estimate_bound(
    unet,
    scheduler: DDPMHFScheduler,
    x0: torch.Tensor,
    *,
    exact_timesteps: int = 50,
    num_timesteps: int = 50,
    generator: torch.Generator | None = None,
    class_labels=None,
) -> torch.Tensor:
    """An unbiased per-image estimate of the bound L (eq. 5) in bits/dim whose spread across images is honest.

    The terms L_{t-1} for t = 1..``exact_timesteps`` are summed exactly: they are the largest and the most
    skewed, so a stratified draw among them usually lands low and now and then far high. The other timesteps are
    split into ``num_timesteps`` equal strata and every image draws its own t in each stratum, weighted by the
    stratum's size. Images then have independent estimates, and the standard error across images covers both
    the images and the timestep draw. Cost: exact_timesteps + num_timesteps + 1 network evaluations per image.

    Args:
        unet: the ε-network, used under ``torch.inference_mode``.
        scheduler: the scheduler it was trained with.
        x0: (B, C, H, W) images on the 8-bit grid in [-1, 1].
        exact_timesteps: S, the number of small timesteps summed exactly (0..T-1; T-1 gives the exact sum).
        num_timesteps: K, the strata of the timesteps S+1..T-1 (≥ 1 while any remain).
        generator: seeds the noise of every term and the per-image timesteps.
        class_labels: for a class-conditional UNet, the bound given y: one class per image (None entries and no
            labels: ∅, the model's unconditional bound).

    Returns:
        (B,) float32 bits/dim.
    """
    T = scheduler.config.num_train_timesteps
    if x0.ndim != 4 or x0.min() < -1 or x0.max() > 1:
        raise ValueError("x0 must be a (B, C, H, W) batch in [-1, 1]")
    if not 0 <= exact_timesteps <= T - 1:
        raise ValueError(f"exact_timesteps must be in [0, {T - 1}], got {exact_timesteps}")
    remaining = T - 1 - exact_timesteps
    if remaining and not 1 <= num_timesteps <= remaining:
        raise ValueError(f"num_timesteps must be in [1, {remaining}], got {num_timesteps}")
    batch, device = x0.shape[0], x0.device

    def term(t: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator).to(device)
        return vb_term_bpd(unet, scheduler, x0, t.to(device), noise, class_labels).cpu()

    with torch.inference_mode():
        total = prior_bpd(scheduler, x0).cpu() + term(torch.zeros(batch, dtype=torch.long))
        for t in range(1, exact_timesteps + 1):
            total += term(torch.full((batch,), t))
        if remaining:
            starts, sizes = _strata(exact_timesteps + 1, T, num_timesteps)
            for start, size in zip(starts.tolist(), sizes.tolist()):
                t = start + (torch.rand(batch, generator=generator) * size).long()
                total += size * term(t)
    return total
