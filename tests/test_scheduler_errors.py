"""Bad input to DDPMHFScheduler is a ValueError that names the offending key or argument, raised at the boundary.

Where diffusers' DDPMScheduler accepts what we reject, a test shows it, so the difference stays documented.
"""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ddpm_hf import DDPMHFScheduler

T = 1000
SHAPE = (2, 3, 4, 4)

# The allowed values are the spec (diffusers' DDPMScheduler options), written out here, not read from the module.
CHOICES = {
    "beta_schedule": ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"],
    "variance_type": ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"],
    "prediction_type": ["epsilon", "sample", "v_prediction"],
    "timestep_spacing": ["linspace", "leading", "trailing"],
}


# ---------------------------------------------------------------------------------------------- construction


@pytest.mark.parametrize("key", list(CHOICES))
@pytest.mark.parametrize("bad", ["bogus", "Linear", "", None])
def test_unknown_choice_names_the_key_and_lists_the_allowed_values(key, bad):
    with pytest.raises(ValueError, match=rf"^{key}={bad!r} ") as info:
        DDPMHFScheduler(**{key: bad})
    for allowed in CHOICES[key]:
        assert repr(allowed) in str(info.value), allowed


@pytest.mark.parametrize("key", list(CHOICES))
def test_every_listed_choice_constructs(key):
    for value in CHOICES[key]:
        assert DDPMHFScheduler(**{key: value}).config[key] == value


@pytest.mark.parametrize("key", ["beta_start", "beta_end"])
@pytest.mark.parametrize("bad", [0.0, 1.0, -1e-4, 1.5, math.nan])
def test_beta_endpoints_must_lie_in_the_open_unit_interval(key, bad):
    config = {"beta_start": 1e-4, "beta_end": 0.02, key: bad}
    if key == "beta_start" and bad < 1:  # keep beta_end >= beta_start so only the range check can fire
        config["beta_end"] = 0.5
    with pytest.raises(ValueError, match=rf"^{key} must lie in \(0, 1\)"):
        DDPMHFScheduler(**config)


def test_decreasing_linear_schedule_is_rejected():
    with pytest.raises(ValueError, match=r"beta_end=0\.0001 < beta_start=0\.02"):
        DDPMHFScheduler(beta_start=0.02, beta_end=0.0001)
    assert DDPMHFScheduler(beta_start=0.01, beta_end=0.01).betas.unique().numel() == 1  # constant is fine


@pytest.mark.parametrize("bad", [0, -1, 2.5, "1000"])
def test_num_train_timesteps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"^num_train_timesteps must be an integer >= 1, got "):
        DDPMHFScheduler(num_train_timesteps=bad)


def test_unknown_beta_schedule_is_rejected_even_with_trained_betas():
    with pytest.raises(ValueError, match=r"^beta_schedule='bogus' "):
        DDPMHFScheduler(
            num_train_timesteps=10, trained_betas=np.linspace(0.01, 0.1, 10).tolist(), beta_schedule="bogus"
        )


@pytest.mark.parametrize("key", ["num_train_timesteps", "steps_offset"])
def test_numpy_integers_are_integers(key):
    DDPMScheduler(**{key: np.int64(10)})  # diffusers accepts it
    assert DDPMHFScheduler(**{key: np.int64(10)}).config[key] == 10


