"""What the Gradio app (``app.py``) computes, without any UI: models, inputs, pictures, tables.

Every function here validates its inputs (``InputError`` names the input and its allowed values), calls ``ddpm_hf``
for the math (``sample``, the scheduler's tables and ``add_noise``/``step``/``q_posterior_mean_variance``,
``vb_term_bpd``/``variational_bound``, ``pictures``), and returns PIL images, numbers, files and DataFrames.

- Models are loaded on first use, once per process, moved to CUDA when there is one, and shared by every request.
- Files (GIFs) go to one temporary folder the process owns (``workdir()``), pruned to the newest ``KEEP_FILES``.
"""

import atexit
import itertools
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from . import data, pictures
from .likelihood import variational_bound, vb_term_bpd
from .pipeline_io import load_pipeline
from .sampling import sample
from .scheduling_ddpm_hf import DDPMHFScheduler

MAX_IMAGES = 16
MAX_STEPS = 1000
MAX_WORK = MAX_IMAGES * MAX_STEPS  # images × sampling steps in one request
MAX_SEED = 2**31 - 1
VARIANCES = ("fixed_small", "fixed_large")
ANIMATION_FRAMES = 30  # captured steps in a denoising GIF (and forward-process GIF)
PREVIEWS = 25  # streamed grids per sampling run
BOUND_POINTS = 50  # timesteps in the plotted L_{t-1} curve and in the bound's stratified estimate
KEEP_FILES = 64


class InputError(ValueError):
    """A request the app refuses; the message is shown to the user as is."""


# ---------------------------------------------------------------------------------------------------- inputs


def check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int if it is an integer (3 or 3.0) in [low, high], else ``InputError``."""
    ok = isinstance(value, (int, float, np.integer)) and not isinstance(value, bool) and float(value).is_integer()
    if not ok or not low <= int(value) <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_variance(variance) -> str:
    if variance not in VARIANCES:
        raise InputError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    return variance


def check_sample_request(num_images, num_inference_steps, variance, seed, num_train_timesteps: int) -> tuple:
    """Validated ``(num_images, num_inference_steps, variance, seed)`` for ``sample_stream``."""
    num_images = check_int("number of images", num_images, 1, MAX_IMAGES)
    steps = check_int("sampling steps", num_inference_steps, 1, min(MAX_STEPS, num_train_timesteps))
    if num_images * steps > MAX_WORK:
        raise InputError(f"images × steps must be at most {MAX_WORK}, got {num_images} × {steps}")
    return num_images, steps, check_variance(variance), check_int("seed", seed, 0, MAX_SEED)


# ---------------------------------------------------------------------------------------------------- models


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_pipelines: dict = {}
_load_lock = threading.Lock()


def get_pipeline(name: str, source: str):
    """The ``DDPMPipeline`` at ``source`` (folder or Hub id), loaded once and kept; ``name`` is what errors show."""
    with _load_lock:
        if source not in _pipelines:
            try:
                pipe = load_pipeline(source)
            except ValueError as e:  # its message names the server-side path: show the model's name instead
                raise InputError(str(e).replace(source, repr(name))) from None
            pipe.unet.to(device())
            _pipelines[source] = pipe
        return _pipelines[source]


def image_shape(pipe) -> tuple[int, int]:
    """(size, channels) of the model's square images."""
    size = pipe.unet.config.sample_size
    return (size if isinstance(size, int) else size[0]), pipe.unet.config.in_channels


def describe(pipe) -> str:
    size, channels = image_shape(pipe)
    n = sum(p.numel() for p in pipe.unet.parameters())
    cfg = pipe.scheduler.config
    return (
        f"{size}×{size}×{channels} images, UNet of {n / 1e6:.2f}M parameters, T = {cfg.num_train_timesteps}, "
        f"{cfg.beta_schedule} β from {cfg.beta_start:g} to {cfg.beta_end:g}, on {device().type}"
    )


# ---------------------------------------------------------------------------------------------------- pictures


