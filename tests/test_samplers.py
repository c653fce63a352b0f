"""reverse_chain and the samplers: every sampler runs, is seeded, captures trajectories; SDEdit, inpainting,
precision and cancelling behave; the DDIM sampler gives diffusers' DDIMPipeline images."""

import itertools

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from diffusers import DDIMPipeline, DDIMScheduler, DPMSolverMultistepScheduler

from ddpm_hf import SAMPLERS, DDPMHFScheduler, initial_noise, reverse_chain, sample, seed_generators
from ddpm_hf import samplers as samplers_module

STEPS = 6


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_is_seeded_and_captures(sampler):
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    seen = []
    out = sample(
        unet,
        scheduler,
        2,
        seed=3,
        num_inference_steps=STEPS,
        sampler=sampler,
        output_type="pt",
        capture_every=2,
        callback=lambda i, t, x, x0: seen.append((i, t, x.shape, x0.shape)),
    )
    again = sample(unet, scheduler, 2, seed=3, num_inference_steps=STEPS, sampler=sampler, output_type="pt").images
    other = sample(unet, scheduler, 2, seed=4, num_inference_steps=STEPS, sampler=sampler, output_type="pt").images
    assert out.images.shape == (2, 1, 16, 16) and torch.isfinite(out.images).all()
    torch.testing.assert_close(out.images, again, rtol=0, atol=0)
    assert not torch.allclose(out.images, other)
    assert [s[0] for s in seen] == list(range(STEPS)) and all(s[2] == s[3] == (2, 1, 16, 16) for s in seen)
    traj = out.trajectory
    assert traj.timesteps == [seen[i][1] for i in (0, 2, 4, 5)]  # every 2nd step and the last
    assert len(traj.x_t) == len(traj.pred_x0) == 4
    assert all(x.shape == (2, 1, 16, 16) and x.dtype == torch.float32 for x in traj.x_t + traj.pred_x0)


def test_samplers_differ_and_ddpm_ignores_nothing():
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    images = {
        s: sample(unet, scheduler, 1, seed=0, num_inference_steps=STEPS, sampler=s, output_type="pt").images
        for s in SAMPLERS
    }
    for a in SAMPLERS:
        for b in SAMPLERS:
            if a < b:
                assert not torch.allclose(images[a], images[b]), (a, b)


def test_ddim_sampler_gives_ddimpipeline_images():
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    ours = sample(
        unet,
        scheduler,
        2,
        generator=torch.Generator().manual_seed(1),
        num_inference_steps=10,
        sampler="ddim",
        output_type="np",
        precision="float32",
    ).images
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        2, generator=torch.Generator().manual_seed(1), eta=0.0, num_inference_steps=10, output_type="np"
    ).images
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def chain(sampler="ddpm", steps=STEPS, **kwargs):
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    x = initial_noise(unet, 2, seed_generators(0, 2))
    return reverse_chain(
        unet, scheduler, x, num_inference_steps=steps, sampler=sampler, generator=seed_generators(1, 2), **kwargs
    )


def test_chain_steps_are_float32_on_the_device_and_link_up():
    steps = list(chain(precision="float32"))
    assert [s.index for s in steps] == list(range(STEPS))
    for a, b in itertools.pairwise(steps):
        assert a.timestep > b.timestep and a.x_prev is b.x_t
    assert all(s.x_prev.dtype == s.pred_x0.dtype == torch.float32 for s in steps)


def test_closing_the_generator_mid_chain_and_no_inference_mode_across_yield():
    gen = chain(steps=50)
    for step in gen:
        assert not torch.is_inference_mode_enabled()  # the consumer runs outside inference mode
        if step.index == 3:
            break
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)
    assert step.index == 3 and np.isfinite(step.x_prev.cpu().numpy()).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sdedit_with_a_small_start_timestep_stays_close_to_the_input(sampler):
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    x0 = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t0 = 30
    x_t = scheduler.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), torch.tensor(t0))
    steps = list(
        reverse_chain(
            unet,
            scheduler,
            x_t,
            num_inference_steps=100,
            sampler=sampler,
            start_timestep=t0,
            generator=torch.Generator().manual_seed(2),
        )
    )
    assert steps[0].timestep <= t0 and len(steps) < 10
    assert (steps[-1].x_prev - x0).abs().mean() < 0.3  # an untrained network moves it little in a few steps
    full = list(
        reverse_chain(
            unet, scheduler, x_t, num_inference_steps=100, sampler=sampler, generator=torch.Generator().manual_seed(2)
        )
    )
    assert len(full) == 100 and (full[-1].x_prev - x0).abs().mean() > (steps[-1].x_prev - x0).abs().mean()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_inpainting_keeps_the_known_region(sampler):
    x0 = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8] = 1
    steps = list(chain(sampler, known=(x0, mask)))
    final = steps[-1].x_prev
    torch.testing.assert_close(final[..., :8], x0[..., :8], rtol=0, atol=0)
    assert (final[..., 8:] - x0[..., 8:]).abs().mean() > 0.1  # the unknown half is generated, not copied
    # mid-chain the known region is a draw of q(x_s | x_0), not x_0 itself
    assert (steps[0].x_prev[..., :8] - x0[..., :8]).abs().mean() > 0.1


