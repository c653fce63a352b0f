"""The network's memory format and precision chosen by timing (with an injected clock), its cache, the switch that
turns it off, images against DDPMPipeline under each choice, and the compiled network's dynamic batch."""

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_hf import DDPMHFScheduler, reverse_chain, sample, samplers, speed

F32, BF16 = torch.float32, torch.bfloat16
NCHW, CL = torch.contiguous_format, torch.channels_last


class FakeClock:
    """A clock that a forward of the UNet advances by ``costs[(dtype, memory format)]`` seconds, read as the forward
    runs (autocast state, the weights' layout); it also counts the forwards."""

    def __init__(self, unet, costs: dict):
        self.now, self.costs, self.forwards = 0.0, costs, 0
        unet.register_forward_hook(self.advance)

    def __call__(self) -> float:
        return self.now

    def advance(self, module, args, output) -> None:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else F32
        self.now += self.costs[(dtype, speed.weights_format(module))]
        self.forwards += 1


COSTS = {(F32, NCHW): 4.0, (F32, CL): 3.0, (BF16, NCHW): 1.0, (BF16, CL): 2.0}


@pytest.fixture(autouse=True)
def untimed():
    """Every test starts with no timed choice (they are cached per architecture, and the tests share one)."""
    speed.forget()


@pytest.fixture
def native_bf16(monkeypatch):
    """Treat the CPU as having native bfloat16 (the setting a float32-only CI machine uses to run that path)."""
    monkeypatch.setenv(samplers.NATIVE_BF16_ENV, "1")


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setenv(samplers.NATIVE_BF16_ENV, "0")


def test_the_native_bf16_setting_decides_what_auto_resolves_to(monkeypatch):
    cpu = torch.device("cpu")
    for value, expected in (("1", BF16), ("0", F32)):
        monkeypatch.setenv(samplers.NATIVE_BF16_ENV, value)
        assert samplers.resolve_precision("auto", cpu) == expected
    monkeypatch.delenv(samplers.NATIVE_BF16_ENV)
    detected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert samplers.resolve_precision("auto", cpu) == (BF16 if detected else F32)


def test_the_bf16_path_runs_bf16_and_stays_near_float32(native_bf16):
    """On any CPU: "auto" untimed runs the network in bfloat16, exactly as precision="bfloat16" does, and its
    images stay within bfloat16's rounding of the float32 chain's (same seeds)."""
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    run = {"num_inference_steps": 10, "output_type": "pt", "autotune": False}
    auto = sample(unet, scheduler, 4, seed=3, **run).images
    assert speed.describe(unet).startswith("bfloat16")
    bf16 = sample(unet, scheduler, 4, seed=3, precision="bfloat16", **run).images
    f32 = sample(unet, scheduler, 4, seed=3, precision="float32", **run).images
    assert torch.equal(auto, bf16)
    assert 0 < (bf16 - f32).abs().mean() < 0.02  # it did run in bf16 (not identical), and it is close


def test_candidates_meet_the_precision_asked_for(native_bf16):
    cpu = torch.device("cpu")
    assert speed.candidates("float32", cpu) == [speed.Choice(F32, NCHW), speed.Choice(F32, CL)]
    assert speed.candidates("bfloat16", cpu) == [speed.Choice(BF16, NCHW), speed.Choice(BF16, CL)]
    assert {c.dtype for c in speed.candidates("auto", cpu)} == {F32, BF16}


def test_auto_has_no_bf16_candidate_without_native_bf16(no_native_bf16):
    assert {c.dtype for c in speed.candidates("auto", torch.device("cpu"))} == {F32}