@cache
def workdir() -> Path:
    """The app's own temporary folder (created on first use, removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="ddpm-hf-app-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_file_ids = itertools.count()
_file_lock = threading.Lock()


def new_file(suffix: str) -> Path:
    """A fresh path in ``workdir()``; the oldest files beyond ``KEEP_FILES`` are deleted (names count up)."""
    with _file_lock:
        files = sorted(workdir().iterdir())
        for old in files[: max(0, len(files) - KEEP_FILES + 1)]:
            old.unlink(missing_ok=True)
        return workdir() / f"{next(_file_ids):08d}{suffix}"


def grid_scale(size: int) -> int:
    """Nearest-neighbour upscaling for grids of ``size``-pixel images (28 → 4)."""
    return max(1, 112 // size)


def animation_scale(size: int) -> int:
    """Upscaling of denoising GIF frames (28 → 3): a 16-image GIF of 31 frames stays near 3 MB."""
    return max(1, 84 // size)


def picture(x: torch.Tensor, scale: int | None = None) -> Image.Image:
    """One image in [-1, 1] (1, C, H, W), upscaled without blur (28 → 224 pixels)."""
    scale = scale or max(1, 224 // x.shape[-1])
    return pictures.make_grid(x.detach().cpu().clamp(-1, 1), nrow=1, scale=scale, value_range=(-1, 1))


# ---------------------------------------------------------------------------------------------------- sampling


@dataclass
class SampleProgress:
    """One streamed update: the grid of x_{t-1} after ``step`` of ``total`` steps."""

    step: int
    total: int
    timestep: int
    grid: Image.Image


@dataclass
class SampleResult:
    """The end of a run: the grid of samples x_0, the denoising GIF, and the timestep of each of its frames."""

    grid: Image.Image
    animation: Path
    timesteps: list[int]


class _Stop(Exception):
    """Raised inside the sampling callback when the consumer has gone away."""


def sample_stream(pipe, num_images: int, num_inference_steps: int, variance: str, seed: int) -> Iterator:
    """Sample with ``ddpm_hf.sample`` in a worker thread; yield a ``SampleProgress`` after the first step and then
    ~``PREVIEWS`` more, then one ``SampleResult`` (final grid, denoising GIF with x_t | x̂_0 side by side, and the
    timesteps of its frames).

    Closing the iterator early stops the worker at its next step. Arguments as ``check_sample_request`` returns them.
    """
    size, _ = image_shape(pipe)
    nrow, scale = int(np.ceil(np.sqrt(num_images))), grid_scale(size)
    preview_every = max(1, num_inference_steps // PREVIEWS)
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()

    def callback(i: int, t: int, x_prev: torch.Tensor, pred_x0: torch.Tensor) -> None:
        if stop.is_set():
            raise _Stop
        if (i == 0 or (i + 1) % preview_every == 0) and i + 1 < num_inference_steps:  # a first frame at once
            updates.put(("step", i, t, x_prev.float().cpu()))

    def work() -> None:
        try:
            out = sample(
                pipe.unet, pipe.scheduler, num_images, seed=seed, num_inference_steps=num_inference_steps,
                variance=variance, output_type="pt", callback=callback,
                capture_every=max(1, num_inference_steps // ANIMATION_FRAMES),
            )  # fmt: skip
            updates.put(("done", out))
        except _Stop:
            pass
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            updates.put(("error", e))

    worker = threading.Thread(target=work, name="ddpm-hf-sample", daemon=True)
    worker.start()
    try:
        while True:
            kind, *payload = updates.get()
            if kind == "error":
                raise payload[0]
            if kind == "step":
                i, t, x = payload
                grid = pictures.make_grid(x.clamp(-1, 1), nrow, scale, value_range=(-1, 1))
                yield SampleProgress(i + 1, num_inference_steps, t, grid)
                continue
            out = payload[0]
            frames = pictures.denoising_frames(out.trajectory, nrow, animation_scale(size))
            animation = pictures.save_gif(frames, new_file(".gif"))
            grid = pictures.make_grid(out.images.cpu(), nrow, scale)
            yield SampleResult(grid, animation, list(out.trajectory.timesteps))
            return
    finally:
        stop.set()


def animation_frame(path: str | Path, index: int) -> Image.Image:
    """Frame ``index`` of a GIF written by this app (for scrubbing through a denoising run)."""
    path = Path(path)
    if path.parent != workdir() or not path.is_file():
        raise InputError("that animation is gone: sample again")
    with Image.open(path) as gif:
        index = check_int("frame", index, 0, gif.n_frames - 1)
        gif.seek(index)
        return gif.convert("RGB")


# ---------------------------------------------------------------------------------------------------- x_0


def dataset_name(source: str) -> str:
    """The dataset whose test split the app offers for a model: the one its model card names, default MNIST."""
    card = Path(source, "README.md")
    text = card.read_text(errors="ignore") if Path(source).is_dir() and card.is_file() else ""
    return "fashion-mnist" if "fashion" in text.lower() else "mnist"


@cache
def _test_set(name: str):
    return data.load_test_sample(name)


def to_model_input(image: Image.Image, size: int, channels: int) -> torch.Tensor:
    """An uploaded or test image as the model's x_0: grayscale or RGB, resized and centre-cropped to ``size``,
    mapped to [-1, 1]; shape (1, C, size, size)."""
    image = ImageOps.fit(image.convert("L" if channels == 1 else "RGB"), (size, size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8).reshape(size, size, channels))
    return data.to_model_range(pixels.permute(2, 0, 1)[None].contiguous())


def choose_x0(pipe, source: str, index, upload: Image.Image | None) -> torch.Tensor:
    """x_0 from the upload if there is one, else test image ``index`` of the model's dataset."""
    size, channels = image_shape(pipe)
    if upload is not None:
        return to_model_input(upload, size, channels)
    try:
        test = _test_set(dataset_name(source))
    except data.DataError as e:
        raise InputError(f"no test images on this server ({e}); upload an image instead") from None
    index = check_int("test image index", index, 0, len(test.images) - 1)
    pixels = test.images[index]
    if tuple(pixels.shape) == (channels, size, size):
        return data.to_model_range(pixels[None])
    return to_model_input(Image.fromarray(pixels[0].numpy()), size, channels)


