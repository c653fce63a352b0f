"""The Gradio app as clients meet it: ``python app.py`` in a real subprocess, driven by gradio_client.

The app serves a tiny random 28×28 model written by ``save_pipeline`` (its card names MNIST); answers are checked
against ``ddpm_hf`` itself (the scheduler's tables, ``sample``, ``make_grid``, ``vb_terms``), not against numbers
copied from the app.
"""

import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from ddpm_hf import SAMPLERS, DDPMHFScheduler, load_pipeline, sample, save_pipeline
from ddpm_hf.data import load_test_sample, to_model_range
from ddpm_hf.guidance import add_class_embedding
from ddpm_hf.likelihood import vb_terms
from ddpm_hf.models import build_unet
from ddpm_hf.pictures import forward_frames, make_grid
from ddpm_hf.space import limits

REPO = Path(__file__).resolve().parents[1]
MODEL = "ddpm-mnist"
GUIDED = "tiny-guided"  # a class-conditional tiny model beside it
HUB_MODEL = "nobody/ddpm-not-here"  # offered through DDPM_HF_EXTRA_MODEL; unreachable (HF_HUB_OFFLINE=1)
QUEUE_SIZE = 4
CARD = "---\ndatasets:\n- ylecun/mnist\nlibrary_name: diffusers\n---\n# tiny test model\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tiny_model(models_dir: Path) -> Path:
    """A random tiny 28×28 grayscale model named like the shipped default, with a card naming MNIST."""
    torch.manual_seed(0)
    folder = save_pipeline(build_unet("tiny", 28, 1).eval(), DDPMHFScheduler(), models_dir / MODEL)
    (folder / "README.md").write_text(CARD)
    return folder


@contextlib.contextmanager
def running_app(models_dir: Path, log_path: Path, timeout: float = 180, **env):
    """Run ``python app.py`` on a free port until the block ends; yields its URL once it answers HTTP 200."""
    port = free_port()
    env = {
        **os.environ,
        "DDPM_HF_MODELS_DIR": str(models_dir),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "DDPM_HF_NATIVE_BF16": "0",  # float32 on every CPU: the app's numbers are compared with float32 ones
        **env,
    }
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_tiny_model(folder)
    unet = add_class_embedding(build_unet("tiny", 28, 1).eval(), 10)
    torch.nn.init.normal_(unet.class_embedding.weight, generator=torch.Generator().manual_seed(0))
    save_pipeline(unet, DDPMHFScheduler(), folder / GUIDED, class_names=list("0123456789"), guidance_scale=2.0)
    (folder / "not-a-model").mkdir()  # no model_index.json: must not be offered
    return folder


