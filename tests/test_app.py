"""The Gradio app as users and clients meet it: ``python app.py`` in a real subprocess, driven by gradio_client.

The app serves a tiny random 28×28 model written by ``save_pipeline``; answers are checked against ``ddpm_hf`` itself
(the scheduler's tables, ``sample``, ``make_grid``, ``vb_term_bpd``), not against numbers copied from the app.
"""

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from ddpm_hf import DDPMHFScheduler, load_pipeline, sample, save_pipeline
from ddpm_hf.likelihood import vb_term_bpd
from ddpm_hf.models import build_unet
from ddpm_hf.pictures import make_grid

REPO = Path(__file__).resolve().parents[1]
MODEL = "ddpm-mnist"
HUB_MODEL = "nobody/ddpm-not-here"  # offered through DDPM_HF_EXTRA_MODEL; unreachable (HF_HUB_OFFLINE=1)
QUEUE_SIZE = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tiny_model(models_dir: Path) -> Path:
    """A random tiny 28×28 grayscale model named like the shipped default."""
    torch.manual_seed(0)
    return save_pipeline(build_unet("tiny", 28, 1).eval(), DDPMHFScheduler(), models_dir / MODEL)


@contextlib.contextmanager
def running_app(models_dir: Path, log_path: Path, timeout: float = 180, **env):
    """Run ``python app.py`` on a free port until the block ends; yields its URL once it answers HTTP 200."""
    port = free_port()
    env = {**os.environ, "DDPM_HF_MODELS_DIR": str(models_dir), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **env}  # fmt: skip
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


