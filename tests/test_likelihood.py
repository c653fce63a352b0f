"""The variational bound in bits/dim: an oracle ε-predictor gives the closed form; a real UNet gives sane numbers."""

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_unet

from ddpm_hf import DDPMHFScheduler, variational_bound
from ddpm_hf.likelihood import discretized_gaussian_log_likelihood, normal_kl, prior_bpd, vb_term_bpd, vb_terms


class OracleEpsilon(torch.nn.Module):
    """The exact ε-predictor when the data distribution is the single image x_0: ε = (x_t − √ᾱ_t x_0)/√(1−ᾱ_t)."""

    def __init__(self, scheduler, x0):
        super().__init__()
        self.scheduler, self.x0 = scheduler, x0

    def forward(self, x_t, t):
        s, t = self.scheduler, torch.as_tensor(t).reshape(-1, 1, 1, 1)
        eps = (x_t - s.sqrt_alphas_cumprod[t] * self.x0) / s.sqrt_one_minus_alphas_cumprod[t]
        return SimpleNamespace(sample=eps)


def pixels(seed=0, shape=(2, 1, 5, 5)):
    """Random 8-bit images in [-1, 1], with the two edge values present."""
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))
    x.view(-1)[:2] = torch.tensor([0, 255])
    return x.float() / 127.5 - 1


def closed_form_decoder_bits(x0: torch.Tensor, sigma: float) -> torch.Tensor:
    """−log2 P(x_0) per dim when the decoder's mean is x_0 itself: erf over a bin of ±1/255, edges open."""
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    inner = -math.log2(phi(1 / 255 / sigma) - phi(-1 / 255 / sigma))
    edge = -math.log2(phi(1 / 255 / sigma))
    per_dim = torch.where((x0 < -0.999) | (x0 > 0.999), torch.tensor(edge), torch.tensor(inner))
    return per_dim.flatten(1).mean(1)


def closed_form_prior_bits(scheduler, x0) -> torch.Tensor:
    """KL(N(√ᾱ_T x_0, 1−ᾱ_T) ‖ N(0, 1)) per dim in bits, computed in float64."""
    ab = float(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[-1])
    m = math.sqrt(ab) * x0.double()
    kl = 0.5 * (-math.log(1 - ab) + (1 - ab) + m**2 - 1)
    return (kl.flatten(1).mean(1) / math.log(2)).float()


