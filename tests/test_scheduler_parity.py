"""DDPMHFScheduler against diffusers' DDPMScheduler as the oracle: same config, same seed, same numbers."""

import itertools

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ddpm_hf import DDPMHFScheduler

SHAPE = (2, 3, 4, 4)


def fake_model_output(x: torch.Tensor, t: int, variance_type: str) -> torch.Tensor:
    """A deterministic stand-in for a network: smooth in x, different at every t."""
    out = torch.sin(3 * x + t / 97)
    if variance_type == "learned":
        return torch.cat([out, 0.001 + 0.01 * torch.sigmoid(x)], dim=1)  # σ² itself
    if variance_type == "learned_range":
        return torch.cat([out, torch.tanh(x)], dim=1)  # interpolation weight in [-1, 1]
    return out


def diffusers_oracle(**config) -> DDPMScheduler:
    """diffusers' DDPMScheduler with its ᾱ table in float64.

    In float32, diffusers' β_t = 1 - ᾱ_t/ᾱ_{t-1} loses ~1e-3 of its value to cancellation at small t (we compute
    tables in float64); float64 tables make the oracle test the formulas, not that rounding.
    See test_our_coefficients_are_closer_to_float64_truth_than_diffusers.
    """
    theirs = DDPMScheduler(**config)
    theirs.alphas_cumprod = torch.cumprod(1 - theirs.betas.double(), dim=0)
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    return theirs


def assert_step_parity(config: dict, num_inference_steps=None, timesteps=None, seed=0) -> int:
    """Walk the whole schedule with both schedulers, feeding each step the oracle's x_t; compare every output."""
    ours, theirs = DDPMHFScheduler(**config), diffusers_oracle(**config)
    if num_inference_steps is not None or timesteps is not None:
        ours.set_timesteps(num_inference_steps=num_inference_steps, timesteps=timesteps)
        theirs.set_timesteps(num_inference_steps=num_inference_steps, timesteps=timesteps)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=0)
    g_ours, g_theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 1))
    variance_type = config.get("variance_type", "fixed_small")
    for i, t in enumerate(theirs.timesteps):
        out = fake_model_output(x, int(t), variance_type)
        a = ours.step(out, t, x, generator=g_ours)
        b = theirs.step(out, t, x, generator=g_theirs)
        scale = 1 + b.pred_original_sample.abs()
        assert ((a.pred_original_sample - b.pred_original_sample).abs() / scale).max() < 2e-5, (config, int(t))
        last = i == len(theirs.timesteps) - 1
        if not (last and t > 0 and not variance_type.startswith("fixed_small")):
            # (the documented difference: diffusers adds σ_t z on a last step whose t > 0; we add none)
            assert ((a.prev_sample - b.prev_sample).abs() / (1 + b.prev_sample.abs())).max() < 2e-5, (config, int(t))
        x = b.prev_sample
    return len(theirs.timesteps)


