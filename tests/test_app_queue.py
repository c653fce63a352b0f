"""The app's queue under load: quick endpoints do not wait behind a reverse chain, and 20 concurrent clients are
each served or told that the queue is full, while the app keeps answering."""

import threading
import time

import pytest
from gradio_client import Client
from gradio_client.utils import Status
from test_app import MODEL, running_app, write_tiny_model

QUEUE_SIZE = 4
CLIENTS = 20


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    write_tiny_model(models)
    with running_app(models, tmp_path_factory.mktemp("log") / "app.log", DDPM_HF_QUEUE_SIZE=str(QUEUE_SIZE)) as url:
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


def test_concurrent_clients_are_served_or_told_the_queue_is_full(app_url):
    outcomes: list = [None] * CLIENTS

    def call(i: int) -> None:
        try:
            outcomes[i] = Client(app_url, verbose=False).predict(
                MODEL, 2, "ddpm", 100, "fixed_small", i, api_name="/sample"
            )
        except Exception as e:  # noqa: BLE001 - recorded and checked below
            outcomes[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    served = [o for o in outcomes if isinstance(o, tuple)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(served) + len(refused) == CLIENTS, outcomes
    assert served and refused, f"{len(served)} served, {len(refused)} refused: the queue limit never acted"
    assert all("queue is full" in str(e).lower() for e in refused), refused
    assert Client(app_url, verbose=False).predict(MODEL, 0, None, 10, 0, api_name="/forward")[4] > 0.99
