"""DDPMHFScheduler against the math of Ho et al. 2020 (arXiv 2006.11239, eqs. 4 and 6-7), every expected value derived here in float64.

Layers: closed-form tables; a Monte Carlo run of the one-step forward chain q(x_t | x_{t-1}); the posterior
q(x_{t-1} | x_t, x_0) by numerical Bayes on a grid; the two routes to μ_θ and the reverse ``step`` (its noise is the
seeded generator's draw, scaled by σ_t); strided schedules; the three prediction types; zero terminal SNR.
The oracle is never the scheduler's own code: β_t is written from its definition and ᾱ_t = exp(Σ log(1 - β_s)).
"""

import math

import numpy as np
import pytest
import torch

from ddpm_hf import DDPMHFScheduler
from ddpm_hf.scheduling_ddpm_hf import make_betas, q_posterior_coefficients, rescale_zero_terminal_snr

T = 1000
BETA_START, BETA_END = 1e-4, 0.02  # Ho et al. 2020, §4
EPS32 = float(np.finfo(np.float32).eps)  # tables are float64 rounded to float32: relative error <= EPS32 / 2
SHAPE = (4, 3, 8, 8)


def reference_betas(T: int = T) -> np.ndarray:
    """β_t = β_start + (β_end - β_start) · t / (T - 1), t = 0..T-1 (the paper's linear schedule)."""
    return BETA_START + (BETA_END - BETA_START) * np.arange(T, dtype=np.float64) / (T - 1)


def reference_alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """ᾱ_t = ∏_{s<=t} (1 - β_s), summed in log space (a different route from a running product)."""
    with np.errstate(divide="ignore"):
        return np.exp(np.cumsum(np.log1p(-betas)))


BETAS = reference_betas()
AB = reference_alphas_cumprod(BETAS)
AB_PREV = np.append(1.0, AB[:-1])


def randn(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------- closed forms


def test_linear_schedule_tables_match_closed_form():
    s = DDPMHFScheduler()
    names = [
        "betas",
        "alphas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "snr",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    ]
    for name in names:
        table = getattr(s, name)
        assert table.dtype == torch.float32 and table.shape == (T,), name
    betas = s.betas.double().numpy()
    assert betas[0] == np.float32(BETA_START) and betas[-1] == np.float32(BETA_END)
    assert np.all(np.diff(betas) > 0)
    expected = {
        "betas": BETAS,
        "alphas": 1 - BETAS,
        "alphas_cumprod": AB,
        "alphas_cumprod_prev": AB_PREV,
        "sqrt_alphas_cumprod": np.sqrt(AB),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - AB),
        "snr": AB / (1 - AB),
        # Ho et al. 2020, eqs. 6-7: β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t;  μ̃_t = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t
        "posterior_variance": (1 - AB_PREV) / (1 - AB) * BETAS,
        "posterior_mean_coef1": np.sqrt(AB_PREV) * BETAS / (1 - AB),
        "posterior_mean_coef2": np.sqrt(1 - BETAS) * (1 - AB_PREV) / (1 - AB),
    }
    for name, value in expected.items():
        # float64 truth rounded once to float32 (a few ulps of slack for the float64 evaluation order)
        np.testing.assert_allclose(getattr(s, name).double().numpy(), value, rtol=2 * EPS32, atol=0, err_msg=name)
    assert s.alphas_cumprod_prev[0] == 1 and s.posterior_variance[0] == 0
    assert AB[-1] < 1e-4 and s.alphas_cumprod[-1] < 1e-4  # x_T is nearly pure noise
    assert np.all(np.diff(s.snr.double().numpy()) < 0) and np.all(np.diff(s.alphas_cumprod.double().numpy()) < 0)
    signal, noise = s.sqrt_alphas_cumprod.double(), s.sqrt_one_minus_alphas_cumprod.double()
    assert (signal**2 + noise**2 - 1).abs().max() <= 4 * EPS32


def test_posterior_log_variance_is_clipped_at_t0_with_the_t1_value():
    s = DDPMHFScheduler()
    posterior_variance = (1 - AB_PREV) / (1 - AB) * BETAS
    expected = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    np.testing.assert_allclose(s.posterior_log_variance_clipped.double().numpy(), expected, rtol=2 * EPS32)
    log_of_stored = np.log(s.posterior_variance.double().numpy()[1:])
    np.testing.assert_allclose(s.posterior_log_variance_clipped.double().numpy()[1:], log_of_stored, rtol=4 * EPS32)


def test_other_schedules_have_their_defining_property():
    """scaled_linear: √β evenly spaced; squaredcos_cap_v2: ᾱ_t = f(t+1)/f(0), f(u) = cos²((u/T + 0.008)/1.008 · π/2)
    (Nichol & Dhariwal 2021, eq. 17, diffusers' indexing) wherever β is below its 0.999 cap."""
    root = np.sqrt(make_betas("scaled_linear", T, 0.00085, 0.012))
    np.testing.assert_allclose(np.diff(root), (math.sqrt(0.012) - math.sqrt(0.00085)) / (T - 1), rtol=1e-9)
    betas = make_betas("squaredcos_cap_v2", T, BETA_START, BETA_END)
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * np.pi / 2) ** 2
    uncapped = betas < 0.999
    assert uncapped[: T - 1].all() and not uncapped[-1]  # only the last β (where f -> 0) is capped
    np.testing.assert_allclose(reference_alphas_cumprod(betas)[uncapped], (f[1:] / f[0])[uncapped], rtol=1e-10)