def test_oracle_bound_is_prior_plus_decoder_for_fixed_small():
    scheduler, x0 = DDPMHFScheduler(), pixels()
    result = variational_bound(OracleEpsilon(scheduler, x0), scheduler, x0, generator=torch.Generator().manual_seed(0))
    assert result.terms.shape == (2, 999)
    assert result.terms.abs().max() < 1e-5  # every L_{t-1} vanishes: p_θ equals the posterior
    sigma = math.sqrt(float(scheduler.posterior_variance[1]))  # log variance clipped at t=0 to β̃ of t=1
    torch.testing.assert_close(result.decoder, closed_form_decoder_bits(x0, sigma), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.prior, closed_form_prior_bits(scheduler, x0), rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(result.total, result.prior + result.decoder, rtol=1e-5, atol=1e-5)


def test_oracle_kl_terms_are_positive_for_fixed_large():
    """With σ² = β_t ≠ β̃_t the model's variance is wrong even with the exact mean: KL > 0 (it fades as β̃_t → β_t)."""
    scheduler, x0 = DDPMHFScheduler(variance_type="fixed_large"), pixels()
    result = variational_bound(OracleEpsilon(scheduler, x0), scheduler, x0, num_timesteps=20)
    assert (result.terms >= 0).all() and (result.terms[:, :5] > 0).all()
    ratio = scheduler.betas[1:].double() / scheduler.posterior_variance[1:].double()
    expected_nats = 0.5 * (ratio.log() + 1 / ratio - 1)  # KL of two zero-mean-difference Gaussians per dim
    t = result.timesteps
    weights = torch.diff(torch.linspace(1, 1000, 21).long()).float()
    expected = (expected_nats[t - 1] / math.log(2) * weights).float()
    torch.testing.assert_close(result.terms[0], expected, rtol=1e-3, atol=1e-6)


def stratified_draws(scheduler, x0, num_timesteps, seeds):
    oracle = OracleEpsilon(scheduler, x0)
    return [
        variational_bound(
            oracle, scheduler, x0, num_timesteps=num_timesteps, generator=torch.Generator().manual_seed(s)
        )
        for s in seeds
    ]


def test_stratified_estimate_is_unbiased_against_the_full_sum():
    """With σ² = β_t and the exact mean, L_{t-1} depends on t alone (not on ε). Each estimate must then be exactly
    Σ_k |stratum k| · L(t_k) with the full evaluation's L, and t_k uniform on its stratum (next test): its
    expectation over the draws, computed exactly here, is the full sum (a 5% bias fails at rtol 1e-5)."""
    T, K = 200, 8
    scheduler, x0 = DDPMHFScheduler(num_train_timesteps=T, variance_type="fixed_large"), pixels()
    full = variational_bound(OracleEpsilon(scheduler, x0), scheduler, x0, generator=torch.Generator().manual_seed(0))
    per_t = full.terms.double()  # L_{t-1} at t = 1..T-1
    edges = torch.linspace(1, T, K + 1).long()
    sizes = edges.diff()
    assert sizes.sum() == T - 1 and edges[0] == 1 and edges[-1] == T  # the strata partition 1..T-1
    expectation = sum(sizes[k] * per_t[:, edges[k] - 1 : edges[k + 1] - 1].mean(1) for k in range(K))
    torch.testing.assert_close(expectation, per_t.sum(1), rtol=1e-9, atol=0)
    for estimate in stratified_draws(scheduler, x0, K, range(20)):
        assert ((estimate.timesteps >= edges[:-1]) & (estimate.timesteps < edges[1:])).all()
        expected = sizes.double() * per_t[:, estimate.timesteps - 1]
        torch.testing.assert_close(estimate.terms.double(), expected, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(estimate.total, estimate.prior + estimate.decoder + estimate.terms.sum(1))


def test_stratified_timesteps_are_uniform_on_each_stratum():
    """Every t of 1..T-1 is drawn in its stratum with probability 1/|stratum| (counts within 5 standard errors)."""
    T, K, N = 50, 7, 600
    scheduler, x0 = DDPMHFScheduler(num_train_timesteps=T, variance_type="fixed_large"), pixels(shape=(1, 1, 2, 2))
    drawn = torch.stack([b.timesteps for b in stratified_draws(scheduler, x0, K, range(N))])
    edges = torch.linspace(1, T, K + 1).long()
    for k in range(K):
        values = torch.arange(int(edges[k]), int(edges[k + 1]))
        counts = (drawn[:, k, None] == values).sum(0).double()
        assert counts.sum() == N, k  # nothing drawn outside the stratum
        p = 1 / len(values)
        assert ((counts - N * p).abs() < 5 * math.sqrt(N * p * (1 - p))).all(), (k, counts)


def test_vb_terms_reuse_a_model_output():
    scheduler, x0, unet = DDPMHFScheduler(), pixels(shape=(2, 1, 16, 16)), tiny_unet()
    t, noise = torch.tensor([0, 400]), torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x_t = scheduler.add_noise(x0, noise, t)
    with torch.inference_mode():
        output = unet(x_t, t).sample
        torch.testing.assert_close(vb_terms(scheduler, x0, x_t, t, output), vb_term_bpd(unet, scheduler, x0, t, noise))
        other = vb_terms(scheduler, x0, x_t, t, output + 0.1)
    assert (other != vb_term_bpd(unet, scheduler, x0, t, noise)).all()


def test_random_unet_bound_is_finite_positive_reproducible():
    scheduler, x0 = DDPMHFScheduler(), pixels(shape=(2, 1, 16, 16))
    unet = tiny_unet()
    a = variational_bound(unet, scheduler, x0, num_timesteps=8, generator=torch.Generator().manual_seed(3))
    b = variational_bound(unet, scheduler, x0, num_timesteps=8, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(a.total).all() and (a.total > 0).all()
    assert (a.total > 8).all()  # an untrained model does no better than a uniform 8 bits/dim
    torch.testing.assert_close(a.total, b.total)


def test_gaussian_helpers_against_closed_forms():
    m1, lv1, m2, lv2 = torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(-0.2), torch.tensor(0.5)
    v1, v2 = math.exp(-1.0), math.exp(0.5)
    expected = 0.5 * math.log(v2 / v1) + (v1 + 0.5**2) / (2 * v2) - 0.5
    assert float(normal_kl(m1, lv1, m2, lv2)) == pytest.approx(expected, rel=1e-6)
    # the discretised likelihood sums to 1 over the 256 bins
    grid = torch.arange(256).float() / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(grid, torch.tensor(0.1), torch.tensor(math.log(0.3)))
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(prior_bpd(DDPMHFScheduler(), torch.zeros(1, 1, 2, 2))) < 1e-4


def test_bound_rejects_data_outside_the_range():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        variational_bound(tiny_unet(), DDPMHFScheduler(), torch.full((1, 1, 16, 16), 2.0), num_timesteps=2)


def test_estimate_bound_is_unbiased_and_tighter_than_shared_strata_on_the_shipped_model():
    """On trained weights the bound's small-t terms dominate and are skewed: a shared stratified draw of all
    timesteps scatters widely around the exact sum, while exact small t plus per-image strata stays close."""
    from ddpm_hf.data import load_dataset, to_model_range
    from ddpm_hf.likelihood import estimate_bound
    from ddpm_hf.pipeline_io import load_pipeline

    pipe = load_pipeline("models/ddpm-mnist")
    unet, scheduler = pipe.unet.eval(), pipe.scheduler
    x0 = to_model_range(load_dataset("mnist", "test").images[:4])
    exact = variational_bound(unet, scheduler, x0, None, torch.Generator().manual_seed(0)).total  # all 999 terms
    repeats = 16
    new = estimate_bound(unet, scheduler, x0.repeat(repeats, 1, 1, 1), generator=torch.Generator().manual_seed(1))
    new = new.reshape(repeats, 4)
    old = torch.stack(
        [variational_bound(unet, scheduler, x0, 50, torch.Generator().manual_seed(10 + r)).total for r in range(8)]
    )
    standard_error = new.std(0) / repeats**0.5
    assert torch.all((new.mean(0) - exact).abs() < 4 * standard_error + 0.01), (new.mean(0), exact, standard_error)
    assert new.std(0).mean() < 0.5 * old.std(0).mean(), (new.std(0), old.std(0))
    assert abs(float(new.mean() - exact.mean())) < 0.03
