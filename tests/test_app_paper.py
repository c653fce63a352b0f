"""The Space on colour models and the paper's own: ``python app.py`` in a subprocess, driven by gradio_client.

- 32×32 and 64×64 RGB pipeline folders written by stock diffusers (``DDPMPipeline.save_pretrained``, random weights,
  diffusers' ``DDPMScheduler``), served offline (``HF_HUB_OFFLINE=1``): every endpoint answers in colour, the
  posterior and the bound on an uploaded picture, and the paper's models are not listed.
- The paper's CIFAR-10 repo id served by the loopback Hub (its layout at a quarter of the widths): the app lists it,
  loads it on first use through huggingface_hub and samples it; a request past the time budget is capped and says so.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hub_emulator import HubEmulator
from PIL import Image
from test_app import running_app

CIFAR = "google/ddpm-cifar10-32"


def write_rgb_model(folder: Path, size: int) -> Path:
    """A small random RGB DDPM pipeline of ``size``², as stock diffusers writes one."""
    torch.manual_seed(size)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    )
    DDPMPipeline(unet, DDPMScheduler(variance_type="fixed_large", clip_sample=True)).save_pretrained(folder)
    return folder


def colour_photo(path: Path, width: int = 120, height: int = 90) -> Path:
    """A non-square picture whose halves are red and blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2 :] = (30, 30, 220)
    Image.fromarray(pixels).save(path)
    return path


def is_colour(path) -> bool:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return np.abs(rgb[..., 0] - rgb[..., 2]).max() > 40


@pytest.fixture(scope="module")
def colour_app(tmp_path_factory):
    models = tmp_path_factory.mktemp("rgb-models")
    write_rgb_model(models / "rgb-32", 32)
    write_rgb_model(models / "rgb-64", 64)
    log = tmp_path_factory.mktemp("log") / "app.log"
    with running_app(models, log, HF_HUB_OFFLINE="1") as url:
        yield Client(url, verbose=False)


def test_offline_start_lists_only_the_local_models(colour_app):
    api = colour_app.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert api["/sample"]["parameters"][0]["python_type"]["type"] == "Literal['rgb-32', 'rgb-64']"


@pytest.mark.parametrize("model", ["rgb-32", "rgb-64"])
def test_sampling_and_the_gif_are_in_colour(colour_app, model):
    grid, gif, *_ = colour_app.predict(model, 4, "ddpm", 5, "fixed_large", 0, api_name="/sample")
    size = int(model.split("-")[1])
    with Image.open(grid) as picture:
        assert picture.mode == "RGB" and picture.width >= 2 * size
    assert is_colour(grid)
    with Image.open(gif) as animation:
        assert animation.n_frames > 2


def test_forward_posterior_and_bound_take_an_uploaded_colour_picture(colour_app, tmp_path):
    photo = handle_file(str(colour_photo(tmp_path / "photo.png")))
    x0, x_t, *_ = colour_app.predict("rgb-32", 0, photo, 10, 0, api_name="/forward")
    assert is_colour(x0) and is_colour(x_t)  # t = 10 keeps the colours
    *pictures, readout, gap, vb = colour_app.predict("rgb-32", 0, 100, "fixed_large", 0, photo, api_name="/posterior")
    assert is_colour(pictures[0]) and np.isfinite(gap) and vb > 0 and "bits/dim" in readout
    _, readout, total, prior, decoder = colour_app.predict("rgb-64", 0, "fixed_large", 0, photo, api_name="/bound")
    assert 0 < prior < total and np.isfinite(decoder) and "bits/dim" in readout


def test_posterior_without_a_dataset_or_an_upload_asks_for_one(colour_app):
    with pytest.raises(AppError, match="upload an image instead"):
        colour_app.predict("rgb-32", 0, 100, "fixed_large", 0, None, api_name="/posterior")


def test_your_picture_is_cropped_to_the_model_and_comes_back_in_colour(colour_app, tmp_path):
    photo = handle_file(str(colour_photo(tmp_path / "photo.png", 160, 90)))
    image = {"background": photo, "layers": [], "composite": photo}
    x0, _, note, grid = colour_app.predict("rgb-64", image, 1, 1, 0, api_name="/sdedit")[:4]
    assert "resized from 160×90 to 64×64" in note and "inverted" not in note  # no digit rules on a photo
    assert is_colour(x0) and is_colour(grid)


def test_inpainting_a_colour_picture_keeps_the_unpainted_part(colour_app, tmp_path):
    photo, layer = colour_photo(tmp_path / "photo.png", 256, 256), tmp_path / "mask.png"
    mask = np.zeros((256, 256, 4), np.uint8)
    mask[:, 128:] = (255, 0, 0, 255)  # the blue half is regenerated
    Image.fromarray(mask, "RGBA").save(layer)
    image = {"background": handle_file(str(photo)), "layers": [handle_file(str(layer))], "composite": None}
    kept, _, grid = colour_app.predict("rgb-32", image, 1, 0, api_name="/inpaint")[:3]
    result = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    scale = result.shape[0] // 32  # one image, no padding rows beyond the border
    left = result[scale * 4 : scale * 28, scale * 4 : scale * 12]
    assert np.abs(left - np.array([220, 30, 30])).max() <= 3  # the red half comes back exactly
    assert is_colour(kept)


@pytest.mark.timeout(900)
def test_the_papers_cifar10_model_from_the_hub(tmp_path, cifar_repo_files):
    models = tmp_path / "models"
    write_rgb_model(models / "rgb-32", 32)
    hub_env = {k: "" for k in os.environ if k.startswith(("HF_", "HUGGING_FACE_"))}
    with HubEmulator() as hub:
        hub.add_repo(CIFAR, files=cifar_repo_files)
        env = {
            **hub_env,
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf"),
            "NO_PROXY": "127.0.0.1,localhost",
            "DDPM_HF_MAX_SECONDS": "3",  # the quarter-width model is cheap: a tight budget shows the cap
        }
        with running_app(models, tmp_path / "app.log", **env) as url:
            client = Client(url, verbose=False)
            api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
            listed = api["/sample"]["parameters"][0]["python_type"]["type"]
            assert listed == f"Literal['rgb-32', '{CIFAR}']"  # no 256-pixel model on a CPU
            grid, *_ = client.predict(CIFAR, 4, "ddpm", 4, "fixed_large", 0, api_name="/sample")
            assert is_colour(grid) or np.asarray(Image.open(grid)).std() > 0
            assert any(path.startswith(f"/{CIFAR}/resolve/") for _, path in hub.requests)
            *_, status = client.predict(CIFAR, 16, "ddpm", 1000, "fixed_large", 0, api_name="/sample")
            assert status.startswith("Capped to ") and "kept under about 3 s" in status, status
    assert hub.unknown_routes == []