def test_import_is_cheap_and_loads_nothing():
    """Importing app.py pulls in neither gradio nor torch; building the Blocks loads no model and no torch."""
    probe = (
        "import json, sys, time\n"
        "t = time.perf_counter(); import app; seconds = time.perf_counter() - t\n"
        "heavy_at_import = sorted(m for m in ('gradio', 'torch', 'diffusers', 'ddpm_hf') if m in sys.modules)\n"
        "demo = app.build_demo()\n"
        "apis = sorted(f.api_name for f in demo.fns.values() if f.api_name and f.api_visibility == 'public')\n"
        "print(json.dumps({'seconds': seconds, 'heavy_at_import': heavy_at_import, 'apis': apis,\n"
        "                  'torch_after_build': 'torch' in sys.modules, 'models': list(app.model_choices())}))\n"
    )
    env = {**os.environ, "DDPM_HF_MODELS_DIR": str(REPO / "no-such-dir"), "DDPM_HF_EXTRA_MODEL": "someone/ddpm-x"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy_at_import"] == []
    assert report["seconds"] < 3, report
    assert not report["torch_after_build"], "build_demo() imported torch: it must not load models"
    assert report["apis"] == ["bound", "forward", "posterior", "sample", "schedule"]
    assert report["models"] == ["someone/ddpm-x"]  # Hub model from the environment; no local folder


def test_models_offered_and_api_parameters(client):
    """Folders with a model_index.json (not others) and the Hub model from the environment; named parameters."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    parameters = {name: [p["parameter_name"] for p in api[name]["parameters"]] for name in api}
    assert parameters == {
        "/sample": ["model", "num_images", "num_inference_steps", "variance", "seed"],
        "/forward": ["model", "image_index", "image", "t", "seed"],
        "/schedule": ["model"],
        "/posterior": ["model", "image_index", "t", "variance", "seed"],
        "/bound": ["model", "image_index", "variance", "seed"],
    }
    assert api["/sample"]["parameters"][0]["python_type"]["type"] == f"Literal['{MODEL}', '{HUB_MODEL}']"


def test_unreachable_hub_model_is_an_error_not_a_crash(client):
    with pytest.raises(AppError, match=f"^model '{HUB_MODEL}' .*could not be loaded"):
        client.predict(HUB_MODEL, api_name="/schedule")
    assert client.predict(MODEL, api_name="/schedule")  # the app still serves its local model


def test_sample_streams_and_matches_the_library(client, pipe):
    job = client.submit(MODEL, 2, 20, "fixed_large", 7, api_name="/sample")
    grid_path, gif_path, scrub, frame_path = job.result(timeout=120)
    streamed = job.outputs()
    assert len(streamed) > 2, "the grid should stream while sampling"
    assert all(Path(update[0]).is_file() for update in streamed)

    expected = sample(pipe.unet, pipe.scheduler, 2, seed=7, num_inference_steps=20, variance="fixed_large",
                      output_type="pt").images  # fmt: skip
    expected_grid = np.asarray(make_grid(expected, nrow=2, scale=4))
    grid = np.asarray(Image.open(grid_path))
    assert grid.shape == expected_grid.shape
    assert np.abs(grid.astype(int) - expected_grid).max() <= 1

    with Image.open(gif_path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 20  # 20 steps, every step captured
        frames, size = gif.n_frames, gif.size
    left = make_grid(expected, nrow=2, scale=3)  # frames: x_t grid | 8·scale gap | x̂_0 grid, at 3× not 4×
    assert size == (2 * left.width + 8 * 3, left.height)
    assert scrub["value"] == scrub["maximum"] == frames - 1  # the scrubber now spans the captured steps
    assert Image.open(frame_path).size == size


def test_forward_rates_are_the_schedulers(client, pipe):
    x0_path, xt_path, signal, noise, gif_path = client.predict(MODEL, 3, None, 500, 0, api_name="/forward")
    assert math.isclose(signal, float(pipe.scheduler.sqrt_alphas_cumprod[500]), rel_tol=1e-6)
    assert math.isclose(noise, float(pipe.scheduler.sqrt_one_minus_alphas_cumprod[500]), rel_tol=1e-6)
    from ddpm_hf.data import load_dataset

    digit = load_dataset("mnist", "test").images[3, 0].numpy()
    x0 = np.asarray(Image.open(x0_path).convert("L"))
    assert x0.shape == (256, 256)  # 28 px × 8 plus a 2 px border
    assert np.array_equal(x0[16:240:8, 16:240:8], digit)  # nearest-neighbour ×8 after the border: the test image
    assert Image.open(xt_path).size == (256, 256)
    with Image.open(gif_path) as gif:
        assert gif.n_frames > 1


def test_forward_converts_an_upload(client, tmp_path):
    upload = tmp_path / "rgb.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(upload)
    x0_path, *_ = client.predict(MODEL, 0, handle_file(str(upload)), 10, 0, api_name="/forward")
    x0 = Image.open(x0_path)
    assert x0.size == (256, 256)
    red_in_gray = round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)
    assert abs(int(np.asarray(x0.convert("L"))[128, 128]) - red_in_gray) <= 1


def test_schedule_tables(client, pipe):
    rates, variances, snr = client.predict(MODEL, api_name="/schedule")
    T = pipe.scheduler.config.num_train_timesteps
    tables = {
        name: {(t, quantity): value for t, value, quantity in plot["data"]}
        for name, plot in [("rates", rates), ("variances", variances), ("snr", snr)]
    }
    assert len(tables["rates"]) == 3 * T and len(tables["variances"]) == 2 * T and len(tables["snr"]) == T
    s = pipe.scheduler
    for t in (0, 1, 250, T - 1):
        assert math.isclose(tables["rates"][t, "ᾱ_t"], float(s.alphas_cumprod[t]), rel_tol=1e-6)
        assert math.isclose(tables["variances"][t, "β_t"], float(s.betas[t]), rel_tol=1e-6)
        assert math.isclose(tables["snr"][t, "log10 SNR_t"], math.log10(float(s.snr[t])), rel_tol=1e-5, abs_tol=1e-6)


def test_posterior_step(client, pipe):
    *pictures, mean_gap, vb_small = client.predict(MODEL, 5, 200, "fixed_small", 3, api_name="/posterior")
    assert len(pictures) == 6 and all(Image.open(p).size == (256, 256) for p in pictures)
    assert mean_gap > 0
    # documented contract: ε = randn(x0.shape, generator=Generator().manual_seed(seed)), drawn first
    from ddpm_hf.data import load_dataset, to_model_range

    x0 = to_model_range(load_dataset("mnist", "test").images[5:6])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    scheduler = DDPMHFScheduler.from_config(pipe.scheduler.config, variance_type="fixed_small")
    with torch.inference_mode():
        expected = float(vb_term_bpd(pipe.unet, scheduler, x0, torch.tensor([200]), noise)[0])
    assert math.isclose(vb_small, expected, rel_tol=1e-4)
    *_, vb_large = client.predict(MODEL, 5, 200, "fixed_large", 3, api_name="/posterior")
    assert vb_large != vb_small


def test_bound_terms(client):
    curve, total, prior, decoder = client.predict(MODEL, 0, "fixed_small", 0, api_name="/bound")
    assert curve["columns"] == ["t", "bits/dim", "log10 bits/dim"]
    rows = curve["data"]
    assert len(rows) == 50 and rows[0][0] == 0 and rows[-1][0] == 999
    assert all(math.isfinite(row[1]) and row[1] >= 0 for row in rows)
    assert 0 <= prior < 1e-3 and decoder > 0 and total > decoder


@pytest.mark.parametrize(
    "args, api, message",
    [
        (("../models", 2, 20, "fixed_small", 0), "/sample", "not in the list of choices"),
        (("/etc", 2, 20, "fixed_small", 0), "/sample", "not in the list of choices"),
        ((MODEL, 2, 0, "fixed_small", 0), "/sample", "less than minimum value 1"),
        ((MODEL, 17, 20, "fixed_small", 0), "/sample", "greater than maximum value 16"),
        ((MODEL, 2, 20, "fixed_small", 1.5), "/sample", r"seed must be an integer in \[0, 2147483647\], got 1.5"),
        ((MODEL, 2, 20, "learned", 0), "/sample", "not in the list of choices"),
        ((MODEL, 0, None, 1000, 0), "/forward", "greater than maximum value 999"),
        ((MODEL, 0, None, 10, 2.5), "/forward", "seed must be an integer"),
        ((MODEL, 0, 10, "fixed_small", 0.5), "/posterior", "seed must be an integer"),
    ],
)
def test_bad_inputs_get_clear_errors(client, args, api, message):
    with pytest.raises(AppError, match=message) as error:
        client.predict(*args, api_name=api)
    assert str(error.value)[0] not in "'\"", "the message is shown as is, not as a repr"


def test_no_server_file_can_be_read(app_url, models_dir):
    for path in ["/etc/passwd", str(REPO / "app.py"), "app.py", str(models_dir / MODEL / "model_index.json"),
                 "../../../../etc/passwd", "%2Fetc%2Fpasswd"]:  # fmt: skip
        for prefix in ("gradio_api/file=", "file="):
            response = httpx.get(app_url + prefix + path, timeout=10)
            assert response.status_code in (403, 404), (path, response.status_code)
            assert "root:" not in response.text and "unet" not in response.text


def test_concurrent_clients_get_results_or_queue_full(app_url, client):
    outcomes: list = [None] * 10

    def call(i: int) -> None:
        try:
            outcomes[i] = Client(app_url, verbose=False).predict(MODEL, 2, 60, "fixed_small", i, api_name="/sample")
        except QueueError as e:
            outcomes[i] = e
        except Exception as e:  # noqa: BLE001 - recorded and reported by the assertions below
            outcomes[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    results = [o for o in outcomes if isinstance(o, tuple)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(results) + len(refused) == 10, outcomes
    assert results, "at least one client must get its images"
    assert all("queue is full" in str(e).lower() for e in refused), refused
    assert all(Path(r[0]).is_file() and Path(r[1]).is_file() for r in results)
    signal = client.predict(MODEL, 0, None, 10, 0, api_name="/forward")[2]  # still answering
    assert signal > 0.99
