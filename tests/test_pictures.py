"""Grids and animations: sizes, pixel values, frame counts, the held last frame."""

import torch
from conftest import tiny_unet
from PIL import Image

from ddpm_hf import DDPMHFScheduler, sample
from ddpm_hf.pictures import FRAME, denoising_frames, forward_frames, make_grid, save_gif


def test_grid_places_each_image_and_upscales_with_nearest_neighbours():
    images = torch.zeros(5, 1, 3, 3)
    images[4] = 1.0  # the fifth image is white
    grid = make_grid(images, nrow=2, scale=2, padding=1)
    assert grid.size == ((2 * 4 + 1) * 2, (3 * 4 + 1) * 2) and grid.mode == "L"
    pixels = torch.tensor(list(grid.getdata())).reshape(grid.height, grid.width)
    # image 4 sits at row 2, column 0: y = 1 + 2*4 = 9, x = 1, in 2x-scaled pixels
    assert (pixels[18:24, 2:8] == 255).all() and (pixels[2:8, 2:8] == 0).all()
    assert set(pixels.unique().tolist()) == {0, 255, FRAME}  # nearest neighbour: no blended values
    assert (pixels[0, :] == FRAME).all()  # the padding


def test_rgb_grid_and_value_range():
    grid = make_grid(torch.full((1, 3, 2, 2), -1.0), value_range=(-1, 1), padding=0)
    assert grid.mode == "RGB" and grid.getpixel((0, 0)) == (0, 0, 0)


def test_denoising_gif_has_a_frame_per_capture_and_holds_the_last(tmp_path):
    out = sample(tiny_unet(), DDPMHFScheduler(), 4, seed=0, num_inference_steps=12, capture_every=3, output_type="pt")
    frames = denoising_frames(out.trajectory, nrow=2, scale=3)
    left = make_grid(out.trajectory.x_t[0], 2, 3, value_range=(-1, 1))
    assert len(frames) == 5 and frames[0].width == 2 * left.width + 8 * 3 and frames[0].height == left.height
    path = save_gif(frames, tmp_path / "denoise.gif", frame_ms=50, hold_ms=1000)
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.info["loop"] == 0
        gif.seek(4)
        assert gif.info["duration"] == 1000


def test_forward_frames_fade_from_the_image_to_noise():
    scheduler = DDPMHFScheduler()
    x0 = torch.ones(1, 1, 8, 8)
    frames = forward_frames(scheduler, x0, [0, 500, 999], scale=1)
    first, last = (
        torch.tensor(list(f.getdata())).float().reshape(12, 12)[2:-2, 2:-2] for f in (frames[0], frames[-1])
    )
    assert first.min() >= 250  # t = 0: still (almost exactly) the white image
    assert last.std() > 40  # t = T-1: noise