def test_bfloat16_is_close_to_float32_on_the_tiny_model():
    a = sample(
        tiny_unet(), DDPMHFScheduler(), 2, seed=0, num_inference_steps=20, output_type="pt", precision="float32"
    ).images
    b = sample(
        tiny_unet(), DDPMHFScheduler(), 2, seed=0, num_inference_steps=20, output_type="pt", precision="bfloat16"
    ).images
    assert not torch.equal(a, b)  # bfloat16 really ran
    assert (a - b).abs().max() < 0.05  # on a [0, 1] scale


def test_auto_precision_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(samplers_module, "cpu_has_native_bf16", lambda: False)
    assert samplers_module.resolve_precision("auto", cpu) == torch.float32
    a = sample(tiny_unet(), DDPMHFScheduler(), 1, seed=0, num_inference_steps=3, output_type="pt").images
    f = sample(
        tiny_unet(), DDPMHFScheduler(), 1, seed=0, num_inference_steps=3, output_type="pt", precision="float32"
    ).images
    torch.testing.assert_close(a, f, rtol=0, atol=0)
    monkeypatch.setattr(samplers_module, "cpu_has_native_bf16", lambda: True)
    assert samplers_module.resolve_precision("auto", cpu) == torch.bfloat16
    assert samplers_module.resolve_precision("float32", cpu) == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "euler"}, "sampler must be one of ddpm, ddim, ddim-eta1, dpm\\+\\+, sde-dpm\\+\\+, got 'euler'"),
        ({"steps": 0}, "num_inference_steps"),
        ({"steps": 1001}, "num_inference_steps"),
        ({"precision": "int8"}, "precision must be one of auto, float32, bfloat16, float16, got 'int8'"),
        ({"start_timestep": 1000}, "start_timestep"),
        ({"start_timestep": -1}, "start_timestep"),
        ({"known": (torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16))}, "known"),
        ({"variance": "learned"}, "variance must be one of fixed_small, fixed_large, got 'learned'"),
    ],
    ids=str,
)
def test_bad_chain_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(chain(**kwargs))


def diffusers_chain(sampler: str, config):
    """The diffusers scheduler a sampler name stands for, built by hand (trailing timesteps, as ``reverse_chain``
    asks), and the keyword arguments of its ``step``."""
    if sampler == "ddim-eta1":
        return DDIMScheduler.from_config(config, timestep_spacing="trailing"), {"eta": 1.0}
    algorithm = {"dpm++": "dpmsolver++", "sde-dpm++": "sde-dpmsolver++"}[sampler]
    chain = DPMSolverMultistepScheduler.from_config(
        config, algorithm_type=algorithm, solver_order=2, timestep_spacing="trailing"
    )
    return chain, {}


def our_chain(unet, scheduler, x_T, sampler: str, steps: int, seed: int):
    """``reverse_chain`` from a copy of x_T in float32, its noise from one generator seeded ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    options = {"sampler": sampler, "generator": generator, "precision": "float32"}
    return reverse_chain(unet, scheduler, x_T.clone(), num_inference_steps=steps, **options)


@pytest.mark.parametrize("sampler", ["dpm++", "sde-dpm++", "ddim-eta1"])
def test_sampler_follows_the_diffusers_scheduler_step_for_step(sampler):
    unet, scheduler, steps = tiny_unet(), DDPMHFScheduler(), 8
    x_T = initial_noise(unet, 2, seed_generators(0, 2))
    ours = list(our_chain(unet, scheduler, x_T, sampler, steps, seed=5))
    oracle, step_kwargs = diffusers_chain(sampler, scheduler.config)
    oracle.set_timesteps(steps)
    generator, x = torch.Generator().manual_seed(5), x_T.clone()  # the same noise, drawn in the same order
    assert [s.timestep for s in ours] == [int(t) for t in oracle.timesteps] and ours[0].timestep == 999
    for ours_step, t in zip(ours, oracle.timesteps):
        torch.testing.assert_close(ours_step.x_t, x, atol=1e-5, rtol=0)
        with torch.no_grad():
            model_output = unet(x, t).sample
        x = oracle.step(model_output, t, x, generator=generator, **step_kwargs).prev_sample
        torch.testing.assert_close(ours_step.x_prev, x, atol=1e-5, rtol=0, msg=f"t={int(t)}")
    if sampler != "dpm++":  # the stochastic samplers: other noise gives another chain, so the noise was compared
        other = list(our_chain(unet, scheduler, x_T, sampler, steps, seed=6))
        assert not torch.allclose(other[-1].x_prev, x, atol=1e-3)
