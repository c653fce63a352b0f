"""Pictures in and out of the Space: user images to x_0, tensors to grids and GIFs, and the app's own files."""

import atexit
import itertools
import shutil
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import data, pictures
from ..validate import check_int
from .limits import MAX_UPLOAD_PIXELS
from .registry import Model

KEEP_FILES = 64
NOT_AN_IMAGE = "the upload is not an image this app can read: use a PNG, JPEG, WebP or GIF file"


def check_upload(file: str | Path | BinaryIO) -> None:
    """Refuse a file that is not an image, or whose header declares more than ``MAX_UPLOAD_PIXELS`` pixels (checked
    before decoding: a 172 KB PNG can hold a 13300×13300 image).

    Args:
        file: a path, or the bytes of an upload as a binary file (the image editor's blobs).
    """
    try:
        with Image.open(file) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ValueError(NOT_AN_IMAGE) from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise ValueError(f"the image is {width}×{height} pixels; the limit is {MAX_UPLOAD_PIXELS // 2**20} megapixels")


def to_x0(image: Image.Image, size: int, channels: int, white_on_black: bool) -> tuple[torch.Tensor, str]:
    """A user picture as the model's x_0 (1, C, size, size) in [-1, 1], and a note of what was changed.

    Transparent pixels count as the background. Grayscale models trained on white-on-black digits get a picture
    with a light background inverted, so a digit drawn in black on white looks like their training data.
    """
    notes = []
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255) if white_on_black else (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.size != (size, size):
        notes.append(f"resized from {image.width}×{image.height} to {size}×{size}")
    x = data.image_to_model_input(image, size, channels)
    if white_on_black and channels == 1:
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
        if border.mean() > 0:
            x = -x
            notes.append("inverted to white on black, as the model's training images are")
    return x, "; ".join(notes)


def choose_x0(model: Model, index, upload: Image.Image | None) -> tuple[torch.Tensor, str]:
    """x_0 (1, C, H, W) from the upload if there is one, else test image ``index`` of the model's test images
    (``Model.test_sample``: its built-in dataset's, or CIFAR-10's from the Hub); and a note of what was done to the
    upload. A ValueError where the model has no test images and nothing was uploaded."""
    grayscale_digits = model.dataset in data.BUILT_IN
    if upload is not None:
        return to_x0(upload, model.size, model.channels, white_on_black=grayscale_digits)
    images = model.test_sample()
    pixels = images[check_int("test image index", index, 0, len(images) - 1)]
    if tuple(pixels.shape) != (model.channels, model.size, model.size):
        return to_x0(Image.fromarray(pixels[0].numpy()), model.size, model.channels, white_on_black=False)
    return data.to_model_range(pixels[None]), ""


def mask_of(layer: Image.Image | None, size: int) -> torch.Tensor:
    """(1, 1, size, size) mask, 1 where the user painted (any non-transparent pixel of the layer)."""
    if layer is None:
        return torch.zeros(1, 1, size, size)
    alpha = np.asarray(layer.convert("RGBA").resize((size, size), Image.Resampling.BOX))[..., 3]
    return torch.from_numpy(alpha > 16).float()[None, None]


def picture(x: torch.Tensor, scale: int | None = None, padding: int = 2, nrow: int | None = None) -> Image.Image:
    """Images in [-1, 1] (B, C, H, W) as one grid, ``nrow`` per row (default: a square), upscaled without blur
    (by default 28 px → 224 px per image)."""
    scale = scale or max(1, 224 // x.shape[-1])
    return pictures.make_grid(x, nrow, scale, padding, value_range=(-1, 1))


def grid_scale(size: int) -> int:
    """Upscaling of sample grids (28 px → 4×)."""
    return max(1, 112 // size)


def animation_scale(size: int) -> int:
    """Upscaling of GIF frames (28 px → 3×): a 16-image GIF of 31 frames stays near 3 MB."""
    return max(1, 84 // size)


@cache
def workdir() -> Path:
    """The app's own temporary folder (created on first use, removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="ddpm-hf-app-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_file_ids = itertools.count()
_file_lock = threading.Lock()


def new_file(suffix: str, rotate: bool = True) -> Path:
    """A fresh path in ``workdir()``.

    Args:
        suffix: the file's suffix (".gif").
        rotate: True for a request's file: the oldest such files beyond ``KEEP_FILES`` are deleted (names count up).
            False for a file that must outlive any traffic (the result shown on arrival): it is never rotated out.

    Returns:
        The path, not yet written.
    """
    with _file_lock:
        number = next(_file_ids)
        if not rotate:
            return workdir() / f"kept-{number:08d}{suffix}"
        files = sorted(p for p in workdir().iterdir() if p.stem.isdigit())
        for old in files[: max(0, len(files) - KEEP_FILES + 1)]:
            old.unlink(missing_ok=True)
        return workdir() / f"{number:08d}{suffix}"


def animation_frame(path: str | Path, index: int) -> Image.Image:
    """Frame ``index`` of a GIF this app wrote (scrubbing through a run)."""
    path = Path(path)
    if path.parent != workdir() or not path.is_file():
        raise ValueError("that animation is gone: run it again")
    with Image.open(path) as gif:
        index = check_int("frame", index, 0, gif.n_frames - 1)
        gif.seek(index)
        return gif.convert("RGB")