# ---------------------------------------------------------------------------------------------------- forward process


@dataclass
class ForwardResult:
    x0: Image.Image
    x_t: Image.Image
    signal_rate: float
    noise_rate: float
    animation: Path


def forward_process(scheduler: DDPMHFScheduler, x0: torch.Tensor, t, seed) -> ForwardResult:
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for one ε drawn from ``seed``, its rates, and a GIF of t = 0 → T-1 (same ε)."""
    T = scheduler.config.num_train_timesteps
    t, seed = check_int("t", t, 0, T - 1), check_int("seed", seed, 0, MAX_SEED)
    scale = max(1, 224 // x0.shape[-1])
    # pictures.forward_frames draws ε as torch.randn(x0.shape, generator=seed): every frame uses this same ε
    (x_t_picture,) = pictures.forward_frames(scheduler, x0, [t], seed=seed, scale=scale)
    timesteps = np.unique(np.linspace(0, T - 1, ANIMATION_FRAMES).round().astype(int))
    frames = pictures.forward_frames(scheduler, x0, timesteps, seed=seed, scale=scale)
    return ForwardResult(
        x0=picture(x0, scale),
        x_t=x_t_picture,
        signal_rate=float(scheduler.sqrt_alphas_cumprod[t]),
        noise_rate=float(scheduler.sqrt_one_minus_alphas_cumprod[t]),
        animation=pictures.save_gif(frames, new_file(".gif"), frame_ms=100),
    )


# ---------------------------------------------------------------------------------------------------- schedule


def schedule_tables(scheduler: DDPMHFScheduler) -> dict[str, pd.DataFrame]:
    """Long-format tables (t, value, quantity) of the scheduler's per-t coefficients, one per plot:
    ``rates`` (ᾱ_t, √ᾱ_t, √(1-ᾱ_t)), ``variances`` (β_t, β̃_t) and ``snr`` (log10 SNR_t)."""
    t = np.arange(scheduler.config.num_train_timesteps)

    def long(columns: dict[str, torch.Tensor]) -> pd.DataFrame:
        return pd.concat(
            [pd.DataFrame({"t": t, "value": v.double().numpy(), "quantity": k}) for k, v in columns.items()],
            ignore_index=True,
        )

    return {
        "rates": long({
            "ᾱ_t": scheduler.alphas_cumprod,
            "√ᾱ_t (signal rate)": scheduler.sqrt_alphas_cumprod,
            "√(1−ᾱ_t) (noise rate)": scheduler.sqrt_one_minus_alphas_cumprod,
        }),
        "variances": long({"β_t": scheduler.betas, "β̃_t (posterior variance)": scheduler.posterior_variance}),
        "snr": long({"log10 SNR_t": scheduler.snr.double().log10()}),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- posterior


@dataclass
class PosteriorResult:
    """Pictures of one reverse step at t for a known x_0, and how far p_θ is from q there."""

    x0: Image.Image
    x_t: Image.Image
    pred_x0: Image.Image
    posterior_mean: Image.Image  # μ̃_t(x_t, x_0)
    model_mean: Image.Image  # μ_θ(x_t) = μ̃_t(x_t, x̂_0)
    x_prev: Image.Image  # one draw of x_{t-1} ~ p_θ(x_{t-1} | x_t)
    mean_gap: float  # RMS of μ̃_t - μ_θ
    vb_term: float  # L_{t-1} (t > 0) or L_0 (t = 0) in bits/dim for this x_0 and ε


def _scheduler_with(pipe, variance: str) -> DDPMHFScheduler:
    return DDPMHFScheduler.from_config(pipe.scheduler.config, variance_type=check_variance(variance))


def posterior_step(pipe, x0: torch.Tensor, t, variance: str, seed) -> PosteriorResult:
    """Draw x_t ~ q(x_t | x_0), run the network once, and take one step of p_θ (Ho et al. 2020, eqs. 4, 7, 11).

    ε is ``torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))``, the first draw; z comes next.
    """
    scheduler = _scheduler_with(pipe, variance)
    t = check_int("t", t, 0, scheduler.config.num_train_timesteps - 1)
    generator = torch.Generator().manual_seed(check_int("seed", seed, 0, MAX_SEED))
    dev = pipe.unet.device
    x0 = x0.to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    timesteps = torch.full((x0.shape[0],), t, device=dev)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    with torch.inference_mode():
        eps = pipe.unet(x_t, timesteps).sample.float()
        x_prev, pred_x0 = scheduler.step(eps, t, x_t, generator=generator, return_dict=False)
        posterior_mean = scheduler.q_posterior_mean_variance(x0, x_t, timesteps)[0]
        model_mean = scheduler.q_posterior_mean_variance(pred_x0, x_t, timesteps)[0]
        vb = vb_term_bpd(pipe.unet, scheduler, x0, timesteps, noise)
    return PosteriorResult(
        picture(x0), picture(x_t), picture(pred_x0), picture(posterior_mean), picture(model_mean), picture(x_prev),
        mean_gap=float((posterior_mean - model_mean).pow(2).mean().sqrt()), vb_term=float(vb[0]),
    )  # fmt: skip


@dataclass
class BoundResult:
    curve: pd.DataFrame  # t, bits/dim, log10 bits/dim: L_{t-1} at BOUND_POINTS evenly spaced t (L_0 at t = 0)
    total: float  # the bound L, stratified estimate (``variational_bound(num_timesteps=BOUND_POINTS)``)
    prior: float  # L_T
    decoder: float  # L_0


def bound_terms(pipe, x0: torch.Tensor, variance: str, seed) -> BoundResult:
    """The per-t terms of the variational bound for one x_0, and the bound itself, in bits/dim."""
    scheduler = _scheduler_with(pipe, variance)
    generator = torch.Generator().manual_seed(check_int("seed", seed, 0, MAX_SEED))
    T = scheduler.config.num_train_timesteps
    dev = pipe.unet.device
    timesteps = torch.from_numpy(np.unique(np.linspace(0, T - 1, BOUND_POINTS).round().astype(np.int64)))
    batch = x0.to(dev).expand(len(timesteps), *x0.shape[1:])
    noise = torch.randn(batch.shape, generator=generator).to(dev)
    with torch.inference_mode():
        terms = vb_term_bpd(pipe.unet, scheduler, batch, timesteps.to(dev), noise).cpu()
    bound = variational_bound(pipe.unet, scheduler, x0.to(dev), num_timesteps=BOUND_POINTS, generator=generator)
    bits = terms.double().numpy()
    log_bits = np.log10(np.maximum(bits, 1e-12))
    curve = pd.DataFrame({"t": timesteps.numpy(), "bits/dim": bits, "log10 bits/dim": log_bits})
    return BoundResult(curve, float(bound.total[0]), float(bound.prior[0]), float(bound.decoder[0]))