@pytest.mark.parametrize(
    ("betas", "pattern"),
    [
        (np.full(9, 0.01), r"trained_betas must hold num_train_timesteps=10 values, got shape \(9,\)"),
        (np.full((10, 1), 0.01), r"trained_betas must hold num_train_timesteps=10 values, got shape \(10, 1\)"),
        (np.r_[0.0, np.full(9, 0.01)], r"trained_betas must all lie in \(0, 1\]"),
        (np.r_[-0.01, np.full(9, 0.01)], r"trained_betas must all lie in \(0, 1\]"),
        (np.r_[np.full(9, 0.01), 1.01], r"trained_betas must all lie in \(0, 1\]"),
        (np.r_[np.full(9, 0.01), math.nan], r"trained_betas must all lie in \(0, 1\]"),
    ],
    ids=["short", "2-d", "zero", "negative", "above-1", "nan"],
)
def test_trained_betas_are_validated(betas, pattern):
    with pytest.raises(ValueError, match=pattern):
        DDPMHFScheduler(num_train_timesteps=10, trained_betas=betas.tolist())
    good = DDPMHFScheduler(num_train_timesteps=10, trained_betas=np.linspace(0.01, 0.1, 10).tolist())
    torch.testing.assert_close(good.betas, torch.linspace(0.01, 0.1, 10))


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"clip_sample_range": 0.0}, r"^clip_sample_range must be > 0, got 0\.0"),
        ({"clip_sample_range": -1.0}, r"^clip_sample_range must be > 0, got -1\.0"),
        ({"sample_max_value": 0.0}, r"^sample_max_value must be > 0"),
        ({"dynamic_thresholding_ratio": 0.0}, r"^dynamic_thresholding_ratio must be in \(0, 1\], got 0\.0"),
        ({"dynamic_thresholding_ratio": 1.01}, r"^dynamic_thresholding_ratio must be in \(0, 1\], got 1\.01"),
        ({"steps_offset": -1}, r"^steps_offset must be an integer >= 0, got -1"),
        ({"steps_offset": 1.5}, r"^steps_offset must be an integer >= 0, got 1\.5"),
    ],
    ids=str,
)
def test_numeric_options_are_validated(config, pattern):
    with pytest.raises(ValueError, match=pattern):
        DDPMHFScheduler(**config)


def test_boundary_values_are_accepted():
    """The checks above reject exactly the outside: these edge values construct."""
    s = DDPMHFScheduler(dynamic_thresholding_ratio=1.0, steps_offset=0, num_train_timesteps=1, clip_sample_range=1e-6)
    assert len(s) == 1 and s.timesteps.tolist() == [0]


# ---------------------------------------------------------------------------------------------- set_timesteps


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_inference_steps": 0}, r"num_inference_steps must be an integer in \[1, 1000\], got 0"),
        ({"num_inference_steps": T + 1}, r"num_inference_steps must be an integer in \[1, 1000\], got 1001"),
        ({"num_inference_steps": 2.5}, r"num_inference_steps must be an integer in \[1, 1000\], got 2\.5"),
        ({"num_inference_steps": 10, "timesteps": [9, 5]}, r"exactly one of num_inference_steps or timesteps"),
        ({}, r"exactly one of num_inference_steps or timesteps"),
        ({"timesteps": [5, 9]}, r"timesteps must be a non-empty, strictly descending list, got \[5, 9\]"),
        ({"timesteps": [9, 5, 5, 1]}, r"timesteps must be a non-empty, strictly descending list, got \[9, 5, 5, 1\]"),
        ({"timesteps": []}, r"timesteps must be a non-empty, strictly descending list, got \[\]"),
        ({"timesteps": [1000, 5]}, r"timesteps must lie in \[0, 999\], got 1000\.\.5"),
        ({"timesteps": [5, -1]}, r"timesteps must lie in \[0, 999\], got 5\.\.-1"),
    ],
    ids=str,
)
def test_set_timesteps_rejects_bad_schedules(kwargs, pattern):
    s = DDPMHFScheduler()
    with pytest.raises(ValueError, match=pattern):
        s.set_timesteps(**kwargs)
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))  # the schedule in use is untouched


def test_set_timesteps_accepts_its_bounds():
    s = DDPMHFScheduler()
    s.set_timesteps(1)
    assert s.timesteps.tolist() == [0]
    s.set_timesteps(T)
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))
    s.set_timesteps(timesteps=[999, 0])
    assert s.timesteps.tolist() == [999, 0] and s.previous_timestep(999) == 0


@pytest.mark.parametrize(
    "kwargs", [{"timesteps": [1000, 5]}, {"num_inference_steps": 1000}], ids=["custom-out-of-range", "offset-overflow"]
)
def test_a_rejected_set_timesteps_leaves_the_state_unchanged(kwargs):
    s = DDPMHFScheduler(steps_offset=1)  # with steps_offset=1, 1000 leading steps end at t = 1000: out of range
    s.set_timesteps(10)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 999\]"):
        s.set_timesteps(**kwargs)
    assert len(s.timesteps) == 10
    assert (s.num_inference_steps, s.custom_timesteps) == (10, False)