# Every config key is exercised; each row is run at full T and at 1, 10, 50 strided steps.
CONFIGS = [
    {},
    {"clip_sample": False},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample_range": 2.0},
    {"beta_schedule": "squaredcos_cap_v2", "variance_type": "fixed_large"},
    {"beta_schedule": "sigmoid", "variance_type": "fixed_small_log", "prediction_type": "sample"},
    {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "clip_sample": False},
    {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
    {"variance_type": "learned"},
    {"variance_type": "learned_range", "num_train_timesteps": 500},
    {"trained_betas": np.linspace(2e-4, 0.03, 300).tolist(), "num_train_timesteps": 300, "steps_offset": 1},
]
SPACINGS = ["linspace", "leading", "trailing"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}" for k in c) or "default")
def test_full_chain_matches_diffusers(config):
    n = assert_step_parity(config)
    assert n == config.get("num_train_timesteps", 1000)


@pytest.mark.parametrize(
    ("config", "spacing", "steps"), list(itertools.product(CONFIGS, SPACINGS, [1, 10, 50])), ids=str
)
def test_strided_chain_matches_diffusers(config, spacing, steps):
    config = {**config, "timestep_spacing": spacing}
    if spacing == "leading" and steps == 1 and config.get("steps_offset"):
        pytest.skip("diffusers indexes past the table here; covered by test_steps_offset_out_of_range")
    assert assert_step_parity(config, num_inference_steps=steps) == steps


@pytest.mark.parametrize("steps", [61, 103, 121, 999])
def test_trailing_step_counts_where_a_float_arange_overshoots(steps):
    """diffusers' np.arange(T, 0, -T/n) yields n+1 timesteps for some n, the last -1; we take its first n."""
    ours, theirs = DDPMHFScheduler(timestep_spacing="trailing"), DDPMScheduler(timestep_spacing="trailing")
    ours.set_timesteps(steps), theirs.set_timesteps(steps)
    assert len(ours.timesteps) == steps and ours.timesteps.tolist() == theirs.timesteps.tolist()[:steps]
    if steps != 999:
        assert len(theirs.timesteps) == steps + 1 and int(theirs.timesteps[-1]) == -1
    assert assert_step_parity({}, timesteps=ours.timesteps.tolist()) == steps


@pytest.mark.parametrize("spacing", SPACINGS)
def test_1000_inference_steps_match_diffusers(spacing):
    assert assert_step_parity({"timestep_spacing": spacing, "clip_sample": False}, num_inference_steps=1000) == 1000


@pytest.mark.parametrize("timesteps", [[999, 500, 20, 3], [700, 699, 0], [5]])
def test_custom_timesteps_match_diffusers(timesteps):
    assert assert_step_parity({"variance_type": "fixed_large"}, timesteps=timesteps) == len(timesteps)


@pytest.mark.parametrize("config", CONFIGS[:6], ids=str)
def test_add_noise_and_velocity_match_diffusers(config):
    ours, theirs = DDPMHFScheduler(**config), DDPMScheduler(**config)
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([0, ours.config.num_train_timesteps - 1])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=2e-5, atol=1e-7)


def test_noise_tracks_diffusers_seed_for_seed_over_a_whole_chain():
    """Chained (each scheduler on its own output, stock diffusers): the same seed gives the same images."""
    ours, theirs = DDPMHFScheduler(), DDPMScheduler()
    ours.set_timesteps(100), theirs.set_timesteps(100)
    xa = xb = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for t in ours.timesteps:
        xa = ours.step(torch.tanh(xa), t, xa, generator=ga).prev_sample
        xb = theirs.step(torch.tanh(xb), t, xb, generator=gb).prev_sample
    torch.testing.assert_close(xa, xb, rtol=1e-5, atol=1e-5)


def test_our_coefficients_are_closer_to_float64_truth_than_diffusers():
    """At t = 2 the stock float32 step is off by ~1e-4; ours agrees with a float64 evaluation to float32 rounding."""
    x = torch.randn(SHAPE)
    truth = diffusers_oracle().step(torch.tanh(x), 2, x, generator=torch.manual_seed(0)).prev_sample
    ours = DDPMHFScheduler().step(torch.tanh(x), 2, x, generator=torch.manual_seed(0)).prev_sample
    stock = DDPMScheduler().step(torch.tanh(x), 2, x, generator=torch.manual_seed(0)).prev_sample
    err_ours, err_stock = (ours - truth).abs().max().item(), (stock - truth).abs().max().item()
    assert err_ours < 1e-6 and err_stock > 1e-5


def test_list_of_generators_draws_like_diffusers():
    ours, theirs = DDPMHFScheduler(), DDPMScheduler()
    x = torch.randn(SHAPE)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(SHAPE[0])]
    a = ours.step(torch.tanh(x), 500, x, generator=gens()).prev_sample
    b = theirs.step(torch.tanh(x), 500, x, generator=gens()).prev_sample
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_return_dict_false_gives_a_tuple():
    x = torch.randn(SHAPE)
    prev, x0 = DDPMHFScheduler().step(torch.tanh(x), 0, x, return_dict=False)
    assert prev.shape == x0.shape == SHAPE


