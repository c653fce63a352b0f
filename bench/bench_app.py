"""Benchmark the Gradio app as a user meets it: start-up, click → first streamed frame, click → finished GIF beside
the library's own ``sample()``, memory.

    python bench/bench_app.py [--models-dir DIR] [--images 16] [--steps 1000]

Server mode starts ``python app.py`` as a subprocess and measures, with gradio_client:
- start-up: process start → first HTTP 200 on "/";
- the result shown on arrival: process start → the start-up sample run has finished (the page's first view);
- click → first streamed frame of ``/sample`` (the time to the first streamed output): the first request after
  start-up and a later one, and the whole request;
- click → finished GIF (the whole ``/sample`` request, warm) beside ``ddpm_hf.sample()`` run in this process for the same
  request (precision "auto", chosen by ``ddpm_hf.speed`` as in the app), and their ratio ``app / sample()``: the
  default request on the default model (every class, one row each, at its guidance) and on ``MODEL``, and the fast
  sampler's request (``FAST_SAMPLER`` at its default steps); the two run in turn ``--repeats`` times, the best of each
  counts and each turn's ratio is printed (the spread). No request is cut to the machine's measured speed
  (``DDPM_HF_MAX_SECONDS``, ``ddpm_hf.space.costs``), so both run the same chain; ``sample()`` runs eager, also with
  ``--compile``;
- what the streamed updates of the default request cost, in this process: the handler's stream (chain, pictures,
  GIF) beside ``sample()``, and Gradio's postprocessing of each update (encoding, hashing, caching) with its bytes;
- the other endpoints, warm;
- the app process's RSS when idle after start-up, and its peak (VmHWM) after all requests.
Models come from ``--models-dir`` (default: the repo's models/; a random ``--preset`` model when it has no ddpm-mnist).
``--no-autotune`` runs the app with ``DDPM_HF_AUTOTUNE=0`` (the network as loaded, untimed) and ``--compile`` with
``DDPM_HF_COMPILE=1`` (its models compiled in the background at start-up): run it three ways for before and after.
Wall-clock numbers depend on the machine and its load: say what else was running when you quote them.
"""

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ddpm_hf.space import limits

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "ddpm-mnist-conditional"  # app.py's DEFAULT_MODEL: its arrival draws every class, one row each
MODEL = "ddpm-mnist"  # the unconditional model: the other endpoints' and the fast sampler's
SPEED_LOGGED_APP = (  # app.py as `python app.py` runs it, with ddpm_hf.speed's choices logged to stderr
    "import logging, runpy; logging.basicConfig(format='%(name)s: %(message)s'); "
    "logging.getLogger('ddpm_hf.speed').setLevel(logging.INFO); runpy.run_path('app.py', run_name='__main__')"
)
FAST_SAMPLER = "sde-dpm++"  # the app's fast stochastic sampler (limits.SAMPLER_INFO)


def random_models_dir(preset: str) -> Path:
    import torch

    from ddpm_hf import DDPMHFScheduler, save_pipeline
    from ddpm_hf.models import build_unet

    folder = Path(tempfile.mkdtemp(prefix="bench-app-models-"))
    torch.manual_seed(0)
    save_pipeline(build_unet(preset, 28, 1).eval(), DDPMHFScheduler(), folder / MODEL)
    (folder / MODEL / "README.md").write_text("---\ndatasets:\n- mnist\n---\n")  # its test images, for /forward
    return folder


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass(frozen=True)
class Request:
    """One ``/sample`` request, as the API takes it (variance "fixed_small", seed 0)."""

    model: str
    images: int
    sampler: str
    steps: int
    class_name: str
    guidance: float

    def inputs(self) -> tuple:
        return self.model, self.images, self.sampler, self.steps, "fixed_small", 0, self.class_name, self.guidance

    def label(self) -> str:
        classes = f", {self.class_name}, w = {self.guidance:g}" if self.class_name != limits.ANY_CLASS else ""
        return f"{self.model}: {self.images} images{classes}, {self.sampler} × {self.steps}"


def chain_requests(args, registry) -> list[Request]:
    """The default request on the default model (every class, one row each, at the model's guidance) and on ``MODEL``,
    then the fast sampler's request on ``MODEL``: the models that ``registry`` offers."""
    found = []
    for name in (DEFAULT_MODEL, MODEL):
        if name in registry.sources:
            m = registry.get(name)
            kind = (limits.ALL_CLASSES, m.guidance_scale) if m.class_names else (limits.ANY_CLASS, 1.0)
            found.append(Request(name, args.images, args.sampler, args.steps, *kind))
    return [
        *found,
        Request(MODEL, args.images, FAST_SAMPLER, limits.default_steps(FAST_SAMPLER), limits.ANY_CLASS, 1.0),
    ]


