"""The sampling API against diffusers' DDPMPipeline (the oracle), its trajectories, callbacks and errors."""

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from diffusers import DDPMPipeline, DDPMScheduler
from PIL import Image

from ddpm_hf import DDPMHFScheduler, sample
from ddpm_hf.samplers import make_sampler
from ddpm_hf.sampling import reverse_chain, to_output


@pytest.mark.parametrize("steps", [10, 100])
def test_same_images_as_ddpmpipeline_for_the_same_seed(steps):
    unet = tiny_unet()
    scheduler = DDPMHFScheduler()
    ours = sample(
        unet,
        scheduler,
        3,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=steps,
        output_type="np",
        precision="float32",
    ).images
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(scheduler.config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(3, generator=torch.Generator().manual_seed(5), num_inference_steps=steps, output_type="np").images
    assert ours.shape == theirs.shape == (3, 16, 16, 1)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_our_scheduler_inside_ddpmpipeline_gives_the_same_images():
    unet = tiny_unet()
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMHFScheduler())
    pipe.set_progress_bar_config(disable=True)
    a = pipe(2, generator=torch.Generator().manual_seed(1), num_inference_steps=20, output_type="np").images
    b = sample(
        unet,
        DDPMHFScheduler(),
        2,
        generator=torch.Generator().manual_seed(1),
        num_inference_steps=20,
        output_type="np",
        precision="float32",
        timestep_spacing=None,  # the scheduler's own ("leading"), as the pipeline runs it
    ).images
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "sde-dpm++"])
@pytest.mark.parametrize("steps", [1, 2, 5, 50])
def test_strided_chains_start_at_the_last_timestep(sampler, steps):
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    chain = reverse_chain(unet, scheduler, torch.randn(1, 1, 16, 16), num_inference_steps=steps, sampler=sampler)
    timesteps = [step.timestep for step in chain]
    assert len(timesteps) == steps and timesteps[0] == 999
    assert timesteps[-1] == 1000 // steps - 1  # the last step lands on x_0 from t = T/n - 1


def test_a_one_step_ddpm_chain_returns_x0_hat_from_pure_noise():
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    x_T = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    (step,) = reverse_chain(unet, scheduler, x_T, num_inference_steps=1, precision="float32")
    with torch.no_grad():
        eps = unet(x_T, 999).sample
    ab = scheduler.alphas_cumprod[999]
    x0_hat = ((x_T - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)  # Ho et al. 2020, eq. 15, clipped
    torch.testing.assert_close(step.x_prev, x0_hat, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim-eta1"])
def test_the_full_chain_is_the_same_under_every_spacing(sampler):
    chains = [make_sampler(DDPMHFScheduler(), sampler, timestep_spacing=s)[0] for s in ("trailing", "leading", None)]
    for chain in chains:
        chain.set_timesteps(1000)
    assert chains[0].config.timestep_spacing == "trailing" and chains[1].config.timestep_spacing == "leading"
    for chain in chains:
        assert chain.timesteps.tolist() == list(range(999, -1, -1))


def test_trajectory_and_callback():
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    seen = []
    out = sample(
        unet,
        scheduler,
        2,
        seed=0,
        num_inference_steps=10,
        capture_every=4,
        output_type="pt",
        callback=lambda i, t, x, x0: seen.append((i, t, tuple(x.shape), tuple(x0.shape))),
    )
    assert [s[0] for s in seen] == list(range(10)) and seen[0][1] == 999 and seen[-1][1] == 99
    traj = out.trajectory
    assert traj.timesteps == [999, 599, 199, 99]  # every 4th step and the last (trailing: 999, 899, ..., 99)
    assert len(traj.x_t) == len(traj.pred_x0) == 4 and traj.x_t[0].shape == (2, 1, 16, 16)
    assert traj.x_t[0].std() > 0.5  # x_T is noise
    assert sample(unet, scheduler, 1, seed=0, num_inference_steps=3).trajectory is None


def test_variance_choice_changes_the_noise_scale_only():
    unet, scheduler = tiny_unet(), DDPMHFScheduler(clip_sample=False)
    small = sample(unet, scheduler, 2, seed=0, num_inference_steps=50, variance="fixed_small", output_type="pt").images
    large = sample(unet, scheduler, 2, seed=0, num_inference_steps=50, variance="fixed_large", output_type="pt").images
    assert not torch.allclose(small, large)
    assert scheduler.config.variance_type == "fixed_small"  # the caller's scheduler is not modified


def test_output_types():
    unet, scheduler = tiny_unet(channels=3), DDPMHFScheduler()
    pil = sample(unet, scheduler, 2, seed=0, num_inference_steps=2).images
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (16, 16) and pil[0].mode == "RGB"
    pt = sample(unet, scheduler, 2, seed=0, num_inference_steps=2, output_type="pt").images
    assert pt.shape == (2, 3, 16, 16) and 0 <= pt.min() and pt.max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_pil_images_hold_the_pixels_diffusers_makes_of_the_same_floats(channels):
    """sample's PIL images (``ddpm_hf.data.to_uint8``) are diffusers' ``numpy_to_pil`` of its "np" floats, pixel for
    pixel: beyond [-1, 1] and on every half level (k + 0.5) / 127.5 - 1, where a second rounding would show."""
    halves = (torch.arange(256) + 0.5) / 127.5 - 1
    noise = torch.randn(3 * channels * 256, generator=torch.Generator().manual_seed(0)) * 1.5
    x = torch.cat([halves.repeat(channels), noise]).float().view(4, channels, 16, 16)
    ours = [np.array(image) for image in to_output(x, "pil")]
    theirs = [np.array(image) for image in DDPMPipeline.numpy_to_pil(to_output(x, "np"))]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 1001}, "num_inference_steps"),
        ({"output_type": "jpg"}, "output_type"),
        ({"variance": "learned"}, "variance"),
        ({"seed": 1, "generator": torch.Generator()}, "seed or generator"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(tiny_unet(), DDPMHFScheduler(), **{"batch_size": 1, **kwargs})


@pytest.fixture(autouse=True)
def untimed_network(monkeypatch):
    """The comparisons above run the network untimed (``DDPM_HF_AUTOTUNE=0``): a timed choice may switch the UNet's
    memory format between the two runs, which moves float32 results by ~1e-6 and breaks bit-for-bit equality.
    tests/test_speed_choice.py checks the timed choices against DDPMPipeline."""
    monkeypatch.setenv("DDPM_HF_AUTOTUNE", "0")