def test_fixed_large_log_is_fixed_large_where_diffusers_gives_nan():
    x = torch.randn(SHAPE)
    out = {}
    for vt in ["fixed_large", "fixed_large_log"]:
        out[vt] = DDPMHFScheduler(variance_type=vt).step(torch.tanh(x), 500, x, generator=torch.manual_seed(0))
    torch.testing.assert_close(out["fixed_large"].prev_sample, out["fixed_large_log"].prev_sample)
    assert torch.isfinite(out["fixed_large_log"].prev_sample).all()
    theirs = DDPMScheduler(variance_type="fixed_large_log").step(torch.tanh(x), 500, x, generator=torch.manual_seed(0))
    assert torch.isnan(theirs.prev_sample).any()  # the diffusers bug we document; if it is fixed, revisit the docs


def test_last_step_is_noise_free_even_when_its_t_is_positive():
    ours = DDPMHFScheduler(variance_type="fixed_large", timestep_spacing="trailing")
    ours.set_timesteps(10)
    t_last = ours.timesteps[-1]
    assert int(t_last) == 99 and ours.previous_timestep(t_last) == -1
    x = torch.randn(SHAPE)
    a = ours.step(torch.tanh(x), t_last, x, generator=torch.manual_seed(0)).prev_sample
    b = ours.step(torch.tanh(x), t_last, x, generator=torch.manual_seed(1)).prev_sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
        {"beta_schedule": "scaled_linear", "variance_type": "fixed_large", "timestep_spacing": "trailing"},
        {"clip_sample": False, "steps_offset": 1, "thresholding": True},
    ],
    ids=str,
)
def test_config_round_trips_with_diffusers_both_ways(config, tmp_path):
    ours = DDPMHFScheduler(**config)
    theirs = DDPMScheduler.from_config(ours.config)
    back = DDPMHFScheduler.from_config(DDPMScheduler(**config).config)
    for key, value in config.items():
        assert theirs.config[key] == value and back.config[key] == value, key
    torch.testing.assert_close(theirs.betas, ours.betas, rtol=1e-5, atol=1e-8)
    ours.save_pretrained(tmp_path)
    loaded = DDPMHFScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.config) == public(ours.config)
    assert "DDPMScheduler" in ours._compatibles and DDIMScheduler.from_config(ours.config).config.beta_schedule == (
        config.get("beta_schedule", "linear")
    )


def test_interface_attributes():
    s = DDPMHFScheduler()
    assert s.order == 1 and s.init_noise_sigma == 1.0 and len(s) == 1000
    x = torch.randn(SHAPE)
    assert s.scale_model_input(x, 10) is x
    assert s.previous_timestep(10) == 9 and s.previous_timestep(0) == -1
    s.set_timesteps(4, device="cpu")
    assert s.timesteps.tolist() == [750, 500, 250, 0] and s.previous_timestep(torch.tensor(500)) == 250


def test_steps_offset_out_of_range():
    s = DDPMHFScheduler(steps_offset=1)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        s.set_timesteps(1000)


VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("steps", [None, 10])
def test_get_variance_matches_diffusers(variance_type, steps):
    """``_get_variance`` (private in diffusers, called by its tests and by downstream code) means the same here."""
    ours, theirs = DDPMHFScheduler(variance_type=variance_type), diffusers_oracle(variance_type=variance_type)
    if steps:
        ours.set_timesteps(steps), theirs.set_timesteps(steps)
    predicted = torch.tanh(torch.randn(SHAPE)) if variance_type.startswith("learned") else None
    for t in theirs.timesteps[:: max(1, len(theirs.timesteps) // 7)].tolist() + [int(theirs.timesteps[-1])]:
        expected = theirs._get_variance(t, predicted_variance=predicted).float()
        torch.testing.assert_close(
            ours._get_variance(t, predicted_variance=predicted), expected, rtol=2e-5, atol=1e-12
        )
        other = "fixed_large" if variance_type != "fixed_large" else "fixed_small"  # the variance_type argument
        torch.testing.assert_close(
            ours._get_variance(t, variance_type=other),
            theirs._get_variance(t, variance_type=other).float(),
            rtol=2e-5,
            atol=1e-12,
        )
