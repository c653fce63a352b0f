"""Benchmark the Gradio app as a user meets it: start-up, click → first streamed frame, memory.

    python bench/bench_app.py [--models-dir DIR] [--images 16] [--steps 1000]

Server mode starts ``python app.py`` as a subprocess and measures, with gradio_client:
- start-up: process start → first HTTP 200 on "/";
- the result shown on arrival: process start → the start-up sample run has finished (the page's first view);
- click → first streamed frame of ``/sample`` (the time to the first streamed output): the first request after
  start-up and a later one, and the whole request;
- click → finished GIF (the whole ``/sample`` request, warm) for the default request and the fast sampler's request
  (``FAST_SAMPLER`` at its default steps), each the best of ``--repeats``;
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "ddpm-mnist"
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


def first_frame(client, images: int, sampler: str, steps: int) -> tuple[float, float, int]:
    """(seconds to the first streamed output, seconds to the result, number of streamed outputs) of one /sample."""
    start = time.perf_counter()
    job = client.submit(MODEL, images, sampler, steps, "fixed_small", 0, api_name="/sample")
    while not job.outputs() and not job.done():
        time.sleep(0.005)
    first = time.perf_counter() - start
    job.result(timeout=3600)
    return first, time.perf_counter() - start, len(job.outputs())


def requests(args) -> list[tuple[str, int]]:
    """(sampler, steps) of the default request and of the fast sampler's request, as the app's defaults set them."""
    from ddpm_hf.space import limits

    return [(s, limits.default_steps(s)) for s in (limits.DEFAULT_SAMPLER, FAST_SAMPLER)]


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
        cold = first_frame(client, args.images, args.sampler, args.steps)
        arrival = time.perf_counter() - start  # the first request queues behind the start-up run
        time.sleep(args.settle)
        idle_rss, _ = rss_mb(proc.pid)
        warm = first_frame(client, args.images, args.sampler, args.steps)
        to_gif = {
            (sampler, steps): min(first_frame(client, args.images, sampler, steps)[1] for _ in range(args.repeats))
            for sampler, steps in requests(args)
        }
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
    print(f"app server ({args.images} images × {args.steps} {args.sampler} steps, {modes}, models from {models_dir})")
    print(f"  start-up, process start → HTTP 200      {startup:8.2f} s")
    print(f"  process start → first request answered  {arrival:8.2f} s   (after the start-up run shown on arrival)")
    print(f"  click → first streamed frame, first     {cold[0]:8.2f} s   (result {cold[1]:.2f} s)")
    print(
        f"  click → first streamed frame, warm      {warm[0]:8.2f} s   (result {warm[1]:.2f} s, "
        f"{warm[2]} streamed updates)"
    )
    for (sampler, steps), seconds in to_gif.items():
        label = f"click → finished GIF, {sampler} × {steps}"
        print(f"  {label:<40}{seconds:8.2f} s   (warm, best of {args.repeats})")
    for name, seconds in others.items():
        print(f"  {name:<40}{seconds:8.2f} s   (warm)")
    print(f"  RSS idle after start-up ({args.settle:.0f} s settle)     {idle_rss:8.0f} MB")
    print(f"  RSS after the requests / peak (VmHWM)   {rss:8.0f} MB / {peak:.0f} MB")
    print("  what the network ran as (the app's ddpm_hf.speed log):")
    for line in speed_lines or ["no timed choice or compile logged (autotune off and compile off)"]:
        print(f"    {line}")


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
    from ddpm_hf.space import limits

    args.sampler = args.sampler or limits.DEFAULT_SAMPLER
    args.steps = args.steps or limits.default_steps(args.sampler)
    models_dir = args.models_dir or REPO / "models"
    if not (models_dir / MODEL / "model_index.json").is_file():
        print(f"no {MODEL} in {models_dir}: using a random {args.preset!r} model")
        models_dir = random_models_dir(args.preset)
    bench_server(args, models_dir)


if __name__ == "__main__":
    main()