def first_frame(client, request: Request) -> tuple[float, float, int]:
    """(seconds to the first streamed output, seconds to the result, number of streamed outputs) of one /sample."""
    start = time.perf_counter()
    job = client.submit(*request.inputs(), api_name="/sample")
    while not job.outputs() and not job.done():
        time.sleep(0.005)
    first = time.perf_counter() - start
    job.result(timeout=3600)
    return first, time.perf_counter() - start, len(job.outputs())


def chain_request(registry, request: Request):
    """The model and the ``ChainRequest`` the app's handler makes of ``request``."""
    from ddpm_hf.space.handlers import class_request

    m = registry.get(request.model)
    _, images, sampler, steps, variance, seed, class_name, guidance = request.inputs()
    return m, class_request(m, class_name, guidance, images, sampler, steps, variance, seed)[0]


def library_seconds(registry, request: Request) -> float:
    """Seconds of ``ddpm_hf.sample()`` for the chain the app runs for ``request``, in this process."""
    from ddpm_hf import sample

    m, r = chain_request(registry, request)
    labels = None if r.class_labels is None else list(r.class_labels)
    chain = {"num_inference_steps": r.num_inference_steps, "sampler": r.sampler, "variance": r.variance}
    start = time.perf_counter()
    sample(
        m.pipe.unet,
        m.scheduler,
        r.num_images,
        seed=r.seed,
        class_labels=labels,
        guidance_scale=r.guidance_scale,
        output_type="pt",
        **chain,
    )
    return time.perf_counter() - start


def update_costs(registry, request: Request) -> list[tuple[float, float, int]]:
    """Each streamed update of ``request`` as the app's handler makes it, in this process: (seconds to make it, chain
    steps included; seconds of Gradio's postprocessing of its pictures, as the app's components do it: encoding,
    hashing, the copy into Gradio's cache; bytes of those pictures)."""
    import gradio as gr
    from gradio import processing_utils

    from ddpm_hf.space import chains, layout, outputs

    m, r = chain_request(registry, request)
    pictures = outputs.ChainOutputs(
        gr.Image(**layout.PNG), gr.Image(**layout.GIF), None, gr.Image(**layout.PNG), None, None
    )
    run = outputs.stream(chains.run_chain(m, r), lambda *args, **kwargs: None)
    costs = []
    while True:
        start = time.perf_counter()
        update = next(run, None)
        made = time.perf_counter() - start
        if update is None:
            return costs
        start, size = time.perf_counter(), 0
        for component, value in zip(pictures, update):
            if component is not None and value is not None and not isinstance(value, dict):  # dict: gr.skip()
                data = processing_utils.move_files_to_cache(component.postprocess(value).model_dump(), component, True)
                size += Path(data["path"]).stat().st_size
        costs.append((made, time.perf_counter() - start, size))


