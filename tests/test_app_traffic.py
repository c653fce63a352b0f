"""The app's traffic limits, served by ``python app.py`` in a subprocess and driven by gradio_client.

- ZeroGPU: the handlers that run the network go through ``spaces.GPU(duration=...)``. Here a stand-in ``spaces``
  package (first on the path) wraps each of them as ZeroGPU does, in a new function or generator, and records the
  duration asked for on each call: the decorated chains must still stream, on a CPU.
- A per-client rate limit on the quick endpoints (a small one here), which leaves the chains alone.
"""

import json
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_app import MODEL, running_app, write_tiny_model

from ddpm_hf.space import limits

BURST, PER_MINUTE = 3, 6
FAKE_SPACES = """
import functools, inspect, json, os


def GPU(task=None, *, duration=None, size=None):
    if task is None:
        return functools.partial(GPU, duration=duration, size=size)

    def record(args, kwargs):
        seconds = duration(*args, **kwargs) if callable(duration) else duration
        with open(os.environ["FAKE_SPACES_LOG"], "a") as log:
            log.write(json.dumps({"fn": task.__name__, "duration": seconds}) + "\\n")

    if inspect.isgeneratorfunction(task):
        @functools.wraps(task)
        def generator(*args, **kwargs):
            record(args, kwargs)
            yield from task(*args, **kwargs)
        return generator

    @functools.wraps(task)
    def function(*args, **kwargs):
        record(args, kwargs)
        return task(*args, **kwargs)
    return function
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    models, fake = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("fake-spaces")
    write_tiny_model(models)
    (fake / "spaces").mkdir()
    (fake / "spaces" / "__init__.py").write_text(FAKE_SPACES)
    log = fake / "gpu.jsonl"
    env = {
        "PYTHONPATH": str(fake),
        "FAKE_SPACES_LOG": str(log),
        "DDPM_HF_QUICK_BURST": str(BURST),
        "DDPM_HF_QUICK_PER_MINUTE": str(PER_MINUTE),
    }
    with running_app(models, tmp_path_factory.mktemp("log") / "app.log", **env) as url:
        yield url, log


def gpu_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_decorated_chains_stream_and_ask_for_a_duration_sized_by_steps(served):
    url, log = served
    client = Client(url, verbose=False)
    job = client.submit(MODEL, 2, "ddpm", 40, "fixed_small", 1, api_name="/sample")
    _grid, gif, scrub, *_ = job.result(timeout=300)
    assert len(job.outputs()) > 2, "the decorated chain should stream its grids"
    assert (
        Path(gif).is_file() and scrub["label"] == "Frame" and scrub["info"].endswith("the result x₀, after 40 steps")
    )
    calls = [c for c in gpu_calls(log) if c["fn"] == "sample"]
    assert calls and calls[-1]["duration"] == limits.gpu_seconds(40) == 12
    assert limits.gpu_seconds(1000) == 60 and limits.gpu_seconds("abc") == limits.gpu_seconds(1)


def test_quick_endpoints_are_rate_limited_per_client_and_chains_are_not(served):
    url, _ = served  # the bucket is full: no quick request came before
    client = Client(url, verbose=False)
    for _ in range(BURST):
        assert client.predict(MODEL, 0, None, 10, 0, api_name="/forward")[4] > 0.99
    with pytest.raises(AppError, match=r"^Too many requests from your address: try again in \d+ s\.$"):
        client.predict(MODEL, 0, None, 10, 0, api_name="/forward")
    assert client.predict(MODEL, 1, "ddpm", 1, "fixed_small", 0, api_name="/sample")  # chains: their own queue
    time.sleep(60 / PER_MINUTE + 0.5)  # one request's worth refills
    assert client.predict(MODEL, 0, None, 10, 0, api_name="/forward")[4] > 0.99


def test_posterior_and_bound_hold_the_gpu_too(served):
    url, log = served
    time.sleep(2 * 60 / PER_MINUTE + 0.5)  # two requests' worth
    client = Client(url, verbose=False)
    client.predict(MODEL, 0, 10, "fixed_small", 0, api_name="/posterior")
    client.predict(MODEL, 0, "fixed_small", 0, api_name="/bound")
    names = {c["fn"] for c in gpu_calls(log)}
    assert {"posterior", "bound"} <= names and "forward" not in names  # forward runs no network
