"""The paper's CIFAR-10 model on CIFAR-10's own test images, fetched from the Hub's ``uoft-cs/cifar10`` parquet file.

- In-process: ``hub_images.hub_test_images`` decodes the PNG bytes of a parquet file written here with pyarrow (the
  dataset's schema) exactly; when the download fails (the Hub switched off, nothing cached) ``choose_x0`` on the
  CIFAR-10 model raises the ValueError that asks for an upload, and a model with neither a built-in dataset nor the
  paper's test images still says so.
- Through the app: the loopback Hub serves ``google/ddpm-cifar10-32`` and the dataset repo; ``/forward`` with test
  image 3 and no upload shows the 4th image written, pixel for pixel; ``/posterior`` and ``/bound`` answer without an
  upload; the parquet file is downloaded once.
"""

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from gradio_client import Client
from hub_emulator import HubEmulator
from huggingface_hub import constants
from PIL import Image
from test_app import running_app
from test_app_paper import is_colour, write_rgb_model

from ddpm_hf.space import hub_images, images, paper
from ddpm_hf.space.registry import Model

CIFAR = "google/ddpm-cifar10-32"
DATASET, PARQUET = paper.BY_REPO[CIFAR].test_images
N_IMAGES = 12


def cifar_like_parquet(n: int = N_IMAGES) -> tuple[bytes, np.ndarray]:
    """A parquet file in the schema of ``uoft-cs/cifar10`` (``img`` struct<bytes: binary, path: string> of PNG bytes,
    ``label`` int64) holding ``n`` random 32×32 colour images; its bytes and the images, uint8 (n, 32, 32, 3)."""
    pixels = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    pngs = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": None})
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"img": pa.array(pngs, img_type), "label": pa.array([i % 10 for i in range(n)], pa.int64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue(), pixels


@pytest.fixture(autouse=True)
def fresh_cache():
    hub_images.hub_test_images.cache_clear()
    yield
    hub_images.hub_test_images.cache_clear()


def test_the_parquet_images_decode_exactly(tmp_path, monkeypatch):
    data, pixels = cifar_like_parquet()
    (tmp_path / "test.parquet").write_bytes(data)
    asked = []
    monkeypatch.setattr(
        hub_images, "hf_hub_download", lambda *args, **kw: asked.append((args, kw)) or str(tmp_path / "test.parquet")
    )
    got = hub_images.hub_test_images(DATASET, PARQUET)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (N_IMAGES, 3, 32, 32)
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), pixels)
    assert asked == [((DATASET, PARQUET), {"repo_type": "dataset"})]
    assert hub_images.hub_test_images(DATASET, PARQUET, count=5).shape[0] == 5  # the first ones only


def test_a_failed_download_asks_for_an_upload(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what hf_hub_download reads on each call
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached to fall back on
    model = Model(CIFAR, pipe=None, dataset=None)
    message = r"^the CIFAR-10 test images could not be fetched from the Hub \(uoft-cs/cifar10: \w+\): upload an image"
    with pytest.raises(ValueError, match=message):
        images.choose_x0(model, 3, None)


def test_a_paper_model_without_test_images_and_a_plain_model_ask_for_an_upload():
    with pytest.raises(ValueError, match="^the paper's LSUN church model has no test images here: upload an image"):
        Model("google/ddpm-ema-church-256", pipe=None, dataset=None).test_sample()
    with pytest.raises(ValueError, match="^model 'rgb-32' names no built-in dataset in its card: upload an image"):
        Model("rgb-32", pipe=None, dataset=None).test_sample()


@pytest.mark.timeout(900)
def test_the_cifar10_model_shows_cifar10_test_images_from_the_hub(tmp_path, cifar_repo_files):
    data, pixels = cifar_like_parquet()
    models = tmp_path / "models"
    write_rgb_model(models / "rgb-32", 32)
    hub_env = {k: "" for k in os.environ if k.startswith(("HF_", "HUGGING_FACE_"))}
    with HubEmulator() as hub:
        hub.add_repo(CIFAR, files=cifar_repo_files)
        hub.add_repo(DATASET, files={PARQUET: data}, repo_type="dataset")
        env = {
            **hub_env,
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf"),
            "NO_PROXY": "127.0.0.1,localhost",
        }
        with running_app(models, tmp_path / "app.log", **env) as url:
            client = Client(url, verbose=False)
            x0_path, x_t_path, *_ = client.predict(CIFAR, 3, None, 10, 0, api_name="/forward")
            x0 = np.asarray(Image.open(x0_path).convert("RGB"))
            assert x0.shape == (252, 252, 3)  # 32 px × 7 plus a 2 px border
            assert np.array_equal(x0[14:238:7, 14:238:7], pixels[3])  # nearest-neighbour ×7: test image 3
            assert is_colour(x_t_path)  # t = 10 keeps the colours
            *shown, readout, gap, vb = client.predict(CIFAR, 5, 100, "fixed_large", 0, None, api_name="/posterior")
            assert is_colour(shown[0]) and np.isfinite(gap) and vb > 0 and "bits/dim" in readout
            _, readout, total, prior, decoder = client.predict(CIFAR, 0, "fixed_large", 0, None, api_name="/bound")
            assert 0 < prior < total and np.isfinite(decoder) and "bits/dim" in readout
    fetched = [path for method, path in hub.requests if method == "GET" and path.endswith(PARQUET)]
    assert fetched == [f"/datasets/{DATASET}/resolve/main/{PARQUET}"]  # once, for all three requests
    assert hub.unknown_routes == []