# ---------------------------------------------------------------------------------------------- step / add_noise


def test_step_rejects_a_timestep_outside_the_schedule():
    s = DDPMHFScheduler()
    s.set_timesteps(10)
    x = torch.randn(SHAPE)
    for bad in [7, torch.tensor(7), 1000, -1]:
        with pytest.raises(ValueError, match=rf"^timestep {int(bad)} is not in the current schedule"):
            s.step(x, bad, x)
    assert s.step(x, s.timesteps[3], x).prev_sample.shape == SHAPE  # a scheduled t is fine


@pytest.mark.parametrize(
    ("out_shape", "sample_shape"),
    [((2, 3, 4, 4), (2, 3, 4, 5)), ((1, 3, 4, 4), (2, 3, 4, 4)), ((2, 6, 4, 4), (2, 3, 4, 4)), ((24,), (2, 3, 4))],
    ids=str,
)
def test_step_rejects_shape_mismatch(out_shape, sample_shape):
    with pytest.raises(ValueError, match=r"^model_output shape .* != sample shape"):
        DDPMHFScheduler().step(torch.zeros(out_shape), 500, torch.zeros(sample_shape))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_step_rejects_non_finite_model_output(bad):
    out = torch.zeros(SHAPE)
    out[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match=r"^model_output at timestep 500 holds NaN or infinite values"):
        DDPMHFScheduler().step(out, 500, torch.zeros(SHAPE))


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
@pytest.mark.parametrize("channels", [3, 4, 5, 12])
def test_learned_variance_needs_twice_the_channels(variance_type, channels):
    s = DDPMHFScheduler(variance_type=variance_type)
    sample = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match=rf"^variance_type='{variance_type}' needs 2x3 output channels"):
        s.step(torch.zeros(2, channels, 4, 4), 500, sample)
    assert s.step(torch.zeros(2, 6, 4, 4), 500, sample).prev_sample.shape == SHAPE


@pytest.mark.parametrize("method", ["add_noise", "get_velocity", "q_posterior_mean_variance"])
@pytest.mark.parametrize("bad", [[T], [-1], [0, T], [5, -3]], ids=str)
def test_forward_methods_reject_timesteps_out_of_range(method, bad):
    s = DDPMHFScheduler()
    x = torch.zeros(len(bad), 3, 4, 4)
    with pytest.raises(ValueError, match=r"^timesteps must lie in \[0, 999\], got "):
        getattr(s, method)(x, x, torch.tensor(bad))
    ok = getattr(s, method)(x, x, torch.tensor([0, T - 1][: len(bad)]))
    assert (ok[0] if isinstance(ok, tuple) else ok).shape == x.shape


# ---------------------------------------------------------------------------------------------- diffusers differs


def test_diffusers_silently_treats_an_unknown_variance_type_as_fixed_small():
    """The documented difference: diffusers constructs and steps with variance_type='bogus' (as fixed_small)."""
    with pytest.raises(ValueError, match=r"^variance_type='bogus'"):
        DDPMHFScheduler(variance_type="bogus")
    bogus, small = DDPMScheduler(variance_type="bogus"), DDPMScheduler(variance_type="fixed_small")
    x = torch.randn(SHAPE)
    a = bogus.step(torch.tanh(x), 500, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = small.step(torch.tanh(x), 500, x, generator=torch.Generator().manual_seed(0)).prev_sample
    assert torch.equal(a, b)


def test_diffusers_defers_other_bad_options_to_later_calls():
    """diffusers constructs these; the error (if any) comes in set_timesteps or step. We raise at construction."""
    x = torch.randn(SHAPE)
    theirs = DDPMScheduler(prediction_type="bogus")
    with pytest.raises(ValueError, match="prediction_type"):
        theirs.step(x, 500, x)
    theirs = DDPMScheduler(timestep_spacing="bogus")
    with pytest.raises(ValueError, match="bogus is not supported"):
        theirs.set_timesteps(10)
    for config in [{"clip_sample_range": 0.0}, {"steps_offset": -1}, {"beta_start": 0.02, "beta_end": 1e-4}]:
        DDPMScheduler(**config).step(x, 500, x)  # accepted and steps
        with pytest.raises(ValueError):
            DDPMHFScheduler(**config)