def test_auto_keeps_the_fastest_and_float32_stays_float32(native_bf16):
    unet = tiny_unet()
    clock = FakeClock(unet, COSTS)
    choice = speed.choose(unet, 16, "auto", autotune=True, clock=clock)
    assert (choice.dtype, choice.memory_format) == (BF16, NCHW)
    assert speed.weights_format(unet) == NCHW and speed.describe(unet) == "bfloat16, NCHW"
    choice = speed.choose(unet, 16, "float32", autotune=True, clock=clock)
    assert (choice.dtype, choice.memory_format) == (F32, CL)
    assert speed.weights_format(unet) == CL and speed.describe(unet) == "float32, channels_last"


def test_without_native_bf16_auto_picks_the_faster_float32_layout(no_native_bf16):
    unet = tiny_unet()
    choice = speed.choose(unet, 4, "auto", autotune=True, clock=FakeClock(unet, {(F32, NCHW): 1.0, (F32, CL): 2.0}))
    assert (choice.dtype, choice.memory_format) == (F32, NCHW)


def test_a_choice_is_timed_once_per_architecture_batch_class_and_candidates(monkeypatch):
    monkeypatch.setattr(samplers, "cpu_has_native_bf16", lambda: False)
    unet = tiny_unet()
    clock = FakeClock(unet, COSTS)
    speed.choose(unet, 3, "float32", autotune=True, clock=clock)
    timed = clock.forwards
    assert timed == 2 * (1 + speed.REPEATS)  # two layouts, a warm-up and the timed rounds each
    speed.choose(unet, 4, "float32", autotune=True, clock=clock)  # same class (2..4)
    speed.choose(unet, 2, "auto", autotune=True, clock=clock)  # no native bf16: the same candidates as float32
    other = tiny_unet(seed=1)  # other weights, same architecture
    other_clock = FakeClock(other, COSTS)
    assert speed.choose(other, 2, "float32", autotune=True, clock=other_clock).memory_format == CL
    assert clock.forwards == timed and other_clock.forwards == 0 and speed.weights_format(other) == CL
    speed.choose(unet, 16, "float32", autotune=True, clock=clock)  # class 5..16
    assert clock.forwards == 2 * timed
    monkeypatch.setattr(samplers, "cpu_has_native_bf16", lambda: True)
    speed.choose(unet, 4, "auto", autotune=True, clock=clock)  # four candidates now
    assert clock.forwards == 4 * timed
    small = tiny_unet(resolution=8)  # another architecture
    small_clock = FakeClock(small, COSTS)
    speed.choose(small, 4, "float32", autotune=True, clock=small_clock)
    assert small_clock.forwards == timed
    assert [speed.batch_class(n) for n in (1, 2, 4, 5, 16, 17)] == [1, 4, 4, 16, 16, 64]


def test_the_switch_turns_timing_off(monkeypatch, native_bf16):
    monkeypatch.setenv(speed.AUTOTUNE_ENV, "0")
    unet = tiny_unet().to(memory_format=CL)
    clock = FakeClock(unet, COSTS)
    choice = speed.choose(unet, 16, "auto", clock=clock)
    assert clock.forwards == 0 and not choice.measured
    assert (choice.dtype, choice.memory_format) == (BF16, CL)  # resolve_precision's dtype, the weights' layout
    assert speed.describe(unet) == "bfloat16, channels_last (fixed, not timed)"
    assert speed.choose(unet, 16, "float32", clock=clock).dtype == F32 and clock.forwards == 0


def test_timing_leaves_the_global_random_state_alone():
    unet = tiny_unet()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    speed.choose(unet, 2, "float32", autotune=True)
    torch.testing.assert_close(torch.rand(3), expected, atol=0, rtol=0)


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        speed.choose(tiny_unet(), 1, "float64")


