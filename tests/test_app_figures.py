"""The Paper figures tab (Ho et al. 2020, figs. 7 and 8) on tiny random models, 28×28 grayscale with a card naming
MNIST and 32×32 RGB with no dataset: the handlers called directly, their chains checked against ``add_noise`` and
``reverse_chain`` run by hand, not against numbers copied from the app."""

import dataclasses

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hf import DDPMHFScheduler, save_pipeline
from ddpm_hf.models import build_unet
from ddpm_hf.sampling import initial_noise, reverse_chain
from ddpm_hf.space import chains, costs, images, limits
from ddpm_hf.space.figures import FigureHandlers, interpolation_run, lambda_row, noise_once, shared_xt_run
from ddpm_hf.space.figures_tab import figures_tab
from ddpm_hf.space.handlers import Handlers
from ddpm_hf.space.registry import Registry

GRAY, RGB = "tiny-mnist", "tiny-rgb"
CARD = "---\ndatasets:\n- ylecun/mnist\nlibrary_name: diffusers\n---\n# tiny test model\n"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    gray = save_pipeline(build_unet("tiny", 28, 1).eval(), DDPMHFScheduler(), root / GRAY)
    (gray / "README.md").write_text(CARD)
    torch.manual_seed(1)
    rgb = save_pipeline(build_unet("tiny", 32, 3).eval(), DDPMHFScheduler(), root / RGB)
    return Registry({GRAY: str(gray), RGB: str(rgb)})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread for these tiny networks: on a busy 2-core machine a forward took 1.3 s with two threads and 7 ms
    with one (their pool waiting for a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def float32(monkeypatch):
    """The network untimed and in float32 on every CPU, so that runs compared here repeat bit for bit."""
    monkeypatch.setenv("DDPM_HF_AUTOTUNE", "0")
    monkeypatch.setenv("DDPM_HF_NATIVE_BF16", "0")


def upload(kind: int) -> Image.Image:
    """A 40×40 RGB picture (resized to the model's size on the way in): a red ramp (0) or a blue checkerboard (1)."""
    yy, xx = np.mgrid[0:40, 0:40]
    pixels = np.zeros((40, 40, 3), np.uint8)
    if kind == 0:
        pixels[..., 0] = xx * 6
    else:
        pixels[..., 2] = 255 * ((yy // 8 + xx // 8) % 2)
    return Image.fromarray(pixels)


def two_pictures(registry, name) -> tuple:
    """The model and two different pictures x_0 of it: test images 0 and 1, or the two uploads."""
    m = registry.get(name)
    if name == GRAY:
        return m, images.choose_x0(m, 0, None)[0], images.choose_x0(m, 1, None)[0]
    return m, images.choose_x0(m, 0, upload(0))[0], images.choose_x0(m, 0, upload(1))[0]


def finish(run) -> chains.Finished:
    *_, done = run
    return done


def by_hand(m, x0, t, seed, skip: int = 0) -> torch.Tensor:
    """One chain from x_t = add_noise(x0, ε, t), ε the first draw of the generator seeded ``seed``; the chain's noise
    comes from the generator seeded ``seed + skip`` after one draw of that size (the start it did not need)."""
    unet = m.pipe.unet
    eps = initial_noise(unet, 1, [torch.Generator().manual_seed(seed)])
    x_t = m.scheduler.add_noise(x0, eps, torch.tensor([t]))
    chain_generator = torch.Generator().manual_seed(seed + skip)
    initial_noise(unet, 1, [chain_generator])
    steps = limits.SDEDIT_STEPS if t >= 10 else 1000
    options = {"num_inference_steps": steps, "variance": "fixed_small", "start_timestep": t}
    *_, last = reverse_chain(unet, m.scheduler, x_t, generator=[chain_generator], **options)
    return last.x_prev.cpu()


@pytest.mark.parametrize("name", [GRAY, RGB])
def test_shared_xt_chains_all_start_from_one_x_t(registry, name):
    m, x0, _ = two_pictures(registry, name)
    run = shared_xt_run(m, x0, 400, 4, seed=5)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(run.start, m.scheduler.add_noise(x0, eps, torch.tensor([400])))
    assert run.note == ""  # a tiny model: nothing cut
    result = finish(run.updates).result
    assert result.shape == (4, m.channels, m.size, m.size)
    for i in (0, 3):  # chain i: the one x_t, with the noise of seed + i
        torch.testing.assert_close(result[i : i + 1], by_hand(m, x0, 400, 5, skip=i), atol=1e-4, rtol=0)
    gaps = [(result[i] - result[j]).abs().max() for i in range(4) for j in range(i)]
    assert min(gaps) > 0.1  # at a large t the chains' own noise makes them differ


@pytest.mark.parametrize("name", [GRAY, RGB])
def test_shared_xt_at_t_0_gives_x0_back_in_every_chain(registry, name):
    m, x0, _ = two_pictures(registry, name)
    result = finish(shared_xt_run(m, x0, 0, 3, seed=2).updates).result
    torch.testing.assert_close(result[1:], result[:1].expand(2, -1, -1, -1), atol=1e-6, rtol=0)
    assert (result[0] - x0).abs().max() < 0.1  # x_0 plus at most a hundredth of (ε − ε_θ)


def test_shared_xt_handler_shows_its_run_and_repeats_with_its_seed(registry):
    figures = FigureHandlers(registry)
    updates = list(figures.shared_xt(GRAY, 3, None, t=300, num_images=2, seed=1))
    x0_picture, x_t_picture, guess, note, *_ = updates[0]
    m = registry.get(GRAY)
    x0 = images.choose_x0(m, 3, None)[0]
    assert np.array_equal(np.asarray(x_t_picture), np.asarray(images.picture(noise_once(m, x0, 300, 1))))
    assert guess.size == x0_picture.size and note == "used as given"
    grid, *_, status, state = updates[-1][4:]
    expected = finish(shared_xt_run(m, x0, 300, 2, seed=1).updates)
    assert np.array_equal(np.asarray(grid), np.asarray(expected.grid))
    assert "2 chains from one xₜ at t = 300" in status and "animation" in state
    other = finish(shared_xt_run(m, x0, 300, 2, seed=2).updates)
    assert (other.result - expected.result).abs().max() > 0.1


@pytest.mark.parametrize("name", [GRAY, RGB])
def test_interpolation_ends_are_each_pictures_own_chain(registry, name):
    m, x0_a, x0_b = two_pictures(registry, name)
    lambdas = lambda_row(0.3)
    assert lambdas == (0.0, 0.25, 0.3, 0.5, 0.75, 1.0)
    run = interpolation_run(m, x0_a, x0_b, 300, lambdas, seed=2)
    starts = run.start
    x_t_a, x_t_b = (noise_once(m, x, 300, 2) for x in (x0_a, x0_b))
    torch.testing.assert_close(starts[[0, -1]], torch.cat([x_t_a, x_t_b]), atol=0, rtol=0)
    torch.testing.assert_close(starts[3], (x_t_a[0] + x_t_b[0]) / 2)
    result = finish(run.updates).result
    assert result.shape == (len(lambdas), m.channels, m.size, m.size)
    torch.testing.assert_close(result[:1], by_hand(m, x0_a, 300, 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(result[-1:], by_hand(m, x0_b, 300, 2), atol=1e-4, rtol=0)
    assert (result[0] - result[-1]).abs().max() > 0.1


def test_interpolation_decodes_every_mix_with_the_same_noise(registry):
    m, x0, _ = two_pictures(registry, GRAY)
    result = finish(interpolation_run(m, x0, x0, 200, (0.0, 0.5, 1.0), seed=4).updates).result
    torch.testing.assert_close(result, result[:1].expand(3, -1, -1, -1), atol=1e-5, rtol=0)


def test_interpolate_handler_on_uploads_shows_one_row(registry):
    figures = FigureHandlers(registry)
    *_, last = figures.interpolate(RGB, 0, 0, upload(0), upload(1), t=200, mix=0.5, seed=3)
    a, b, starts, note, grid, *_, status, _ = last
    assert a.size == b.size and not np.array_equal(np.asarray(a), np.asarray(b))
    assert grid.width > 4 * grid.height and starts.size == grid.size  # λ = 0, 0.25, 0.5, 0.75, 1 in one row
    assert note == "first picture resized from 40×40 to 32×32; second picture resized from 40×40 to 32×32"
    assert status.startswith("λ = 0, 0.25, 0.5, 0.75, 1, left to right")


def test_a_slow_model_runs_fewer_steps_and_keeps_the_row_whole(registry):
    """On a model whose steps are measured slow, figure 7 runs fewer chains or steps and figure 8 fewer steps, each
    within the app's budget and saying so; the λ row keeps every image."""
    m, x0_a, x0_b = two_pictures(registry, GRAY)
    slow = dataclasses.replace(m, cost=costs.Cost(fixed=0.5, per_image=0.5))
    shared = shared_xt_run(slow, x0_a, 999, 16, seed=0)
    row = interpolation_run(slow, x0_a, x0_b, 999, lambda_row(0.5), seed=0)
    for run in (shared, row):
        assert run.note.startswith("Capped to")
        assert slow.cost.seconds(run.request.num_images, run.request.num_inference_steps) <= costs.MAX_SECONDS
    assert row.request.num_images == row.request.columns == 5
    assert 1 <= shared.request.num_images < 16
    assert finish(shared.updates).result.shape[0] == shared.request.num_images  # the one x_t, for each chain kept


@pytest.mark.parametrize(
    ("figure", "kwargs", "message"),
    [
        ("shared_xt", {"model": GRAY, "image_index": 0, "t": 1000}, r"t must be an integer in \[0, 999\], got 1000"),
        ("shared_xt", {"model": GRAY, "image_index": 0, "t": -1}, r"t must be an integer in \[0, 999\], got -1"),
        ("shared_xt", {"model": GRAY, "image_index": 0, "num_images": 17}, r"Number of chains .* \[1, 16\], got 17"),
        ("shared_xt", {"model": GRAY, "image_index": 10**6}, "test image index must be an integer in"),
        ("shared_xt", {"model": RGB, "image_index": 0}, "'tiny-rgb' names no built-in dataset .* upload an image"),
        ("shared_xt", {"model": "nope", "image_index": 0}, "unknown model 'nope'"),
        ("interpolate", {"model": GRAY, "index_a": 0, "mix": 1.5}, r"λ must be a number in \[0, 1\], got 1.5"),
        ("interpolate", {"model": GRAY, "index_a": 0, "mix": -0.1}, r"λ must be a number in \[0, 1\], got -0.1"),
        ("interpolate", {"model": GRAY, "index_a": 0, "t": 1000}, r"t must be an integer in \[0, 999\]"),
        ("interpolate", {"model": GRAY, "index_a": 0, "index_b": 10**6}, "second picture: test image index must be"),
        ("interpolate", {"model": RGB, "index_a": 0, "image_a": upload(0)}, "second picture: .* upload an image"),
    ],
)
def test_bad_inputs_are_refused_with_their_message(registry, figure, kwargs, message):
    with pytest.raises(ValueError, match=message) as refused:
        next(getattr(FigureHandlers(registry), figure)(**kwargs))
    assert isinstance(refused.value, gr.Error)  # shown to the visitor


def test_run_chain_refuses_a_start_of_the_wrong_shape(registry):
    m = registry.get(GRAY)
    request = chains.ChainRequest(2, "ddpm", 100, "fixed_small", 0)
    with pytest.raises(ValueError, match=r"x_t must be a batch of shape \(2, 1, 28, 28\)"):
        next(chains.run_chain(m, request, start_timestep=300, x_t=torch.zeros(1, 1, 28, 28)))


def test_tab_builds_with_both_endpoints(registry):
    with gr.Blocks() as demo:
        picker = gr.Dropdown([GRAY, RGB], value=GRAY, label="Model")
        with gr.Tab("Paper figures"):
            figures_tab(Handlers(registry), FigureHandlers(registry), picker)
    assert {"shared_xt", "interpolate"} <= {fn.api_name for fn in demo.fns.values()}