def timed(fn, *args, **kwargs) -> float:
    """Seconds of the second of two calls (the first may load data)."""
    fn(*args, **kwargs)
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def bench_server(args, models_dir: Path) -> None:
    import httpx
    from gradio_client import Client, handle_file
    from PIL import Image, ImageDraw

    from ddpm_hf.space.registry import Registry

    sketch_file = Path(tempfile.mkdtemp(prefix="bench-app-")) / "sketch.png"
    drawing = Image.new("L", (280, 280))
    ImageDraw.Draw(drawing).ellipse((80, 60, 200, 220), outline=255, width=24)  # a "0": the app refuses an empty one
    drawing.save(sketch_file)
    sketch = {"background": handle_file(str(sketch_file)), "layers": [], "composite": handle_file(str(sketch_file))}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        **({"DDPM_HF_AUTOTUNE": "0"} if args.no_autotune else {}),
        **({"DDPM_HF_COMPILE": "1"} if args.compile else {}),
        "DDPM_HF_MODELS_DIR": str(models_dir),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (read after the app exits) the app's speed log
    proc = subprocess.Popen(
        [sys.executable, "-c", SPEED_LOGGED_APP], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    found = [name for name in (DEFAULT_MODEL, MODEL) if (models_dir / name).is_dir()]
    registry = Registry({name: str(models_dir / name) for name in found})  # the same models, here, for sample()
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with {proc.returncode}")
            time.sleep(0.05)
        startup = time.perf_counter() - start
        client = Client(url, verbose=False)
        requests = chain_requests(args, registry)
        cold = first_frame(client, requests[0])
        arrival = time.perf_counter() - start  # the first request queues behind the start-up run
        time.sleep(args.settle)
        idle_rss, _ = rss_mb(proc.pid)
        warm = first_frame(client, requests[0])
        to_gif = {request: against_library(client, registry, request, args.repeats) for request in requests}
        others = {
            "/forward": timed(client.predict, MODEL, 3, None, 500, 0, api_name="/forward"),
            "/schedule": timed(client.predict, MODEL, api_name="/schedule"),
            "/posterior": timed(client.predict, MODEL, 3, 200, "fixed_small", 0, api_name="/posterior"),
            "/sdedit (4 images from t = 500)": timed(client.predict, MODEL, sketch, 500, 4, 0, api_name="/sdedit"),
            "/bound": timed(client.predict, MODEL, 3, "fixed_small", 0, api_name="/bound"),
        }
        rss, peak = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.seek(0)
        speed_lines = [line.strip() for line in log if line.startswith("ddpm_hf.speed:")]
    modes = f"autotune {'off' if args.no_autotune else 'on'}, compile {'on' if args.compile else 'off'}"
    print(f"app server ({modes}, models from {models_dir}); the default request: {requests[0].label()}")
    print(f"  start-up, process start → HTTP 200      {startup:8.2f} s")
    print(f"  process start → first request answered  {arrival:8.2f} s   (after the start-up run shown on arrival)")
    print(f"  click → first streamed frame, first     {cold[0]:8.2f} s   (result {cold[1]:.2f} s)")
    print(
        f"  click → first streamed frame, warm      {warm[0]:8.2f} s   (result {warm[1]:.2f} s, "
        f"{warm[2]} streamed updates)"
    )
    print(f"  click → finished GIF (warm) vs ddpm_hf.sample() in this process; best of {args.repeats} each, in turn:")
    for request, (app, library) in to_gif.items():
        turns = " ".join(f"{a / s:.2f}" for a, s in zip(app, library))
        print(f"    {request.label()}")
        print(
            f"      app {min(app):6.2f} s   sample() {min(library):6.2f} s   app / sample() {min(app) / min(library):.2f}"
            f"   (each turn: {turns})"
        )
    for name, seconds in others.items():
        print(f"  {name:<40}{seconds:8.2f} s   (warm)")
    print(f"  RSS idle after start-up ({args.settle:.0f} s settle)     {idle_rss:8.0f} MB")
    print(f"  RSS after the requests / peak (VmHWM)   {rss:8.0f} MB / {peak:.0f} MB")
    print("  what the network ran as (the app's ddpm_hf.speed log):")
    for line in speed_lines or ["no timed choice or compile logged (autotune off and compile off)"]:
        print(f"    {line}")
    print_update_costs(registry, requests[0])


def against_library(client, registry, request: Request, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of click → finished GIF in the app and of ``sample()`` here for ``request``, ``repeats`` times in turn
    (after one untimed run of each: the network's speed choice is made)."""
    first_frame(client, request)
    library_seconds(registry, request)
    app, library = [], []
    for _ in range(repeats):
        app.append(first_frame(client, request)[1])
        library.append(library_seconds(registry, request))
    return app, library


def print_update_costs(registry, request: Request) -> None:
    from ddpm_hf import speed

    library = min(library_seconds(registry, request) for _ in range(2))
    costs = update_costs(registry, request)
    *previews, final = costs
    made = sum(c[0] for c in costs)
    print(
        f"  the default request's streamed updates, in this process (the network: {speed.describe(registry.get(request.model).pipe.unet)}):"
    )
    print(
        f"    handler stream (chain, previews, GIF) {made:6.2f} s   sample() {library:.2f} s   ratio {made / library:.2f}"
    )
    print(
        f"    Gradio's postprocessing: {len(previews)} previews {1e3 * sum(c[1] for c in previews) / max(1, len(previews)):.1f} ms"
        f" and {sum(c[2] for c in previews) / max(1, len(previews)) / 1e3:.0f} KB each; the final update {1e3 * final[1]:.0f} ms,"
        f" {final[2] / 1e3:.0f} KB; in all {sum(c[1] for c in costs):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="default: the app's default for the sampler")
    parser.add_argument("--sampler", default=None, help="default: the app's default sampler")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait after start-up before idle RSS")
    parser.add_argument("--preset", default="tiny", help="UNet preset of the random model used when there is none")
    parser.add_argument("--repeats", type=int, default=3, help="requests per click → GIF figure (the best counts)")
    parser.add_argument("--no-autotune", action="store_true", help="run the app with DDPM_HF_AUTOTUNE=0")
    parser.add_argument("--compile", action="store_true", help="run the app with DDPM_HF_COMPILE=1")
    args = parser.parse_args()
    # No request cut to the machine's measured speed (ddpm_hf.space.costs): the app and sample() run the same chain.
    os.environ.setdefault("DDPM_HF_MAX_SECONDS", "1e9")
    args.sampler = args.sampler or limits.DEFAULT_SAMPLER
    args.steps = args.steps or limits.default_steps(args.sampler)
    models_dir = args.models_dir or REPO / "models"
    if not (models_dir / MODEL / "model_index.json").is_file():
        print(f"no {MODEL} in {models_dir}: using a random {args.preset!r} model")
        models_dir = random_models_dir(args.preset)
    bench_server(args, models_dir)


if __name__ == "__main__":
    main()