@pytest.mark.parametrize("fastest", [NCHW, CL])
def test_float32_images_match_ddpmpipeline_in_either_layout(fastest):
    unet, scheduler = tiny_unet(), DDPMHFScheduler()
    costs = {(F32, fastest): 1.0, (F32, CL if fastest == NCHW else NCHW): 2.0}
    assert speed.choose(unet, 3, "float32", autotune=True, clock=FakeClock(unet, costs)).memory_format == fastest
    generator = torch.Generator().manual_seed(5)
    ours = sample(
        unet, scheduler, 3, generator=generator, num_inference_steps=10, output_type="np", precision="float32"
    )
    assert speed.weights_format(unet) == fastest  # the cached choice ran
    reference = tiny_unet()  # fresh weights in NCHW, as diffusers runs them
    pipe = DDPMPipeline(reference, DDPMScheduler.from_config(scheduler.config, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(3, generator=torch.Generator().manual_seed(5), num_inference_steps=10, output_type="np").images
    np.testing.assert_allclose(ours.images, theirs, atol=2e-4)


def test_the_chain_runs_the_chosen_precision(native_bf16):
    unet, seen = tiny_unet(), []
    speed.choose(unet, 2, "auto", autotune=True, clock=FakeClock(unet, COSTS))
    unet.register_forward_hook(lambda m, a, o: seen.append(torch.is_autocast_enabled("cpu")))
    images = sample(unet, DDPMHFScheduler(), 2, seed=0, num_inference_steps=3, output_type="pt").images
    assert seen[-3:] == [True] * 3 and images.dtype == F32 and torch.isfinite(images).all()


def test_the_compiled_network_serves_batches_1_to_16_with_one_graph(monkeypatch):
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")  # dynamo's graph capture without code generation
    monkeypatch.setenv(speed.AUTOTUNE_ENV, "0")
    torch._dynamo.reset()
    unet = tiny_unet()
    speed.compile_in_background(unet, 16, "float32").join()
    choice = speed.choose(unet, 16, "float32")
    assert speed.describe(unet) == "float32, NCHW (fixed, not timed), compiled"
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 1
    compiled = speed.network(unet, choice, compile=None)
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        for n in (1, 2, 5, 16):
            x = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(n))
            torch.testing.assert_close(compiled(x, 321), unet(x, 321).sample, atol=1e-5, rtol=1e-5)
        out = sample(unet, DDPMHFScheduler(), 3, seed=0, num_inference_steps=2, output_type="pt", precision="float32")
    assert out.images.shape == (3, 1, 16, 16)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_a_running_chain_holds_the_memory_format(no_native_bf16):
    unet = tiny_unet().to(memory_format=CL)
    clock = FakeClock(unet, {(F32, NCHW): 1.0, (F32, CL): 2.0})
    chain = reverse_chain(unet, DDPMHFScheduler(), torch.randn(2, 1, 16, 16), num_inference_steps=5, autotune=False)
    next(chain)  # running, on the weights as they are (channels_last)
    forwards = clock.forwards
    during = speed.choose(unet, 16, "float32", autotune=True, clock=clock)
    assert clock.forwards == forwards and not during.measured  # no timing while another chain runs the UNet
    assert during.memory_format == CL and speed.weights_format(unet) == CL
    chain.close()
    after = speed.choose(unet, 16, "float32", autotune=True, clock=clock)
    assert after.measured and after.memory_format == NCHW and speed.weights_format(unet) == NCHW


@pytest.mark.parametrize("native", ["0", "1"])
def test_the_apps_model_line_names_what_the_network_ran_as(monkeypatch, native):
    """The Space's model line says how the last chain ran the network, once one has run."""
    from ddpm_hf.space.registry import Model

    monkeypatch.setenv(samplers.NATIVE_BF16_ENV, native)
    unet = tiny_unet()
    model = Model("tiny", DDPMPipeline(unet=unet, scheduler=DDPMHFScheduler()), None)
    assert "running in" not in model.describe()
    sample(unet, DDPMHFScheduler(), 2, seed=0, num_inference_steps=2, output_type="pt", autotune=False)
    assert model.describe().endswith(f", the network running in {speed.describe(unet)}")
    assert speed.describe(unet).startswith("bfloat16" if native == "1" else "float32")