@pytest.fixture(scope="module")
def app_url(models_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    with running_app(models_dir, log, DDPM_HF_QUEUE_SIZE=str(QUEUE_SIZE), DDPM_HF_EXTRA_MODEL=HUB_MODEL) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def pipe(models_dir):
    return load_pipeline(models_dir / MODEL)


def test_import_builds_the_app_and_loads_no_model():
    """``import app`` gives a module-level ``demo`` with the public endpoints; no model is loaded until asked."""
    probe = (
        "import json, app\n"
        "apis = sorted(f.api_name for f in app.demo.fns.values() if f.api_name and f.api_visibility == 'public')\n"
        "print(json.dumps({'apis': apis, 'models': list(app.handlers.models.sources),\n"
        "                  'loaded': len(app.handlers.models._models)}))\n"
    )
    env = {
        **os.environ,
        "DDPM_HF_MODELS_DIR": str(REPO / "no-such-dir"),
        "DDPM_HF_EXTRA_MODEL": "someone/ddpm-x",
        "HF_HUB_OFFLINE": "0",  # the paper's CIFAR-10 model is listed (a CPU: not the 256-pixel ones); nothing fetched
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["apis"] == [
        "bound",
        "forward",
        "inpaint",
        "interpolate",
        "posterior",
        "sample",
        "schedule",
        "sdedit",
        "shared_xt",
    ]
    assert report["models"] == ["someone/ddpm-x", "google/ddpm-cifar10-32"] and report["loaded"] == 0


def test_models_offered_and_api_parameters(client):
    """Folders with a model_index.json (not others) and the Hub model; readable parameter names, optional marked."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    parameters = {name: [p["parameter_name"] for p in api[name]["parameters"]] for name in api}
    assert parameters == {
        "/sample": [
            "model",
            "num_images",
            "sampler",
            "num_inference_steps",
            "variance",
            "seed",
            "class_name",
            "guidance_scale",
        ],
        "/sdedit": ["model", "image", "t", "num_images", "seed", "class_name", "guidance_scale"],
        "/inpaint": ["model", "image", "num_images", "seed"],
        "/forward": ["model", "image_index", "image", "t", "seed"],
        "/schedule": ["model"],
        "/posterior": ["model", "image_index", "t", "variance", "seed", "image"],
        "/bound": ["model", "image_index", "variance", "seed", "image"],
        "/shared_xt": ["model", "image_index", "image", "t", "num_images", "seed"],
        "/interpolate": ["model", "index_a", "index_b", "image_a", "image_b", "t", "mix", "seed"],
    }
    assert api["/sample"]["parameters"][0]["python_type"]["type"] == f"Literal['{MODEL}', '{GUIDED}', '{HUB_MODEL}']"
    forward = {p["parameter_name"]: p for p in api["/forward"]["parameters"]}
    assert forward["image"]["parameter_has_default"] and forward["image"]["parameter_default"] is None
    returns = [r["label"] for r in api["/forward"]["returns"]]
    assert returns[-2:] == ["signal_rate", "noise_rate"]


def test_unreachable_hub_model_is_remembered_and_others_keep_working(client):
    for _ in range(2):  # the second answer comes from the remembered failure
        with pytest.raises(AppError, match=f"^model '{HUB_MODEL}' .*could not be loaded"):
            client.predict(HUB_MODEL, api_name="/schedule")
    assert client.predict(MODEL, api_name="/schedule")


def test_sample_streams_and_matches_the_library(client, pipe):
    job = client.submit(MODEL, 2, "ddpm", 20, "fixed_large", 7, api_name="/sample")
    grid_path, gif_path, scrub, frame_path, line = job.result(timeout=120)
    streamed = job.outputs()
    assert len(streamed) > 2, "the grid should stream while sampling"
    assert all(Path(update[0]).is_file() for update in streamed)
    assert streamed[0][-1].startswith("step 1 of 20, t = 999; ") and line == ""  # how far, then done

    expected = sample(
        pipe.unet,
        pipe.scheduler,
        2,
        seed=7,
        num_inference_steps=20,
        variance="fixed_large",
        output_type="pt",
        precision="float32",  # as the app runs here (DDPM_HF_NATIVE_BF16=0), whatever the CPU
    ).images
    expected_grid = np.asarray(make_grid(expected, nrow=2, scale=4))
    grid = np.asarray(Image.open(grid_path))
    assert grid.shape == expected_grid.shape
    assert np.abs(grid.astype(int) - expected_grid).max() <= 1

    with Image.open(gif_path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 21  # every one of 20 steps, then the result
        size = gif.size
    left = make_grid(expected, nrow=2, scale=3)  # frames: x_t grid | 8·scale gap | x̂_0 grid, at 3× not 4×
    assert size == (2 * left.width + 8 * 3, left.height)
    assert scrub["value"] == scrub["maximum"] == 20
    assert scrub["label"] == "Frame" and scrub["info"] == "frame 20 of 20: the result x₀, after 20 steps"
    assert Image.open(frame_path).size == size


def test_a_conditional_model_draws_the_classes_asked_for(client, models_dir):
    guided = load_pipeline(models_dir / GUIDED)
    run = {"num_inference_steps": 3, "variance": "fixed_small", "output_type": "pt", "precision": "float32"}

    def expected(labels, w, nrow):
        images = sample(
            guided.unet, guided.scheduler, len(labels), seed=5, class_labels=labels, guidance_scale=w, **run
        )
        return np.asarray(make_grid(images.images, nrow=nrow, scale=4)).astype(int)

    grid, *_ = client.predict(GUIDED, 4, "ddpm", 3, "fixed_small", 5, limits.ALL_CLASSES, 3.0, api_name="/sample")
    want = expected(list(range(10)), 3.0, 1)  # one row per class: 4 images → 1 per row
    assert np.abs(np.asarray(Image.open(grid)).astype(int) - want).max() <= 1
    grid, *_ = client.predict(GUIDED, 2, "ddpm", 3, "fixed_small", 5, "7", 3.0, api_name="/sample")
    assert np.abs(np.asarray(Image.open(grid)).astype(int) - expected([7, 7], 3.0, 2)).max() <= 1
    with pytest.raises(AppError, match="Class must be one of"):
        client.predict(GUIDED, 2, "ddpm", 3, "fixed_small", 5, "eleven", 3.0, api_name="/sample")
    # an unconditional model takes the same call and ignores the class
    plain = client.predict(MODEL, 2, "ddpm", 3, "fixed_small", 5, "7", 3.0, api_name="/sample")[0]
    again = client.predict(MODEL, 2, "ddpm", 3, "fixed_small", 5, api_name="/sample")[0]
    assert np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(again)))


def test_the_dropdown_offers_every_sampler():
    assert sorted(limits.SAMPLER_NAMES) == sorted(SAMPLERS)


@pytest.mark.parametrize("sampler", limits.SAMPLER_NAMES)
def test_one_step_and_every_sampler(client, sampler):
    grid_path, gif_path, scrub, *_ = client.predict(MODEL, 1, sampler, 1, "fixed_small", 0, api_name="/sample")
    assert Path(grid_path).is_file() and scrub["maximum"] == 1  # the step's frame and the result
    with Image.open(gif_path) as gif:
        assert gif.n_frames == 2


def test_forward_rates_are_the_schedulers(client, pipe):
    x0_path, _, readout, gif_path, signal, noise = client.predict(MODEL, 3, None, 500, 0, api_name="/forward")
    assert math.isclose(signal, float(pipe.scheduler.sqrt_alphas_cumprod[500]), rel_tol=1e-6)
    assert math.isclose(noise, float(pipe.scheduler.sqrt_one_minus_alphas_cumprod[500]), rel_tol=1e-6)
    assert f"{signal:.3g}" in readout and f"{noise:.3g}" in readout
    digit = load_test_sample("mnist").images[3, 0].numpy()
    x0 = np.asarray(Image.open(x0_path).convert("L"))
    assert x0.shape == (256, 256)  # 28 px × 8 plus a 2 px border
    assert np.array_equal(x0[16:240:8, 16:240:8], digit)  # nearest-neighbour ×8 after the border: the test image
    # the GIF: x_t at 30 timesteps from 0 to T-1 with the request's ε, its first and last frames the library's
    timesteps = np.unique(np.linspace(0, 999, limits.ANIMATION_FRAMES).round().astype(int))
    x0_tensor = to_model_range(load_test_sample("mnist").images[3:4])
    first, last = forward_frames(pipe.scheduler, x0_tensor, [0, 999], seed=0, scale=8)
    with Image.open(gif_path) as gif:
        assert gif.n_frames == len(timesteps) == limits.ANIMATION_FRAMES
        assert np.abs(np.asarray(gif.convert("L")).astype(int) - np.asarray(first.convert("L"))).max() <= 1
        gif.seek(gif.n_frames - 1)
        assert np.abs(np.asarray(gif.convert("L")).astype(int) - np.asarray(last.convert("L"))).max() <= 1


def test_forward_converts_an_upload(client, tmp_path):
    upload = tmp_path / "rgb.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(upload)
    x0_path, *_ = client.predict(MODEL, 0, handle_file(str(upload)), 10, 0, api_name="/forward")
    x0 = Image.open(x0_path)
    assert x0.size == (256, 256)
    red_in_gray = round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)
    assert abs(int(np.asarray(x0.convert("L"))[128, 128]) - red_in_gray) <= 1


def test_uploads_that_are_not_images_or_too_large(client, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(AppError, match="not an image this app can read"):
        client.predict(MODEL, 0, handle_file(str(text)), 10, 0, api_name="/forward")
    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 5000)).save(huge, optimize=True)  # ~25 megapixels, a few KB on disk
    with pytest.raises(AppError, match="5000×5000 pixels; the limit is 16 megapixels"):
        client.predict(MODEL, 0, handle_file(str(huge)), 10, 0, api_name="/forward")
    assert client.predict(MODEL, 0, None, 10, 0, api_name="/forward")[4] > 0.99  # still answering


def test_schedule_tables(client, pipe):
    rates, variances, snr = client.predict(MODEL, api_name="/schedule")
    T = pipe.scheduler.config.num_train_timesteps
    tables = {
        name: {(t, quantity): value for t, value, quantity in plot["data"]}
        for name, plot in [("rates", rates), ("variances", variances), ("snr", snr)]
    }
    assert len(tables["rates"]) == 3 * T and len(tables["variances"]) == T - 1 and len(tables["snr"]) == T
    s = pipe.scheduler
    for t in (1, 250, T - 1):
        assert math.isclose(tables["rates"][t, "ᾱₜ"], float(s.alphas_cumprod[t]), rel_tol=1e-6)
        ratio = float(s.posterior_variance[t]) / float(s.betas[t])
        assert math.isclose(tables["variances"][t, "β̃ₜ / βₜ"], ratio, rel_tol=1e-5)
        assert math.isclose(tables["snr"][t, "log10 SNRₜ"], math.log10(float(s.snr[t])), rel_tol=1e-5, abs_tol=1e-6)
    assert tables["variances"][1, "β̃ₜ / βₜ"] < 0.5 and tables["variances"][100, "β̃ₜ / βₜ"] > 0.98


def test_posterior_step_scores_the_network_output_it_steps_with(client, pipe):
    *pictures, readout, mean_gap, vb_small = client.predict(MODEL, 5, 200, "fixed_small", 3, api_name="/posterior")
    assert len(pictures) == 6 and all(Image.open(p).size == (256, 256) for p in pictures)
    assert mean_gap > 0 and "bits/dim" in readout
    # documented contract: ε = randn(x0.shape, generator=Generator().manual_seed(seed)), drawn first
    x0 = to_model_range(load_test_sample("mnist").images[5:6])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([200])
    x_t = pipe.scheduler.add_noise(x0, noise, t)
    with torch.inference_mode():
        expected = float(vb_terms(pipe.scheduler, x0, x_t, t, pipe.unet(x_t, t).sample)[0])
    assert math.isclose(vb_small, expected, rel_tol=1e-4)
    *_, vb_large = client.predict(MODEL, 5, 200, "fixed_large", 3, api_name="/posterior")
    assert vb_large != vb_small


def test_bound_curve_and_total_are_one_set_of_terms(client):
    curve, readout, total, prior, decoder = client.predict(MODEL, 0, "fixed_small", 0, api_name="/bound")
    assert curve["columns"] == ["t", "bits/dim", "log10 bits/dim"]
    rows = curve["data"]
    assert len(rows) == 51 and rows[0][0] == 0 and math.isclose(rows[0][1], decoder, rel_tol=1e-6)
    assert all(math.isfinite(row[1]) and row[1] >= 0 for row in rows)
    # the total is L_T + L_0 + the stratified sum of exactly these terms (strata of 1..999 of ~20 timesteps each)
    edges = np.linspace(1, 1000, 51).astype(int)
    assert math.isclose(total, prior + decoder + sum(r[1] * w for r, w in zip(rows[1:], np.diff(edges))), rel_tol=1e-4)
    assert "bits/dim" in readout


def test_sdedit_at_small_t_keeps_the_drawing(client, tmp_path):
    drawing = tmp_path / "digit.png"
    pixels = np.zeros((280, 280), np.uint8)
    pixels[60:220, 120:160] = 255  # a white "1" on black
    Image.fromarray(pixels).save(drawing)
    image = {"background": handle_file(str(drawing)), "layers": [], "composite": handle_file(str(drawing))}
    x0_path, _, note, grid_path = client.predict(MODEL, image, 1, 1, 0, api_name="/sdedit")[:4]
    assert "resized from 280×280 to 28×28" in note
    x0 = np.asarray(Image.open(x0_path).convert("L")).astype(int)
    result = np.asarray(Image.open(grid_path).convert("L")).astype(int)
    assert np.abs(x0[16:240:8, 16:240:8] - result[8:120:4, 8:120:4]).mean() < 8  # t = 1: one small step back


def test_sdedit_inverts_a_dark_drawing_on_light_paper(client, tmp_path):
    drawing = tmp_path / "ink.png"
    pixels = np.full((100, 100), 255, np.uint8)
    pixels[20:80, 45:55] = 0
    Image.fromarray(pixels).save(drawing)
    image = {"background": handle_file(str(drawing)), "layers": [], "composite": handle_file(str(drawing))}
    x0_path, _, note, *_ = client.predict(MODEL, image, 10, 1, 0, api_name="/sdedit")
    assert "inverted to white on black" in note
    assert np.asarray(Image.open(x0_path).convert("L"))[128, 128] > 200  # the stroke is now white


def test_inpainting_keeps_the_unpainted_part(client, tmp_path):
    digit = load_test_sample("mnist").images[0, 0].numpy()
    background, layer = tmp_path / "digit.png", tmp_path / "mask.png"
    Image.fromarray(digit).resize((224, 224), Image.NEAREST).save(background)
    mask = np.zeros((224, 224, 4), np.uint8)
    mask[:, 112:] = (255, 0, 0, 255)  # paint the right half
    Image.fromarray(mask, "RGBA").save(layer)
    image = {
        "background": handle_file(str(background)),
        "layers": [handle_file(str(layer))],
        "composite": handle_file(str(background)),
    }
    kept_path, _, grid_path = client.predict(MODEL, image, 1, 0, api_name="/inpaint")[:3]
    result = np.asarray(Image.open(grid_path).convert("L")).astype(int)[8:120:4, 8:120:4]
    kept = np.asarray(Image.open(kept_path).convert("L")).astype(int)[16:240:8, 16:240:8]  # x_0 as the model sees it
    assert kept[:, :14].max() > 200 and (kept[:, 14:] == 128).all()  # the digit's left half; the painted half grey
    assert np.abs(result[:, :14] - kept[:, :14]).max() <= 2  # the unpainted half comes back exactly
    assert np.abs(result[:, 14:] - digit[:, 14:].astype(int)).max() > 64  # the painted half is the model's


@pytest.mark.parametrize(
    "args, api, message",
    [
        (("../models", 2, "ddpm", 20, "fixed_small", 0), "/sample", "not in the list of choices"),
        ((MODEL, 2, "ddpm", 0, "fixed_small", 0), "/sample", "^Sampling steps must be ≥ 1, got 0$"),
        ((MODEL, 17, "ddpm", 20, "fixed_small", 0), "/sample", "^Number of images must be ≤ 16, got 17$"),
        ((MODEL, 2, "ddpm", 20, "fixed_small", -5), "/sample", "^Seed must be ≥ 0, got -5$"),
        ((MODEL, 2, "ddpm", 20, "fixed_small", 1.5), "/sample", "^Seed must be a whole number, got 1.5$"),
        ((MODEL, 2, "ddpm", 2.5, "fixed_small", 0), "/sample", "^Sampling steps must be a whole number, got 2.5$"),
        ((MODEL, 2, "ddpm", 20, "fixed_small", "abc"), "/sample", "Seed must be a number, got 'abc'"),
        ((MODEL, "two", "ddpm", 20, "fixed_small", 0), "/sample", "Number of images must be a number, got 'two'"),
        ((MODEL, 2, "euler", 20, "fixed_small", 0), "/sample", "not in the list of choices"),
        ((MODEL, 2, "ddpm", 20, "learned", 0), "/sample", "not in the list of choices"),
        ((MODEL, 0, None, 1000, 0), "/forward", "^t must be ≤ 999, got 1000$"),
        ((MODEL, 0, None, "ten", 0), "/forward", "t must be a number"),
        ((MODEL, 0, None, 10, 2.5), "/forward", r"^Noise seed \(ε\) must be a whole number, got 2.5$"),
        ((MODEL, 0, 10, "fixed_small", 0.5), "/posterior", r"^Seed \(ε and z\) must be a whole number, got 0.5$"),
        ((MODEL, None, 10, 1, 0), "/sdedit", "draw a digit"),
        ((MODEL, None, 1, 0), "/inpaint", "load a test image"),
    ],
)
def test_bad_inputs_get_clear_errors(client, args, api, message):
    with pytest.raises(AppError, match=message) as error:
        client.predict(*args, api_name=api)
    assert str(error.value)[0] not in "'\"", "the message is shown as is, not as a repr"


def test_no_server_file_can_be_read(app_url, models_dir):
    for path in [
        "/etc/passwd",
        str(REPO / "app.py"),
        "app.py",
        str(models_dir / MODEL / "model_index.json"),
        "../../../../etc/passwd",
        "%2Fetc%2Fpasswd",
    ]:
        for prefix in ("gradio_api/file=", "file="):
            response = httpx.get(app_url + prefix + path, timeout=10)
            assert response.status_code in (403, 404), (path, response.status_code)
            assert "root:" not in response.text and "unet" not in response.text


def editor_component(app_url: str, label: str) -> int:
    config = httpx.get(app_url + "config", timeout=10).json()
    editors = [c for c in config["components"] if c.get("type") == "imageeditor"]
    (found,) = [c["id"] for c in editors if c.get("props", {}).get("label") == label]
    return found


def send_blob(app_url: str, component: int, blob_id: str, kind: str, png: bytes, index=None) -> httpx.Response:
    """What the browser's image editor does before a request: upload each picture as a blob under an id."""
    fields = {"component_id": str(component), "session_hash": "blobtest", "fn_name": "accept_blobs"}
    fields |= {"id": blob_id, "type": kind, "index": "null" if index is None else str(index)}
    return httpx.post(
        app_url + "gradio_api/component_server/", data=fields, files={"file": (f"{kind}.png", png)}, timeout=30
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize("label, api", [("Your digit", "/sdedit"), ("Picture", "/inpaint")])
def test_editor_blobs_are_checked_before_decoding(app_url, client, label, api):
    """The editors' own uploads (blobs submitted by id) meet the same limits as files: a header declaring too many
    pixels is refused before decoding, a second layer is refused, and so is a blob over the upload limit."""
    component = editor_component(app_url, label)
    huge = png_bytes(Image.new("L", (5000, 5000)))  # ~25 megapixels in a few KB
    for kind in ("background", "composite"):
        assert send_blob(app_url, component, f"huge-{label}", kind, huge).status_code == 200
    args = (10, 1, 0) if api == "/sdedit" else (1, 0)
    payload = {"background": None, "layers": [], "composite": None, "id": f"huge-{label}"}
    with pytest.raises(AppError, match="5000×5000 pixels; the limit is 16 megapixels"):
        client.predict(MODEL, payload, *args, api_name=api)

    small = png_bytes(Image.new("RGBA", (28, 28), (255, 0, 0, 255)))
    assert send_blob(app_url, component, "layers", "layer", small, index=0).status_code == 200
    assert send_blob(app_url, component, "layers", "layer", small, index=1).status_code >= 400
    assert send_blob(app_url, component, "layers", "layer", small, index=10**9).status_code >= 400
    too_big = b"\x89PNG\r\n\x1a\n" + os.urandom(limits.MAX_UPLOAD_BYTES + 1024)
    assert send_blob(app_url, component, "big", "background", too_big).status_code == 413


def test_editor_files_at_most_one_layer(client, tmp_path):
    background, layer = tmp_path / "digit.png", tmp_path / "mask.png"
    Image.new("L", (28, 28), 255).save(background)
    Image.new("RGBA", (28, 28), (255, 0, 0, 255)).save(layer)
    image = {
        "background": handle_file(str(background)),
        "layers": [handle_file(str(layer)), handle_file(str(layer))],
        "composite": handle_file(str(background)),
    }
    with pytest.raises(AppError, match="the picture has 2 layers; the limit is 1"):
        client.predict(MODEL, image, 1, 0, api_name="/inpaint")


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(Image.new("L", (8, 8))) + os.urandom(limits.MAX_UPLOAD_BYTES + 1024))
    with pytest.raises(Exception, match="(?i)size|413|large"):
        client.predict(MODEL, 0, handle_file(str(big)), 10, 0, api_name="/forward")
    assert client.predict(MODEL, 0, None, 10, 0, api_name="/forward")[4] > 0.99


def test_sdedit_refuses_an_empty_drawing(client, tmp_path):
    """A cleared canvas (all black, or transparent) is refused with a hint, not answered with black squares."""
    for name, empty in [("black.png", Image.new("RGB", (280, 280))), ("clear.png", Image.new("RGBA", (280, 280)))]:
        empty.save(tmp_path / name)
        image = {"background": None, "layers": [], "composite": handle_file(str(tmp_path / name))}
        with pytest.raises(AppError, match="^the drawing is empty"):
            client.predict(MODEL, image, 100, 1, 0, api_name="/sdedit")
