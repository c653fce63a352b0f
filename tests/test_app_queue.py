"""The app's queue under load: quick endpoints do not wait behind a reverse chain; 20 concurrent clients, half of them
sampling and half asking ``/forward`` one same question, are each served or told that the queue is full, twice in a
row, while the app keeps answering; a picture Gradio rewrites in its cache is never served cut short; and a chain
streams few pictures and keeps none of them."""

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gradio import processing_utils
from gradio_client import Client
from gradio_client.utils import Status
from PIL import Image
from test_app import MODEL, running_app, write_tiny_model

import ddpm_hf.space.traffic  # noqa: F401 - importing it makes Gradio's picture writes atomic, as app.py does
from ddpm_hf.space import chains, images, limits, outputs
from ddpm_hf.space.registry import Registry

QUEUE_SIZE = 4
CLIENTS = 20
ROUNDS = 2
FORWARDS = 3  # requests of each /forward client in a round, one after another: one picture downloaded while rewritten


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    write_tiny_model(models)
    log = tmp_path_factory.mktemp("log") / "app.log"
    # every client here is 127.0.0.1: a burst large enough that the rate limit refuses none of them
    with running_app(models, log, DDPM_HF_QUEUE_SIZE=str(QUEUE_SIZE), DDPM_HF_QUICK_BURST="200") as url:
        yield url


def test_a_quick_request_does_not_wait_behind_sampling(app_url):
    client = Client(app_url, verbose=False)
    client.predict(MODEL, 1, "ddpm", 1, "fixed_small", 0, api_name="/sample")  # the model is loaded
    job = client.submit(MODEL, 16, "ddpm", 1000, "fixed_small", 0, api_name="/sample")
    deadline = time.monotonic() + 120
    while job.status().code not in (Status.PROCESSING, Status.ITERATING):
        assert not job.done(), f"the chain ended before it was seen running: {job.status()}"
        assert time.monotonic() < deadline, f"the chain did not start within 120 s: {job.status()}"
        time.sleep(0.05)
    signal = Client(app_url, verbose=False).predict(MODEL, 0, None, 10, 0, api_name="/forward")[4]
    assert signal > 0.99
    assert not job.done(), "the forward request was answered only after the 1000-step chain"
    job.cancel()


def concurrent_clients(app_url) -> list:
    """``CLIENTS`` clients at once, each with its own connections: the even ones sample (each its own seed), the odd
    ones ask /forward the same question ``FORWARDS`` times, so that the same pictures are made and downloaded at once.

    Returns:
        Each client's answer, or the exception it got.
    """
    outcomes: list = [None] * CLIENTS

    def call(i: int) -> None:
        try:
            client = Client(app_url, verbose=False)
            if i % 2:
                for _ in range(FORWARDS):
                    outcomes[i] = client.predict(MODEL, 0, None, 10, 0, api_name="/forward")
            else:
                outcomes[i] = client.predict(MODEL, 2, "ddpm", 100, "fixed_small", i, api_name="/sample")
        except Exception as e:  # noqa: BLE001 - recorded and checked by the caller
            outcomes[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return outcomes


def test_concurrent_clients_twice_in_a_row_are_served_or_told_the_queue_is_full(app_url):
    rounds = [concurrent_clients(app_url) for _ in range(ROUNDS)]
    for outcomes in rounds:
        assert all(o is not None for o in outcomes), f"a client got no answer within 600 s: {outcomes}"
        others = [o for o in outcomes if isinstance(o, Exception) and "queue is full" not in str(o).lower()]
        assert not others, f"{len(others)} of {CLIENTS} clients neither served nor told the queue is full: {others}"
    served = sum(isinstance(o, tuple) for outcomes in rounds for o in outcomes)
    assert 0 < served < ROUNDS * CLIENTS, f"{served} of {ROUNDS * CLIENTS} served: the queue limit never acted"
    assert Client(app_url, verbose=False).predict(MODEL, 0, None, 10, 0, api_name="/forward")[4] > 0.99


def test_a_picture_rewritten_in_gradios_cache_is_never_read_cut_short(tmp_path):
    """Gradio names a picture's cache file after its bytes, so requests with the same answer write one path: while two
    threads write it again and again, every read finds the whole file (``traffic`` makes the write atomic)."""
    assert processing_utils.save_pil_to_cache.atomic
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8))
    path = Path(processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png"))
    size, deadline, paths = path.stat().st_size, time.monotonic() + 1.0, set()

    def rewrite() -> None:
        while time.monotonic() < deadline:
            paths.add(processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png"))

    writers = [threading.Thread(target=rewrite) for _ in range(2)]
    for writer in writers:
        writer.start()
    reads = []
    while time.monotonic() < deadline:
        reads.append(len(path.read_bytes()))
    for writer in writers:
        writer.join()
    assert paths == {str(path)} and len(reads) > 100
    assert set(reads) == {size}, f"{sum(n != size for n in reads)} of {len(reads)} reads were cut short"
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name], "a staging folder was left behind"


def test_a_run_streams_few_pictures_and_keeps_none(tmp_path):
    """A 50-step run streams its first step and one every ``ceil(50 / PREVIEWS)`` steps after it, more only on a slow
    run, and not its last (the result shows it); each picture's file is gone once the next update is asked for, and
    all of them once the run ends. The finished run's frame is the GIF's last."""
    model = Registry({MODEL: str(write_tiny_model(tmp_path))}).get(MODEL)
    start, steps, files = time.monotonic(), [], []
    run = chains.run_chain(model, chains.ChainRequest(2, "ddpm", 50, "fixed_small", 0))
    for update in outputs.stream(run, lambda *args, **kwargs: None):
        if update.state and "step" in update.state:
            assert all(not f.exists() for f in files), "an earlier picture's file is still there"
            files.append(Path(update.grid))
            assert files[-1].is_file()
            steps.append(update.state["step"])
    assert set(range(1, 50, math.ceil(50 / limits.PREVIEWS))) <= set(steps) and 50 not in steps
    assert len(steps) <= limits.PREVIEWS + (time.monotonic() - start) / limits.PREVIEW_SECONDS
    assert not files[-1].parent.exists()
    last = len(update.state["labels"]) - 1
    assert np.array_equal(
        np.asarray(update.frame.convert("RGB")), np.asarray(images.animation_frame(update.animation, last))
    )