# ---------------------------------------------------------------------------------------------- forward process


MC_SAMPLES = 200_000
MC_X0 = 1.5
MC_TIMESTEPS = (10, 100, 999)


def five_sigma(variance: float, n: int) -> tuple[float, float]:
    """5 standard errors of a Gaussian sample's mean and of its (unbiased) variance."""
    return 5 * math.sqrt(variance / n), 5 * variance * math.sqrt(2 / (n - 1))


@pytest.fixture
def one_thread():
    """The chain is 1000 sequential ops on 200k floats: with 2 intra-op threads and another process on the cores,
    every op waits at a thread barrier (~0.6 s on one thread, ~9 s on two on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_one_step_chain_reaches_the_closed_form_marginal(one_thread):
    """x_t = √α_t x_{t-1} + √β_t z (eq. 2) applied T times from a fixed x_0: mean √ᾱ_t x_0, variance 1-ᾱ_t, as the
    closed form add_noise draws it (property 1)."""
    s = DDPMHFScheduler()
    g = torch.Generator().manual_seed(0)
    x = torch.full((MC_SAMPLES,), MC_X0)
    chain = {}
    for t in range(T):
        x = math.sqrt(1 - BETAS[t]) * x + math.sqrt(BETAS[t]) * torch.randn(x.shape, generator=g)
        if t in MC_TIMESTEPS:
            chain[t] = x.double()
    for t, xt in chain.items():
        mean, var = math.sqrt(AB[t]) * MC_X0, 1 - AB[t]
        tol_mean, tol_var = five_sigma(var, MC_SAMPLES)
        assert abs(xt.mean().item() - mean) < tol_mean, t
        assert abs(xt.var().item() - var) < tol_var, t
        # the closed form q(x_t | x_0) (add_noise) draws the same distribution: two-sample comparison
        direct = s.add_noise(torch.full((MC_SAMPLES,), MC_X0), randn(MC_SAMPLES, seed=t), torch.tensor(t)).double()
        assert abs(direct.mean().item() - mean) < tol_mean, t
        assert abs(direct.var().item() - var) < tol_var, t
        assert abs(xt.mean().item() - direct.mean().item()) < math.sqrt(2) * tol_mean, t
        assert abs(xt.var().item() - direct.var().item()) < math.sqrt(2) * tol_var, t


# ---------------------------------------------------------------------------------------------- posterior


def numerical_posterior(x_t: float, x0: float, ab_t: float, ab_s: float) -> tuple[float, float]:
    """Mean and variance of q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0) on a 1-D grid of x_s (Bayes' rule).

    q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, 1 - ᾱ_t/ᾱ_s) (the chain's s -> t transition), q(x_s | x_0) = N(√ᾱ_s x_0, 1 - ᾱ_s).
    The grid spans both factors' centres ± 12 of the narrower width, 40 points per width: the Riemann sums of a
    Gaussian's moments are then exact to float64 rounding.
    """
    a = ab_t / ab_s
    centre_lik, sd_lik = x_t / math.sqrt(a), math.sqrt((1 - a) / a)  # the likelihood as a function of x_s
    centre_prior, sd_prior = math.sqrt(ab_s) * x0, math.sqrt(1 - ab_s)
    width = min(sd_lik, sd_prior)
    lo, hi = min(centre_lik, centre_prior) - 12 * width, max(centre_lik, centre_prior) + 12 * width
    grid = np.linspace(lo, hi, int((hi - lo) / width * 40) + 1)
    log_density = -((x_t - math.sqrt(a) * grid) ** 2) / (2 * (1 - a)) - (grid - centre_prior) ** 2 / (2 * (1 - ab_s))
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    mean = float(np.sum(weights * grid))
    return mean, float(np.sum(weights * (grid - mean) ** 2))


@pytest.mark.parametrize("t", [1, 2, 10, 100, 500, 998, 999])
@pytest.mark.parametrize(("x0", "eps"), [(0.7, 0.4), (-1.0, -2.5), (0.0, 1.0)])
def test_posterior_equals_numerical_bayes(t, x0, eps):
    x_t = math.sqrt(AB[t]) * x0 + math.sqrt(1 - AB[t]) * eps
    mean, var = numerical_posterior(x_t, x0, AB[t], AB[t - 1])
    s = DDPMHFScheduler()
    ours_mean, ours_var, ours_logvar = s.q_posterior_mean_variance(
        torch.tensor([x0], dtype=torch.float64), torch.tensor([x_t], dtype=torch.float64), torch.tensor([t])
    )
    scale = abs(AB[t - 1]) ** 0.5 * abs(x0) + abs(x_t)  # size of the two terms of μ̃: the float32 coefficients' unit
    assert abs(ours_mean.item() - mean) <= 1e-6 * max(abs(mean), scale), (ours_mean.item(), mean)
    assert ours_var.item() == pytest.approx(var, rel=1e-6)
    assert s.posterior_variance[t].item() == pytest.approx(var, rel=1e-6)
    assert ours_logvar.item() == pytest.approx(math.log(var), abs=1e-6)


@pytest.mark.parametrize(("t", "s"), [(20, 0), (500, 480), (999, 979), (999, 0), (300, 299)])
def test_strided_posterior_coefficients_equal_numerical_bayes(t, s):
    """q(x_s | x_t, x_0) for s < t: the same formulas with ᾱ_s for ᾱ_{t-1} (``q_posterior_coefficients``)."""
    x0, eps = 0.6, -0.9
    x_t = math.sqrt(AB[t]) * x0 + math.sqrt(1 - AB[t]) * eps
    mean, var = numerical_posterior(x_t, x0, AB[t], AB[s])
    c = q_posterior_coefficients(np.array([AB[t]]), np.array([AB[s]]))
    assert c["betas"][0] == pytest.approx(1 - AB[t] / AB[s], rel=1e-12)
    assert c["posterior_mean_coef1"][0] * x0 + c["posterior_mean_coef2"][0] * x_t == pytest.approx(mean, rel=1e-9)
    assert c["posterior_variance"][0] == pytest.approx(var, rel=1e-9)


# ---------------------------------------------------------------------------------------------- reverse step


def simplified_mu(x_t: np.ndarray, eps: np.ndarray, ab_t: float, ab_s: float) -> np.ndarray:
    """μ_θ = 1/√α (x_t - β/√(1-ᾱ_t) ε) with α = ᾱ_t/ᾱ_s, β = 1 - α (Ho et al. 2020, eq. 11; s = t-1 unstrided)."""
    alpha = ab_t / ab_s
    return (x_t - (1 - alpha) / math.sqrt(1 - ab_t) * eps) / math.sqrt(alpha)


STEP_T = [1, 2, 10, 500, 999]


@pytest.mark.parametrize("t", [0, *STEP_T])
def test_mu_via_x0_hat_equals_the_simplified_form(t):
    s = DDPMHFScheduler(clip_sample=False)
    x_t, eps = randn(SHAPE, 1, torch.float64), randn(SHAPE, 2, torch.float64)  # eps: any model output
    mu, variance, log_variance, x0_hat = s.p_mean_variance(eps, x_t, torch.tensor(t), torch.tensor(t - 1))
    expected_x0 = (x_t.numpy() - math.sqrt(1 - AB[t]) * eps.numpy()) / math.sqrt(AB[t])
    # float32 tables: x_t - √(1-ᾱ_t) ε carries ~EPS32 · (|x_t| + |ε|) of rounding, then divided by √ᾱ_t
    atol = 2 * EPS32 * (x_t.abs().max().item() + eps.abs().max().item()) / math.sqrt(AB[t])
    np.testing.assert_allclose(x0_hat.numpy(), expected_x0, rtol=EPS32, atol=atol)
    expected_mu = simplified_mu(x_t.numpy(), eps.numpy(), AB[t], AB_PREV[t])
    np.testing.assert_allclose(mu.numpy(), expected_mu, rtol=4 * EPS32, atol=4 * EPS32)
    torch.testing.assert_close(mu, s.q_posterior_mean_variance(x0_hat, x_t, torch.tensor(t))[0])  # μ_θ = μ̃(x̂_0)
    # p_θ's variance is β̃_t, clipped at t = 0 to β̃ of t = 1 (the paper's decoder variance)
    beta_tilde = (1 - AB_PREV[max(t, 1)]) / (1 - AB[max(t, 1)]) * BETAS[max(t, 1)]
    assert float(variance) == pytest.approx(beta_tilde, rel=4 * EPS32)
    assert float(log_variance) == pytest.approx(math.log(beta_tilde), abs=4 * EPS32)


def assert_step_is_mu_plus_sigma_z(scheduler, t, ab_t, ab_s, dtype, seed, variance_type="fixed_small"):
    """``step`` gives μ_θ + σ z with z the generator's standard normal draw; no noise when there is no next step."""
    x_t, eps = randn(SHAPE, 10 + seed, dtype), randn(SHAPE, 20 + seed, dtype)
    out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(seed))
    mu = simplified_mu(x_t.double().numpy(), eps.double().numpy(), ab_t, ab_s)
    x0_hat = (x_t.double().numpy() - math.sqrt(1 - ab_t) * eps.double().numpy()) / math.sqrt(ab_t)
    rel = 1e-6 if dtype == torch.float32 else 1e-11  # float32 arithmetic / float64 evaluation-order differences
    np.testing.assert_allclose(out.pred_original_sample.double().numpy(), x0_hat, rtol=rel, atol=rel / math.sqrt(ab_t))
    prev = out.prev_sample.double().numpy()
    if scheduler.previous_timestep(t) < 0:
        np.testing.assert_allclose(prev, mu, rtol=rel, atol=rel)
        return
    beta = 1 - ab_t / ab_s
    sigma = math.sqrt(beta if variance_type == "fixed_large" else (1 - ab_s) / (1 - ab_t) * beta)
    z = randn(SHAPE, seed, dtype).double().numpy()
    np.testing.assert_allclose((prev - mu) / sigma, z, rtol=0, atol=4 * rel * (1 + np.abs(mu).max()) / sigma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("t", [0, *STEP_T])
def test_step_is_mu_plus_sigma_times_the_generators_draw(t, variance_type, dtype):
    s = DDPMHFScheduler(clip_sample=False, variance_type=variance_type)
    assert_step_is_mu_plus_sigma_z(s, t, AB[t], AB_PREV[t], dtype, seed=t, variance_type=variance_type)


def test_last_step_is_deterministic_whatever_the_seed():
    s = DDPMHFScheduler(clip_sample=False)
    x_t, eps = randn(SHAPE, 1), randn(SHAPE, 2)
    a = s.step(eps, 0, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    b = s.step(eps, 0, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b)
    c = s.step(eps, 1, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    d = s.step(eps, 1, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    assert not torch.equal(c, d)  # (the check above could fail)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_strided_step_uses_alpha_bar_of_the_previous_kept_timestep(variance_type):
    s = DDPMHFScheduler(clip_sample=False, variance_type=variance_type)
    s.set_timesteps(50)
    schedule = s.timesteps.tolist()
    assert len(schedule) == 50 and schedule == sorted(schedule, reverse=True)
    for i, t in enumerate(s.timesteps):
        prev = int(s.previous_timestep(t))
        assert prev == (schedule[i + 1] if i + 1 < len(schedule) else -1)
        ab_s = AB[prev] if prev >= 0 else 1.0
        assert_step_is_mu_plus_sigma_z(s, t, AB[int(t)], ab_s, torch.float64, seed=i, variance_type=variance_type)


def test_strided_steps_are_not_unit_steps():
    """The check above could fail: a strided step differs from a unit step t -> t-1 taken at the same t."""
    strided, unit = DDPMHFScheduler(clip_sample=False), DDPMHFScheduler(clip_sample=False)
    strided.set_timesteps(50)
    t = strided.timesteps[25]
    x_t, eps = randn(SHAPE, 1), randn(SHAPE, 2)
    a = strided.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    b = unit.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    assert (a - b).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------- prediction types


@pytest.mark.parametrize("t", [0, 1, 250, 999])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_each_prediction_type_recovers_x0_from_its_true_target(prediction_type, t):
    s = DDPMHFScheduler(clip_sample=False, prediction_type=prediction_type)
    x0, eps = 2 * randn(SHAPE, 3), randn(SHAPE, 4)  # |x0| > 1: clipping off must really be off
    tt = torch.tensor(t)
    x_t = s.add_noise(x0, eps, tt)
    target = {"epsilon": eps, "sample": x0, "v_prediction": s.get_velocity(x0, eps, tt)}[prediction_type]
    v = math.sqrt(AB[t]) * eps.double() - math.sqrt(1 - AB[t]) * x0.double()  # Salimans & Ho 2022, §4
    torch.testing.assert_close(s.get_velocity(x0, eps, tt).double(), v, rtol=4 * EPS32, atol=4 * EPS32)
    x0_hat = s.step(target, t, x_t, generator=torch.Generator().manual_seed(0)).pred_original_sample
    if prediction_type == "sample":
        assert torch.equal(x0_hat, x0)
        return
    # ε: x0 = x_t/√ᾱ - √(1/ᾱ - 1) ε amplifies float32 rounding of x_t by 1/√ᾱ_t; v: x0 = √ᾱ x_t - √(1-ᾱ) v does not
    scale = 1 / math.sqrt(AB[t]) if prediction_type == "epsilon" else 1.0
    atol = 4 * EPS32 * scale * (x0.abs().max().item() + eps.abs().max().item())
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------- zero terminal SNR


def test_rescale_zero_terminal_snr():
    """Lin et al. 2023: √ᾱ_t shifted and scaled (an affine map) so that ᾱ_T = 0 while ᾱ_1 stays."""
    new_betas = rescale_zero_terminal_snr(BETAS)
    assert new_betas[-1] == 1 and np.all((new_betas > 0) & (new_betas <= 1))
    ab = reference_alphas_cumprod(new_betas)
    assert ab[-1] == 0 and ab[0] == pytest.approx(AB[0], rel=1e-12)
    old, new = np.sqrt(AB), np.sqrt(ab)
    slope = (new[0] - new[-1]) / (old[0] - old[-1])
    np.testing.assert_allclose(new, new[-1] + slope * (old - old[-1]), rtol=1e-9, atol=1e-12)

    s = DDPMHFScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", clip_sample=False)
    assert s.alphas_cumprod[-1] == 0 and s.snr[-1] == 0 and s.sqrt_one_minus_alphas_cumprod[-1] == 1
    assert s.alphas_cumprod[0] == DDPMHFScheduler().alphas_cumprod[0]
    np.testing.assert_allclose(s.alphas_cumprod.double().numpy(), ab, rtol=2 * EPS32, atol=1e-12)
    # at ᾱ_T = 0, x_T is pure noise and a v-model's x̂_0 is -v: the first step stays finite
    x_t, v = randn(SHAPE, 1), randn(SHAPE, 2)
    out = s.step(v, T - 1, x_t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.pred_original_sample, -v)
    assert torch.isfinite(out.prev_sample).all()
